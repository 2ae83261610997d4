"""Phase 3 (notebook 05): which architecture is best at what cost, with Phase 2's preprocessing.

- Preprocessing: `load_recommendation` reads Phase 2's `phase2_recommendation.json` (or falls back to the Phase 1
  baseline recipe and says so); `recipe_boxes` gives the face boxes a face-crop recipe needs.
- Candidates: `Candidate`, `candidates` (adds ImageNet-pretrained variants when their weight files are installed),
  `run_candidates` (run_cv for each, tables labelled by candidate).
- Speed: `seconds_per_epoch` (from the run histories), `inference_speed` (images/s on this machine).
- Statistics: `compare_to_references` (paired tests, Holm over the family), `select_models` (the computed rule).
"""


from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from lib.data.augment import AugmentPolicy
from lib.data.recipes import Recipe
from lib.evaluation.stats import holm, summarize
from lib.fileio import read_json
from lib.training.fit import NORMALIZATIONS, TrainConfig


@dataclass(frozen=True)
class Preprocessing:
    """What Phase 3 trains with: a recipe, a training-time augmentation policy and the input normalisation."""

    recipe: Recipe
    augment: AugmentPolicy | None
    normalization: str
    condition: str
    rule: str
    origin: str  # where it came from, in words (shown by the notebooks)
    face_min_confidence: float = 0.9  # MTCNN threshold of the face boxes a face-crop recipe was built with

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """`base` (the Phase 1 training configuration) with this augmentation and normalisation."""
        return replace(base, augment=self.augment, normalization=self.normalization)

    def with_size(self, size: int) -> "Preprocessing":
        """The same preprocessing at another input size (0 keeps the recommended size)."""
        if size < 0:
            raise ValueError(f"size must be >= 0 (0 keeps the recommended size), got {size}")
        if size == 0 or size == self.recipe.size:
            return self
        return replace(self, recipe=replace(self.recipe, size=int(size)),
                       origin=f"{self.origin}; input size overridden to {size} px by the parameters")

    def describe(self) -> str:
        aug = "no augmentation" if self.augment is None else f"augmentation {self.augment}"
        return (f"{self.origin}: condition {self.condition!r}, {self.recipe}, {aug}, "
                f"normalisation {self.normalization!r}")


