"""Statistics of the study protocol (scipy underneath): cluster bootstrap over groups, t-intervals over folds with the
Nadeau-Bengio correction, paired tests, DeLong, McNemar, Holm.

A claim is "supported" only when the confidence interval of the paired difference excludes 0 in the claimed
direction (`verdict`). NaN values are dropped (pairs with a NaN on either side in paired tests) and `n` reports how
many values were actually used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Iterator

import numpy as np
import pandas as pd
from scipy import stats as sps


def _finite(values: Any) -> np.ndarray:
    x = np.array(values, dtype=float).ravel()
    return x[~np.isnan(x)]


def summarize(values: Any, confidence: float = 0.95) -> dict[str, float]:
    """mean, sample std (ddof=1) and a two-sided t-interval for the mean; std/CI NaN when n < 2."""
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 1}
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf((1 + confidence) / 2, df=n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def summarize_table(df: pd.DataFrame, by: str | Sequence[str], metrics: Sequence[str],
                    confidence: float = 0.95, sort: bool = True) -> pd.DataFrame:
    """One row per group of `by`; for each metric m the columns m_mean, m_std, m_ci_low, m_ci_high, m_n.

    Groups come sorted, or in their order of appearance with ``sort=False``."""
    by_cols = [by] if isinstance(by, str) else list(by)
    missing = set(by_cols + list(metrics)) - set(df.columns)
    if missing:
        raise KeyError(f"summarize_table: missing column(s) {sorted(missing)}")
    rows = []
    for key, group in df.groupby(by_cols, sort=sort, dropna=False):
        row = dict(zip(by_cols, key if isinstance(key, tuple) else (key,)))
        for metric in metrics:
            row.update({f"{metric}_{k}": v for k, v in summarize(group[metric], confidence).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def paired_tests(a: Any, b: Any, confidence: float = 0.95) -> dict[str, Any]:
    """Paired comparison of a and b (e.g. per-fold scores of two models): difference a - b.

    Returns mean_diff with its t-interval, the paired t-test p and the Wilcoxon signed-rank p; a test that cannot
    be computed gives NaN and says why in t_note / wilcoxon_note.
    """
    x, y = np.array(a, dtype=float).ravel(), np.array(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired_tests needs equally long inputs, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    diff = x - y
    s = summarize(diff, confidence)
    out: dict[str, Any] = {
        "n": s["n"], "mean_a": float(x.mean()) if x.size else math.nan,
        "mean_b": float(y.mean()) if y.size else math.nan, "mean_diff": s["mean"], "diff_std": s["std"],
        "diff_ci_low": s["ci_low"], "diff_ci_high": s["ci_high"],
        "t_stat": math.nan, "t_p": math.nan, "t_note": "",
        "wilcoxon_stat": math.nan, "wilcoxon_p": math.nan, "wilcoxon_note": "",
    }
    if diff.size < 2:
        out["t_note"] = out["wilcoxon_note"] = f"needs at least 2 pairs, got {diff.size}"
        return out
    if np.all(diff == diff[0]):
        out["t_note"] = "all differences are equal (zero variance)"
    else:
        res = sps.ttest_rel(x, y)
        out["t_stat"], out["t_p"] = float(res.statistic), float(res.pvalue)
    if np.all(diff == 0):
        out["wilcoxon_note"] = "all differences are zero"
    else:
        res = sps.wilcoxon(x, y, zero_method="wilcox")
        out["wilcoxon_stat"], out["wilcoxon_p"] = float(res.statistic), float(res.pvalue)
    return out


def delong_test(y_true: Any, prob1: Any, prob2: Any) -> dict[str, float]:
    """DeLong test for two correlated AUCs on the same images (fast midrank algorithm, Sun & Xu 2014).

    Returns auc1, auc2, diff = auc1 - auc2, its standard error, z and the two-sided p. Identical predictions give
    z = 0, p = 1.
    """
    y = np.array(y_true, dtype=float).ravel()
    scores = np.vstack([np.array(prob1, dtype=float).ravel(), np.array(prob2, dtype=float).ravel()])
    if scores.shape[1] != y.size:
        raise ValueError("delong_test: labels and both score vectors must have the same length")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("delong_test: labels must be 0 or 1")
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("delong_test needs both positive (fake) and negative (real) images")
    # midranks (average ranks for ties) within positives, within negatives and over all, per classifier (rows)
    tx = sps.rankdata(pos, axis=1)
    ty = sps.rankdata(neg, axis=1)
    tz = sps.rankdata(np.hstack([pos, neg]), axis=1)
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2 * n)
    v01 = (tz[:, :m] - tx) / n          # structural components of the positives
    v10 = 1.0 - (tz[:, m:] - ty) / m    # structural components of the negatives
    sx = np.atleast_2d(np.cov(v01)) if m > 1 else np.zeros((2, 2))
    sy = np.atleast_2d(np.cov(v10)) if n > 1 else np.zeros((2, 2))
    cov = sx / m + sy / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var)
    return {"auc1": float(aucs[0]), "auc2": float(aucs[1]), "diff": diff, "se": math.sqrt(max(var, 0.0)),
            "z": z, "p": float(2 * sps.norm.sf(abs(z)))}


def mcnemar_test(y_true: Any, pred1: Any, pred2: Any) -> dict[str, Any]:
    """McNemar test of two classifiers' accuracies on the same images.

    b = images only model 1 gets right, c = images only model 2 gets right. Exact binomial test when b + c < 25,
    else chi-square with continuity correction (|b - c| - 1)^2 / (b + c), 1 degree of freedom.
    """
    y = np.array(y_true).ravel()
    p1, p2 = np.array(pred1).ravel(), np.array(pred2).ravel()
    if not (y.shape == p1.shape == p2.shape):
        raise ValueError("mcnemar_test: labels and both prediction vectors must have the same length")
    right1, right2 = p1 == y, p2 == y
    b, c = int((right1 & ~right2).sum()), int((~right1 & right2).sum())
    out: dict[str, Any] = {"b": b, "c": c, "n_discordant": b + c,
                           "accuracy1": float(right1.mean()) if y.size else math.nan,
                           "accuracy2": float(right2.mean()) if y.size else math.nan}
    if b + c == 0:
        return {**out, "statistic": math.nan, "p": 1.0, "method": "no discordant pairs"}
    if b + c < 25:
        return {**out, "statistic": float(b), "p": float(sps.binomtest(b, b + c, 0.5).pvalue),
                "method": "exact binomial"}
    stat = (abs(b - c) - 1) ** 2 / (b + c)
    return {**out, "statistic": float(stat), "p": float(sps.chi2.sf(stat, df=1)),
            "method": "chi-square with continuity correction"}


def holm(pvalues: Any) -> np.ndarray:
    """Holm step-down adjusted p-values (monotone, capped at 1), in the input order; NaN passed through."""
    p = np.array(pvalues, dtype=float).ravel()
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if valid.size == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def verdict(diff_ci_low: float, diff_ci_high: float, direction: str = "greater") -> str:
    """'supported' if the CI of the paired difference excludes 0 in the claimed direction, 'contradicted' if it
    excludes 0 in the other direction, else 'inconclusive' (also for NaN bounds)."""
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    low, high = float(diff_ci_low), float(diff_ci_high)
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if direction == "less":
        low, high = -high, -low
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "inconclusive"


# ----------------------------------------------------------------------------- inference over groups
def group_strata(group_has_real: Any, group_has_fake: Any) -> np.ndarray:
    """Stratum of each group by its label mix: 0 = real only, 1 = fake only, 2 = both (a photograph and its fakes)."""
    real, fake = np.asarray(group_has_real, dtype=bool), np.asarray(group_has_fake, dtype=bool)
    return np.where(real & fake, 2, np.where(fake, 1, 0))


def cluster_bootstrap_counts(strata: Any, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_boot, n_groups) counts of how often each group is drawn: groups resampled with replacement within their
    stratum (so every replicate keeps the class mix of the original), never images."""
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, strata.size), dtype=np.int32)
    for level in np.unique(strata):
        members = np.flatnonzero(strata == level)
        counts[:, members] = rng.multinomial(members.size, np.full(members.size, 1 / members.size), size=n_boot)
    return counts


