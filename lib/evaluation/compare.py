"""Runs -> comparison tables: fold summaries with intervals, paired tests, DeLong/McNemar on the shared test set.

Everything here takes the tidy tables of `lib.training.runstore` (one row per fold from `run_cv`, one row per evaluated
image from `collect_predictions`) plus a column naming the compared thing (`by`: a model, or a condition).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from lib.evaluation.metrics import best_threshold, per_source_metrics
from lib.evaluation.stats import delong_test, holm, mcnemar_test, paired_tests, summarize, verdict

METRICS = ("auc", "ap", "accuracy", "f1")


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


def paired_comparison(cv: pd.DataFrame, by: str, a: str, b: str, metric: str = "test_auc",
                      direction: str = "greater") -> dict:
    """Paired tests of `a` vs `b` over the folds they share; verdict from the interval of the difference a - b."""
    # reindex: a metric that is NaN in every fold (e.g. AUC of a one-class part) must give "no pairs", not a KeyError
    wide = cv.pivot_table(index="fold", columns=by, values=metric, aggfunc="first", dropna=False).reindex(columns=[a, b])
    pairs = wide.dropna()
    res = paired_tests(pairs[a].to_numpy(), pairs[b].to_numpy())
    return {"a": a, "b": b, "metric": metric, **res,
            "verdict": verdict(res["diff_ci_low"], res["diff_ci_high"], direction)}


def compare_to_baseline(cv: pd.DataFrame, by: str, baseline: str, metrics: Sequence[str] = ("test_auc",),
                        direction: str = "greater", others: Sequence[str] | None = None) -> pd.DataFrame:
    """Every other level of `by` against `baseline`, per metric; Holm correction over all rows (one family)."""
    others = [lvl for lvl in dict.fromkeys(cv[by]) if lvl != baseline] if others is None else list(others)
    rows = [paired_comparison(cv, by, other, baseline, metric, direction) for other in others for metric in metrics]
    table = pd.DataFrame(rows)
    if len(table):
        table["t_p_holm"] = holm(table["t_p"].to_numpy())
        table["wilcoxon_p_holm"] = holm(table["wilcoxon_p"].to_numpy())
    return table


def fold_ensemble(predictions: pd.DataFrame, by: str = "model", split: str = "test") -> pd.DataFrame:
    """Mean probability over the fold models for each image of `split` (the test set is shared by every fold)."""
    part = predictions[predictions["split"] == split]
    return (part.groupby([by, "path"], sort=False)
            .agg(label=("label", "first"), source=("source", "first"), probability=("probability", "mean"),
                 n_models=("probability", "size"))
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



def describe_comparison(row: dict | pd.Series, metric_name: str = "AUC") -> str:
    """One computed sentence about a paired comparison (used in conclusion cells)."""
    p = row.get("t_p_holm", row.get("t_p", math.nan))
    return (f"{row['a']} - {row['b']} {metric_name}: {row['mean_diff']:+.3f} "
            f"(95 % CI {row['diff_ci_low']:+.3f} to {row['diff_ci_high']:+.3f}, n = {row['n']} folds, "
            f"paired t p = {p:.3g}{' Holm' if 't_p_holm' in row else ''}) -> claim '{row['a']} better than {row['b']}': "
            f"{row['verdict']}")
