"""Phase 3 (notebook 05): which architecture is best at what cost, with Phase 2's preprocessing.

- Preprocessing: `load_recommendation` reads Phase 2's `phase2_recommendation.json` (or falls back to the Phase 1
  baseline recipe and says so); `recipe_boxes` gives the face boxes a face-crop recipe needs.
- Candidates: `Candidate`, `candidates` (adds ImageNet-pretrained variants when their weight files are installed),
  `run_candidates` (run_cv for each, tables labelled by candidate).
- The notebook's comparison: `Plan` (Phase 1 references, baselines with Phase 3 preprocessing, Phase 3 candidates,
  each `Group` with its recipe and training) and `run_plan` (one fold table with `group` and `image_size`).
- Speed: `seconds_per_epoch` (from the run histories), `inference_speed` (images/s on this machine), `measure_cost`
  (the cost table: parameters, seconds per epoch, images/s).
- Statistics, by the study protocol (`lib.evaluation.compare`): `interval_with_cost` (group-bootstrap intervals and
  group counts beside each model's cost), `reference_comparisons` (every model against every Phase 1 baseline by the
  one comparison rule, on oof and test), `select_models` (the computed rule, on the pooled out-of-fold validation
  predictions only; test predictions or metrics raise) and `selection_record` (the stamped JSON for notebook 06).
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
from lib.evaluation.stats import summarize
from lib.fileio import read_json, read_stamped_json, write_json
from lib.paths import RUNS_DIR, figures_dir, tables_dir
from lib.report import save_headline
from lib.studies import phase1
from lib.training.fit import NORMALIZATIONS, TrainConfig

NOTEBOOK = "05_phase3_architectures"
TITLE = "05 · Phase 3: architectures (ranking)"
HEADLINE_FIGURES = ("phase3_params_vs_auc.png", "phase3_roc_pr.png")
PHASE1_GROUP, REPEATED_GROUP, PHASE3_GROUP = "Phase 1 baseline", "baseline, Phase 3 preprocessing", "Phase 3"
# columns shown by the notebook (the saved tables keep every column)
FOLD_COLUMNS = ["model", "group", "fold", "trained", "epochs", "best_epoch", "seconds", "val_auc", "test_auc",
                "test_accuracy"]
SELECTION_METRICS = {"oof_auc": "auc", "oof_accuracy": "accuracy"}  # selection metric -> metric on the oof set
RANKING_COLUMNS = ["rank", "model", "estimate", "ci_low", "ci_high", "real_groups", "fake_groups", "parameters",
                   "diff_to_best", "diff_ci_low", "diff_ci_high", "p_holm", "significantly_worse", "selected"]


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


def load_recommendation(path: str | Path, fallback_recipe: Recipe, stamp: dict[str, str],
                        use: bool = True) -> Preprocessing:
    """Phase 2's recommended preprocessing from its stamped JSON, else the Phase 1 baseline (plain resize, ImageNet
    statistics) when the file does not exist or `use` is off.

    The JSON needs `recipe` (a `Recipe.to_dict()`), `augment` (an `AugmentPolicy` dict or null) and `normalization`;
    `condition` and `rule` are shown when present. A file with a missing or invalid field is an error that names it; a
    file made from another dataset or split table than `stamp` (`Study.stamp`) raises `lib.fileio.ArtefactMismatch`.
    """
    path = Path(path)
    fallback = Preprocessing(fallback_recipe, None, "imagenet", "phase1_baseline",
                             "Phase 1 baseline: plain square resize, no augmentation, ImageNet statistics", "")
    if not use:
        return replace(fallback, origin="Phase 1 baseline (use_phase2_recommendation is off)")
    if not path.is_file():
        return replace(fallback, origin=f"Phase 1 baseline ({path.name} not found: notebook 04 has not run)")
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    data = read_stamped_json(path, stamp)
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

    @property
    def selectable(self) -> list[str]:
        """Labels Phase 3 may select: the models trained with Phase 3's preprocessing. The Phase 1 baselines as
        notebook 03 ran them are references only, unless Phase 3's preprocessing and training equal Phase 1's."""
        return list(dict.fromkeys(c.label for g in self.groups() if g.name != PHASE1_GROUP or self.same_as_phase1
                                  for c in g.entries))

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
    """The descriptive training-noise view: (long fold summary of the test metrics, its wide `mean ± std [t-interval]`
    table with parameters, seconds per epoch and images/s rounded to 0.1). Headline numbers and verdicts come from
    the group bootstrap (`phase1.intervals`, `reference_comparisons`)."""
    summary = compare.cv_summary(cv, by="model", part="test")
    costs = cost[["parameters", "epoch_seconds", "images_per_s"]].round(1)
    table = compare.summary_wide(summary, by="model").join(costs)
    return summary, table


def interval_with_cost(table: pd.DataFrame, cost: pd.DataFrame, name: str = "oof", metric: str = "auc") -> pd.DataFrame:
    """The `metric_intervals` rows of one set and metric, indexed by model, with its parameters and images_per_s."""
    rows = table[(table["set"] == name) & (table["metric"] == metric)].set_index("model")
    return rows.join(cost[["parameters", "images_per_s"]])


# ----------------------------------------------------------------------------------------------- paired claims

def reference_pairs(references: Sequence[str], others: Sequence[str]) -> list[tuple[str, str]]:
    """(other, reference) for every reference and every other level (a level is never paired with itself)."""
    return [(other, ref) for ref in dict.fromkeys(references) for other in dict.fromkeys(others) if other != ref]


def reference_comparisons(predictions: pd.DataFrame, references: Sequence[str], others: Sequence[str] | None = None,
                          by: str = "model", sets: Sequence[str] = phase1.SETS,
                          metrics: Sequence[str] = ("auc",)) -> pd.DataFrame:
    """Every level in `others` (default: every non-reference level) against every Phase 1 reference by the one
    comparison rule (`compare_family`: group bootstrap, one Holm family per evaluation set)."""
    levels = list(dict.fromkeys(predictions[by]))
    others = [lvl for lvl in levels if lvl not in references] if others is None else list(others)
    missing = [lvl for lvl in [*references, *others] if lvl not in levels]
    if missing:
        raise ValueError(f"{missing} not in column {by!r}; levels: {levels}")
    return compare.compare_family(predictions, by, reference_pairs(references, others), sets=sets, metrics=metrics)


# ----------------------------------------------------------------------------------------------- selection

SELECTION_RULE = (
    "Chosen on the pooled out-of-fold validation predictions only (every trainval group validated once; the test "
    "hold-out is not read). Rank by {metric} (ties: fewer parameters). Select the best model, then, in rank order, up "
    "to {k_minus_1} more that are not shown worse than the best: the paired group-bootstrap difference best - model "
    "(one Holm family over the ranked models, `compare_family`) supports 'best > model' for a significantly worse "
    "model, which is not selected.")


def validation_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """The validation rows of `predictions` (what a selection function may read)."""
    return predictions[predictions["split"] == "val"].reset_index(drop=True)


def selection_metric(metric: str) -> str:
    """The oof metric of a selection metric name ("oof_auc" -> "auc"); a test or holdout metric raises."""
    if metric in SELECTION_METRICS:
        return SELECTION_METRICS[metric]
    if str(metric).startswith(("test", "holdout")):
        raise ValueError(f"selection metric {metric!r} reads the test hold-out: the selection chooses on the pooled "
                         f"out-of-fold validation predictions only; use one of {list(SELECTION_METRICS)}")
    raise ValueError(f"unknown selection metric {metric!r}; use one of {list(SELECTION_METRICS)}")


def select_models(predictions: pd.DataFrame, by: str = "model", metric: str = "oof_auc", k: int = 2,
                  parameters: pd.Series | dict | None = None, candidates: Sequence[str] | None = None,
                  n_boot: int = compare.N_BOOT, seed: int = 0) -> tuple[pd.DataFrame, list[str], str]:
    """The Phase 3 selection rule (see `SELECTION_RULE`) on validation predictions only (`validation_predictions`;
    test rows or test_* columns raise): (ranking table, selected levels, rule text). `candidates` (e.g.
    `Plan.selectable`) limits the levels that are ranked; default: every level.

    Ranking columns (`RANKING_COLUMNS`): rank, the level, its oof estimate with group-bootstrap interval and group
    counts, parameters, diff_to_best (best - level) with its Holm-stepped interval and p, significantly_worse,
    selected."""
    compare.require_validation(predictions, "select_models")
    name = selection_metric(metric)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rule = SELECTION_RULE.format(metric=metric, k_minus_1=k - 1)
    if candidates is not None:
        candidates = list(dict.fromkeys(candidates))
        missing = [c for c in candidates if c not in set(predictions[by])]
        if missing or not candidates:
            raise ValueError(f"candidates {missing or candidates} have no validation predictions")
        predictions = predictions[predictions[by].isin(candidates)]
        rule = f"Candidates: {', '.join(candidates)}. {rule}"
    params = pd.Series(parameters if parameters is not None else {}, dtype=float)
    iv = compare.metric_intervals(predictions, by, sets=["oof"], metrics=[name], n_boot=n_boot, seed=seed)
    if iv.empty or iv["estimate"].isna().all():
        raise ValueError(f"{metric} is undefined for every model (no validation predictions of both classes)")
    rank = iv[[by, "estimate", "ci_low", "ci_high", "real_groups", "fake_groups"]].assign(
        parameters=lambda t: t[by].map(params).astype(float))
    rank = rank.sort_values(["estimate", "parameters"], ascending=[False, True], na_position="last",
                            kind="stable").reset_index(drop=True)
    rank.insert(0, "rank", np.arange(1, len(rank) + 1))
    best = rank.loc[0, by]
    pairs = [(best, level) for level in rank[by].iloc[1:]]
    family = compare.compare_family(predictions, by, pairs, sets=["oof"], metrics=[name], direction="greater",
                                    n_boot=n_boot, seed=seed) if pairs else pd.DataFrame(columns=["b"])
    diffs = family.set_index("b") if len(family) else pd.DataFrame()
    rank["diff_to_best"] = [0.0 if lvl == best else diffs.loc[lvl, "diff"] for lvl in rank[by]]
    rank["diff_ci_low"] = [math.nan if lvl == best else diffs.loc[lvl, "ci_low"] for lvl in rank[by]]
    rank["diff_ci_high"] = [math.nan if lvl == best else diffs.loc[lvl, "ci_high"] for lvl in rank[by]]
    rank["p_holm"] = [math.nan if lvl == best else diffs.loc[lvl, "p_holm"] for lvl in rank[by]]
    # "best > level" supported: significantly worse; an undefined interval shows nothing worse
    rank["significantly_worse"] = [lvl != best and diffs.loc[lvl, "verdict"] == "supported" for lvl in rank[by]]
    selected = [best]
    for _, row in rank.iloc[1:].iterrows():
        if len(selected) >= k:
            break
        if not row["significantly_worse"]:
            selected.append(row[by])
    rank["selected"] = rank[by].isin(selected)
    return rank, selected, rule


def selection_record(plan: Plan, cv: pd.DataFrame, ranking: pd.DataFrame, selected: Sequence[str], rule: str,
                     metric: str, top_k: int) -> dict[str, Any]:
    """What notebook 06 reads from `phase3_selection.json` (write it with `lib.fileio.write_stamped_json`): the rule,
    the evaluation set it chose on ("oof"), and for each selected label its candidate, recipe, training configuration
    and run keys; plus the preprocessing's origin and the full ranking."""
    selection_metric(metric)  # a test metric never reaches the record
    entries = []
    for label in selected:
        group, candidate = plan.find(label)
        entries.append({**candidate.to_dict(), "recipe": group.recipe.to_dict(), "train": group.config.to_dict(),
                        "run_keys": cv.loc[cv["model"] == label, "run_key"].tolist()})
    prep = plan.preprocessing
    return {
        "rule": rule, "metric": metric, "chosen_on": "oof", "top_k": top_k, "selected": list(selected),
        "entries": entries,
        "preprocessing": {"origin": prep.origin, "condition": prep.condition, "rule": prep.rule,
                          "face_min_confidence": prep.face_min_confidence},
        "ranking": ranking.to_dict(orient="records"),
    }


