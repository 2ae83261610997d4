"""Phase 3 (notebook 05): which architecture is best at what cost, with Phase 2's preprocessing.

- Preprocessing: `load_recommendation` reads Phase 2's `phase2_recommendation.json` (or falls back to the Phase 1
  baseline recipe and says so); `recipe_boxes` gives the face boxes a face-crop recipe needs.
- Candidates: `Candidate`, `candidates` (adds ImageNet-pretrained variants when their weight files are installed),
  `run_candidates` (run_cv for each, tables labelled by candidate).
- The notebook's comparison: `Plan` (Phase 1 references, baselines with Phase 3 preprocessing, Phase 3 candidates,
  each `Group` with its recipe and training) and `run_plan` (one fold table with `group` and `image_size`).
- Speed: `seconds_per_epoch` (from the run histories), `inference_speed` (images/s on this machine), `measure_cost`
  (the cost table: parameters, seconds per epoch, images/s).
- Statistics: `compare_to_references` (paired tests, Holm over the family), `reference_tests` (plus DeLong/McNemar
  against the best reference), `select_models` (the computed rule) and `selection_record` (the JSON for notebook 06).
- Report: `conclusions` (computed lines), `headline_table`, `save_conclusions`.
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
from lib.evaluation import compare
from lib.evaluation.stats import holm, summarize
from lib.fileio import read_json, write_json
from lib.paths import RUNS_DIR, figures_dir, tables_dir
from lib.report import save_headline
from lib.studies.phase1 import test_set_comparisons
from lib.training.fit import NORMALIZATIONS, TrainConfig

NOTEBOOK = "05_phase3_architectures"
TITLE = "05 · Phase 3: architectures (ranking)"
HEADLINE_FIGURES = ("phase3_params_vs_auc.png", "phase3_roc_pr.png")
PHASE1_GROUP, REPEATED_GROUP, PHASE3_GROUP = "Phase 1 baseline", "baseline, Phase 3 preprocessing", "Phase 3"
# columns shown by the notebook (the saved tables keep every column)
FOLD_COLUMNS = ["model", "group", "fold", "trained", "epochs", "best_epoch", "seconds", "val_auc", "test_auc",
                "test_accuracy"]
TEST_COLUMNS = ["a", "b", "n", "mean_diff", "diff_ci_low", "diff_ci_high", "t_p", "t_p_holm", "wilcoxon_p_holm",
                "verdict"]


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
    from lib.training.runstore import CVJob

    if not entries:
        raise ValueError("run_candidates: no candidates given")
    jobs = [(c, CVJob(recipe, c.model, config, c.kwargs or None, boxes)) for c in entries]
    return run_labelled(dataset, splits, jobs, folds=folds, progress=progress, **store_kw)


def run_labelled(dataset: Any, splits: pd.DataFrame, jobs: Sequence[tuple[Candidate, Any]],
                 folds: Sequence[int] | None = None, progress: bool = True, tags: Sequence[dict] | None = None,
                 **store_kw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`run_cv_many` over (candidate, `CVJob`) pairs, all sent to the executor together: (fold table, predictions),
    with `model` = the candidate's label, `architecture` = the registry name and the columns of each pair's `tags`."""
    from lib.training.runstore import collect_predictions, run_cv_many

    tables = run_cv_many(dataset, splits, [job for _, job in jobs], folds=folds, progress=progress, **store_kw)
    tags = tags or [{}] * len(jobs)
    cv = pd.concat([table.assign(model=c.label, architecture=c.model, **tag)
                    for (c, _), tag, table in zip(jobs, tags, tables)], ignore_index=True)
    runs_dir = {k: v for k, v in store_kw.items() if k == "runs_dir"}
    return cv, label_predictions(collect_predictions(cv, **runs_dir), cv)