def _binned_class_weights(group_of_image: Any, labels: Any, scores: Any, counts: np.ndarray, chunk: int = 256,
                          descending: bool = False) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Per chunk of replicates (rows of ``counts``): the positive and negative weight in each unique-score bin
    (ascending, or highest first), each image weighted by its group's count. Images are summed per (group, bin) in
    sparse matrices, so a replicate costs one sparse product."""
    from scipy.sparse import csr_matrix

    g = np.asarray(group_of_image, dtype=np.int64)
    y = np.asarray(labels).astype(int)
    uniq, bins = np.unique(np.asarray(scores, dtype=float), return_inverse=True)
    if descending:
        bins = uniq.size - 1 - bins
    shape = (counts.shape[1], uniq.size)
    pos = csr_matrix((np.ones(int((y == 1).sum())), (g[y == 1], bins[y == 1])), shape=shape)
    neg = csr_matrix((np.ones(int((y == 0).sum())), (g[y == 0], bins[y == 0])), shape=shape)
    for start in range(0, counts.shape[0], chunk):
        c = counts[start:start + chunk].astype(float)
        yield slice(start, start + chunk), np.asarray((pos.T @ c.T).T), np.asarray((neg.T @ c.T).T)


def weighted_auc(group_of_image: Any, labels: Any, scores: Any, counts: np.ndarray, chunk: int = 256) -> np.ndarray:
    """ROC AUC of every bootstrap replicate (a row of ``counts``), each image weighted by its group's count.
    Vectorised over score bins (`_binned_class_weights`); ties count one half, as in `roc_auc_score`."""
    out = np.empty(counts.shape[0])
    for rows, wp, wn in _binned_class_weights(group_of_image, labels, scores, counts, chunk):
        below = np.cumsum(wn, axis=1) - wn  # negative weight strictly below each score bin
        num = (wp * (below + 0.5 * wn)).sum(axis=1)
        den = wp.sum(axis=1) * wn.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[rows] = num / den
    return out


def weighted_average_precision(group_of_image: Any, labels: Any, scores: Any, counts: np.ndarray,
                               chunk: int = 256) -> np.ndarray:
    """Average precision of every bootstrap replicate (a row of ``counts``), each image weighted by its group's count:
    sum over distinct scores, highest first, of (recall gained there) x (precision at that threshold), as
    `average_precision_score` computes it."""
    out = np.empty(counts.shape[0])
    for rows, wp, wn in _binned_class_weights(group_of_image, labels, scores, counts, chunk, descending=True):
        tp, fp = np.cumsum(wp, axis=1), np.cumsum(wn, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            out[rows] = (wp * precision).sum(axis=1) / wp.sum(axis=1)
    return out


def weighted_mean(group_of_image: Any, values: Any, counts: np.ndarray) -> np.ndarray:
    """Mean of a per-image value (e.g. correct = 1) in every replicate, each image weighted by its group's count."""
    g = np.asarray(group_of_image, dtype=np.int64)
    v = np.asarray(values, dtype=float)
    per_group_sum = np.bincount(g, weights=v, minlength=counts.shape[1])
    per_group_n = np.bincount(g, minlength=counts.shape[1]).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ per_group_sum) / (counts @ per_group_n)


