"""Phase 3 (architectures), Phase 4 (data scaling, final evaluation) and the Grad-CAM deep dive: the shared steps.

Notebooks 05-07 call these; each function is a pure step over the tidy tables of `lib.runstore`
(`run_cv` rows, `collect_predictions` rows) or over one stored run.

- Preprocessing: `load_recommendation` reads Phase 2's `phase2_recommendation.json` (or falls back to the Phase 1
  baseline recipe and says so); `recipe_boxes` gives the face boxes a face-crop recipe needs.
- Candidates: `Candidate` (label, registry name, model kwargs), `candidates` (adds ImageNet-pretrained variants when
  their weight files are installed), `run_candidates` (run_cv for each, tables labelled by candidate).
- Speed: `seconds_per_epoch` (from the run histories), `inference_speed` (images/s on this machine, fixed batch).
- Statistics: `compare_to_references` (paired tests, Holm over the whole family), `select_models` (the computed rule
  of Phase 3), `learning_curve` / `scaling_delta` / `scaling_split_check` (Phase 4A), `reliability_tables` and
  `hard_examples` (Phase 4B).
- Grad-CAM: `cam_grid_size` (is the target layer more than one cell?), `explain_run` (CAMs and energy shares of
  one stored run on selected test images).
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
from scipy import stats as sps

from lib.augment import AugmentPolicy
from lib.fileio import read_json
from lib.recipes import Recipe
from lib.stats import holm, summarize, verdict
from lib.training import NORMALIZATIONS, TrainConfig

# ----------------------------------------------------------------------------------------------- preprocessing


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
    from lib.faces import face_boxes  # MTCNN, cached on disk by notebook 02

    return face_boxes(manifest, min_confidence=min_confidence)[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)


# ----------------------------------------------------------------------------------------------- candidates


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
    from lib.runstore import collect_predictions, run_cv

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


# ----------------------------------------------------------------------------------------------- speed


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


# ----------------------------------------------------------------------------------------------- comparisons


def compare_to_references(cv: pd.DataFrame, by: str, references: Sequence[str], others: Sequence[str],
                          metrics: Sequence[str] = ("test_auc",), direction: str = "greater") -> pd.DataFrame:
    """Every level in `others` against every level in `references` (a - b = other - reference), per metric, paired
    over folds; Holm correction over ALL rows (one family). Pairs of a level with itself are skipped."""
    from lib.analysis import paired_comparison

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
    from lib.analysis import paired_comparison

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


# ----------------------------------------------------------------------------------------------- Phase 4A: data scaling


def scaling_splits(manifest: pd.DataFrame, fractions: Sequence[float],
                   **split_kw: Any) -> tuple[dict[float, pd.DataFrame], dict[float, str]]:
    """One split table per training-data fraction (`make_splits(subsample=f)`; whole groups, stratified by the label
    mix of the groups), and, for fractions that cannot be split (e.g. too few real photographs left for every fold to
    hold both classes), the reason. `split_kw`: n_folds, test_ratio, val_ratio, seed, holdout_sources, cache_dir."""
    from lib.splits import SplitError, make_splits

    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must be in (0, 1], got {fractions}")
    if len(set(fractions)) != len(fractions):
        raise ValueError(f"fractions repeat: {fractions}")
    splits, infeasible = {}, {}
    for f in sorted(fractions):
        try:
            splits[f] = make_splits(manifest, subsample=f, **split_kw)
        except SplitError as err:
            infeasible[f] = str(err)
    if not splits:
        raise ValueError(f"no fraction of {fractions} can be split: {infeasible}")
    return splits, infeasible


def scaling_split_check(splits_by_fraction: dict[float, pd.DataFrame], manifest: pd.DataFrame) -> pd.DataFrame:
    """Per fraction: training images (real/fake, groups), share of the largest fraction's trainval, and checks that
    the test and holdout rows are identical to the largest fraction's, that trainval is a subset of it, and which
    share of the kept rows keeps its fold number (folds are re-drawn per fraction by make_splits)."""
    ref_f = max(splits_by_fraction)
    ref = splits_by_fraction[ref_f]
    ref_trainval = (ref["split"] == "trainval").to_numpy()
    labels, groups = manifest["label"].to_numpy(), manifest["group"].to_numpy()
    rows = []
    for f, s in sorted(splits_by_fraction.items()):
        if len(s) != len(manifest):
            raise ValueError(f"split table of fraction {f} has {len(s)} rows, the manifest {len(manifest)}")
        tv = (s["split"] == "trainval").to_numpy()
        rows.append({
            "fraction": f, "trainval": int(tv.sum()), "real": int((labels[tv] == 0).sum()),
            "fake": int((labels[tv] == 1).sum()), "groups": int(len(set(groups[tv]))),
            "share_of_largest": float(tv.sum() / max(ref_trainval.sum(), 1)),
            "test_identical": bool(((s["split"] == "test").to_numpy() == (ref["split"] == "test").to_numpy()).all()),
            "holdout_identical": bool(((s["split"] == "holdout").to_numpy()
                                       == (ref["split"] == "holdout").to_numpy()).all()),
            "trainval_subset": bool(not (tv & ~ref_trainval).any()),
            "same_fold_share": float((s["fold"].to_numpy()[tv] == ref["fold"].to_numpy()[tv]).mean()) if tv.any()
            else math.nan,
        })
    return pd.DataFrame(rows)


def learning_curve(cv: pd.DataFrame, by: str = "model", x: str = "fraction", metric: str = "test_auc") -> pd.DataFrame:
    """Mean, std and 95 % t-interval of `metric` over folds per (by, x): the points of a learning curve."""
    for col in (by, x, metric):
        if col not in cv.columns:
            raise ValueError(f"fold table has no column {col!r}")
    rows = [{by: level, x: xv, **summarize(g[metric])} for (level, xv), g in cv.groupby([by, x], sort=True)]
    return pd.DataFrame(rows)


def scaling_delta(cv: pd.DataFrame, by: str = "model", x: str = "fraction", low: float = 0.2, high: float = 1.0,
                  metric: str = "test_auc", confidence: float = 0.95) -> pd.DataFrame:
    """Per level of `by`: mean metric at `high` minus at `low` with a Welch t-interval and p-value.

    The fold models of two fractions are trained on different data (folds are re-drawn per fraction), so the folds
    are NOT paired: Welch's unpaired test is the honest one. verdict: "supported" when the interval lies above 0.
    """
    rows = []
    for level, g in cv.groupby(by, sort=False):
        a = g.loc[np.isclose(g[x], high), metric].dropna().to_numpy()
        b = g.loc[np.isclose(g[x], low), metric].dropna().to_numpy()
        row = {by: level, "low": low, "high": high, "n_low": len(b), "n_high": len(a),
               "mean_low": float(b.mean()) if len(b) else math.nan,
               "mean_high": float(a.mean()) if len(a) else math.nan}
        row["delta"] = row["mean_high"] - row["mean_low"]
        lo = hi = p = math.nan
        if len(a) >= 2 and len(b) >= 2 and (np.ptp(a) > 0 or np.ptp(b) > 0):
            res = sps.ttest_ind(a, b, equal_var=False)
            ci = res.confidence_interval(confidence)
            lo, hi, p = float(ci.low), float(ci.high), float(res.pvalue)
        row.update(delta_ci_low=lo, delta_ci_high=hi, welch_p=p, verdict=verdict(lo, hi, "greater"))
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- Phase 4B: final evaluation


def reliability_tables(predictions: pd.DataFrame, by: str = "model", split: str = "test",
                       n_bins: int = 10) -> pd.DataFrame:
    """Reliability-diagram points per level of `by`: every fold model's predictions on `split` pooled
    (`lib.metrics.calibration_table`: bin, mean predicted probability, observed fake fraction, count)."""
    from lib.metrics import calibration_table

    part = predictions[predictions["split"] == split]
    if part.empty:
        raise ValueError(f"no predictions on split {split!r}")
    frames = [calibration_table(g["label"], g["probability"], n_bins).assign(**{by: level})
              for level, g in part.groupby(by, sort=False)]
    return pd.concat(frames, ignore_index=True)


def hard_examples(predictions: pd.DataFrame, thresholds: pd.Series | dict, by: str = "model", n: int = 8,
                  split: str = "test") -> pd.DataFrame:
    """Most confident errors of each level's fold ensemble on `split`, at its validation-chosen threshold.

    False positives: real images with the highest fake probability above the threshold; false negatives: fakes with
    the lowest probability below it. Columns: by, kind (false positive / false negative), rank, path, source, label,
    probability, threshold. Fewer than `n` rows when the model makes fewer errors.
    """
    from lib.analysis import fold_ensemble

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ens = fold_ensemble(predictions, by=by, split=split)
    frames = []
    for level, g in ens.groupby(by, sort=False):
        if level not in thresholds:
            raise KeyError(f"no threshold for {level!r}")
        t = float(thresholds[level])
        fp = g[(g["label"] == 0) & (g["probability"] >= t)].sort_values("probability", ascending=False).head(n)
        fn = g[(g["label"] == 1) & (g["probability"] < t)].sort_values("probability", ascending=True).head(n)
        for kind, rows in (("false positive", fp), ("false negative", fn)):
            frames.append(rows.assign(kind=kind, rank=np.arange(1, len(rows) + 1), threshold=t))
    cols = [by, "kind", "rank", "path", "source", "label", "probability", "threshold"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


# ----------------------------------------------------------------------------------------------- Grad-CAM of stored runs


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
    `lib.faces.face_boxes` table of the manifest (original pixels), mapped into the recipe's pixels for the face
    shares, and needed to rebuild a face-crop recipe's cache. Returns a string (the reason) instead when the CAMs
    would carry (almost) no spatial information (target layer smaller than `min_cells` per side; a 1x1 map never
    carries any) or there is nothing to explain.
    """
    from lib.cache import build_cache
    from lib.explain import cam_energy_table, compute_cams, map_boxes_to_recipe, select_examples
    from lib.paths import CACHE_DIR, RUNS_DIR
    from lib.runstore import load_model, load_run

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
    via `lib.explain.compare_energy`; Holm over every row. Columns: within..., a, b, n_a, n_b, mean_a, mean_b,
    diff (a - b), p_value, p_holm. Pairs missing a level are skipped."""
    from lib.explain import compare_energy

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


# ----------------------------------------------------------------------------------------------- figures


def plot_metric_vs(table: pd.DataFrame, x: str, label: str = "model", metric: str = "AUC", logx: bool = True,
                   path: str | Path | None = None):
    """Scatter of `mean` (with its 95 % interval as error bars) against column `x`, one annotated point per row."""
    import matplotlib.pyplot as plt

    from lib.plots import save

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


def plot_learning_curve(curve: pd.DataFrame, by: str = "model", x: str = "fraction", metric: str = "AUC",
                        path: str | Path | None = None):
    """Mean metric against the training fraction, one line per level, shaded 95 % interval."""
    import matplotlib.pyplot as plt

    from lib.plots import save

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for level, g in curve.groupby(by, sort=False):
        g = g.sort_values(x)
        line, = ax.plot(g[x], g["mean"], "o-", label=str(level))
        ax.fill_between(g[x], g["ci_low"], g["ci_high"], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="fraction of the training data", ylabel=f"test {metric} (mean, 95 % CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_reliability(tables: pd.DataFrame, by: str = "model", path: str | Path | None = None):
    """Reliability diagram (observed fake fraction vs mean predicted probability), the diagonal is perfect."""
    import matplotlib.pyplot as plt

    from lib.plots import save

    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    for level, g in tables.groupby(by, sort=False):
        line, = ax.plot(g["prob_pred"], g["prob_true"], "-", label=str(level))
        ax.scatter(g["prob_pred"], g["prob_true"], s=10 + 60 * g["count"] / g["count"].max(), color=line.get_color())
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted P(fake)", ylabel="observed fraction of fakes",
           title="reliability (test, fold models pooled)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_confidence_histograms(predictions: pd.DataFrame, by: str = "model", split: str = "test", bins: int = 20,
                               path: str | Path | None = None):
    """Histogram of P(fake) per true class, one panel per level of `by` (fold models pooled)."""
    import matplotlib.pyplot as plt

    from lib.plots import save

    part = predictions[predictions["split"] == split]
    levels = list(dict.fromkeys(part[by]))
    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.2), squeeze=False, sharey=True)
    edges = np.linspace(0, 1, bins + 1)
    for ax, level in zip(axes[0], levels):
        g = part[part[by] == level]
        for label, name, colour in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
            ax.hist(g.loc[g["label"] == label, "probability"], bins=edges, alpha=0.55, color=colour, label=name)
        ax.set(title=str(level), xlabel="P(fake)")
    axes[0][0].set_ylabel("images")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_gallery(rows: pd.DataFrame, title: str, ncols: int = 8, path: str | Path | None = None):
    """Images of `rows` (columns path, source, probability) with their source and probability as titles."""
    from lib.imageio import load_rgb
    from lib.plots import image_grid

    images = [load_rgb(p) for p in rows["path"]]
    titles = [f"{s}\np={p:.2f}" for s, p in zip(rows["source"], rows["probability"])]
    return image_grid(images, titles, ncols=max(1, min(ncols, len(images))), size=1.7,
                      suptitle=title if len(images) else f"{title}: none", path=path)


def plot_cams(explanation: RunExplanation, method: str = "gradcam", title: str = "", ncols: int = 8,
              path: str | Path | None = None):
    """Each explained image with its CAM overlaid, titled with its cell and probability."""
    from lib.explain import overlay
    from lib.plots import image_grid

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

    from lib.explain import overlay
    from lib.plots import save

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

    from lib.plots import save

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
