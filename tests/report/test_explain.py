"""Grad-CAM helpers: CAMs for registered models, target semantics, energy shares, box mapping, example selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_grad_cam import GradCAM
from torch import nn

from lib.report import explain
from lib.report.explain import (border_energy_share, border_mask, box_area_share, box_energy_share, cam_energy_table,
                         centre_energy_share, compare_energy, compute_cams, expected_border_share, map_boxes_to_recipe,
                         overlay, select_examples)
from lib.models import create_model, gradcam_target_layers
from lib.data.recipes import Recipe


# ----------------------------------------------------------------------------------------------- compute_cams

@pytest.mark.parametrize("name, size", [("simple_cnn", 32), ("resnet18", 64), ("swin_t", 64), ("npr", 32),
                                        ("npr_multiscale", 32)])
def test_cams_have_input_size_and_unit_range(name, size):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(3, 3, size, size)
    x_before = x.clone()
    cams = compute_cams(model, name, x, method="gradcam", target="predicted", batch_size=2, progress=False)
    assert cams.shape == (3, size, size) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
    assert cams.max() == pytest.approx(1.0, abs=1e-5), "the predicted class has some positive evidence somewhere"
    assert model.training, "the training flag must be restored"
    assert torch.equal(x, x_before), "the input must not be modified"
    assert all(p.grad is None for p in model.parameters())


class CentreMask(nn.Module):
    """Zeroes everything outside the central half of the map: the Grad-CAM target layer of CentreNet."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        mask = torch.zeros_like(x)
        mask[..., h // 4:h - h // 4, w // 4:w - w // 4] = 1.0
        return x * mask


class CentreNet(nn.Module):
    """Positive conv features kept only in the centre, average pool, positive linear head: only the centre can move
    the logit, and every feature pushes towards "fake" (nothing speaks for "real")."""

    def __init__(self, bias: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        nn.init.constant_(self.conv.weight, 0.1)
        nn.init.zeros_(self.conv.bias)
        self.centre = CentreMask()
        self.fc = nn.Linear(4, 1)
        nn.init.constant_(self.fc.weight, 1.0)
        nn.init.constant_(self.fc.bias, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.centre(torch.relu(self.conv(x))).mean(dim=(2, 3)))


@pytest.fixture
def centre_cams(monkeypatch):
    """`cams(bias, target, method)` for CentreNet on positive 16x16 inputs (positive features in the centre)."""
    # CentreNet is not in the registry: point the layer lookup at its masked feature map
    monkeypatch.setattr(explain, "gradcam_target_layers", lambda name, m: [m.centre])
    monkeypatch.setattr(explain, "gradcam_reshape_transform", lambda name: None)

    def cams(bias: float, target: str, method: str = "gradcam") -> np.ndarray:
        x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.5
        return compute_cams(CentreNet(bias), "centre_net", x, method=method, target=target, progress=False)

    return cams


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_centre_only_evidence_gives_centre_heavy_fake_cam(centre_cams, method):
    cams = centre_cams(0.0, "fake", method)
    assert cams.max() == pytest.approx(1.0)
    assert np.all(centre_energy_share(cams, border_frac=0.25) > 0.99)
    assert np.all(border_energy_share(cams, border_frac=0.25) < 0.01)


def test_real_target_explains_the_negated_logit(centre_cams):
    # every feature pushes towards "fake", so the negated logit has no positive evidence anywhere: an all-zero CAM
    cams = centre_cams(0.0, "real")
    assert np.all(cams == 0)
    assert np.isnan(border_energy_share(cams)).all()


@pytest.mark.parametrize("bias, same_as", [(50.0, "fake"), (-50.0, "real")])
def test_predicted_target_follows_the_logit_sign(centre_cams, bias, same_as):
    np.testing.assert_allclose(centre_cams(bias, "predicted"), centre_cams(bias, same_as), atol=1e-6)


def test_single_cell_target_layer_warns():
    # resnet18's layer4 is 1x1 at 32 px: a constant map that min-max scaling turns into zeros
    with pytest.warns(UserWarning, match="1x1"):
        cams = compute_cams(create_model("resnet18"), "resnet18", torch.randn(1, 3, 32, 32), progress=False)
    assert np.all(cams == 0)


def test_cams_under_inference_mode_match():
    torch.manual_seed(3)
    model = create_model("simple_cnn")
    x = torch.randn(2, 3, 32, 32)
    expected = compute_cams(model, "simple_cnn", x, target="real", progress=False)
    with torch.inference_mode():
        np.testing.assert_array_equal(compute_cams(model, "simple_cnn", x.clone(), target="real", progress=False),
                                      expected)


def test_batch_size_does_not_change_cams():
    torch.manual_seed(1)
    model = create_model("simple_cnn")
    x = torch.randn(5, 3, 32, 32)
    a = compute_cams(model, "simple_cnn", x, batch_size=2, progress=False)
    b = compute_cams(model, "simple_cnn", x, batch_size=16, progress=False)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_multiscale_cam_pairs_each_branch_with_its_own_gradients():
    # pytorch-grad-cam stores gradients in reverse hook order; with parallel branches a mix-up would go unnoticed
    # (same shapes), so rebuild the mean of per-branch CAMs one layer at a time and compare
    torch.manual_seed(2)
    model = create_model("npr_multiscale").eval()
    x = torch.randn(2, 3, 32, 32)
    combined = compute_cams(model, "npr_multiscale", x, target="fake", progress=False)
    targets = [explain._OneLogitTarget(1)] * 2
    per_layer = []
    for layer in gradcam_target_layers("npr_multiscale", model):
        with GradCAM(model=model, target_layers=[layer]) as cam:
            raw = cam.activations_and_grads(x)  # forward only, to reuse the library's own per-layer computation
            model.zero_grad()
            sum(t(o) for t, o in zip(targets, raw)).backward()
            acts = cam.activations_and_grads.activations[0].numpy()
            grads = cam.activations_and_grads.gradients[0].numpy()
            per_layer.append(np.maximum((grads.mean(axis=(2, 3))[:, :, None, None] * acts).sum(axis=1), 0))
    from pytorch_grad_cam.utils.image import scale_cam_image

    expected = scale_cam_image(np.mean([scale_cam_image(c, (32, 32)) for c in per_layer], axis=0))
    np.testing.assert_allclose(combined, expected, atol=1e-4)


def test_compute_cams_rejects_bad_arguments():
    model = create_model("simple_cnn")
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="method"):
        compute_cams(model, "simple_cnn", x, method="scorecam", progress=False)
    with pytest.raises(ValueError, match="target"):
        compute_cams(model, "simple_cnn", x, target="both", progress=False)
    with pytest.raises(ValueError, match="float tensor"):
        compute_cams(model, "simple_cnn", torch.zeros(1, 3, 32, 32, dtype=torch.uint8), progress=False)
    with pytest.raises(ValueError, match="one-logit"):
        compute_cams(create_model("simple_cnn", num_classes=2), "simple_cnn", x, progress=False)


# ----------------------------------------------------------------------------------------------- energy shares

def test_border_band_cam_and_uniform_cam():
    h, w, frac = 40, 64, 0.15
    band = border_mask(h, w, frac)
    assert band[:6].all() and band[-6:].all() and band[:, :10].all() and band[:, -10:].all()  # 0.15*40, 0.15*64
    assert not band[6:-6, 10:-10].any()
    cams = np.stack([band.astype(float), np.ones((h, w)), (~band).astype(float), np.zeros((h, w))])
    before = cams.copy()
    border = border_energy_share(cams, frac)
    assert border[0] == pytest.approx(1.0)
    assert border[1] == pytest.approx(expected_border_share(h, w, frac))
    assert expected_border_share(h, w, frac) == pytest.approx(1 - (28 * 44) / (40 * 64))
    assert border[2] == pytest.approx(0.0)
    assert np.isnan(border[3])
    np.testing.assert_allclose(centre_energy_share(cams, frac)[:3], 1 - border[:3])
    np.testing.assert_array_equal(cams, before)


def test_energy_functions_reject_bad_maps():
    with pytest.raises(ValueError, match="non-negative"):
        border_energy_share(-np.ones((1, 8, 8)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        border_energy_share(np.ones((8, 8)))
    with pytest.raises(ValueError, match="border_frac"):
        border_energy_share(np.ones((1, 8, 8)), border_frac=0.5)


def test_box_energy_and_area_shares():
    cams = np.zeros((4, 32, 32))
    cams[0, 8:24, 4:12] = 1.0          # exactly the box below
    cams[1] = 1.0                      # uniform
    cams[2, 0, 0] = 1.0                # outside the box
    cams[3] = 1.0
    boxes = np.array([[4, 8, 12, 24], [4, 8, 12, 24], [4, 8, 12, 24], [np.nan] * 4])
    boxes_before = boxes.copy()
    share = box_energy_share(cams, boxes)
    assert share[0] == pytest.approx(1.0)
    assert share[1] == pytest.approx(8 * 16 / 32**2)
    assert share[2] == pytest.approx(0.0)
    assert np.isnan(share[3])
    area = box_area_share(boxes, 32, 32)
    assert area[:3] == pytest.approx([8 * 16 / 32**2] * 3) and np.isnan(area[3])
    # fractional pixels and clipping to the map
    assert box_area_share(np.array([[0, 0, 0.5, 1], [-10, -10, 50, 50]]), 32, 32) == pytest.approx([0.5 / 1024, 1.0])
    np.testing.assert_array_equal(boxes, boxes_before)
    with pytest.raises(ValueError, match="boxes for"):
        box_energy_share(cams, boxes[:2])


# ----------------------------------------------------------------------------------------------- box mapping

def _square_image(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 255
    return img


def _bright_bbox(out: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(out.mean(axis=2) > 127)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("recipe, label", [
    (Recipe(size=32, mode="resize"), 0),
    (Recipe(size=32, mode="center_crop"), 0),
    (Recipe(size=32, mode="letterbox"), 0),
    (Recipe(size=32, mode="letterbox", letterbox_apply_to="real"), 0),
    (Recipe(size=32, mode="letterbox", letterbox_apply_to="real"), 1),
    (Recipe(size=32, mode="face", face_margin=0.2), 0),
])
@pytest.mark.parametrize("width, height", [(90, 60), (50, 100)])
def test_mapped_box_covers_the_square_after_recipe_apply(recipe, label, width, height):
    box = (int(width * 0.55), int(height * 0.3), int(width * 0.55) + 20, int(height * 0.3) + 20)
    out = recipe.apply(_square_image(width, height, box), label=label, box=box)
    bx0, by0, bx1, by1 = _bright_bbox(out)
    boxes = np.array([box, [np.nan] * 4], dtype=float)
    mapped = map_boxes_to_recipe(boxes, [width] * 2, [height] * 2, recipe, labels=[label] * 2)
    mx0, my0, mx1, my1 = mapped[0]
    # bilinear resampling blurs edges by under a pixel: the mapped box matches the bright square within 1 px
    for got, want in ((mx0, bx0), (my0, by0), (mx1, bx1), (my1, by1)):
        assert abs(got - want) <= 1.0, (mapped[0], (bx0, by0, bx1, by1))
    assert np.isnan(mapped[1]).all()


def test_map_boxes_exact_geometry_and_errors():
    # 100x50 image, size 10: resize scales x by 0.1 and y by 0.2; center_crop drops 25 px left; letterbox pads 2.5 -> 2
    box = np.array([[25.0, 0.0, 75.0, 50.0]])
    np.testing.assert_allclose(map_boxes_to_recipe(box, [100], [50], Recipe(size=10, mode="resize")), [[2.5, 0, 7.5, 10]])
    np.testing.assert_allclose(map_boxes_to_recipe(box, [100], [50], Recipe(size=10, mode="center_crop")), [[0, 0, 10, 10]])
    np.testing.assert_allclose(map_boxes_to_recipe(box, [100], [50], Recipe(size=10, mode="letterbox")), [[2.5, 2, 7.5, 7]])
    with pytest.raises(ValueError, match="labels"):
        map_boxes_to_recipe(box, [100], [50], Recipe(size=10, mode="letterbox", letterbox_apply_to="real"))
    with pytest.raises(ValueError, match="same length"):
        map_boxes_to_recipe(box, [100, 20], [50], Recipe(size=10))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        map_boxes_to_recipe(np.zeros((1, 3)), [100], [50], Recipe(size=10))


# ----------------------------------------------------------------------------------------------- display, selection, tables

def test_overlay_blends_heat_map_over_image():
    img = np.full((16, 16, 3), 128, dtype=np.uint8)
    cam = np.zeros((16, 16), dtype=np.float32)
    cam[:, 8:] = 1.0
    out = overlay(img, cam)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    # jet: 0 is blue, 1 is red (RGB order)
    assert out[0, 0, 2] > out[0, 0, 0] and out[0, -1, 0] > out[0, -1, 2]
    with pytest.raises(ValueError, match="does not match"):
        overlay(img, cam[:8])
    with pytest.raises(ValueError, match="uint8"):
        overlay(img.astype(float), cam)


def _predictions() -> pd.DataFrame:
    # real correct 5, real wrong 1, fake correct 3 (one exactly at the threshold), fake wrong 0, one missing probability
    label = [0] * 6 + [1] * 3 + [0]
    prob = [0.1, 0.2, 0.3, 0.4, 0.49, 0.9, 0.5, 0.8, 0.95, np.nan]
    return pd.DataFrame({"path": [f"p{i}.png" for i in range(10)], "label": label, "probability": prob,
                         "source": "s", "split": "test"})


def test_select_examples_counts_per_cell_and_is_reproducible():
    preds = _predictions()
    before = preds.copy()
    picked = select_examples(preds, n_per_cell=2, seed=0)
    counts = picked["cell"].value_counts().to_dict()
    assert counts == {"real correct": 2, "real wrong": 1, "fake correct": 2}
    assert (picked["correct"] == picked["cell"].str.endswith("correct")).all()
    assert picked.index.isin(preds.index).all() and picked.index.is_unique
    assert "p9.png" not in set(picked["path"])
    pd.testing.assert_frame_equal(preds, before)
    pd.testing.assert_frame_equal(picked, select_examples(preds, n_per_cell=2, seed=0))
    everything = select_examples(preds, n_per_cell=100, seed=1)
    assert len(everything) == 9
    assert select_examples(preds, n_per_cell=2, seed=0, threshold=0.95)["cell"].value_counts()["fake wrong"] == 2
    with pytest.raises(ValueError, match="probability"):
        select_examples(preds.drop(columns="probability"), 1, 0)


def test_energy_table_and_real_vs_fake_comparison():
    h = w = 20
    band = border_mask(h, w, 0.15)
    rng = np.random.default_rng(0)
    real = band[None] * rng.uniform(0.5, 1.0, (8, 1, 1)) + rng.uniform(0, 0.2, (8, h, w))   # border-heavy
    fake = (~band)[None] * rng.uniform(0.5, 1.0, (8, 1, 1)) + rng.uniform(0, 0.2, (8, h, w))  # centre-heavy
    cams = np.concatenate([real, fake])
    labels = np.array([0] * 8 + [1] * 8)
    correct = np.arange(16) % 2 == 0
    table = cam_energy_table(cams, labels, correct)
    assert list(table.columns) == ["label", "correct", "border_share", "centre_share", "face_share", "face_area_share"]
    assert table["face_share"].isna().all()
    np.testing.assert_allclose(table["border_share"] + table["centre_share"], 1.0)
    boxes = np.tile([5.0, 5.0, 15.0, 15.0], (16, 1))
    with_faces = cam_energy_table(cams, labels, correct, boxes=boxes)
    np.testing.assert_allclose(with_faces["face_area_share"], 0.25)
    assert (with_faces.loc[labels == 1, "face_share"] > with_faces.loc[labels == 0, "face_share"].max()).all()

    cmp = compare_energy(table, by="label")
    assert list(cmp["class"]) == ["real", "fake"] and list(cmp["n"]) == [8, 8]
    assert cmp.loc[0, "mean"] > cmp.loc[1, "mean"]
    assert cmp["p_value"].iloc[0] < 0.01  # fully separated samples of 8 vs 8
    assert cmp["rank_biserial"].iloc[0] == pytest.approx(1.0)  # every real border share beats every fake one
    one_group = compare_energy(table[table["label"] == 0], by="label")
    assert len(one_group) == 1 and np.isnan(one_group["p_value"]).all()
    with pytest.raises(ValueError, match="no column"):
        compare_energy(table, by="source")
