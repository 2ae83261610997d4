"""Analyses of notebook 08: NPR vs multi-scale attention NPR (hypotheses H2, H3), scale ablations, attention.

Vocabulary. An *arm* is one trained configuration (a registry model plus its kwargs) under a `condition` label;
`run_arms` trains or loads every fold of every arm through the run store and tags the fold table and the
predictions with that label, so the generic comparison layer (`lib.evaluation.compare`, `by="condition"`) applies.

Evaluation sets are built from the prediction rows of `lib.training.runstore` (split val/test/holdout):
- in distribution (H2): the test hold-out, every source;
- unseen generators (H3): the real images of the test hold-out plus the fakes of the held-out sources (split
  "holdout"; a split made with `make_splits(holdout_sources=...)` holds no real image there, so without the test
  reals an AUC would be undefined);
- NPR-paper table: one row per fake source, scored on that source's fakes plus every real image of the evaluation
  set; accuracy at the classifier's natural 0.5 threshold (never tuned on test) reported as balanced accuracy
  (mean of the real and fake accuracies, as on the paper's balanced per-generator test sets) and AP.
Every metric is computed per fold model, then summarised over folds (mean, std, 95 % t-interval); comparisons are
paired over folds with Holm over the family of one hypothesis; a verdict comes from the interval of the paired
difference (`lib.evaluation.stats.verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps
from tqdm.auto import tqdm

from lib.data.splits import fold_ids
from lib.evaluation.compare import paired_comparison, summary_wide, test_set_comparison
from lib.evaluation.metrics import binary_metrics
from lib.fileio import write_table
from lib.paths import RUNS_DIR
from lib.evaluation.stats import holm, summarize, verdict
from lib.studies.common import Study, named_sources

SOURCE_METRICS = ("balanced_accuracy", "accuracy", "auc", "ap")
MEAN_ROW = "mean"
REPORTED_METRICS = ("auc", "ap", "accuracy")  # shown in the tables; the tested family is FAMILY_METRICS
FAMILY_METRICS = ("auc", "ap")
# the claims of H2, H3 and the external set: multi-scale attention NPR beats NPR, and beats its uniform-weights control
CLAIM_PAIRS = (("npr_multiscale", "npr"), ("npr_multiscale", "npr_multiscale_uniform"))
FOLD_COLUMNS = ["condition", "fold", "trained", "epochs", "best_epoch", "seconds", "n_parameters", "val_auc", "test_auc",
                "test_accuracy"]
TEST_COLUMNS = ["a", "b", "metric", "n", "mean_diff", "diff_ci_low", "diff_ci_high", "diff_ci_low_adj", "diff_ci_high_adj",
                "t_p", "t_p_holm", "wilcoxon_p", "verdict", "verdict_adjusted"]
UNSEEN = " (unseen)"  # label suffix of a held-out source in H3's tables and figures


# ----------------------------------------------------------------------------- arms and runs

@dataclass(frozen=True)
class Arm:
    """One compared configuration: `condition` (label), registry `model`, its `kwargs`."""

    condition: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(self.kwargs.get("scales", (0.5,)))


def check_scales(scales: Iterable[float]) -> tuple[float, ...]:
    """Validated, de-duplicated, sorted scale tuple (each an NPR factor p/q in (0, 1))."""
    from lib.models.npr import npr_crop_size

    out = tuple(sorted({float(s) for s in scales}))
    if not out:
        raise ValueError("a scale set needs at least one scale")
    for s in out:
        npr_crop_size(16, 16, s)  # raises a clear error for a factor outside (0, 1) or not p/q
    return out


def scale_label(scales: Iterable[float]) -> str:
    """'0.25+0.5+0.75' for a scale set."""
    return "+".join(f"{s:g}" for s in check_scales(scales))


def multiscale_kwargs(scales: Iterable[float], attention: str = "learned", entropy_weight: float = 0.0) -> dict:
    """Explicit kwargs of `npr_multiscale`: equal arms always give equal run keys (hence reuse, never retraining)."""
    return {"scales": list(check_scales(scales)), "attention": attention, "entropy_weight": float(entropy_weight)}


def hypothesis_arms(scales: Iterable[float], entropy_weight: float = 0.0, include_uniform: bool = True) -> list[Arm]:
    """H2/H3 arms: `npr` (single scale 0.5), `npr_multiscale` (learned attention), and the uniform-weights control."""
    arms = [Arm("npr", "npr"),
            Arm("npr_multiscale", "npr_multiscale", multiscale_kwargs(scales, "learned", entropy_weight))]
    if include_uniform:
        arms.append(Arm("npr_multiscale_uniform", "npr_multiscale", multiscale_kwargs(scales, "uniform", entropy_weight)))
    return arms


def ablation_arms(reference: Iterable[float], scale_sets: Sequence[Iterable[float]], entropy_weight: float = 0.0) -> list[Arm]:
    """Learned-attention `npr_multiscale` arms, the reference set first, one per distinct scale set."""
    arms, seen = [], set()
    for scales in [reference, *scale_sets]:
        key = check_scales(scales)
        if key in seen:
            continue
        seen.add(key)
        arms.append(Arm(f"scales {scale_label(key)}", "npr_multiscale", multiscale_kwargs(key, "learned", entropy_weight)))
    return arms


def run_arms(dataset: Any, splits: pd.DataFrame, recipe: Any, config: Any, arms: Sequence[Arm],
             runs_dir: str | Path = RUNS_DIR, progress: bool = True,
             cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or load) every fold of every arm: (fold table, predictions), both with `condition` and `scales`."""
    from lib.training.runstore import CVJob, collect_predictions, run_cv_many

    if not arms:
        raise ValueError("run_arms: no arms given")
    labels = [a.condition for a in arms]
    if len(set(labels)) != len(labels):
        raise ValueError(f"run_arms: condition labels must be unique, got {labels}")
    tables = run_cv_many(dataset, splits, [CVJob(recipe, arm.model, config, arm.kwargs) for arm in arms],
                         runs_dir=runs_dir, progress=progress, **({} if cache_dir is None else {"cache_dir": cache_dir}))
    cv = pd.concat([cv.assign(condition=arm.condition, scales=scale_label(arm.scales)) for arm, cv in zip(arms, tables)],
                   ignore_index=True)
    predictions = collect_predictions(cv, runs_dir=runs_dir)
    tags = cv.set_index("run_key")[["condition", "scales"]]
    predictions = predictions.join(tags, on="run_key")
    return cv, predictions