def label_predictions(predictions: pd.DataFrame, cv: pd.DataFrame, column: str = "model") -> pd.DataFrame:
    """Copy of `predictions` whose `column` is taken from `cv` by run key (e.g. a candidate label or a condition)."""
    mapping = dict(zip(cv["run_key"], cv[column]))
    unknown = set(predictions["run_key"]) - set(mapping)
    if unknown:
        raise ValueError(f"{len(unknown)} prediction run key(s) are not in the fold table")
    return predictions.assign(**{column: predictions["run_key"].map(mapping)})


@dataclass(frozen=True)
class Group:
    """Candidates trained with one recipe and one training configuration; `name` fills the fold table's `group`."""

    name: str
    entries: list[Candidate]
    recipe: Recipe
    config: TrainConfig


@dataclass(frozen=True)
class Plan:
    """What notebook 05 compares: the Phase 1 baselines as notebook 03 ran them (the references), the same baselines
    with Phase 3's preprocessing when that differs and `rerun_baselines` is on, and the Phase 3 candidates."""

    phase1_recipe: Recipe
    phase1_config: TrainConfig
    preprocessing: Preprocessing
    baselines: Sequence[str]
    entries: Sequence[Candidate]
    notes: Sequence[str] = ()  # from `candidates`: which pretrained variants were added or skipped
    rerun_baselines: bool = True

    @property
    def phase3_config(self) -> TrainConfig:
        return self.preprocessing.train_config(self.phase1_config)

    @property
    def same_as_phase1(self) -> bool:
        return self.preprocessing.recipe == self.phase1_recipe and self.phase3_config == self.phase1_config

    @property
    def references(self) -> list[str]:
        """Labels of the Phase 1 baselines."""
        return list(dict.fromkeys(self.baselines))

    def groups(self) -> list[Group]:
        """The groups to run, in order: Phase 1 baselines, [baselines with Phase 3 preprocessing], Phase 3."""
        recipe, config = self.preprocessing.recipe, self.phase3_config
        baselines = [Candidate(m, m) for m in self.baselines]
        groups = [Group(PHASE1_GROUP, baselines, self.phase1_recipe, self.phase1_config)]
        if self.rerun_baselines and not self.same_as_phase1:
            # architecture is then the only difference between these and the Phase 3 candidates
            repeated = [Candidate(f"{m} (Phase 3 preprocessing)", m) for m in self.baselines]
            groups.append(Group(REPEATED_GROUP, repeated, recipe, config))
        groups.append(Group(PHASE3_GROUP, list(self.entries), recipe, config))
        return groups

    def find(self, label: str) -> tuple[Group, Candidate]:
        """The first group with a candidate labelled `label`, and that candidate."""
        for group in self.groups():
            for entry in group.entries:
                if entry.label == label:
                    return group, entry
        raise KeyError(f"no candidate labelled {label!r} in the plan")

    def describe(self) -> str:
        """The preprocessing, the Phase 2 rule (if any), whether Phase 3 repeats Phase 1's setup, the candidates."""
        lines = [f"Preprocessing of Phase 3: {self.preprocessing.describe()}"]
        if self.preprocessing.rule:
            lines.append(f"Phase 2 rule: {self.preprocessing.rule}")
        lines.append(f"Same preprocessing and training as Phase 1: {self.same_as_phase1}")
        lines.append("\n  ".join(["Candidates:", str([c.label for c in self.entries]), *self.notes]))
        return "\n".join(lines)


