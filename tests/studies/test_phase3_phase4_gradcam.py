"""Phase 3/4 and Grad-CAM deep-dive helpers: recommendation loading, candidates, speed, selection rule, data scaling,
calibration and hard examples, and the Grad-CAM pipeline of a stored run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from lib.studies import phase3
from lib.studies import phase4
from lib.studies import gradcam
from lib.data.augment import AugmentPolicy
from lib.fileio import ArtefactMismatch, write_stamped_json
from lib.data.recipes import Recipe
from lib.training.fit import TrainConfig
from conftest import tiny_run_study

BASE = Recipe(size=32)


# ----------------------------------------------------------------------------------------------- recommendation

STAMP = {"dataset": "fp-a", "split_key": "split-a"}


def test_recommendation_missing_file_falls_back_and_says_why(tmp_path):
    prep = phase3.load_recommendation(tmp_path / "phase2_recommendation.json", BASE, STAMP)
    assert prep.recipe == BASE and prep.augment is None and prep.normalization == "imagenet"
    assert "not found" in prep.origin
    off = phase3.load_recommendation(tmp_path / "x.json", BASE, STAMP, use=False)
    assert "off" in off.origin
    config = TrainConfig(epochs=3)
    assert prep.train_config(config) == config, "the fallback must reproduce Phase 1's run keys"


RECOMMENDATION = {"recipe": Recipe(size=48, mode="center_crop").to_dict(),
                  "augment": AugmentPolicy(jpeg_p=0.5).to_dict(), "normalization": "train", "condition": "augment",
                  "rule": "best", "face_min_confidence": 0.8}


def test_recommendation_is_read_and_applied(tmp_path):
    path = tmp_path / "rec.json"
    write_stamped_json(path, RECOMMENDATION, STAMP)
    prep = phase3.load_recommendation(path, BASE, STAMP)
    assert prep.recipe == Recipe(size=48, mode="center_crop") and prep.augment == AugmentPolicy(jpeg_p=0.5)
    assert prep.condition == "augment" and prep.face_min_confidence == 0.8
    config = prep.train_config(TrainConfig(epochs=3))
    assert config.epochs == 3 and config.normalization == "train" and config.augment == AugmentPolicy(jpeg_p=0.5)
    resized = prep.with_size(32)
    assert resized.recipe == Recipe(size=32, mode="center_crop") and "overridden" in resized.origin
    assert prep.with_size(0) is prep


def test_recommendation_from_another_dataset_or_split_is_refused(tmp_path):
    path = tmp_path / "phase2_recommendation.json"
    write_stamped_json(path, RECOMMENDATION, {"dataset": "fp-b", "split_key": "split-a"})
    with pytest.raises(ArtefactMismatch, match="fp-b") as err:
        phase3.load_recommendation(path, BASE, STAMP)
    assert "fp-a" in str(err.value), "the error names both datasets"
    write_stamped_json(path, RECOMMENDATION, {"dataset": "fp-a", "split_key": "split-b"})
    with pytest.raises(ArtefactMismatch, match="split-b"):
        phase3.load_recommendation(path, BASE, STAMP)
    path.write_text(json.dumps(RECOMMENDATION))  # an unstamped file (an older notebook 04)
    with pytest.raises(ArtefactMismatch, match="no record"):
        phase3.load_recommendation(path, BASE, STAMP)
    assert "off" in phase3.load_recommendation(path, BASE, STAMP, use=False).origin


@pytest.mark.parametrize("content, message", [
    ({"recipe": BASE.to_dict(), "augment": None}, "normalization"),
    ({"recipe": {"size": 32, "mode": "zoom"}, "augment": None, "normalization": "imagenet"}, "invalid recipe"),
    ({"recipe": BASE.to_dict(), "augment": None, "normalization": "zscore"}, "normalization"),
    ([1, 2], "JSON object"),
])
def test_bad_recommendation_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "rec.json"
    if isinstance(content, dict):
        write_stamped_json(path, content, STAMP)
    else:
        path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        phase3.load_recommendation(path, BASE, STAMP)


def test_recipe_boxes_only_for_face_recipes():
    assert phase3.recipe_boxes(pd.DataFrame({"sha256": []}), BASE) is None


# ----------------------------------------------------------------------------------------------- candidates, speed

def test_candidates_add_pretrained_variants_only_when_weights_exist(monkeypatch):
    entries, notes = phase3.candidates(["resnet18", "mobilenet_v2"], pretrained=["mobilenet_v2", "simple_cnn"])
    labels = [c.label for c in entries]
    assert labels[:2] == ["resnet18", "mobilenet_v2"]
    assert any("simple_cnn" in n and "no ImageNet weights" in n for n in notes)
    if phase3.pretrained_weights_found("mobilenet_v2"):
        assert entries[-1] == phase3.Candidate("mobilenet_v2 (ImageNet)", "mobilenet_v2", {"pretrained": True})
    monkeypatch.setattr(phase3, "pretrained_weights_found", lambda name: None)
    entries, notes = phase3.candidates(["resnet18"], pretrained=["mobilenet_v2"])
    assert [c.label for c in entries] == ["resnet18"] and "not installed" in notes[0]
    with pytest.raises(KeyError, match="valid names"):
        phase3.candidates(["resnet_999"])
    c = phase3.Candidate("x", "npr", {"scales": [0.5]})
    assert phase3.Candidate.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_inference_speed_is_positive_and_restores_mode():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    model(torch.zeros(1, 3, 16, 16))
    model.train()
    out = phase3.inference_speed(model, 16, batch_size=4, repeats=2, warmup=1)
    assert out["images_per_s"] > 0 and out["batch_ms_min"] <= out["batch_ms_median"] and model.training
    with pytest.raises(ValueError):
        phase3.inference_speed(model, 16, batch_size=0)


def test_seconds_per_epoch_summarises_every_epoch():
    history = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 2, "seconds": [1, 2, 3, 4, 10, 10]})
    out = phase3.seconds_per_epoch(history)
    assert out.loc["a", "epoch_seconds_mean"] == 2.5 and out.loc["b", "epoch_seconds_std"] == 0
    assert out.loc["a", "epoch_seconds_n"] == 4


# ----------------------------------------------------------------------------------------------- data scaling

def _manifest(n_groups: int = 40) -> pd.DataFrame:
    rows = []
    for g in range(n_groups):
        for k in range(3):
            label = int(k > 0) if g % 2 else int(k == 2)
            rows.append({"sha256": f"{g:03d}{k}", "label": label, "source": "real" if label == 0 else f"gen{g % 3}",
                         "group": f"g{g}"})
    return pd.DataFrame(rows)


def test_scaling_splits_keep_the_test_set_and_nest_the_training_parts():
    manifest = _manifest()
    splits, infeasible = phase4.scaling_splits(manifest, [1.0, 0.2, 0.5], n_folds=3, test_ratio=0.2, seed=0,
                                                cache_dir=None)
    assert list(splits) == [0.2, 0.5, 1.0] and infeasible == {}
    check = phase4.scaling_split_check(splits, manifest)
    assert check["test_identical"].all() and check["holdout_identical"].all() and check["trainval_subset"].all()
    assert check["trainval"].is_monotonic_increasing and check.iloc[-1]["share_of_largest"] == 1.0
    assert 0.1 < check.iloc[0]["share_of_largest"] < 0.35
    with pytest.raises(ValueError):
        phase4.scaling_splits(manifest, [0.0, 1.0])
    with pytest.raises(ValueError, match="repeat"):
        phase4.scaling_splits(manifest, [0.5, 0.5])
    # 3 folds need real images in every validation part: a 5 % subsample keeps too few groups, and says so
    splits, infeasible = phase4.scaling_splits(manifest, [0.05, 1.0], n_folds=3, test_ratio=0.2, seed=0,
                                                cache_dir=None)
    assert list(splits) == [1.0] and "fold" in infeasible[0.05]


# ----------------------------------------------------------------------------------------------- final evaluation

def _predictions() -> pd.DataFrame:
    rows = []
    probs = {0: [0.1, 0.2, 0.9, 0.6], 1: [0.8, 0.7, 0.3, 0.05]}  # real: 0.9 and 0.6 are false positives at 0.5
    for fold in range(2):
        for label, ps in probs.items():
            for i, p in enumerate(ps):
                rows.append({"model": "m", "fold": fold, "split": "test", "path": f"{label}_{i}.png", "label": label,
                             "source": "real" if label == 0 else "gen", "probability": p})
    return pd.DataFrame(rows)


def test_hard_examples_are_the_most_confident_errors():
    hard = phase4.hard_examples(_predictions(), {"m": 0.5}, n=5)
    fp = hard[hard["kind"] == "false positive"]
    fn = hard[hard["kind"] == "false negative"]
    assert fp["probability"].tolist() == [0.9, 0.6] and fp["path"].tolist() == ["0_2.png", "0_3.png"]
    assert fn["probability"].tolist() == [0.05, 0.3] and (fn["label"] == 1).all()
    assert fp["rank"].tolist() == [1, 2]
    assert len(phase4.hard_examples(_predictions(), {"m": 0.5}, n=1)) == 2
    with pytest.raises(KeyError):
        phase4.hard_examples(_predictions(), {"other": 0.5})


def test_reliability_tables_count_every_prediction():
    table = phase4.reliability_tables(_predictions(), n_bins=5)
    assert table["count"].sum() == 16 and table["prob_true"].between(0, 1).all()
    with pytest.raises(ValueError, match="no predictions"):
        phase4.reliability_tables(_predictions(), split="val")


def test_energy_vs_uniform_and_comparisons():
    energy = pd.DataFrame({"subject": ["a"] * 6 + ["b"] * 6, "label": [0, 1] * 6,
                           "border_share": [0.6, 0.62, 0.65, 0.61, 0.63, 0.64] + [0.2, 0.22, 0.21, 0.19, 0.2, 0.18],
                           "expected": 0.4})
    table = gradcam.energy_vs_uniform(energy, ["subject"], expected="expected").set_index("subject")
    assert table.loc["a", "finding"] == "above uniform" and table.loc["b", "finding"] == "below uniform"
    assert table.loc["a", "mean_excess"] == pytest.approx(energy["border_share"][:6].mean() - 0.4)
    numeric = gradcam.energy_vs_uniform(energy, ["subject"], expected=0.4)
    assert numeric["mean_excess"].tolist() == pytest.approx(table["mean_excess"].tolist())
    cmp = gradcam.energy_comparisons(energy, "subject", [("a", "b"), ("a", "zzz")])
    assert len(cmp) == 1 and cmp.iloc[0]["diff"] > 0.3 and cmp.iloc[0]["p_value"] < 0.05
    per = gradcam.energy_comparisons(energy, "label", [(1, 0)], within=["subject"])
    assert per["subject"].tolist() == ["a", "b"] and (per["p_holm"] >= per["p_value"]).all()


# ----------------------------------------------------------------------------------------------- Grad-CAM of stored runs

def test_cam_grid_size_matches_the_registry_layers():
    from lib.models import create_model

    assert gradcam.cam_grid_size(create_model("resnet18"), "resnet18", 32) == (1, 1)
    assert gradcam.cam_grid_size(create_model("resnet18"), "resnet18", 128) == (4, 4)
    assert gradcam.cam_grid_size(create_model("simple_cnn"), "simple_cnn", 64) == (8, 8)


def test_normalised_inputs_match_the_training_normalisation():
    images = np.full((3, 3, 4, 4), 255, dtype=np.uint8)
    x = gradcam.normalised_inputs(images, [2, 0], mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    assert x.shape == (2, 3, 4, 4)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))


@pytest.fixture
def stored_study(tmp_path):
    """24 PNGs (fakes brighter, a bright border), a hand-made split table with 8 test rows, one trained fold."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(24):
        label = i % 2
        img = rng.integers(0, 120, (24, 24, 3)) + 100 * label
        img[:3] += 60 * label
        images.append(img.clip(0, 255).astype(np.uint8))
    sources = ["gen" if i % 2 else "real" for i in range(24)]
    return tiny_run_study(tmp_path, images, sources, [("trainval", 16), ("test", 8)], "fp-tiny", width=24, height=24)