def resolve_holdout_sources(manifest: pd.DataFrame, requested: Sequence[str] = ()) -> list[str]:
    """The fake sources held out for H3. Empty `requested`: the second half of the fake sources (sorted).

    Raises when a requested source is unknown or real, or when no fake source would be left for training.
    """
    fakes = sorted(manifest.loc[manifest["label"] == 1, "source"].astype(str).unique())
    if len(fakes) < 2:
        raise ValueError(f"H3 needs at least two fake sources (one to train on, one held out); the dataset has {fakes}")
    if not requested:
        return fakes[len(fakes) - len(fakes) // 2:]
    requested = sorted(set(map(str, requested)))
    unknown = sorted(set(requested) - set(fakes))
    if unknown:
        raise ValueError(f"holdout_sources {unknown} are not fake sources of this dataset; fake sources: {fakes}")
    if set(requested) == set(fakes):
        raise ValueError(f"holdout_sources {requested} leave no fake source to train on")
    return requested


def arm_table(arms: Sequence[Arm]) -> pd.DataFrame:
    """One row per arm: condition, registry model and its kwargs."""
    return pd.DataFrame([{"condition": a.condition, "model": a.model, **a.kwargs} for a in arms])


def describe_setup(study: Study, recipe: Any, config: Any) -> str:
    """One line about the shared split table, the recipe and the training configuration."""
    return (f"{len(study.manifest)} images, {len(fold_ids(study.splits))} folds, test hold-out of "
            f"{int((study.splits['split'] == 'test').sum())} images; recipe {recipe}; {config}")


def map_scales(arms: Sequence[Arm]) -> list[float]:
    """Every scale of `arms` plus NPR's own 0.5, sorted: the columns of the NPR map figure."""
    return sorted({s for arm in arms for s in arm.scales} | {0.5})


def holdout_plan(manifest: pd.DataFrame, requested: Sequence[str] = (),
                 data_root: str = "") -> tuple[list[str], list[str], str]:
    """H3's held-out fake sources, the seen ones (manifest order) and a note about requested sources this dataset
    lacks (`lib.studies.common.named_sources`: on your own data they are dropped, then the default rule applies)."""
    named, note = named_sources(manifest, requested, data_root)
    held = resolve_holdout_sources(manifest, named)
    seen = [s for s in manifest.loc[manifest["label"] == 1, "source"].unique() if s not in held]
    return held, seen, note


def split_counts(study: Study) -> pd.DataFrame:
    """Images per source (rows) and split (columns) of a study's split table."""
    return study.splits.assign(source=study.manifest["source"]).pivot_table(
        index="source", columns="split", values="sha256", aggfunc="count", fill_value=0)


# ----------------------------------------------------------------------------- evaluation sets and metrics

def _evaluation_rows(predictions: pd.DataFrame, real_splits: Sequence[str], fake_splits: Sequence[str],
                     fake_sources: Sequence[str] | None = None) -> pd.DataFrame:
    real = (predictions["label"] == 0) & predictions["split"].isin(real_splits)
    fake = (predictions["label"] == 1) & predictions["split"].isin(fake_splits)
    if fake_sources is not None:
        fake &= predictions["source"].isin(fake_sources)
    return predictions[real | fake]


def _metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    m = binary_metrics(labels, probs)
    return {"n_real": m["n_real"], "n_fake": m["n_fake"], "auc": m["auc"], "ap": m["ap"], "accuracy": m["accuracy"],
            "balanced_accuracy": float(np.nanmean([m["real_accuracy"], m["fake_accuracy"]]))
            if m["n"] else float("nan")}


def fold_metrics(predictions: pd.DataFrame, by: str = "condition", real_splits: Sequence[str] = ("test",),
                 fake_splits: Sequence[str] = ("test",), fake_sources: Sequence[str] | None = None,
                 prefix: str = "test") -> pd.DataFrame:
    """One row per (by, fold): `{prefix}_auc/_ap/_accuracy/_balanced_accuracy/_n_real/_n_fake` on the evaluation
    set made of the real images of `real_splits` and the fakes of `fake_splits` (optionally only `fake_sources`)."""
    _require(predictions, {by, "fold", "split", "label", "source", "probability"})
    rows = []
    part = _evaluation_rows(predictions, real_splits, fake_splits, fake_sources)
    groups = dict(list(part.groupby([by, "fold"], sort=False)))
    for level, fold in predictions[[by, "fold"]].drop_duplicates().itertuples(index=False):
        sel = groups.get((level, fold), part.iloc[:0])  # a fold model with no row in the set: NaN metrics
        m = _metrics(sel["label"].to_numpy(), sel["probability"].to_numpy())
        rows.append({by: level, "fold": int(fold), **{f"{prefix}_{k}": v for k, v in m.items()}})
    return pd.DataFrame(rows)


def source_metrics(predictions: pd.DataFrame, by: str = "condition", real_splits: Sequence[str] = ("test",),
                   fake_splits: Sequence[str] = ("test",)) -> pd.DataFrame:
    """Per (by, fold, fake source): metrics on that source's fakes plus every real image of `real_splits`;
    plus a `mean` source row per (by, fold): the unweighted mean over the fake sources (as the NPR paper's mean)."""
    _require(predictions, {by, "fold", "split", "label", "source", "probability"})
    part = _evaluation_rows(predictions, real_splits, fake_splits)
    rows = []
    for (level, fold), group in part.groupby([by, "fold"], sort=False):
        real = group[group["label"] == 0]
        fakes = group[group["label"] == 1]
        per_source = []
        for source, own in fakes.groupby("source", sort=True):
            sel = pd.concat([real, own])
            m = _metrics(sel["label"].to_numpy(), sel["probability"].to_numpy())
            per_source.append({by: level, "fold": int(fold), "source": str(source), **m})
        if not per_source:
            continue
        rows.extend(per_source)
        frame = pd.DataFrame(per_source)
        rows.append({by: level, "fold": int(fold), "source": MEAN_ROW, "n_real": int(len(real)),
                     "n_fake": int(frame["n_fake"].sum()),
                     **{k: float(frame[k].mean()) for k in SOURCE_METRICS}})
    return pd.DataFrame(rows)


def source_summary(per_fold: pd.DataFrame, by: str = "condition") -> pd.DataFrame:
    """`source_metrics` summarised over folds: one row per (by, source), `<metric>_mean/_std/_ci_low/_ci_high/_n`."""
    rows = []
    for (level, source), group in per_fold.groupby([by, "source"], sort=False):
        row = {by: level, "source": source, "n_real": int(group["n_real"].iloc[0]), "n_fake": int(group["n_fake"].iloc[0])}
        for metric in SOURCE_METRICS:
            row.update({f"{metric}_{k}": v for k, v in summarize(group[metric]).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def npr_paper_table(summary: pd.DataFrame, by: str = "condition", metrics: Sequence[str] = ("balanced_accuracy", "ap"),
                    percent: bool = True, digits: int = 1) -> pd.DataFrame:
    """NPR-paper layout: rows = fake sources then `mean`, columns = (condition, metric), cells `mean ± std` over folds."""
    scale = 100.0 if percent else 1.0
    names = {"balanced_accuracy": "acc", "accuracy": "acc (raw)", "ap": "AP", "auc": "AUC"}
    sources = [s for s in dict.fromkeys(summary["source"]) if s != MEAN_ROW] + [MEAN_ROW]
    cols = {}
    for level in dict.fromkeys(summary[by]):
        sub = summary[summary[by] == level].set_index("source")
        for metric in metrics:
            mean, std = sub[f"{metric}_mean"] * scale, sub[f"{metric}_std"] * scale
            text = [f"{m:.{digits}f} ± {s:.{digits}f}" if pd.notna(s) else (f"{m:.{digits}f}" if pd.notna(m) else "")
                    for m, s in zip(mean, std)]
            cols[(level, names.get(metric, metric))] = pd.Series(text, index=sub.index)
    table = pd.DataFrame(cols).reindex(sources)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=[by, "metric"])
    table.index.name = "source"
    return table


def unseen_fold_metrics(predictions: pd.DataFrame, held: Sequence[str], seen: Sequence[str],
                        by: str = "condition") -> pd.DataFrame:
    """H3's fold table: `unseen_*` on the real test images plus the held-out fakes, `seen_*` on the real test images
    plus the test fakes of the `seen` sources, and `gap_auc` = seen - unseen AUC."""
    unseen = fold_metrics(predictions, by, ("test",), ("holdout",), held, prefix="unseen")
    folds = unseen.merge(fold_metrics(predictions, by, ("test",), ("test",), seen, prefix="seen"), on=[by, "fold"])
    folds["gap_auc"] = folds["seen_auc"] - folds["unseen_auc"]
    return folds


def mark_unseen(sources: Iterable[str], held: Sequence[str]) -> list[str]:
    """Source names, the held-out ones suffixed ' (unseen)'."""
    return [f"{s}{UNSEEN}" if s in held else s for s in sources]


def holdout_source_summary(predictions: pd.DataFrame, held: Sequence[str], by: str = "condition") -> pd.DataFrame:
    """H3's `source_summary` (real test images against each test or held-out fake source) with a third column
    `in_training`: seen, unseen, or all for the mean row."""
    summary = source_summary(source_metrics(predictions, by, ("test",), ("test", "holdout")), by)
    summary.insert(2, "in_training", np.select([summary["source"].isin(held), summary["source"] == MEAN_ROW],
                                               ["unseen", "all"], "seen"))
    return summary


def holdout_paper_table(summary: pd.DataFrame, held: Sequence[str], by: str = "condition") -> pd.DataFrame:
    """`npr_paper_table` of H3 with the held-out sources marked unseen."""
    table = npr_paper_table(summary, by)
    table.index = mark_unseen(table.index, held)
    return table


# ----------------------------------------------------------------------------- hypotheses

def paired_family(table: pd.DataFrame, by: str, pairs: Sequence[tuple[str, str]], metrics: Sequence[str],
                  direction: str = "greater", alpha: float = 0.05) -> pd.DataFrame:
    """Paired tests of a - b over folds for every (a, b) pair and metric, as one family of m comparisons.

    Adds Holm-adjusted p-values (`t_p_holm`, `wilcoxon_p_holm`) and Bonferroni-adjusted simultaneous intervals
    (`diff_ci_low_adj`, `diff_ci_high_adj`: t-intervals at level 1 - alpha/m) with their `verdict_adjusted`, so a
    comparison is called supported only when the family-wise interval excludes 0; `verdict` (unadjusted 95 %
    interval, lib.evaluation.compare) is kept for reference.
    """
    present = set(table[by])
    rows = [paired_comparison(table, by, a, b, metric, direction)
            for a, b in pairs if a in present and b in present for metric in metrics]
    out = pd.DataFrame(rows)
    if len(out):
        out["t_p_holm"] = holm(out["t_p"].to_numpy())
        out["wilcoxon_p_holm"] = holm(out["wilcoxon_p"].to_numpy())
        m = max(1, int(out["mean_diff"].notna().sum()))
        n = out["n"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            crit = np.where(n >= 2, sps.t.ppf(1 - alpha / (2 * m), np.maximum(n - 1, 1)), np.nan)
            half = crit * out["diff_std"].to_numpy(dtype=float) / np.sqrt(n)
        out["family_size"] = m
        out["diff_ci_low_adj"] = out["mean_diff"] - half
        out["diff_ci_high_adj"] = out["mean_diff"] + half
        out["verdict_adjusted"] = [verdict(lo, hi, direction) for lo, hi in zip(out["diff_ci_low_adj"], out["diff_ci_high_adj"])]
    return out


def describe_row(row: dict | pd.Series) -> str:
    """One computed sentence about a `paired_family` row (family-adjusted verdict)."""
    return (f"{row['a']} - {row['b']} {row['metric']}: {row['mean_diff']:+.3f} (95 % CI {row['diff_ci_low']:+.3f} to "
            f"{row['diff_ci_high']:+.3f}; family-adjusted CI {row['diff_ci_low_adj']:+.3f} to {row['diff_ci_high_adj']:+.3f} "
            f"over {int(row['family_size'])} comparisons; {int(row['n'])} folds, Holm paired t p = {row['t_p_holm']:.3g}) "
            f"-> {row['verdict_adjusted']}")


def fold_summary(table: pd.DataFrame, by: str, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (by, metric): mean, std, 95 % t-interval, n over folds."""
    return pd.DataFrame([{by: level, "metric": metric, **summarize(group[metric])}
                         for level, group in table.groupby(by, sort=False) for metric in metrics])


def hypothesis_record(name: str, claim: str, table: pd.DataFrame, by: str, pairs: Sequence[tuple[str, str]],
                      metrics: Sequence[str], primary: tuple[str, str, str]) -> dict[str, Any]:
    """Per-model summaries, the family of paired comparisons (`paired_family`) and the verdict of `primary`.

    `primary` = (a, b, metric): the claim is a - b > 0 on that metric. The verdict is the family-adjusted one
    (`verdict_adjusted`: the Bonferroni interval over the family must exclude 0); 'not tested' when an arm is missing.
    """
    summary = fold_summary(table, by, metrics)
    comparisons = paired_family(table, by, pairs, metrics)
    a, b, metric = primary
    hit = comparisons[(comparisons["a"] == a) & (comparisons["b"] == b) & (comparisons["metric"] == metric)] \
        if len(comparisons) else comparisons
    record = {"name": name, "claim": claim, "primary": {"a": a, "b": b, "metric": metric},
              "per_model": summary.to_dict("records"), "comparisons": comparisons.to_dict("records")}
    if len(hit):
        row = hit.iloc[0]
        record.update(verdict=row["verdict_adjusted"], verdict_unadjusted=row["verdict"],
                      mean_diff=float(row["mean_diff"]), diff_ci_low=float(row["diff_ci_low"]),
                      diff_ci_high=float(row["diff_ci_high"]), diff_ci_low_adj=float(row["diff_ci_low_adj"]),
                      diff_ci_high_adj=float(row["diff_ci_high_adj"]), family_size=int(row["family_size"]),
                      t_p=float(row["t_p"]), t_p_holm=float(row["t_p_holm"]), n_folds=int(row["n"]),
                      sentence=describe_row(row))
    else:
        record["verdict"] = "not tested"
    return record


def describe_hypothesis(record: dict[str, Any]) -> str:
    """One computed sentence about a hypothesis record."""
    p = record["primary"]
    if record["verdict"] == "not tested":
        return f"{record['name']} ({record['claim']}): not tested ({p['a']} or {p['b']} missing)."
    return f"{record['name']} ({record['claim']}): {record['sentence']}."


def reported_metrics(prefix: str) -> list[str]:
    """`{prefix}_auc`, `_ap`, `_accuracy`: the metrics shown for one evaluation set."""
    return [f"{prefix}_{m}" for m in REPORTED_METRICS]


def summary_table(folds: pd.DataFrame, metrics: Sequence[str], by: str = "condition") -> pd.DataFrame:
    """`mean ± std [95 % CI]` over folds: one row per level of `by`, one column per metric."""
    return summary_wide(fold_summary(folds, by, metrics), by=by)


def claim_record(name: str, claim: str, folds: pd.DataFrame, prefix: str, by: str = "condition",
                 pairs: Sequence[tuple[str, str]] = CLAIM_PAIRS) -> dict[str, Any]:
    """`hypothesis_record` of `pairs` on `{prefix}_auc` and `{prefix}_ap` (one family); the claim is the first pair
    on `{prefix}_auc`."""
    return hypothesis_record(name, claim, folds, by, pairs, [f"{prefix}_{m}" for m in FAMILY_METRICS],
                             (*pairs[0], f"{prefix}_auc"))


def record_tests(record: dict[str, Any]) -> pd.DataFrame:
    """The family of paired comparisons of a hypothesis record, as a table."""
    return pd.DataFrame(record["comparisons"])


def tests_view(tests: pd.DataFrame) -> pd.DataFrame:
    """The `TEST_COLUMNS` of a `paired_family` table (an empty table as it is)."""
    return tests[TEST_COLUMNS] if len(tests) else tests


def fold_ensemble_tests(predictions: pd.DataFrame, by: str = "condition",
                        pairs: Sequence[tuple[str, str]] = CLAIM_PAIRS) -> pd.DataFrame:
    """DeLong and McNemar on the fold ensembles (`lib.evaluation.compare.test_set_comparison`) for every pair whose
    two arms were run."""
    present = set(predictions[by])
    return pd.DataFrame([test_set_comparison(predictions, by, a, b) for a, b in pairs if {a, b} <= present])


@dataclass
class AblationResult:
    """Scale ablation: fold summaries of every scale set, and its paired tests against the reference set."""

    reference: str
    summary: pd.DataFrame
    tests: pd.DataFrame

    def record(self) -> dict[str, Any]:
        return {"reference": self.reference, "per_model": self.summary.to_dict("records"),
                "comparisons": self.tests.to_dict("records")}


def compare_ablation(cv: pd.DataFrame, arms: Sequence[Arm]) -> AblationResult:
    """Every scale set against the first arm's (the reference), paired over folds on test AUC and AP as one family."""
    reference = arms[0].condition
    pairs = [(a.condition, reference) for a in arms[1:]]
    return AblationResult(reference, fold_summary(cv, "condition", reported_metrics("test")),
                          paired_family(cv, "condition", pairs, [f"test_{m}" for m in FAMILY_METRICS]))


def ablation_table(cv: pd.DataFrame, ablation: AblationResult) -> pd.DataFrame:
    """The ablation's summary (one row per scale set) with each set's number of parameters."""
    return summary_wide(ablation.summary, by="condition").assign(
        parameters=cv.groupby("condition", sort=False)["n_parameters"].first())


# ----------------------------------------------------------------------------- models: attention, external data

def _load(run_key: str, runs_dir: str | Path) -> tuple[torch.nn.Module, tuple, tuple]:
    from lib.training.runstore import load_model, load_run

    run_dir = Path(runs_dir) / run_key
    norm = load_run(run_dir).metrics["normalization"]
    return load_model(run_dir), tuple(norm["mean"]), tuple(norm["std"])


def attention_table(cv: pd.DataFrame, predictions: pd.DataFrame, images: np.ndarray, splits: Sequence[str] = ("test",),
                    by: str = "condition", runs_dir: str | Path = RUNS_DIR, batch_size: int = 128,
                    progress: bool = True) -> pd.DataFrame:
    """Attention weights of every learned multi-scale fold model of `cv` on its images of `splits`.

    One row per (run, image): by, fold, run_key, row, path, source, label, split, then one column `w_<scale>` per
    scale, `argmax_scale`, `max_weight`, `entropy` (normalised by log S: 1 = uniform). `images` is the tensor cache
    the runs were trained on (manifest row order, the `row` column of the predictions).
    """
    from lib.data.cache import BatchLoader

    runs = cv[cv["model"] == "npr_multiscale"]
    frames = []
    for _, run in tqdm(list(runs.iterrows()), desc="attention", disable=not progress):
        model, mean, std = _load(run["run_key"], runs_dir)
        if getattr(model, "attention", "learned") != "learned":
            continue
        rows = predictions[(predictions["run_key"] == run["run_key"]) & predictions["split"].isin(splits)]
        if rows.empty:
            continue
        loader = BatchLoader(images, None, rows["row"].to_numpy(), batch_size=batch_size, mean=mean, std=std)
        weights = torch.cat([model.attention_weights(x) for x, _ in loader]).numpy()
        frame = rows[["row", "path", "source", "label", "split"]].reset_index(drop=True)
        frame.insert(0, "run_key", run["run_key"])
        frame.insert(0, "fold", int(run["fold"]))
        frame.insert(0, by, run[by])
        frames.append(pd.concat([frame, _weight_columns(weights, model.scales)], axis=1))
    if not frames:
        raise ValueError("attention_table: no learned npr_multiscale run with images in the requested splits")
    return pd.concat(frames, ignore_index=True)


def _weight_columns(weights: np.ndarray, scales: Sequence[float]) -> pd.DataFrame:
    s = len(scales)
    entropy = -(weights * np.log(np.clip(weights, 1e-12, None))).sum(axis=1)
    out = pd.DataFrame(weights, columns=[f"w_{x:g}" for x in scales])
    out["argmax_scale"] = np.asarray(scales, dtype=float)[weights.argmax(axis=1)]
    out["max_weight"] = weights.max(axis=1)
    out["entropy"] = entropy / np.log(s) if s > 1 else 0.0
    return out


def weight_columns(att: pd.DataFrame) -> list[str]:
    return [c for c in att.columns if c.startswith("w_")]


def attention_long(att: pd.DataFrame) -> pd.DataFrame:
    """Long form: one row per (run, image, scale) with `scale` and `weight` (for box/violin plots)."""
    cols = weight_columns(att)
    keep = [c for c in att.columns if c not in cols]
    long = att.melt(id_vars=keep, value_vars=cols, var_name="scale", value_name="weight")
    long["scale"] = long["scale"].str[2:]
    return long


def attention_summary(att: pd.DataFrame) -> pd.DataFrame:
    """Per (source, scale): mean, std, 95 % interval and n of the attention weight over (fold model, image) pairs."""
    long = attention_long(att)
    return pd.DataFrame([{"source": source, "scale": scale, **summarize(group["weight"])}
                         for (source, scale), group in long.groupby(["source", "scale"], sort=True)])


def argmax_consistency(att: pd.DataFrame) -> pd.DataFrame:
    """Per source: its majority argmax scale (pooled over fold models), the fraction of (model, image) pairs whose
    argmax differs from it, the mean max weight and mean normalised entropy; last row `all` (weighted by images).

    The majority is taken per fold model, then pooled: a fold model that prefers another scale for a whole source
    is model-to-model variation, not per-image adaptivity, so `differs_within_model` counts only images that
    disagree with their own fold model's majority for the source.
    """
    rows = []
    for source, group in att.groupby("source", sort=True):
        majority = group["argmax_scale"].mode().iloc[0]
        per_model_majority = group.groupby("fold")["argmax_scale"].transform(lambda s: s.mode().iloc[0])
        rows.append({"source": source, "n": int(len(group)), "majority_scale": float(majority),
                     "differs_from_majority": float((group["argmax_scale"] != majority).mean()),
                     "differs_within_model": float((group["argmax_scale"] != per_model_majority).mean()),
                     "mean_max_weight": float(group["max_weight"].mean()), "mean_entropy": float(group["entropy"].mean())})
    out = pd.DataFrame(rows)
    w = out["n"] / out["n"].sum()
    total = {"source": "all", "n": int(out["n"].sum()), "majority_scale": float("nan")}
    total.update({c: float((out[c] * w).sum()) for c in
                  ("differs_from_majority", "differs_within_model", "mean_max_weight", "mean_entropy")})
    return pd.concat([out, pd.DataFrame([total])], ignore_index=True)


def attention_source_tests(att: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Does attention depend on the source? Per fold model and scale: Kruskal-Wallis of the weight across sources
    (scipy), Holm over the scales of that model. One row per (fold, scale); `differs` = Holm p < alpha."""
    rows = []
    for fold, group in att.groupby("fold", sort=True):
        sources = [g for _, g in group.groupby("source")]
        for col in weight_columns(att):
            samples = [g[col].to_numpy() for g in sources]
            stat, p = float("nan"), float("nan")
            if len(samples) >= 2 and np.ptp(np.concatenate(samples)) > 0:  # Kruskal-Wallis needs 2 groups, not all equal
                res = sps.kruskal(*samples)
                stat, p = float(res.statistic), float(res.pvalue)
            rows.append({"fold": int(fold), "scale": col[2:], "n_sources": len(samples), "kruskal_h": stat, "p": p})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = out.groupby("fold")["p"].transform(lambda s: pd.Series(holm(s.to_numpy()), index=s.index))
        out["differs"] = out["p_holm"] < alpha
    return out


@dataclass
class AttentionStats:
    """Attention weights of learned fold models on their images, and what they say about adaptivity."""

    images: pd.DataFrame   # attention_table
    summary: pd.DataFrame  # attention_summary
    argmax: pd.DataFrame   # argmax_consistency
    kruskal: pd.DataFrame  # attention_source_tests

    def save(self, tables_dir: str | Path, prefix: str = "npr_attention") -> None:
        """One CSV per table: `<prefix>_images.csv`, `_summary.csv`, `_argmax.csv`, `_kruskal.csv`."""
        for name in ("images", "summary", "argmax", "kruskal"):
            write_table(Path(tables_dir) / f"{prefix}_{name}.csv", getattr(self, name))

    def record(self) -> dict[str, Any]:
        return {"summary": self.summary.to_dict("records"), "argmax": self.argmax.to_dict("records"),
                "kruskal": self.kruskal.to_dict("records")}


def attention_statistics(att: pd.DataFrame) -> AttentionStats:
    """Summary, argmax consistency and source tests of an `attention_table`."""
    return AttentionStats(att, attention_summary(att), argmax_consistency(att), attention_source_tests(att))


def attention_summary_text(summary: pd.DataFrame) -> pd.DataFrame:
    """`mean ± std` of each scale's weight (an `attention_summary`), sources x scales."""
    text = summary["mean"].map("{:.3f}".format) + " ± " + summary["std"].map("{:.3f}".format)
    return summary.assign(text=text).pivot(index="source", columns="scale", values="text")


def label_unseen(att: pd.DataFrame, held: Sequence[str]) -> pd.DataFrame:
    """An attention table whose held-out sources are marked unseen (their own box, violin and heatmap row)."""
    return att.assign(source=mark_unseen(att["source"], held))


def npr_maps(image: np.ndarray, scales: Sequence[float]) -> list[np.ndarray]:
    """Channel-mean NPR map (`lib.models.npr.npr_map`) of one HxWx3 uint8 image at each scale, values in [-1, 1]."""
    from lib.models.npr import npr_map

    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0  # a copy: cached arrays are read-only
    return [npr_map(x, float(s))[0].mean(dim=0).numpy() for s in scales]


def pick_examples(predictions: pd.DataFrame, split: str = "test", per_source: int = 1, seed: int = 0) -> pd.DataFrame:
    """`per_source` distinct images of each source from `split` (deterministic given `seed`)."""
    part = predictions[predictions["split"] == split].drop_duplicates("path")
    shuffled = part.sample(frac=1.0, random_state=seed)
    return (shuffled.groupby("source", sort=True).head(per_source)
            .sort_values(["label", "source"], kind="stable").reset_index(drop=True)[["path", "source", "label"]])


def evaluate_external(cv: pd.DataFrame, dataset: Any, recipe: Any, by: str = "condition",
                      extra: Sequence[str] = (), runs_dir: str | Path = RUNS_DIR, batch_size: int = 128,
                      progress: bool = True, cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Score every fold model of `cv` on an external dataset (`lib.data.Dataset`, any layout).

    Decodes the external images once with the runs' `recipe` (tensor cache), loads each checkpoint
    (`lib.training.runstore.load_model`) with its training normalisation and predicts. Returns prediction rows like the run
    store's (run_key, model, by, fold, row, path, label, source, group, probability) with split = "external" and the
    `extra` columns of `cv` copied.
    """
    from lib.data.cache import build_cache
    from lib.training.fit import predict

    manifest = dataset.manifest
    if manifest.empty:
        raise ValueError(f"external dataset {dataset.root} holds no usable image")
    images = build_cache(manifest, recipe, progress=progress, **({} if cache_dir is None else {"cache_dir": cache_dir}))
    base = manifest[[c for c in ("path", "label", "source", "group") if c in manifest.columns]].reset_index(drop=True)
    base.insert(0, "row", np.arange(len(manifest), dtype=np.int64))
    frames = []
    for _, run in tqdm(list(cv.drop_duplicates("run_key").iterrows()), desc="external", disable=not progress):
        model, mean, std = _load(run["run_key"], runs_dir)
        prob = predict(model, images, np.arange(len(manifest)), batch_size=batch_size, mean=mean, std=std)
        frame = base.assign(probability=prob, split="external", fold=int(run["fold"]))
        for col in ("run_key", "model", by, *extra):
            frame[col] = run[col]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def trained_arms(cv_h2: pd.DataFrame, cv_ablation: pd.DataFrame, cv_h3: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every distinct fold model of the notebook with `trained_on` (all sources; H3's: seen sources) and
    `arm` = '<trained_on>: <condition>', the level the external set is compared by."""
    frames = [cv_h2.assign(trained_on="all sources"), cv_ablation.assign(trained_on="all sources")]
    if cv_h3 is not None:
        frames.append(cv_h3.assign(trained_on="seen sources"))
    cv = pd.concat(frames, ignore_index=True).drop_duplicates("run_key")
    return cv.assign(arm=cv["trained_on"] + ": " + cv["condition"])


def external_metrics(predictions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-source summary (`source_summary`) and fold table (`external_*`) of the external set, by arm."""
    per_source = source_summary(source_metrics(predictions, "arm", ("external",), ("external",)), by="arm")
    folds = fold_metrics(predictions, "arm", ("external",), ("external",), prefix="external")
    return per_source, folds


def external_hypotheses(folds: pd.DataFrame, groups: Iterable[str]) -> list[dict[str, Any]]:
    """One `claim_record` per training group ('all sources', 'seen sources'): its arms' claims on external AUC, AP."""
    return [claim_record(f"external ({group})", "multi-scale attention NPR beats NPR on the external set", folds,
                         "external", by="arm", pairs=[(f"{group}: {a}", f"{group}: {b}") for a, b in CLAIM_PAIRS])
            for group in groups]


def external_record(dataset: Any, per_source: pd.DataFrame, hypotheses: list[dict[str, Any]]) -> dict[str, Any]:
    """The external set's part of npr_hypotheses.json."""
    return {"skipped": False, "root": str(dataset.root), "layout": dataset.layout, "n_images": len(dataset.manifest),
            "per_source": per_source.to_dict("records"), "hypotheses": hypotheses}


def _require(frame: pd.DataFrame, columns: set[str]) -> None:
    missing = columns - set(frame.columns)
    if missing:
        raise KeyError(f"missing column(s) {sorted(missing)}; have {list(frame.columns)}")


# ----------------------------------------------------------------------------- conclusions and records

def model_lines(cv: pd.DataFrame) -> list[str]:
    """One line per condition: its number of parameters and test AUC over folds."""
    auc = fold_summary(cv, "condition", ["test_auc"]).set_index("condition")
    params = cv.groupby("condition")["n_parameters"].first()
    return [f"{cond} ({params[cond]:,} parameters): test AUC {r['mean']:.3f} ± {r['std']:.3f} "
            f"(95 % CI {r['ci_low']:.3f}-{r['ci_high']:.3f}, {int(r['n'])} folds)." for cond, r in auc.iterrows()]


def attention_control_lines(h2: dict[str, Any]) -> list[str]:
    """Does learned attention matter? H2's comparisons with the uniform-weights control on test AUC."""
    tests = record_tests(h2)
    if tests.empty:
        return []
    rows = tests[(tests["b"] == "npr_multiscale_uniform") & (tests["metric"] == "test_auc")]
    return ["Does learned attention matter (vs fixed uniform weights)? " + describe_row(row) for _, row in rows.iterrows()]


def ablation_line(ablation: AblationResult) -> str:
    """The scale set with the highest mean test AUC, and every set's test AUC comparison with the reference."""
    auc = ablation.summary[ablation.summary["metric"] == "test_auc"]
    best = auc.sort_values("mean", ascending=False).iloc[0]
    tests = ablation.tests[ablation.tests["metric"] == "test_auc"] if len(ablation.tests) else ablation.tests
    return (f"Scale ablation: highest mean test AUC with {best['condition']} ({best['mean']:.3f} ± {best['std']:.3f}); "
            + "; ".join(f"{r['a']} vs {r['b']}: {r['mean_diff']:+.3f} (Holm p = {r['t_p_holm']:.3g}) -> "
                        f"{r['verdict_adjusted']}" for _, r in tests.iterrows()) + ".")


def gap_line(folds_h3: pd.DataFrame) -> str:
    """H3's generalisation gap (seen - unseen AUC) per condition."""
    gap = fold_summary(folds_h3, "condition", ["gap_auc"]).set_index("condition")
    return "Generalisation gap (seen - unseen AUC): " + ", ".join(
        f"{c} {r['mean']:+.3f} ± {r['std']:.3f}" for c, r in gap.iterrows()) + "."


def attention_line(stats: AttentionStats) -> str:
    """How spread the learned attention is, how often its argmax departs from the source's, and whether the weights
    differ between sources."""
    overall = stats.argmax.set_index("source").loc["all"]
    n_models = stats.kruskal["fold"].nunique()
    n_differs = int(stats.kruskal.groupby("fold")["differs"].any().sum()) if len(stats.kruskal) else 0
    return (f"Attention (H2 learned models, test images): mean normalised entropy {overall['mean_entropy']:.2f} "
            f"(1 = uniform), mean largest weight {overall['mean_max_weight']:.2f} for {len(weight_columns(stats.images))} "
            f"scales; argmax scale differs from its source's majority for {overall['differs_from_majority']:.0%} "
            f"of images ({overall['differs_within_model']:.0%} within a fold model); weights differ between "
            f"sources (Kruskal-Wallis, Holm, p < 0.05) in {n_differs} of {n_models} fold models.")


def external_line(external: dict[str, Any]) -> str:
    """The external set's hypotheses, or that it was skipped."""
    if external["skipped"]:
        return "External test set: skipped (external_root is empty)."
    return " ".join(describe_hypothesis(r) for r in external["hypotheses"])


def conclusions(cv_h2: pd.DataFrame, h2: dict[str, Any], ablation: AblationResult, attention: AttentionStats,
                external: dict[str, Any], h3: dict[str, Any], folds_h3: pd.DataFrame | None = None,
                sources_note: str = "") -> list[str]:
    """Notebook 08's computed conclusions; `folds_h3` None means H3 was not run."""
    lines = [f"H3: {sources_note}"] if sources_note else []
    lines += [*model_lines(cv_h2), describe_hypothesis(h2), *attention_control_lines(h2), ablation_line(ablation)]
    lines += ["H3 was not run (run_h3 is false)."] if folds_h3 is None else [describe_hypothesis(h3), gap_line(folds_h3)]
    return lines + [attention_line(attention), external_line(external)]


def hypotheses_record(settings: dict[str, Any], h2: dict[str, Any], h3: dict[str, Any], ablation: AblationResult,
                      attention: AttentionStats, external: dict[str, Any], lines: list[str],
                      runs: dict[str, pd.DataFrame | None]) -> dict[str, Any]:
    """Everything notebook 08 found, for npr_hypotheses.json; `runs`: the fold table of each part (None: not run),
    whose run keys are listed."""
    return {"settings": settings, "H2": h2, "H3": h3, "ablation": ablation.record(), "attention": attention.record(),
            "external": external, "conclusions": lines,
            "run_keys": {part: [] if cv is None else cv["run_key"].tolist() for part, cv in runs.items()}}


def headline_table(cv_h2: pd.DataFrame, folds_h3: pd.DataFrame | None = None) -> pd.DataFrame:
    """The index page's table: H2 test AUC and AP per condition, and H3 unseen and seen AUC when H3 was run."""
    table = summary_table(cv_h2, ["test_auc", "test_ap"]).add_prefix("H2 ")
    if folds_h3 is not None:
        table = table.join(summary_table(folds_h3, ["unseen_auc", "seen_auc"]).add_prefix("H3 "))
    return table.reset_index(names="condition")


# ----------------------------------------------------------------------------- figures

def fold_points_figure(folds: pd.DataFrame, metrics: Sequence[str], label: str, by: str = "condition",
                       path: str | Path | None = None):
    """One panel per metric: each fold's value per level of `by` (colour: fold), the mean and its 95 % CI in black."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lib.report.plots import save

    fig, axes = plt.subplots(1, len(metrics), figsize=(11, 3.8), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        sns.pointplot(folds, x=by, y=metric, errorbar=("ci", 95), linestyle="none", ax=axis, color="black")
        sns.stripplot(folds, x=by, y=metric, hue="fold", ax=axis, palette="tab10", size=6)
        axis.set_title(f"{label}: {metric} per fold (black: mean and 95 % CI)")
    fig.tight_layout()
    return save(fig, path)


def attention_figure(att: pd.DataFrame, title: str = "", path: str | Path | None = None):
    """Box plot and violin plot of each scale's weight per source, and a sources x scales heatmap of the mean."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lib.report.plots import save

    long = attention_long(att)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    sns.boxplot(long, x="scale", y="weight", hue="source", ax=axes[0], fliersize=1.5)
    sns.violinplot(long, x="scale", y="weight", hue="source", ax=axes[1], cut=0, density_norm="width",
                   inner=None, linewidth=0.5, legend=False)
    heat = long.pivot_table(index="source", columns="scale", values="weight", aggfunc="mean")
    sns.heatmap(heat, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, ax=axes[2], cbar_kws={"label": "mean weight"})
    n_scales = len(weight_columns(att))
    for ax in axes[:2]:
        ax.axhline(1.0 / n_scales, color="grey", ls="--", lw=0.8)  # uniform weight
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7, ncols=2, loc="upper right")
    axes[0].set_title("box plot (dashed: uniform 1/S)")
    axes[1].set_title("violin plot")
    axes[2].set_title("mean weight, sources x scales")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def npr_map_figure(examples: pd.DataFrame, scales: Sequence[float], path: str | Path | None = None, ncols_max: int = 6):
    """One row per example image (from its file, native size): the image, then its NPR map at each scale."""
    from lib.data.imageio import load_rgb
    from lib.report.plots import image_grid

    tiles, titles = [], []
    for _, ex in examples.iterrows():
        img = load_rgb(ex["path"])
        tiles.append(img)
        titles.append(f"{ex['source']} ({'fake' if ex['label'] else 'real'})")
        tiles.extend(npr_maps(img, scales))
        titles.extend(f"NPR x{s:g}" for s in scales)
    return image_grid(tiles, titles, ncols=1 + len(scales), size=1.8,
                      suptitle="NPR maps (channel mean of x - up(down(x, s)))", path=path)
