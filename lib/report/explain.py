"""Grad-CAM explanations and where their energy lies (border, centre, face box), for the Grad-CAM notebook.

    cams = compute_cams(model, "resnet18", x, method="gradcam", target="fake")   # (N, H, W) in [0, 1]
    table = cam_energy_table(cams, labels, correct, boxes=map_boxes_to_recipe(face_boxes, w, h, recipe))
    compare_energy(table, by="label")                                         # real vs fake, Mann-Whitney U

CAMs come from pytorch-grad-cam (`pytorch_grad_cam`), which min-max normalises each map to [0, 1] and upsamples it to
the input size. "Energy" of a region is the sum of CAM values inside it divided by the map's total; a CAM that is all
zero (no positive evidence for the target) has no energy to share out, so its shares are NaN.

Target semantics for a one-logit head (logit > 0 means "fake"): `target="fake"` explains the logit,
`target="real"` explains the NEGATED logit (pytorch-grad-cam's `BinaryClassifierOutputTarget(0)`), and
`target="predicted"` explains whichever of the two the model predicts (logit >= 0 -> fake, as `probability >= 0.5`).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from scipy.stats import mannwhitneyu
from torch import nn
from lib.progress import tqdm

from lib.models import gradcam_reshape_transform, gradcam_target_layers
from lib.data.recipes import Recipe

CAM_METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
CAM_TARGETS = ("fake", "real", "predicted")
CELLS = ("real correct", "real wrong", "fake correct", "fake wrong")
CLASS_NAMES = {0: "real", 1: "fake"}


# ----------------------------------------------------------------------------------------------- computing CAMs

class _OneLogitTarget:
    """Score Grad-CAM differentiates for one image of a one-logit model: the logit (fake) or its negation (real).

    `category=None` picks the predicted class from the logit itself, so "predicted" needs no extra forward pass.
    """

    def __init__(self, category: int | None):
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.numel() != 1:
            raise ValueError(f"compute_cams expects a one-logit head (num_classes=1), got {output.numel()} outputs "
                             "per image")
        category = self.category
        if category is None:
            category = int(output.detach().item() >= 0)  # probability >= 0.5 counts as "fake", as in lib.evaluation.metrics
        return BinaryClassifierOutputTarget(category)(output).sum()


def compute_cams(
    model: nn.Module,
    model_name: str,
    x: torch.Tensor,
    method: str = "gradcam",
    target: str = "fake",
    batch_size: int = 16,
    progress: bool = True,
) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) maps of `model` (built as registry name `model_name`) for normalised inputs `x`.

    x: float (N, 3, H, W), already normalised as the model was trained (never modified here).
    Returns float32 (N, H, W) in [0, 1]: the library upsamples each map from the target layer to the input size.
    The model runs in eval mode (BatchNorm statistics frozen, dropout off) and gets its training flag back afterwards.
    """
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; valid: {', '.join(CAM_METHODS)}")
    if target not in CAM_TARGETS:
        raise ValueError(f"unknown CAM target {target!r}; valid: {', '.join(CAM_TARGETS)}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor (N, 3, H, W), got {getattr(x, 'dtype', type(x))} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, _, height, width = x.shape
    if n == 0:
        return np.zeros((0, height, width), dtype=np.float32)

    layers = gradcam_target_layers(model_name, model)
    reshape = gradcam_reshape_transform(model_name)
    category = {"fake": 1, "real": 0, "predicted": None}[target]
    device = next(model.parameters()).device
    was_training = model.training
    cams: list[np.ndarray] = []
    try:
        model.eval()
        # gradients are the method: switch them on even when called under torch.no_grad() / inference_mode()
        with torch.inference_mode(False), torch.enable_grad(), \
                CAM_METHODS[method](model=model, target_layers=layers, reshape_transform=reshape) as cam:
            for lo in tqdm(range(0, n, batch_size), desc=f"{method} {model_name}", leave=False, disable=not progress):
                # a fresh leaf that requires grad: the target layer's output then carries gradients even when the
                # model's parameters are frozen (pytorch-grad-cam only records gradients of tensors that need them)
                xb = x[lo:lo + batch_size].detach().to(device, dtype=torch.float32).clone().requires_grad_(True)
                cams.append(cam(input_tensor=xb, targets=[_OneLogitTarget(category)] * len(xb)))
                if lo == 0:
                    _warn_if_single_cell(cam.activations_and_grads.activations, model_name, (height, width))
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)  # the backward passes left parameter gradients behind
    # pytorch-grad-cam's context manager swallows IndexError; never return a partial result silently
    produced = sum(len(c) for c in cams)
    if produced != n:
        raise RuntimeError(f"Grad-CAM produced {produced} maps for {n} images (the library suppressed an IndexError; "
                           f"check the target layers of {model_name!r})")
    out = np.concatenate(cams).astype(np.float32, copy=False)
    if out.shape != (n, height, width):
        raise RuntimeError(f"Grad-CAM returned maps of shape {out.shape[1:]}, expected {(height, width)}")
    return np.clip(out, 0.0, 1.0)  # the library's min-max scaling can overshoot 1 by float rounding