def test_explain_run_end_to_end(stored_study):
    s = stored_study
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, seed=0, device="cpu", eval_batch_size=8)
    entries = [phase3.Candidate("small", "simple_cnn", {"widths": [4, 8]}), phase3.Candidate("resnet18", "resnet18")]
    cv, pred = phase3.run_candidates(s.dataset, s.splits, Recipe(size=32), config, entries, folds=[0], progress=False,
                                      runs_dir=s.runs, cache_dir=s.cache)
    assert cv["model"].tolist() == ["small", "resnet18"] and cv["architecture"].tolist() == ["simple_cnn", "resnet18"]
    assert set(pred["model"]) == {"small", "resnet18"}
    boxes = pd.DataFrame({"x0": [4.0] * 24, "y0": 4.0, "x1": 20.0, "y1": 20.0})
    boxes.loc[0, ["x0", "y0", "x1", "y1"]] = np.nan
    key = cv.loc[cv["model"] == "small", "run_key"].iloc[0]
    out = gradcam.explain_run(key, s.dataset, n_per_cell=2, seed=0, face_boxes=boxes, runs_dir=s.runs,
                              cache_dir=s.cache)
    assert isinstance(out, gradcam.RunExplanation) and out.grid == (16, 16)
    n = len(out.examples)
    assert 0 < n <= 8 and out.images.shape == (n, 32, 32, 3) and out.images.dtype == np.uint8
    assert set(out.cams) == {"gradcam", "gradcam++"} and out.cams["gradcam"].shape == (n, 32, 32)
    e = out.energy
    assert len(e) == 2 * n and e["border_share"].dropna().between(0, 1).all()
    # a 16 px box in a 24 px original covers (16 / 24) ** 2 of the input whatever the recipe size
    assert e["face_area_share"].dropna().to_numpy() == pytest.approx(0.444, abs=0.01)
    skipped = gradcam.explain_run(cv.loc[cv["model"] == "resnet18", "run_key"].iloc[0], s.dataset,
                                  runs_dir=s.runs, cache_dir=s.cache)
    assert isinstance(skipped, str) and "1x1" in skipped
    too_coarse = gradcam.explain_run(key, s.dataset, min_cells=17, runs_dir=s.runs, cache_dir=s.cache)
    assert isinstance(too_coarse, str) and "16x16" in too_coarse
    wrong = SimpleNamespace(manifest=s.dataset.manifest, fingerprint="other")
    with pytest.raises(ValueError, match="trained on dataset"):
        gradcam.explain_run(key, wrong, runs_dir=s.runs, cache_dir=s.cache)