def run_plan(dataset: Any, splits: pd.DataFrame, plan: Plan, boxes: np.ndarray | None = None, progress: bool = True,
             **store_kw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs of every group of `plan`, sent together: (fold table with `image_size` and `group`, predictions).
    `boxes` (from `recipe_boxes`) go to the groups whose recipe crops faces; `store_kw` as in `run_candidates`."""
    from lib.training.runstore import CVJob

    owners = [(group, c) for group in plan.groups() for c in group.entries]
    jobs = [(c, CVJob(group.recipe, c.model, group.config, c.kwargs or None,
                      boxes if group.recipe.needs_boxes else None)) for group, c in owners]
    tags = [{"image_size": group.recipe.size, "group": group.name} for group, _ in owners]
    return run_labelled(dataset, splits, jobs, progress=progress, tags=tags, **store_kw)  # every group side by side


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


def inference_speeds(cv: pd.DataFrame, batch_size: int = 32, repeats: int = 5, seed: int = 0,
                     runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """`inference_speed` of the first stored run of each model label at its `image_size`, one row per label."""
    from lib.training.runstore import load_model

    first_runs = cv.drop_duplicates("model").set_index("model")
    return pd.DataFrame({label: inference_speed(load_model(Path(runs_dir) / row["run_key"]), int(row["image_size"]),
                                                batch_size, repeats, seed=seed)
                         for label, row in first_runs.iterrows()}).T


def cost_table(cv: pd.DataFrame, epoch_seconds: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """One row per model label: group, image_size, parameters, mean epoch_seconds, images_per_s and batch_ms."""
    first_runs = cv.drop_duplicates("model").set_index("model")
    return pd.DataFrame({"group": first_runs["group"], "image_size": first_runs["image_size"],
                         "parameters": first_runs["n_parameters"].astype(int),
                         "epoch_seconds": epoch_seconds["epoch_seconds_mean"],
                         "images_per_s": speed["images_per_s"], "batch_ms": speed["batch_ms_median"]})


def measure_cost(cv: pd.DataFrame, batch_size: int = 32, repeats: int = 5, seed: int = 0,
                 runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """`cost_table` with seconds per epoch from the run histories and inference speed measured now."""
    from lib.training.runstore import collect_histories

    epoch_seconds = seconds_per_epoch(collect_histories(cv, by="model", runs_dir=runs_dir), by="model")
    return cost_table(cv, epoch_seconds, inference_speeds(cv, batch_size, repeats, seed, runs_dir))


def summaries(cv: pd.DataFrame, cost: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long test summary, wide test table with parameters, seconds per epoch and images/s rounded to 0.1)."""
    summary = compare.cv_summary(cv, by="model", part="test")
    costs = cost[["parameters", "epoch_seconds", "images_per_s"]].round(1)
    table = compare.summary_wide(summary, by="model").join(costs)
    return summary, table


def metric_with_cost(summary: pd.DataFrame, cost: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """The `cv_summary` rows of `metric`, indexed by model, with its parameters and images_per_s."""
    return summary[summary["metric"] == metric].set_index("model").join(cost[["parameters", "images_per_s"]])


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


def reference_tests(cv: pd.DataFrame, predictions: pd.DataFrame, auc: pd.DataFrame,
                    references: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every non-reference model against every reference on the fold test AUC (`compare_to_references`), and on the
    shared test set against the reference with the best mean AUC in `auc` (a `metric_with_cost` table)."""
    others = [m for m in cv["model"].unique() if m not in references]
    paired = compare_to_references(cv, "model", references, others, metrics=["test_auc"])
    best_reference = auc.loc[list(references), "mean"].idxmax()
    return paired, test_set_comparisons(predictions, others, best_reference)


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


def selection_record(plan: Plan, cv: pd.DataFrame, ranking: pd.DataFrame, selected: Sequence[str], rule: str,
                     metric: str, top_k: int) -> dict[str, Any]:
    """What notebook 06 reads from `phase3_selection.json`: the rule, and for each selected label its candidate,
    recipe, training configuration and run keys; plus the preprocessing's origin and the full ranking."""
    entries = []
    for label in selected:
        group, candidate = plan.find(label)
        entries.append({**candidate.to_dict(), "recipe": group.recipe.to_dict(), "train": group.config.to_dict(),
                        "run_keys": cv.loc[cv["model"] == label, "run_key"].tolist()})
    prep = plan.preprocessing
    return {
        "rule": rule, "metric": metric, "top_k": top_k, "selected": list(selected), "entries": entries,
        "preprocessing": {"origin": prep.origin, "condition": prep.condition, "rule": prep.rule,
                          "face_min_confidence": prep.face_min_confidence},
        "ranking": ranking.to_dict(orient="records"),
    }


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


def cost_line(name: str, row: pd.Series) -> str:
    """`name (P parameters, S images/s): test AUC ...` from a `metric_with_cost` row."""
    return (f"{name} ({int(row['parameters']):,} parameters, {row['images_per_s']:.0f} images/s): test AUC "
            f"{row['mean']:.3f} ± {row['std']:.3f} (95 % CI {row['ci_low']:.3f}-{row['ci_high']:.3f}, "
            f"{int(row['n'])} folds).")


def verdict_lines(paired: pd.DataFrame) -> list[str]:
    """How many comparisons support 'better than a baseline' (and which), and which show a model worse."""
    supported = paired[paired["verdict"] == "supported"]
    line = (f"Phase 3 models better than a Phase 1 baseline (paired 95 % interval above 0): "
            f"{len(supported)} of {len(paired)} comparisons")
    if len(supported):
        line += (": " + "; ".join(f"{r['a']} > {r['b']}" for _, r in supported.iterrows())
                 + f" (of which paired t Holm p < 0.05: {int((supported['t_p_holm'] < 0.05).sum())})")
    lines = [line + "."]
    contradicted = paired[paired["verdict"] == "contradicted"]
    if len(contradicted):
        lines.append("Worse than a baseline (interval below 0): "
                     + "; ".join(f"{r['a']} < {r['b']}" for _, r in contradicted.iterrows()) + ".")
    return lines


def delong_line(row: pd.Series) -> str:
    """One sentence about the DeLong test of a `test_set_comparison` row."""
    return (f"DeLong vs {row['b']} on {int(row['n_test'])} test images: {row['a']} AUC "
            f"{row['delong_auc1']:.3f} vs {row['delong_auc2']:.3f}, p = {row['delong_p']:.3g}.")


def conclusions(preprocessing: Preprocessing, auc: pd.DataFrame, paired: pd.DataFrame, test_set: pd.DataFrame,
                selected: Sequence[str], rule: str, speed_batch_size: int) -> list[str]:
    """The computed conclusion lines: preprocessing, each model's AUC and cost (best first, from a `metric_with_cost`
    table), the verdicts against the baselines, the DeLong tests, the fastest model and the selection."""
    lines = [f"Preprocessing: {preprocessing.describe()}."]
    lines += [cost_line(name, row) for name, row in auc.sort_values("mean", ascending=False).iterrows()]
    lines += verdict_lines(paired)
    lines += [delong_line(row) for _, row in test_set.iterrows() if pd.notna(row.get("delong_p"))]
    fastest = auc["images_per_s"].idxmax()
    lines.append(f"Fastest at inference: {fastest} ({auc.loc[fastest, 'images_per_s']:.0f} images/s on this machine, "
                 f"batch {speed_batch_size}).")
    lines.append(f"Selected for Phase 4: {', '.join(selected)} (rule: {rule})")
    return lines


def headline_table(table: pd.DataFrame, ranking: pd.DataFrame) -> pd.DataFrame:
    """The summary table in ranking order, with each model's rank and whether it was selected."""
    ranked = ranking.set_index("model")
    return table.loc[ranked.index].assign(rank=ranked["rank"], selected=ranked["selected"]).reset_index(names="model")


def save_conclusions(profile: str, conclusions: list[str], headline: pd.DataFrame, selected: Sequence[str]) -> None:
    """Write `phase3_conclusions.json` and the notebook's headline for the index page."""
    figures = figures_dir(profile)
    write_json(tables_dir(profile) / "phase3_conclusions.json",
               {"conclusions": conclusions, "selected": list(selected)})
    save_headline(profile, NOTEBOOK, headline, title=TITLE, conclusions=conclusions,
                  figures=[figures / name for name in HEADLINE_FIGURES])