# ----------------------------------------------------------------------------------------------- figures, report

def plot_metric_vs(table: pd.DataFrame, x: str, label: str = "model", metric: str = "AUC",
                   name: str = "out-of-fold validation", logx: bool = True, path: str | Path | None = None):
    """Scatter of `estimate` (its group-bootstrap interval as error bars) against column `x`, one annotated point
    per row (an `interval_with_cost` table with its index reset)."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    err = np.vstack([table["estimate"] - table["ci_low"], table["ci_high"] - table["estimate"]])
    ax.errorbar(table[x], table["estimate"], yerr=np.nan_to_num(err), fmt="o", capsize=4)
    for _, r in table.iterrows():
        ax.annotate(str(r[label]), (r[x], r["estimate"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=x.replace("_", " "), ylabel=f"{metric}, {name}\n(95 % group-bootstrap CI)")
    fig.tight_layout()
    return save(fig, path)


def verdict_lines(family: pd.DataFrame, metric: str = "auc") -> list[str]:
    """Per evaluation set: how many comparisons support 'better than a Phase 1 baseline' (and which), and which show
    a model worse, with the group counts behind them."""
    lines = []
    for name, part in family[family["metric"] == metric].groupby("set", sort=False):
        counts = compare.counts_text(part.iloc[0]) if part["real_groups"].notna().any() else "no groups"
        supported = part[part["verdict"] == "supported"]
        line = (f"On {phase1.SET_NAMES.get(name, name)} ({counts}): better than a Phase 1 baseline (Holm-stepped "
                f"group-bootstrap interval of the {phase1.METRIC_NAMES.get(metric, metric)} difference above 0): "
                f"{len(supported)} of {len(part)} comparisons")
        if len(supported):
            line += ": " + "; ".join(f"{r['a']} > {r['b']} ({r['diff']:+.3f})" for _, r in supported.iterrows())
        undefined = int(part["ci_low"].isna().sum())
        if undefined:
            line += f"; {undefined} without an interval ({part.loc[part['ci_low'].isna(), 'note'].iloc[0]})"
        lines.append(line + ".")
        contradicted = part[part["verdict"] == "contradicted"]
        if len(contradicted):
            lines.append(f"Worse than a baseline on {phase1.SET_NAMES.get(name, name)} (interval below 0): "
                         + "; ".join(f"{r['a']} < {r['b']} ({r['diff']:+.3f})" for _, r in contradicted.iterrows())
                         + ".")
    return lines


def fold_summary_line(folds: pd.DataFrame) -> str:
    """Secondary fold-level view in one line: how many pairs' Nadeau-Bengio intervals exclude 0."""
    if folds.empty:
        return "Secondary, fold level: no pairs."
    apart = folds[(folds["nb_ci_low"] > 0) | (folds["nb_ci_high"] < 0)]
    which = ": " + "; ".join(f"{r.a} vs {r.b} {r.nb_mean_diff:+.3f}" for r in apart.itertuples()) if len(apart) else ""
    notes = [n for n in folds["wilcoxon_note"] if isinstance(n, str) and n]
    tail = f" Wilcoxon {notes[0]}." if notes else ""
    k = int(folds["n_folds"].max())
    return (f"Secondary, fold level (Nadeau-Bengio corrected t on the validation AUC over {k} "
            f"folds, not corrected for multiplicity): {len(apart)} of {len(folds)} pairs with a 95 % interval "
            f"excluding 0{which}.{tail}")