def load_recommendation(path: str | Path, fallback_recipe: Recipe, use: bool = True) -> Preprocessing:
    """Phase 2's recommended preprocessing from its JSON, else the Phase 1 baseline (plain resize, ImageNet statistics).

    The JSON needs `recipe` (a `Recipe.to_dict()`), `augment` (an `AugmentPolicy` dict or null) and `normalization`;
    `condition` and `rule` are shown when present. A file with a missing or invalid field is an error that names it.
    """
    path = Path(path)
    fallback = Preprocessing(fallback_recipe, None, "imagenet", "phase1_baseline",
                             "Phase 1 baseline: plain square resize, no augmentation, ImageNet statistics", "")
    if not use:
        return replace(fallback, origin="Phase 1 baseline (use_phase2_recommendation is off)")
    if not path.is_file():
        return replace(fallback, origin=f"Phase 1 baseline ({path.name} not found: notebook 04 has not run)")
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in ("recipe", "augment", "normalization") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}; expected recipe, augment, normalization")
    try:
        recipe = Recipe.from_dict(data["recipe"])
        augment = AugmentPolicy.from_dict(data["augment"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid recipe or augment: {err}") from err
    if data["normalization"] not in NORMALIZATIONS:
        raise ValueError(f"{path}: normalization {data['normalization']!r} is not one of {NORMALIZATIONS}")
    return Preprocessing(recipe, augment, data["normalization"], str(data.get("condition", "")),
                         str(data.get("rule", "")), f"Phase 2 recommendation ({path.name})",
                         float(data.get("face_min_confidence", 0.9)))


def recipe_boxes(manifest: pd.DataFrame, recipe: Recipe, min_confidence: float = 0.9) -> np.ndarray | None:
    """(N, 4) face boxes (x0, y0, x1, y1; NaN = no face) for a face-crop recipe, None for any other recipe.

    `min_confidence` must be the MTCNN threshold the recipe's runs were trained with (Phase 2 records it)."""
    if not recipe.needs_boxes:
        return None
    from lib.data.faces import face_boxes  # MTCNN, cached on disk by notebook 02

    return face_boxes(manifest, min_confidence=min_confidence)[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)


@dataclass(frozen=True)
class Candidate:
    """One compared model: a display label, the registry name and the kwargs passed to `create_model`."""

    label: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "model": self.model, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return cls(d["label"], d["model"], dict(d.get("kwargs") or {}))


def pretrained_weights_found(name: str) -> Path | None:
    """The local ImageNet checkpoint `create_model(name, pretrained=True)` would load, or None."""
    from lib.models import weight_candidates

    return next((p for p in weight_candidates(name) if p.is_file()), None)


def candidates(models: Sequence[str], pretrained: Sequence[str] = ()) -> tuple[list[Candidate], list[str]]:
    """Candidates trained from scratch for `models`, plus an ImageNet-initialised variant of each name in `pretrained`
    whose weight file is installed (notes say which were skipped and why). Unknown names raise with the valid list."""
    from lib.models import list_models, model_info

    valid = set(list_models())
    unknown = [m for m in [*models, *pretrained] if m not in valid]
    if unknown:
        raise KeyError(f"unknown model(s) {unknown}; valid names: {', '.join(sorted(valid))}")
    out = [Candidate(m, m) for m in dict.fromkeys(models)]
    notes = []
    for name in dict.fromkeys(pretrained):
        if not model_info(name)["pretrained_available"]:
            notes.append(f"{name}: no ImageNet weights exist for it (trained from scratch only)")
        elif (found := pretrained_weights_found(name)) is None:
            notes.append(f"{name}: ImageNet weight file {model_info(name)['weight_file']} not installed; "
                         f"pretrained variant skipped")
        else:
            out.append(Candidate(f"{name} (ImageNet)", name, {"pretrained": True}))
            notes.append(f"{name}: pretrained variant from {found}")
    return out, notes


def run_candidates(dataset: Any, splits: pd.DataFrame, recipe: Recipe, config: TrainConfig,
                   entries: Sequence[Candidate], boxes: np.ndarray | None = None, folds: Sequence[int] | None = None,
                   progress: bool = True, **store_kw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`run_cv` for every candidate (stored runs are loaded): (fold table, predictions), with `model` = the label and
    `architecture` = the registry name. `store_kw`: runs_dir, cache_dir (default: the project's run store and cache)."""
    from lib.training.runstore import collect_predictions, run_cv

    if not entries:
        raise ValueError("run_candidates: no candidates given")
    frames = []
    for c in entries:
        cv = run_cv(dataset, splits, recipe, c.model, config, model_kwargs=c.kwargs or None, folds=folds,
                    boxes=boxes, progress=progress, **store_kw)
        frames.append(cv.assign(model=c.label, architecture=c.model))
    cv = pd.concat(frames, ignore_index=True)
    runs_dir = {k: v for k, v in store_kw.items() if k == "runs_dir"}
    return cv, label_predictions(collect_predictions(cv, **runs_dir), cv)


def label_predictions(predictions: pd.DataFrame, cv: pd.DataFrame, column: str = "model") -> pd.DataFrame:
    """Copy of `predictions` whose `column` is taken from `cv` by run key (e.g. a candidate label or a condition)."""
    mapping = dict(zip(cv["run_key"], cv[column]))
    unknown = set(predictions["run_key"]) - set(mapping)
    if unknown:
        raise ValueError(f"{len(unknown)} prediction run key(s) are not in the fold table")
    return predictions.assign(**{column: predictions["run_key"].map(mapping)})


def seconds_per_epoch(history: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """Mean, std and interval of the wall time of one training epoch, over every epoch of every fold, per level."""
    if "seconds" not in history.columns:
        raise ValueError("history has no 'seconds' column")
    rows = [{by: level, **{f"epoch_seconds_{k}": v for k, v in summarize(g["seconds"]).items()}}
            for level, g in history.groupby(by, sort=False)]
    return pd.DataFrame(rows).set_index(by)


def inference_speed(model: torch.nn.Module, image_size: int, batch_size: int = 32, repeats: int = 5,
                    warmup: int = 1, device: str = "cpu", seed: int = 0) -> dict[str, float]:
    """Forward passes per second of `model` on a fixed random (batch_size, 3, S, S) batch under torch.inference_mode.

    Returns images_per_s (batch_size / median batch time), batch_ms_median, batch_ms_min and the torch thread count
    (the number depends on the machine and its load: compare models measured in the same session only).
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, repeats >= 1, warmup >= 0; got {batch_size}, {repeats}, {warmup}")
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed)).to(device)
    was_training = model.training
    model = model.to(device).eval()
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    median = float(np.median(times))
    return {"images_per_s": batch_size / median, "batch_ms_median": 1000 * median, "batch_ms_min": 1000 * min(times),
            "batch_size": batch_size, "threads": torch.get_num_threads()}


def compare_to_references(cv: pd.DataFrame, by: str, references: Sequence[str], others: Sequence[str],
                          metrics: Sequence[str] = ("test_auc",), direction: str = "greater") -> pd.DataFrame:
    """Every level in `others` against every level in `references` (a - b = other - reference), per metric, paired
    over folds; Holm correction over ALL rows (one family). Pairs of a level with itself are skipped."""
    from lib.evaluation.compare import paired_comparison

    levels = set(cv[by])
    missing = [lvl for lvl in [*references, *others] if lvl not in levels]
    if missing:
        raise ValueError(f"{missing} not in column {by!r}; levels: {sorted(levels)}")
    rows = [paired_comparison(cv, by, other, ref, metric, direction)
            for ref in references for other in others if other != ref for metric in metrics]
    table = pd.DataFrame(rows)
    if len(table):
        table["t_p_holm"] = holm(table["t_p"].to_numpy())
        table["wilcoxon_p_holm"] = holm(table["wilcoxon_p"].to_numpy())
    return table


SELECTION_RULE = (
    "Rank by mean {metric} over folds (ties: fewer parameters). Select the best model, then, in rank order, up to "
    "{k_minus_1} more whose paired difference to the best (best - model, 95 % t-interval over folds) includes 0, i.e. "
    "models not shown to be worse; a model whose interval lies above 0 is significantly worse and is not selected.")


def select_models(cv: pd.DataFrame, by: str = "model", metric: str = "test_auc", k: int = 2,
                  parameters: pd.Series | dict | None = None) -> tuple[pd.DataFrame, list[str], str]:
    """The Phase 3 selection rule (see `SELECTION_RULE`): (ranking table, selected levels, rule text).

    Ranking columns: rank, by, mean, std, ci_low, ci_high, n, parameters, diff_to_best (best - level) with its
    interval and paired t p, significantly_worse, selected.
    """
    from lib.evaluation.compare import paired_comparison

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if metric not in cv.columns:
        raise ValueError(f"fold table has no column {metric!r}")
    params = pd.Series(parameters if parameters is not None else {}, dtype=float)
    rows = []
    for level, group in cv.groupby(by, sort=False):
        rows.append({by: level, **summarize(group[metric]), "parameters": params.get(level, math.nan)})
    rank = pd.DataFrame(rows)
    if rank["mean"].isna().all():
        raise ValueError(f"{metric} is NaN for every model: nothing to select")
    rank = rank.sort_values(["mean", "parameters"], ascending=[False, True], na_position="last").reset_index(drop=True)
    rank.insert(0, "rank", np.arange(1, len(rank) + 1))
    best = rank.loc[0, by]
    diffs = []
    for level in rank[by]:
        if level == best:
            diffs.append({"diff_to_best": 0.0, "diff_ci_low": 0.0, "diff_ci_high": 0.0, "diff_t_p": math.nan})
            continue
        r = paired_comparison(cv, by, best, level, metric, "greater")
        diffs.append({"diff_to_best": r["mean_diff"], "diff_ci_low": r["diff_ci_low"],
                      "diff_ci_high": r["diff_ci_high"], "diff_t_p": r["t_p"]})
    rank = pd.concat([rank, pd.DataFrame(diffs)], axis=1)
    # with fewer than two paired folds there is no interval: nothing can be shown worse (NaN -> False)
    rank["significantly_worse"] = rank["diff_ci_low"] > 0
    selected = [best]
    for _, row in rank.iloc[1:].iterrows():
        if len(selected) >= k:
            break
        if not row["significantly_worse"]:
            selected.append(row[by])
    rank["selected"] = rank[by].isin(selected)
    rule = SELECTION_RULE.format(metric=metric, k_minus_1=k - 1)
    return rank, selected, rule


def plot_metric_vs(table: pd.DataFrame, x: str, label: str = "model", metric: str = "AUC", logx: bool = True,
                   path: str | Path | None = None):
    """Scatter of `mean` (with its 95 % interval as error bars) against column `x`, one annotated point per row."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    err = np.vstack([table["mean"] - table["ci_low"], table["ci_high"] - table["mean"]])
    ax.errorbar(table[x], table["mean"], yerr=np.nan_to_num(err), fmt="o", capsize=4)
    for _, r in table.iterrows():
        ax.annotate(str(r[label]), (r[x], r["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=x.replace("_", " "), ylabel=f"test {metric} (mean, 95 % CI over folds)")
    fig.tight_layout()
    return save(fig, path)
