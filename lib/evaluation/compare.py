"""Runs -> comparison tables: the study's one comparison rule, intervals over groups, fold summaries.

Everything here takes the tidy tables of `lib.training.runstore` (one row per fold from `run_cv`, one row per evaluated
image from `collect_predictions`, with its `group`) plus a column naming the compared thing (`by`: a model, a condition).

The protocol (README, "Statistical protocol"):
- Evaluation sets: ``oof``, the pooled out-of-fold validation predictions (every trainval group is validated exactly
  once), where every choice is made; ``test``, the fold models' mean probability on the test hold-out, scored for the
  final report and pre-registered comparisons only; ``holdout``, the same for held-out sources.
- Intervals: cluster bootstrap over groups (photographs, identities, seeds), never images, with group counts beside
  every number (`metric_intervals`).
- One comparison rule (`compare_family`): a family of paired differences, the same resampled groups for both sides,
  Holm-stepped intervals; "supported" / "contradicted" only when the adjusted interval excludes zero.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from lib.evaluation.metrics import best_threshold, per_source_metrics
from lib.evaluation.stats import (bootstrap_p, cluster_bootstrap_counts, delong_test, group_strata, holm, holm_levels,
                                  mcnemar_test, nadeau_bengio_t, paired_tests, percentile_interval, summarize, verdict,
                                  weighted_auc, weighted_average_precision, weighted_mean, wilcoxon_min_p)

METRICS = ("auc", "ap", "accuracy", "f1")
SETS = ("oof", "test")
BOOT_METRICS = ("auc", "ap", "accuracy")
FAMILY_COLUMNS = ["a", "b", "set", "metric", "claim", "estimate_a", "estimate_b", "diff", "ci_low", "ci_high", "level",
                  "p", "p_holm", "verdict", "real_groups", "fake_groups", "real_images", "fake_images", "note"]
N_BOOT = 2000
# Fewer groups of a class give too few distinct resamples (2 groups: 3) for a percentile interval to mean anything.
MIN_GROUPS = 3


# ----------------------------------------------------------------------------- evaluation sets and group counts
def evaluation_set(predictions: pd.DataFrame, by: str, name: str) -> pd.DataFrame:
    """One prediction per (level of `by`, image) for the evaluation set `name`.

    ``oof``: the validation rows pooled over folds (each image is validated by the one fold model that did not train
    on it); ``test`` / ``holdout``: the mean probability of the fold models (`fold_ensemble`)."""
    if name == "oof":
        part = predictions[predictions["split"] == "val"]
        keys = [by, "path"]
        agg = {c: (c, "first") for c in ("label", "source", "group") if c in part.columns}
        return part.groupby(keys, sort=False).agg(**agg, probability=("probability", "mean")).reset_index()
    if name in ("test", "holdout"):
        return fold_ensemble(predictions, by, split=name)
    raise ValueError(f"unknown evaluation set {name!r}; use 'oof', 'test' or 'holdout'")


def require_validation(frame: pd.DataFrame, who: str) -> pd.DataFrame:
    """Guard of every selection function: it may read validation predictions or metrics only, never the test
    hold-out (a `split` other than "val", or a test_*/holdout_* metric column, raises)."""
    if "split" in frame.columns and not frame["split"].isin(["val"]).all():
        bad = sorted(set(frame["split"].astype(str)) - {"val"})
        raise ValueError(f"{who} chooses on validation data only, but was given {bad} predictions")
    if "set" in frame.columns and not frame["set"].isin(["oof"]).all():
        raise ValueError(f"{who} chooses on out-of-fold validation data only, got sets {sorted(set(frame['set']))}")
    leaked = [c for c in frame.columns if str(c).startswith(("test_", "holdout_"))]
    if leaked:
        raise ValueError(f"{who} chooses on validation data only, but was given test columns {leaked}")
    return frame


def group_ids(frame: pd.DataFrame) -> pd.Series:
    """Each image's group; a table without groups (e.g. CIFAKE-style data) treats each image as its own group."""
    return frame["group"].astype(str) if "group" in frame.columns else frame["path"].astype(str)