def _warn_if_single_cell(activations: list[torch.Tensor], model_name: str, size: tuple[int, int]) -> None:
    # a 1x1 target map is constant, so min-max scaling turns every CAM into zeros: say so instead of plotting blanks
    if any(a.shape[-2:].numel() == 1 for a in activations):
        warnings.warn(f"{model_name}'s Grad-CAM layer is 1x1 at input size {size}: the CAMs carry no spatial "
                      "information (all zero); use a larger input", stacklevel=3)


# ----------------------------------------------------------------------------------------------- energy shares

def _check_cams(cams: np.ndarray) -> np.ndarray:
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"cams must be an (N, H, W) array, got shape {cams.shape}")
    if cams.size and (not np.all(np.isfinite(cams)) or cams.min() < 0):
        raise ValueError("cams must be finite and non-negative (as Grad-CAM maps are)")
    return cams.astype(np.float64, copy=False)


def _share(energy_inside: np.ndarray, total: np.ndarray) -> np.ndarray:
    # an all-zero CAM has no energy to share out: NaN rather than a made-up 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, energy_inside / np.where(total > 0, total, 1.0), np.nan)


def border_mask(height: int, width: int, border_frac: float = 0.15) -> np.ndarray:
    """Boolean (H, W) mask of the band of round(border_frac * H) rows at top and bottom and round(border_frac * W)
    columns at left and right."""
    if not 0.0 <= border_frac < 0.5:
        raise ValueError(f"border_frac must be in [0, 0.5), got {border_frac}")
    band_y, band_x = int(np.floor(border_frac * height + 0.5)), int(np.floor(border_frac * width + 0.5))
    rows, cols = np.arange(height), np.arange(width)
    in_rows = (rows < band_y) | (rows >= height - band_y)
    in_cols = (cols < band_x) | (cols >= width - band_x)
    return in_rows[:, None] | in_cols[None, :]


def expected_border_share(height: int, width: int, border_frac: float = 0.15) -> float:
    """Area share of the border band: the border energy share a uniform CAM would have."""
    return float(border_mask(height, width, border_frac).mean())


def border_energy_share(cams: np.ndarray, border_frac: float = 0.15) -> np.ndarray:
    """(N,) share of each CAM's energy inside the border band (see `border_mask`); NaN for an all-zero CAM."""
    cams = _check_cams(cams)
    mask = border_mask(cams.shape[1], cams.shape[2], border_frac)
    return _share((cams * mask).sum(axis=(1, 2)), cams.sum(axis=(1, 2)))


def centre_energy_share(cams: np.ndarray, border_frac: float = 0.15) -> np.ndarray:
    """(N,) share of each CAM's energy outside the border band (1 - border share); NaN for an all-zero CAM."""
    return 1.0 - border_energy_share(cams, border_frac)


def _box_weights(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W) fraction of each pixel covered by each box; pixel (i, j) spans [j, j+1) x [i, i+1).

    Fractional coverage keeps sub-pixel boxes (faces mapped down to a 64 px recipe) honest; boxes are clipped to the
    map. NaN boxes give all-NaN weights.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) array of x0, y0, x1, y1, got shape {boxes.shape}")
    x0, y0, x1, y1 = (boxes[:, k, None] for k in range(4))
    cols, rows = np.arange(width)[None, :], np.arange(height)[None, :]
    cover_x = np.clip(np.minimum(x1, cols + 1) - np.maximum(x0, cols), 0.0, 1.0)  # (N, W); NaN stays NaN
    cover_y = np.clip(np.minimum(y1, rows + 1) - np.maximum(y0, rows), 0.0, 1.0)  # (N, H)
    return cover_y[:, :, None] * cover_x[:, None, :]