def bootstrap_p(diffs: Any) -> float:
    """Two-sided bootstrap p of 'difference = 0': twice the smaller tail share, (count + 1) / (B + 1), capped at 1."""
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return math.nan
    if np.all(d == 0):
        return 1.0
    tail = min((d <= 0).sum(), (d >= 0).sum())
    return float(min(1.0, 2 * (tail + 1) / (d.size + 1)))


def percentile_interval(values: Any, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (stays inside the metric's range by construction)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(v, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def holm_levels(pvalues: Any, alpha: float = 0.05) -> np.ndarray:
    """Per-hypothesis error level of Holm-consistent intervals: walking up from the smallest p, a rejected hypothesis of
    rank r gets alpha / (m - r + 1); from the first one not rejected on, all get that step's level. So an interval
    excludes zero exactly when Holm's step-down rejects (NaN p: the level of the stopping step)."""
    p = np.array(pvalues, dtype=float).ravel()
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    order = valid[np.argsort(p[valid], kind="stable")]
    levels = np.full(p.shape, np.nan)
    stop = alpha / max(m, 1)
    for rank, idx in enumerate(order):
        step = alpha / (m - rank)
        if p[idx] > step:
            stop = step
            levels[order[rank:]] = step
            break
        levels[idx] = step
        stop = step
    levels[np.isnan(levels)] = stop
    return levels


def nadeau_bengio_t(a: Any, b: Any, test_train_ratio: float, confidence: float = 0.95) -> dict[str, Any]:
    """Corrected resampled paired t over folds (Nadeau & Bengio 2003): the folds' training sets overlap, so the
    variance of the mean difference is (1/k + n_val/n_train) * s^2 rather than s^2 / k."""
    x, y = np.array(a, dtype=float).ravel(), np.array(b, dtype=float).ravel()
    keep = ~(np.isnan(x) | np.isnan(y))
    diff = x[keep] - y[keep]
    k = int(diff.size)
    out: dict[str, Any] = {"n_folds": k, "nb_mean_diff": float(diff.mean()) if k else math.nan,
                           "nb_ci_low": math.nan, "nb_ci_high": math.nan, "nb_t": math.nan, "nb_p": math.nan,
                           "nb_note": ""}
    if k < 2:
        return out | {"nb_note": f"needs at least 2 folds, got {k}"}
    var = float(diff.var(ddof=1))
    se = math.sqrt((1 / k + test_train_ratio) * var)
    if se == 0:
        return out | {"nb_note": "all differences are equal (zero variance)"}
    crit = float(sps.t.ppf((1 + confidence) / 2, df=k - 1))
    t = out["nb_mean_diff"] / se
    return out | {"nb_ci_low": out["nb_mean_diff"] - crit * se, "nb_ci_high": out["nb_mean_diff"] + crit * se,
                  "nb_t": t, "nb_p": float(2 * sps.t.sf(abs(t), df=k - 1))}


def wilcoxon_min_p(n_pairs: int) -> float:
    """Smallest two-sided p the exact Wilcoxon signed-rank test can give with n pairs: 2 / 2^n (3 pairs: 0.25)."""
    return min(1.0, 2.0 / 2 ** int(n_pairs)) if n_pairs > 0 else 1.0