def group_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many independent units stand behind a number: real and fake groups (a group holding both counts for
    both), images of each class."""
    groups, labels = group_ids(frame), frame["label"].astype(int)
    return {"real_groups": int(groups[labels == 0].nunique()), "fake_groups": int(groups[labels == 1].nunique()),
            "real_images": int((labels == 0).sum()), "fake_images": int((labels == 1).sum())}


def groups_are_images(frame: pd.DataFrame) -> bool:
    """True when every group holds one image: then image-level tests (DeLong, McNemar) are valid."""
    return bool(group_ids(frame).is_unique)


class _Resampler:
    """Bootstrap replicates of one evaluation frame: group codes, strata and counts, shared by every score on it."""

    def __init__(self, frame: pd.DataFrame, n_boot: int, seed: int, min_groups: int = MIN_GROUPS):
        codes, names = pd.factorize(group_ids(frame))
        labels = frame["label"].astype(int).to_numpy()
        has_real = np.bincount(codes, weights=(labels == 0), minlength=len(names)) > 0
        has_fake = np.bincount(codes, weights=(labels == 1), minlength=len(names)) > 0
        self.codes, self.labels = codes, labels
        self.counts = cluster_bootstrap_counts(group_strata(has_real, has_fake), n_boot, seed)
        self.enough = bool(has_real.sum() >= min_groups and has_fake.sum() >= min_groups)
        self.min_groups = min_groups

    def scores(self, probability: np.ndarray, metric: str, threshold: float = 0.5) -> tuple[float, np.ndarray]:
        """(the metric on the original frame, its value in every replicate)."""
        if metric == "auc":
            full = weighted_auc(self.codes, self.labels, probability, np.ones((1, self.counts.shape[1]), int))[0]
            return float(full), weighted_auc(self.codes, self.labels, probability, self.counts)
        if metric == "ap":
            full = weighted_average_precision(self.codes, self.labels, probability,
                                              np.ones((1, self.counts.shape[1]), int))[0]
            return float(full), weighted_average_precision(self.codes, self.labels, probability, self.counts)
        if metric == "accuracy":
            correct = ((probability >= threshold).astype(int) == self.labels).astype(float)
            return float(correct.mean()), weighted_mean(self.codes, correct, self.counts)
        raise ValueError(f"bootstrap metric must be one of {BOOT_METRICS}, got {metric!r}")


def _not_enough_note(counts: dict[str, int], min_groups: int = MIN_GROUPS) -> str:
    return (f"interval undefined: {counts['real_groups']} real and {counts['fake_groups']} fake group(s); the group "
            f"bootstrap needs at least {min_groups} of each")


def metric_intervals(predictions: pd.DataFrame, by: str = "model", sets: Sequence[str] = SETS,
                     metrics: Sequence[str] = ("auc",), thresholds: pd.Series | None = None, n_boot: int = N_BOOT,
                     seed: int = 0, confidence: float = 0.95, min_groups: int = MIN_GROUPS) -> pd.DataFrame:
    """Per level of `by`, evaluation set and metric: the estimate, its cluster-bootstrap interval over groups and the
    group counts behind it (no interval with fewer than `min_groups` groups of a class). Accuracy uses `thresholds`
    (default: chosen on validation, `validation_thresholds`)."""
    thresholds = validation_thresholds(predictions, by) if thresholds is None else thresholds
    rows = []
    for name in sets:
        part = evaluation_set(predictions, by, name)
        for level, frame in part.groupby(by, sort=False):
            rows += [{by: level, "set": name, **row} for row in frame_intervals(
                frame, metrics, float(thresholds.get(level, 0.5)), n_boot, seed, confidence, min_groups)]
    return pd.DataFrame(rows)


def frame_intervals(frame: pd.DataFrame, metrics: Sequence[str] = ("auc",), threshold: float = 0.5,
                    n_boot: int = N_BOOT, seed: int = 0, confidence: float = 0.95,
                    min_groups: int = MIN_GROUPS) -> list[dict]:
    """One row per metric for one frame of predictions (label, probability, group): the estimate, its cluster-bootstrap
    interval over groups, the group counts behind it and a note when the groups are too few for an interval."""
    frame = frame.reset_index(drop=True)
    counts = group_counts(frame)
    sampler = _Resampler(frame, n_boot, seed, min_groups)
    rows = []
    for metric in metrics:
        estimate, reps = sampler.scores(frame["probability"].to_numpy(), metric, threshold)
        low, high = percentile_interval(reps, confidence) if sampler.enough else (math.nan, math.nan)
        rows.append({"metric": metric, "estimate": estimate, "ci_low": low, "ci_high": high, **counts,
                     "note": "" if sampler.enough else _not_enough_note(counts, min_groups)})
    return rows


def compare_family(predictions: pd.DataFrame, by: str, pairs: Sequence[tuple[str, str]], sets: Sequence[str] = SETS,
                   metrics: Sequence[str] = ("auc",), direction: str = "greater", thresholds: pd.Series | None = None,
                   n_boot: int = N_BOOT, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """The one comparison rule: for each pair (a, b) the paired difference a - b on each evaluation set.

    Both sides are scored on the images they share, with the same resampled groups in every replicate. Each set is
    one family: Holm-adjusted p over its rows, and Holm-consistent intervals (`holm_levels`: a row's interval
    excludes zero when Holm's step-down rejects it). The verdict on the claim "a better than b" (``direction="less"``:
    a lower) is "supported" / "contradicted" only when that interval excludes zero, else "inconclusive"."""
    thresholds = validation_thresholds(predictions, by) if thresholds is None else thresholds
    tables = []
    for name in sets:
        part = evaluation_set(predictions, by, name)
        rows, diffs = [], []
        for a, b in pairs:
            wide = part[part[by].isin([a, b])].pivot_table(index="path", columns=by, values="probability",
                                                          aggfunc="first").reindex(columns=[a, b]).dropna()
            frame = part[part[by] == a].set_index("path").loc[wide.index].reset_index()
            shared = len(frame) > 0 and frame["label"].nunique() == 2
            counts = group_counts(frame) if len(frame) else {}
            sampler = _Resampler(frame, n_boot, seed) if shared else None
            for metric in metrics:
                row = {"a": a, "b": b, "set": name, "metric": metric, **counts}
                if sampler is None:
                    rows.append(row | {"note": "no shared images of both classes"})
                    diffs.append(None)
                    continue
                est_a, reps_a = sampler.scores(wide[a].to_numpy(), metric, float(thresholds.get(a, 0.5)))
                est_b, reps_b = sampler.scores(wide[b].to_numpy(), metric, float(thresholds.get(b, 0.5)))
                ok = sampler.enough
                rows.append(row | {"estimate_a": est_a, "estimate_b": est_b, "diff": est_a - est_b,
                                   "p": bootstrap_p(reps_a - reps_b) if ok else math.nan,
                                   "note": "" if ok else _not_enough_note(counts)})
                diffs.append(reps_a - reps_b if ok else None)
        if not rows:
            continue
        table = _finish_family(pd.DataFrame(rows).reindex(columns=FAMILY_COLUMNS), diffs, direction, alpha)
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=FAMILY_COLUMNS)


def _finish_family(table: pd.DataFrame, diffs: list, direction: str, alpha: float) -> pd.DataFrame:
    """Holm over one family: adjusted p, Holm-consistent intervals of the replicate differences, claim, verdict."""
    p = table["p"].to_numpy(dtype=float)
    table["p_holm"] = holm(p)
    table["level"] = 1 - holm_levels(p, alpha)
    bounds = [percentile_interval(d, level) if d is not None else (math.nan, math.nan)
              for d, level in zip(diffs, table["level"])]
    table["ci_low"], table["ci_high"] = [lo for lo, _ in bounds], [hi for _, hi in bounds]
    table["claim"] = [f"{a} {'>' if direction == 'greater' else '<'} {b}" for a, b in zip(table["a"], table["b"])]
    table["verdict"] = [verdict(lo, hi, direction) for lo, hi in zip(table["ci_low"], table["ci_high"])]
    return table


def compare_auc_shared_negatives(frames: pd.DataFrame, by: str, pairs: Sequence[tuple[str, str]],
                                 direction: str = "greater", set_name: str = "test", n_boot: int = N_BOOT,
                                 seed: int = 0, alpha: float = 0.05, confidence: float = 0.95) -> pd.DataFrame:
    """The one comparison rule for two AUCs that share their real images but not their fakes.

    ``frames``: one prediction per (level of ``by``, image), with path, label, group, probability (e.g. fold
    ensembles). Side a and side b each score the SAME real images (matched by path; only the reals both scored are
    kept) against their OWN fakes, each with its own predictions: e.g. a source's fakes scored by models trained
    without it against the same real test photographs scored by those models, vs the source's fakes and the same
    reals scored by the models trained with it. `compare_family` pairs by image, so it cannot pair these sides.

    Per pair: groups resampled (stratified by label mix, `cluster_bootstrap_counts`) over the union of both sides'
    groups, the same replicate weighting both sides; a - b per replicate. The pairs form one family: Holm-adjusted p,
    Holm-consistent intervals, verdict as in `compare_family`. Columns: `FAMILY_COLUMNS`
    (real counts = the shared reals, fake counts = both sides' fakes) plus each side's own 95 % interval
    (a_ci_low, a_ci_high, b_ci_low, b_ci_high) and its fake groups (fake_groups_a, fake_groups_b)."""
    rows, diffs = [], []
    for a, b in pairs:
        side_a, side_b = frames[frames[by] == a], frames[frames[by] == b]
        shared = set(side_a.loc[side_a["label"] == 0, "path"]) & set(side_b.loc[side_b["label"] == 0, "path"])
        side_a = side_a[(side_a["label"] == 1) | side_a["path"].isin(shared)].reset_index(drop=True)
        side_b = side_b[(side_b["label"] == 1) | side_b["path"].isin(shared)].reset_index(drop=True)
        both = pd.concat([side_a, side_b], ignore_index=True)
        reals = side_a[side_a["label"] == 0]
        fakes = both[both["label"] == 1]
        row = {"a": a, "b": b, "set": set_name, "metric": "auc",
               "real_groups": int(group_ids(reals).nunique()), "fake_groups": int(group_ids(fakes).nunique()),
               "real_images": int(len(reals)), "fake_images": int(len(fakes)),
               "fake_groups_a": int(group_ids(side_a[side_a["label"] == 1]).nunique()),
               "fake_groups_b": int(group_ids(side_b[side_b["label"] == 1]).nunique())}
        if not shared or not row["fake_groups_a"] or not row["fake_groups_b"]:
            rows.append(row | {"note": "no shared real images, or a side without fakes"})
            diffs.append(None)
            continue
        sampler = _Resampler(both, n_boot, seed)  # one set of group replicates over both sides
        ones = np.ones((1, sampler.counts.shape[1]), dtype=int)
        scores = {}
        for name, lo, hi in (("a", 0, len(side_a)), ("b", len(side_a), len(both))):
            args = (sampler.codes[lo:hi], sampler.labels[lo:hi], both["probability"].to_numpy(dtype=float)[lo:hi])
            scores[name] = (float(weighted_auc(*args, ones)[0]), weighted_auc(*args, sampler.counts))
        enough = row["real_groups"] >= MIN_GROUPS and min(row["fake_groups_a"], row["fake_groups_b"]) >= MIN_GROUPS
        (est_a, reps_a), (est_b, reps_b) = scores["a"], scores["b"]
        a_ci = percentile_interval(reps_a, confidence) if enough else (math.nan, math.nan)
        b_ci = percentile_interval(reps_b, confidence) if enough else (math.nan, math.nan)
        note = "" if enough else (f"interval undefined: {row['real_groups']} shared real group(s), "
                                  f"{row['fake_groups_a']} / {row['fake_groups_b']} fake groups; the group bootstrap "
                                  f"needs at least {MIN_GROUPS} of each")
        rows.append(row | {"estimate_a": est_a, "estimate_b": est_b, "diff": est_a - est_b,
                           "p": bootstrap_p(reps_a - reps_b) if enough else math.nan, "a_ci_low": a_ci[0],
                           "a_ci_high": a_ci[1], "b_ci_low": b_ci[0], "b_ci_high": b_ci[1], "note": note})
        diffs.append(reps_a - reps_b if enough else None)
    extra = ["a_ci_low", "a_ci_high", "b_ci_low", "b_ci_high", "fake_groups_a", "fake_groups_b"]
    table = pd.DataFrame(rows).reindex(columns=[*FAMILY_COLUMNS, *extra])
    return _finish_family(table, diffs, direction, alpha) if len(table) else table


def fold_tests(cv: pd.DataFrame, by: str, pairs: Sequence[tuple[str, str]], metric: str = "val_auc",
               test_train_ratio: float | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Secondary, training-noise view: per pair the fold-level paired difference with the Nadeau-Bengio corrected t
    (k folds: n_val / n_train = 1 / (k - 1) unless given). Wilcoxon is reported only where its smallest attainable p
    can fall below alpha; otherwise the note says why it is omitted."""
    rows = []
    for a, b in pairs:
        wide = cv.pivot_table(index="fold", columns=by, values=metric, aggfunc="first", dropna=False).reindex(
            columns=[a, b]).dropna()
        k = len(wide)
        ratio = test_train_ratio if test_train_ratio is not None else (1 / (k - 1) if k > 1 else math.nan)
        res = nadeau_bengio_t(wide[a], wide[b], ratio)
        row = {"a": a, "b": b, "metric": metric, **res}
        if wilcoxon_min_p(k) > alpha:
            row.update(wilcoxon_p=math.nan, wilcoxon_note=f"omitted: with {k} folds the smallest attainable Wilcoxon "
                                                          f"p is {wilcoxon_min_p(k):.3g} > {alpha}")
        else:
            row.update(wilcoxon_p=paired_tests(wide[a], wide[b])["wilcoxon_p"], wilcoxon_note="")
        rows.append(row)
    return pd.DataFrame(rows)


def counts_text(row: dict | pd.Series) -> str:
    """'3 real / 12 fake groups' of a `metric_intervals` or `compare_family` row."""
    return f"{int(row['real_groups'])} real / {int(row['fake_groups'])} fake groups"


def interval_text(row: dict | pd.Series, digits: int = 3) -> str:
    """'0.905 [0.812, 0.961]; 3 real / 12 fake groups' (the interval is left out when undefined)."""
    est = row.get("estimate", row.get("diff"))
    low, high = row["ci_low"], row["ci_high"]
    ci = "" if pd.isna(low) else f" [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{est:.{digits}f}{ci}; {counts_text(row)}"


def describe_family_row(row: dict | pd.Series, metric_name: str = "AUC") -> str:
    """One computed sentence about a `compare_family` row (used in conclusion cells)."""
    if pd.isna(row.get("diff")):
        return f"{row['a']} vs {row['b']} ({row['set']}): not comparable ({row.get('note', '')})."
    ci = (str(row["note"]) if pd.isna(row["ci_low"]) else
          f"{row['level'] * 100:.1f} % Holm interval {row['ci_low']:+.3f} to {row['ci_high']:+.3f}, "
          f"p Holm = {row['p_holm']:.3g}")
    return (f"{row['a']} - {row['b']} {metric_name} on {row['set']}: {row['diff']:+.3f} ({ci}; {counts_text(row)}) "
            f"-> claim '{row['claim']}': {row['verdict']}")


def cv_summary(cv: pd.DataFrame, by: str = "model", part: str = "test", metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Long table: one row per (by, metric) with mean, std, 95 % t-interval and n over folds."""
    rows = []
    for level, group in cv.groupby(by, sort=False):
        for metric in metrics:
            rows.append({by: level, "metric": metric, **summarize(group[f"{part}_{metric}"])})
    return pd.DataFrame(rows)


def summary_wide(summary: pd.DataFrame, by: str = "model", digits: int = 3) -> pd.DataFrame:
    """`mean ± std [ci_low, ci_high]` strings, one row per level of `by`, one column per metric."""
    fmt = f"{{:.{digits}f}}"
    text = summary.apply(
        lambda r: f"{fmt.format(r['mean'])} ± {fmt.format(r['std'])} [{fmt.format(r['ci_low'])}, {fmt.format(r['ci_high'])}]", axis=1)
    return summary.assign(text=text).pivot(index=by, columns="metric", values="text").reindex(
        columns=list(dict.fromkeys(summary["metric"])), index=list(dict.fromkeys(summary[by])))


def fold_ensemble(predictions: pd.DataFrame, by: str = "model", split: str = "test",
                  values: Sequence[str] = ("probability",)) -> pd.DataFrame:
    """Mean probability over the fold models for each image of `split` (the test set is shared by every fold);
    `values` names the per-image columns averaged (e.g. a calibrated probability beside the raw one)."""
    part = predictions[predictions["split"] == split]
    kept = {c: (c, "first") for c in ("label", "source", "group") if c in part.columns}
    means = {v: (v, "mean") for v in values}
    return (part.groupby([by, "path"], sort=False)
            .agg(**kept, **means, n_models=(values[0], "size"))
            .reset_index())


def validation_thresholds(predictions: pd.DataFrame, by: str = "model", metric: str = "accuracy") -> pd.Series:
    """One decision threshold per level of `by`, chosen on its pooled validation predictions (never on test)."""
    val = predictions[predictions["split"] == "val"]
    out = {}
    for level, group in val.groupby(by, sort=False):
        try:
            out[level] = best_threshold(group["label"].to_numpy(), group["probability"].to_numpy(), metric)
        except ValueError:  # one class in validation: fall back to the neutral threshold
            out[level] = 0.5
    return pd.Series(out, name="threshold")


def test_set_comparison(predictions: pd.DataFrame, by: str, a: str, b: str) -> dict:
    """DeLong (AUC) and McNemar (accuracy at validation-chosen thresholds) for the fold ensembles of a and b."""
    ens = fold_ensemble(predictions[predictions[by].isin([a, b])], by)
    wide = ens.pivot_table(index="path", columns=by, values="probability", aggfunc="first").dropna()
    labels = ens.drop_duplicates("path").set_index("path").loc[wide.index, "label"].to_numpy()
    out = {"a": a, "b": b, "n_test": int(len(wide))}
    if len(np.unique(labels)) < 2:
        return out | {"note": "test set has one class: DeLong and McNemar undefined"}
    d = delong_test(labels, wide[a].to_numpy(), wide[b].to_numpy())
    thr = validation_thresholds(predictions[predictions[by].isin([a, b])], by)
    m = mcnemar_test(labels, wide[a].to_numpy() >= thr[a], wide[b].to_numpy() >= thr[b])
    return out | {f"delong_{k}": v for k, v in d.items()} | {f"mcnemar_{k}": v for k, v in m.items()} | {
        "threshold_a": float(thr[a]), "threshold_b": float(thr[b])}


def per_source_summary(predictions: pd.DataFrame, by: str = "model", split: str = "test") -> pd.DataFrame:
    """Per-source accuracy/AUC/AP per fold model, summarised over folds (mean, std, interval)."""
    rows = []
    part = predictions[predictions["split"] == split]
    for (level, fold), group in part.groupby([by, "fold"], sort=False):
        table = per_source_metrics(group)
        rows.append(table.assign(**{by: level, "fold": fold}))
    if not rows:
        return pd.DataFrame()
    per_fold = pd.concat(rows, ignore_index=True)
    out = []
    for (level, source), group in per_fold.groupby([by, "source"], sort=False):
        row = {by: level, "source": source, "label": int(group["label"].iloc[0]), "n": int(group["n"].iloc[0])}
        for metric in ("accuracy", "auc", "ap"):
            s = summarize(group[metric])
            row.update({f"{metric}_mean": s["mean"], f"{metric}_std": s["std"], f"{metric}_ci_low": s["ci_low"],
                        f"{metric}_ci_high": s["ci_high"]})
        out.append(row)
    return pd.DataFrame(out)
