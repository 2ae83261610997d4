"""The Grad-CAM deep dive (notebook 07): where do the stored models look?

`cam_grid_size` (is the target layer more than one cell?), `explain_run` (CAMs and energy shares of one stored run
on selected test images), energy shares against the uniform expectation, and the CAM figures.
"""


from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

from lib.data.recipes import Recipe
from lib.evaluation.stats import holm, summarize, verdict


def cam_grid_size(model: torch.nn.Module, model_name: str, image_size: int) -> tuple[int, int]:
    """Spatial size (h, w) of the Grad-CAM target layer's output for a square input of `image_size` px.

    A 1x1 map carries no spatial information (every CAM is constant), so callers skip such models.
    """
    from lib.models import gradcam_reshape_transform, gradcam_target_layers

    layers = gradcam_target_layers(model_name, model)
    reshape = gradcam_reshape_transform(model_name)
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: seen.append(out)) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = seen[0]
    if reshape is not None:
        out = reshape(out)
    return int(out.shape[-2]), int(out.shape[-1])


def normalised_inputs(images: np.ndarray, rows: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float32 (N, 3, S, S) tensor of `images[rows]` (uint8 cache) normalised exactly as in training/evaluation."""
    x = torch.from_numpy(np.ascontiguousarray(images[np.asarray(rows, dtype=np.int64)])).float() / 255.0
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


@dataclass
class RunExplanation:
    """CAMs of one stored run on selected test images."""

    run_key: str
    model: str
    recipe: Recipe
    grid: tuple[int, int]
    examples: pd.DataFrame          # selected prediction rows (row, path, source, label, probability, cell, correct)
    images: np.ndarray              # (N, S, S, 3) uint8 model inputs
    cams: dict[str, np.ndarray]     # method -> (N, S, S) in [0, 1]
    energy: pd.DataFrame            # one row per (method, image): border/centre/face shares + example columns


def explain_run(run_key: str, dataset: Any, n_per_cell: int = 4, seed: int = 42,
                methods: Sequence[str] = ("gradcam", "gradcam++"), border_frac: float = 0.15,
                face_boxes: pd.DataFrame | None = None, threshold: float = 0.5, split: str = "test",
                target: str = "predicted", min_cells: int = 2, progress: bool = False, runs_dir: str | Path | None = None,
                cache_dir: str | Path | None = None) -> RunExplanation | str:
    """Grad-CAM (and Grad-CAM++) of the stored run `run_key` on up to `n_per_cell` images of each cell real/fake x
    correct/wrong of its `split` predictions (decided at `threshold`), with border/centre/face energy shares.

    Inputs come from the run's own recipe (tensor cache) and normalisation (metrics.json). `face_boxes`: the
    `lib.data.faces.face_boxes` table of the manifest (original pixels), mapped into the recipe's pixels for the face
    shares, and needed to rebuild a face-crop recipe's cache. Returns a string (the reason) instead when the CAMs
    would carry (almost) no spatial information (target layer smaller than `min_cells` per side; a 1x1 map never
    carries any) or there is nothing to explain.
    """
    from lib.data.cache import build_cache
    from lib.paths import CACHE_DIR, RUNS_DIR
    from lib.report.explain import (
        cam_energy_table,
        compute_cams,
        map_boxes_to_recipe,
        select_examples,
    )
    from lib.training.runstore import load_model, load_run

    run = load_run(Path(runs_dir or RUNS_DIR) / run_key)
    spec = run.spec
    if spec.dataset != dataset.fingerprint:
        raise ValueError(f"run {run_key} was trained on dataset {spec.dataset}, not {dataset.fingerprint}")
    model = load_model(run.run_dir)
    grid = cam_grid_size(model, spec.model, spec.recipe.size)
    if grid[0] * grid[1] <= 1 or min(grid) < min_cells:
        return (f"{spec.model} at {spec.recipe.size} px: its Grad-CAM map is {grid[0]}x{grid[1]} cells (minimum "
                f"{min_cells} per side; a 1x1 map carries no spatial information): skipped, needs a larger input")
    preds = run.predictions[run.predictions["split"] == split]
    if preds.empty:
        return f"run {run_key} has no {split} predictions"
    examples = select_examples(preds, n_per_cell, seed, threshold=threshold)
    if examples.empty:
        return f"run {run_key}: no {split} images to explain"
    manifest = dataset.manifest
    boxes_all = None if face_boxes is None else face_boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    cache = build_cache(manifest, spec.recipe, boxes=boxes_all if spec.recipe.needs_boxes else None,
                        cache_dir=cache_dir or CACHE_DIR, progress=progress)
    rows = examples["row"].to_numpy(np.int64)
    norm = run.metrics["normalization"]
    x = normalised_inputs(cache, rows, norm["mean"], norm["std"])
    boxes = None
    if boxes_all is not None:
        m = manifest.iloc[rows]
        boxes = map_boxes_to_recipe(boxes_all[rows], m["width"], m["height"], spec.recipe, m["label"])
    cams, tables = {}, []
    for method in methods:
        cams[method] = compute_cams(model, spec.model, x, method=method, target=target, progress=progress)
        table = cam_energy_table(cams[method], examples["label"], examples["correct"], boxes, border_frac)
        ex = examples[["row", "path", "source", "probability", "cell"]].reset_index(drop=True)
        tables.append(pd.concat([ex, table], axis=1).assign(method=method, run_key=run_key, model=spec.model,
                                                              image_size=spec.recipe.size))
    images = np.ascontiguousarray(np.asarray(cache[rows]).transpose(0, 2, 3, 1))
    return RunExplanation(run_key, spec.model, spec.recipe, grid, examples.reset_index(drop=True), images, cams,
                          pd.concat(tables, ignore_index=True))


def energy_vs_uniform(energy: pd.DataFrame, by: Sequence[str], value: str = "border_share",
                      expected: float | str = 0.0) -> pd.DataFrame:
    """Per group of `by`: mean share with its 95 % t-interval, the uniform expectation, and a two-sided Wilcoxon
    signed-rank test of share - expectation. `expected` is a number (e.g. the border band's area share) or a column
    name holding a per-image expectation (e.g. face_area_share). verdict: "above uniform", "below uniform" or
    "not different" from the interval of the mean difference."""
    rows = []
    for key, g in energy.groupby(list(by), sort=False):
        exp = g[expected] if isinstance(expected, str) else pd.Series(float(expected), index=g.index)
        keep = g[value].notna() & exp.notna()
        diff = (g.loc[keep, value] - exp[keep]).to_numpy()
        s = summarize(diff)
        p = math.nan
        if len(diff) >= 2 and np.any(diff != 0):
            p = float(sps.wilcoxon(diff).pvalue)
        word = {"supported": "above uniform", "contradicted": "below uniform",
                "inconclusive": "not different"}[verdict(s["ci_low"], s["ci_high"], "greater")]
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "n": s["n"], f"mean_{value}": float(g.loc[keep, value].mean()),
                     "expected": float(exp[keep].mean()) if keep.any() else math.nan, "mean_excess": s["mean"],
                     "excess_ci_low": s["ci_low"], "excess_ci_high": s["ci_high"], "wilcoxon_p": p, "finding": word})
    return pd.DataFrame(rows)


def energy_comparisons(energy: pd.DataFrame, by: str, pairs: Sequence[tuple[Any, Any]], within: Sequence[str] = (),
                       value: str = "border_share") -> pd.DataFrame:
    """Mann-Whitney U comparisons of `value` between levels a and b of `by` (per group of the `within` columns),
    via `lib.report.explain.compare_energy`; Holm over every row. Columns: within..., a, b, n_a, n_b, mean_a, mean_b,
    diff (a - b), p_value, p_holm. Pairs missing a level are skipped."""
    from lib.report.explain import compare_energy

    groups = energy.groupby(list(within), sort=False) if within else [((), energy)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        for a, b in pairs:
            sub = g[g[by].isin([a, b])]
            if sub.dropna(subset=[value])[by].nunique() < 2:
                continue
            cmp = compare_energy(sub, by=by, value=value).set_index(by)
            rows.append({**dict(zip(within, key)), "a": a, "b": b, "n_a": int(cmp.loc[a, "n"]),
                         "n_b": int(cmp.loc[b, "n"]), "mean_a": float(cmp.loc[a, "mean"]),
                         "mean_b": float(cmp.loc[b, "mean"]), "diff": float(cmp.loc[a, "mean"] - cmp.loc[b, "mean"]),
                         "p_value": float(cmp["p_value"].iloc[0])})
    table = pd.DataFrame(rows, columns=[*within, "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff", "p_value"])
    table["p_holm"] = holm(table["p_value"].to_numpy()) if len(table) else []
    return table


def plot_cams(explanation: RunExplanation, method: str = "gradcam", title: str = "", ncols: int = 8,
              path: str | Path | None = None):
    """Each explained image with its CAM overlaid, titled with its cell and probability."""
    from lib.report.explain import overlay
    from lib.report.plots import image_grid

    cams = explanation.cams[method]
    pictures = [overlay(img, cam) for img, cam in zip(explanation.images, cams)]
    ex = explanation.examples
    titles = [f"{c}\n{s} p={p:.2f}" for c, s, p in zip(ex["cell"], ex["source"], ex["probability"])]
    return image_grid(pictures, titles, ncols=max(1, min(ncols, len(pictures))), size=1.8,
                      suptitle=title or f"{method}: {explanation.model} @ {explanation.recipe.size} px", path=path)


def plot_cam_rows(explanations: dict[str, RunExplanation], method: str | dict[str, str] = "gradcam", n_show: int = 8,
                  title: str = "", path: str | Path | None = None):
    """One row per entry of `explanations` (row label -> run): `n_show` of its images (spread over the real/fake x
    correct/wrong cells) with the CAM of `method` overlaid (a dict gives each row label its own method)."""
    import matplotlib.pyplot as plt

    from lib.report.explain import overlay
    from lib.report.plots import save

    labels = list(explanations)
    if not labels:
        raise ValueError("plot_cam_rows: nothing to plot")
    fig, axes = plt.subplots(len(labels), n_show, figsize=(1.5 * n_show, 1.75 * len(labels)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r, label in enumerate(labels):
        e = explanations[label]
        pick = np.unique(np.linspace(0, len(e.images) - 1, min(n_show, len(e.images))).round().astype(int))
        for c, i in enumerate(pick):
            ax = axes[r, c]
            ax.imshow(overlay(e.images[i], e.cams[method[label] if isinstance(method, dict) else method][i]))
            ex = e.examples.iloc[i]
            ax.set_title(f"{ex['cell']}\np={ex['probability']:.2f}", fontsize=6)
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title or str(method))
    fig.tight_layout()
    return save(fig, path)


def plot_energy_excess(table: pd.DataFrame, label: str = "subject", title: str = "", path: str | Path | None = None):
    """Horizontal bars of `mean_excess` (share minus its uniform expectation) with 95 % intervals, one per row."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    t = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(t) + 1.2))
    err = np.vstack([t["mean_excess"] - t["excess_ci_low"], t["excess_ci_high"] - t["mean_excess"]])
    ax.barh(np.arange(len(t)), t["mean_excess"], xerr=np.nan_to_num(err), capsize=3,
            color=np.where(t["mean_excess"] > 0, "tab:red", "tab:blue"), alpha=0.7)
    ax.set_yticks(np.arange(len(t)), t[label].astype(str), fontsize=7)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="energy share minus the share of a uniform map (mean, 95 % CI)", title=title)
    fig.tight_layout()
    return save(fig, path)