def box_energy_share(cams: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,) share of each CAM's energy inside its box (x0, y0, x1, y1 in CAM pixels); NaN where the box is NaN or
    the CAM is all zero."""
    cams = _check_cams(cams)
    weights = _box_weights(boxes, cams.shape[1], cams.shape[2])
    if len(weights) != len(cams):
        raise ValueError(f"{len(boxes)} boxes for {len(cams)} CAMs")
    return _share((cams * weights).sum(axis=(1, 2)), cams.sum(axis=(1, 2)))


def box_area_share(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N,) share of an (H, W) map covered by each box (the box energy share of a uniform CAM); NaN for NaN boxes."""
    return _box_weights(boxes, height, width).mean(axis=(1, 2))


# ----------------------------------------------------------------------------------------------- face boxes -> recipe

def map_boxes_to_recipe(
    boxes_orig: np.ndarray,
    widths: Sequence[int] | np.ndarray,
    heights: Sequence[int] | np.ndarray,
    recipe: Recipe,
    labels: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Map (N, 4) boxes (x0, y0, x1, y1) from original-image pixels into the recipe's output pixels.

    Mirrors `Recipe.apply`: "resize" scales x and y separately; "center_crop" shifts by the centred square's corner
    and scales by size/side; "letterbox" scales to the pasted (w, h) and shifts by the padding (fakes are squashed
    like "resize" when `letterbox_apply_to="real"`, which needs `labels`); "face" maps into the square crop built
    around each (face) box. Results are clipped to [0, size]; NaN rows stay NaN.
    """
    boxes = np.asarray(boxes_orig, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) array of x0, y0, x1, y1, got shape {boxes.shape}")
    w = np.asarray(widths, dtype=np.float64).reshape(-1)
    h = np.asarray(heights, dtype=np.float64).reshape(-1)
    if not len(w) == len(h) == len(boxes):
        raise ValueError(f"{len(boxes)} boxes, {len(w)} widths and {len(h)} heights must have the same length")
    if np.any(w < 1) or np.any(h < 1):
        raise ValueError("image widths and heights must be >= 1")
    s = float(recipe.size)
    # per image: output = (input - offset_in) * scale + offset_out, along x and along y
    off_x = np.zeros_like(w)
    off_y = np.zeros_like(h)
    scale_x, scale_y = s / w, s / h
    pad_x = np.zeros_like(w)
    pad_y = np.zeros_like(h)
    if recipe.mode == "center_crop":
        side = np.minimum(w, h)
        off_x, off_y = np.floor((w - side) / 2), np.floor((h - side) / 2)
        scale_x = scale_y = s / side
    elif recipe.mode == "letterbox":
        padded = np.ones(len(boxes), dtype=bool)
        if recipe.letterbox_apply_to == "real":
            if labels is None:
                raise ValueError("letterbox_apply_to='real' needs the image labels")
            lab = np.asarray(labels).reshape(-1)
            if len(lab) != len(boxes):
                raise ValueError(f"{len(lab)} labels for {len(boxes)} boxes")
            padded = lab.astype(int) != 1
        scale = s / np.maximum(w, h)
        # same rounding as Recipe._letterbox: Python's round (half to even), as np.round
        new_w, new_h = np.maximum(1, np.round(w * scale)), np.maximum(1, np.round(h * scale))
        scale_x = np.where(padded, new_w / w, s / w)
        scale_y = np.where(padded, new_h / h, s / h)
        pad_x = np.where(padded, np.floor((s - new_w) / 2), 0.0)
        pad_y = np.where(padded, np.floor((s - new_h) / 2), 0.0)
    elif recipe.mode == "face":
        side = np.minimum(w, h)  # no box: the recipe centre-crops (its mapped box is NaN anyway)
        off_x, off_y = np.floor((w - side) / 2), np.floor((h - side) / 2)
        for i in np.flatnonzero(np.all(np.isfinite(boxes), axis=1)):
            # one call per image into the recipe itself, so the crop square can never drift from Recipe.apply
            left, top, right, _ = recipe._face_square(boxes[i], int(w[i]), int(h[i]))
            off_x[i], off_y[i], side[i] = left, top, right - left
        scale_x = scale_y = s / side
    elif recipe.mode != "resize":
        raise ValueError(f"cannot map boxes for recipe mode {recipe.mode!r}")
    xs = (boxes[:, [0, 2]] - off_x[:, None]) * scale_x[:, None] + pad_x[:, None]
    ys = (boxes[:, [1, 3]] - off_y[:, None]) * scale_y[:, None] + pad_y[:, None]
    out = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)
    return np.clip(out, 0.0, s)  # NaN passes through np.clip


# ----------------------------------------------------------------------------------------------- display

def overlay(img_uint8: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """HxWx3 uint8 picture of `cam` (HxW, [0, 1]) as a jet heat map over the RGB image."""
    img = np.asarray(img_uint8)
    cam = np.asarray(cam, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"overlay expects an HxWx3 uint8 image, got shape {img.shape} dtype {img.dtype}")
    if cam.shape != img.shape[:2]:
        raise ValueError(f"cam shape {cam.shape} does not match the image's {img.shape[:2]}")
    return show_cam_on_image(img.astype(np.float32) / 255.0, np.clip(cam, 0.0, 1.0), use_rgb=True,
                             image_weight=image_weight)


# ----------------------------------------------------------------------------------------------- choosing and summarising

def select_examples(predictions: pd.DataFrame, n_per_cell: int, seed: int, threshold: float = 0.5) -> pd.DataFrame:
    """Up to `n_per_cell` random rows from each cell real/fake x correct/wrong (prediction: probability >= threshold).

    Adds `correct` (bool) and `cell` ("real correct", "real wrong", "fake correct", "fake wrong"); keeps the input's
    index so rows can be traced back. Rows without a probability are skipped; a cell with fewer rows gives them all.
    """
    missing = {"label", "probability"} - set(predictions.columns)
    if missing:
        raise ValueError(f"predictions lack columns {sorted(missing)}")
    if n_per_cell < 0:
        raise ValueError(f"n_per_cell must be >= 0, got {n_per_cell}")
    frame = predictions[predictions["probability"].notna()].copy()
    label = frame["label"].astype(int)
    if not label.isin([0, 1]).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    frame["correct"] = (frame["probability"].to_numpy() >= threshold).astype(int) == label.to_numpy()
    frame["cell"] = label.map(CLASS_NAMES) + np.where(frame["correct"], " correct", " wrong")
    rng = np.random.default_rng(seed)
    picked = []
    for cell in CELLS:
        rows = frame[frame["cell"] == cell]
        take = min(n_per_cell, len(rows))
        picked.append(rows.iloc[np.sort(rng.choice(len(rows), size=take, replace=False))])
    return pd.concat(picked)


def cam_energy_table(
    cams: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    boxes: np.ndarray | None = None,
    border_frac: float = 0.15,
) -> pd.DataFrame:
    """One row per CAM: label, correct, border_share, centre_share, face_share and face_area_share (NaN without boxes).

    `face_area_share` is what a uniform CAM would put in the face box: compare face_share against it.
    """
    cams = _check_cams(cams)
    n = len(cams)
    labels, correct = np.asarray(labels).reshape(-1), np.asarray(correct).reshape(-1)
    if not len(labels) == len(correct) == n:
        raise ValueError(f"{n} CAMs, {len(labels)} labels and {len(correct)} correct flags must have the same length")
    border = border_energy_share(cams, border_frac)
    face = area = np.full(n, np.nan)
    if boxes is not None:
        face = box_energy_share(cams, boxes)
        area = box_area_share(boxes, cams.shape[1], cams.shape[2])
    return pd.DataFrame({"label": labels.astype(int), "correct": correct.astype(bool), "border_share": border,
                         "centre_share": 1.0 - border, "face_share": face, "face_area_share": area})


def compare_energy(table: pd.DataFrame, by: str = "label", value: str = "border_share") -> pd.DataFrame:
    """Per group of `by`: n, mean and std of `value`, and a two-sided Mann-Whitney U test between the two groups.

    The test columns (u_statistic, p_value, rank_biserial = 2U/(n1 n2) - 1, positive when the FIRST group's values
    tend to be larger) describe the pair, so they repeat on both rows; NaN unless there are exactly two groups
    with data. With by="label" a `class` column names 0/1 as real/fake.
    """
    for col in (by, value):
        if col not in table.columns:
            raise ValueError(f"table has no column {col!r}; columns: {', '.join(table.columns)}")
    data = table[[by, value]].dropna()
    summary = data.groupby(by, sort=True)[value].agg(n="count", mean="mean", std="std").reset_index()
    summary["mean_pm_std"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(summary["mean"], summary["std"])]
    u = p = effect = np.nan
    if len(summary) == 2:
        first, second = (data.loc[data[by] == g, value].to_numpy() for g in summary[by])
        res = mannwhitneyu(first, second, alternative="two-sided")
        u, p = float(res.statistic), float(res.pvalue)
        effect = 2.0 * u / (len(first) * len(second)) - 1.0
    summary["u_statistic"], summary["p_value"], summary["rank_biserial"] = u, p, effect
    if by == "label":
        summary.insert(1, "class", summary[by].astype(int).map(CLASS_NAMES))
    return summary