def conclusions(preprocessing: Preprocessing, table: pd.DataFrame, cost: pd.DataFrame, family: pd.DataFrame,
                folds: pd.DataFrame, test_set: pd.DataFrame, image_note: str, selected: Sequence[str], rule: str,
                speed_batch_size: int) -> list[str]:
    """The computed conclusion lines: preprocessing, each model's AUC on oof and test with intervals and groups and its
    cost (best oof AUC first), the verdicts against the baselines per evaluation set, the secondary fold-level tests,
    the DeLong tests or why they are omitted, the fastest model and the selection (made on validation)."""
    lines = [f"Preprocessing: {preprocessing.describe()}."]
    oof = interval_with_cost(table, cost)
    for name, row in oof.sort_values("estimate", ascending=False).iterrows():
        label = f"{name} ({int(row['parameters']):,} parameters, {row['images_per_s']:.0f} images/s)"
        lines.append(phase1.headline_line(label, table[table["model"] == name]))
    lines += verdict_lines(family)
    lines.append(fold_summary_line(folds))
    lines += phase1.image_test_lines(test_set, image_note)
    fastest = cost["images_per_s"].idxmax()
    lines.append(f"Fastest at inference: {fastest} ({cost.loc[fastest, 'images_per_s']:.0f} images/s on this machine, "
                 f"batch {speed_batch_size}).")
    lines.append(f"Selected for Phase 4 on out-of-fold validation predictions: {', '.join(selected)} (rule: {rule})")
    return lines


def headline_table(table: pd.DataFrame, cost: pd.DataFrame, ranking: pd.DataFrame) -> pd.DataFrame:
    """The index page's table in ranking order: AUC and accuracy with intervals and group counts on oof and test,
    parameters, images/s, rank and whether the model was selected."""
    ranked = ranking.set_index("model")
    wide = phase1.interval_table(table).loc[ranked.index]
    return wide.assign(parameters=cost["parameters"], images_per_s=cost["images_per_s"].round(1),
                       rank=ranked["rank"], selected=ranked["selected"]).reset_index(names="model")


def save_conclusions(profile: str, conclusions: list[str], headline: pd.DataFrame, selected: Sequence[str]) -> None:
    """Write `phase3_conclusions.json` and the notebook's headline for the index page."""
    figures = figures_dir(profile)
    write_json(tables_dir(profile) / "phase3_conclusions.json",
               {"conclusions": conclusions, "selected": list(selected)})
    save_headline(profile, NOTEBOOK, headline, title=TITLE, conclusions=conclusions,
                  figures=[figures / name for name in HEADLINE_FIGURES])
