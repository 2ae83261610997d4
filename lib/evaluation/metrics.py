"""Detection metrics: pure functions over (labels, fake probabilities), scikit-learn underneath.

Conventions: label 1 = fake (the positive class), 0 = real; a probability is P(fake); an image is predicted fake
when `probability >= threshold`. Undefined values (AUC with one class, precision with no positive prediction) are
NaN, never an exception. Inputs are never modified (they are copied into new numpy arrays).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

THRESHOLD_METRICS = ("accuracy", "balanced_accuracy", "f1")


def _check(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated copies: y as int 0/1, p as float in [0, 1], same 1-D length."""
    y = np.array(y_true, dtype=float).ravel()
    p = np.array(y_prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.size} vs {p.size}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite values in [0, 1]")
    return y.astype(int), p


def _both_classes(y: np.ndarray) -> bool:
    return 0 < y.sum() < y.size


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def _bin_ids(p: np.ndarray, n_bins: int) -> np.ndarray:
    # same equal-width binning as sklearn.calibration.calibration_curve, so ECE and the calibration table agree
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p)


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = 15) -> float:
    """ECE = sum over equal-width bins of (bin share) * |fraction of fakes - mean probability|."""
    y, p = _check(y_true, y_prob)
    if y.size == 0:
        return math.nan
    ids = _bin_ids(p, n_bins)
    # per bin: share * |mean(y) - mean(p)| == |sum(y) - sum(p)| / n
    gap = np.abs(np.bincount(ids, weights=y, minlength=n_bins) - np.bincount(ids, weights=p, minlength=n_bins))
    return float(gap.sum() / y.size)


def equal_error_rate(y_true: Any, y_prob: Any) -> float:
    """Rate where false-positive and false-negative rates are equal, linearly interpolated on the ROC curve."""
    y, p = _check(y_true, y_prob)
    if not _both_classes(y):
        return math.nan
    fpr, tpr, _ = skm.roc_curve(y, p)
    gap = (1.0 - tpr) - fpr  # non-increasing along the curve: +1 at the start, -1 at the end
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0 or i == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def binary_metrics(y_true: Any, y_prob: Any, threshold: float = 0.5) -> dict[str, float]:
    """Threshold-free (auc, ap, eer, brier, ece) and thresholded (accuracy ...) metrics, NaN where undefined."""
    y, p = _check(y_true, y_prob)
    n, n_fake = int(y.size), int(y.sum())
    out: dict[str, float] = {"n": n, "n_real": n - n_fake, "n_fake": n_fake}
    if n == 0:
        keys = ("auc", "ap", "accuracy", "real_accuracy", "fake_accuracy", "precision", "recall", "f1", "eer",
                "brier", "ece")
        return {**dict.fromkeys(keys, math.nan), **out}
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    both = _both_classes(y)
    out.update(
        auc=float(skm.roc_auc_score(y, p)) if both else math.nan,
        ap=float(skm.average_precision_score(y, p)) if both else math.nan,
        accuracy=float(skm.accuracy_score(y, pred)),
        real_accuracy=_ratio(tn, n - n_fake),
        fake_accuracy=_ratio(tp, n_fake),
        precision=float(skm.precision_score(y, pred, zero_division=np.nan)),
        recall=float(skm.recall_score(y, pred, zero_division=np.nan)),
        f1=float(skm.f1_score(y, pred, zero_division=np.nan)),
        eer=equal_error_rate(y, p),
        brier=float(np.mean((p - y) ** 2)),  # sklearn's brier_score_loss refuses single-class input
        ece=expected_calibration_error(y, p),
    )
    return out


def per_source_metrics(df: pd.DataFrame, prob_col: str = "probability", label_col: str = "label",
                       source_col: str = "source", threshold: float = 0.5) -> pd.DataFrame:
    """One row per source: n, label, accuracy at `threshold`, mean probability, and AUC / AP.

    AUC/AP of a single-label source compare that source's images with ALL images of the other label in `df`:
    a fake source's fakes against every real image (how well this generator is separated from real photos), a real
    source against every fake. A source with both labels gets AUC/AP within its own rows. AP treats fake as the
    positive class in every case.
    """
    missing = {prob_col, label_col, source_col} - set(df.columns)
    if missing:
        raise KeyError(f"per_source_metrics: missing column(s) {sorted(missing)}")
    y_all, p_all = _check(df[label_col].to_numpy(), df[prob_col].to_numpy())
    sources = df[source_col].astype(str).to_numpy()
    rows = []
    for source in pd.unique(sources):
        own = sources == source
        y, p = y_all[own], p_all[own]
        labels = np.unique(y)
        if labels.size == 1:
            # the source's images against every image of the other label
            comp = own | (y_all != labels[0])
        else:
            comp = own
        both = _both_classes(y_all[comp])
        rows.append({
            "source": source,
            "label": int(labels[0]) if labels.size == 1 else -1,
            "n": int(own.sum()),
            "accuracy": float(((p >= threshold).astype(int) == y).mean()),
            "mean_probability": float(p.mean()),
            "auc": float(skm.roc_auc_score(y_all[comp], p_all[comp])) if both else math.nan,
            "ap": float(skm.average_precision_score(y_all[comp], p_all[comp])) if both else math.nan,
        })
    return pd.DataFrame(rows)


def threshold_sweep(y_true: Any, y_prob: Any, thresholds: Any = None) -> pd.DataFrame:
    """accuracy, balanced accuracy, precision, recall, f1 at each threshold (default 0, 0.01, ..., 1)."""
    y, p = _check(y_true, y_prob)
    t = np.linspace(0.0, 1.0, 101) if thresholds is None else np.array(thresholds, dtype=float).ravel()
    fake_p, real_p = np.sort(p[y == 1]), np.sort(p[y == 0])
    # counts predicted fake (p >= t) by binary search: O((n + T) log n), no n x T matrix
    tp = fake_p.size - np.searchsorted(fake_p, t, side="left")
    fp = real_p.size - np.searchsorted(real_p, t, side="left")
    fn, tn = fake_p.size - tp, real_p.size - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(fake_p.size > 0, tp / max(fake_p.size, 1), np.nan)
        specificity = np.where(real_p.size > 0, tn / max(real_p.size, 1), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        accuracy = (tp + tn) / y.size if y.size else np.full(t.shape, np.nan)
    return pd.DataFrame({"threshold": t, "accuracy": accuracy, "balanced_accuracy": (recall + specificity) / 2,
                         "precision": precision, "recall": recall, "f1": f1,
                         "tp": tp, "fp": fp, "tn": tn, "fn": fn})


def best_threshold(y_true: Any, y_prob: Any, metric: str = "accuracy") -> float:
    """Threshold maximising `metric` on (validation!) data; apply it unchanged to test data.

    Candidates are midpoints between consecutive distinct probabilities (plus one below the minimum and one above the
    maximum), so the choice does not sit exactly on a validation score. Ties go to the candidate closest to 0.5.
    """
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(THRESHOLD_METRICS)}")
    y, p = _check(y_true, y_prob)
    if not _both_classes(y):
        raise ValueError("best_threshold needs both real and fake images")
    values = np.unique(p)
    candidates = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2, [(values[-1] + 1) / 2]])
    if values[-1] == 1.0:
        candidates = candidates[:-1]  # nothing above 1 can be expressed as a threshold in [0, 1]
    sweep = threshold_sweep(y, p, candidates)
    score = sweep[metric].to_numpy()
    best = np.flatnonzero(score == np.nanmax(score))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def threshold_sweep_with_choice(val_true: Any, val_prob: Any, y_true: Any, y_prob: Any, metric: str = "accuracy",
                                thresholds: Any = None) -> pd.DataFrame:
    """`threshold_sweep` of (y_true, y_prob) with the threshold `best_threshold` picks on VALIDATION added and marked
    True in column `chosen`: what the honest choice gives, next to what a threshold chosen afterwards could give."""
    chosen = best_threshold(val_true, val_prob, metric)
    grid = np.linspace(0.0, 1.0, 101) if thresholds is None else np.array(thresholds, dtype=float).ravel()
    sweep = threshold_sweep(y_true, y_prob, np.union1d(grid, [chosen]))
    sweep["chosen"] = sweep["threshold"] == chosen
    return sweep


def roc_points(y_true: Any, y_prob: Any) -> pd.DataFrame:
    y, p = _check(y_true, y_prob)
    if not _both_classes(y):
        return pd.DataFrame(columns=["fpr", "tpr", "threshold"], dtype=float)
    fpr, tpr, thr = skm.roc_curve(y, p)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr})


def pr_points(y_true: Any, y_prob: Any) -> pd.DataFrame:
    """Precision-recall curve; sklearn's last point (recall 0, precision 1) has no threshold: NaN there."""
    y, p = _check(y_true, y_prob)
    if not _both_classes(y):
        return pd.DataFrame(columns=["precision", "recall", "threshold"], dtype=float)
    precision, recall, thr = skm.precision_recall_curve(y, p)
    return pd.DataFrame({"precision": precision, "recall": recall, "threshold": np.append(thr, np.nan)})


def calibration_table(y_true: Any, y_prob: Any, n_bins: int = 10) -> pd.DataFrame:
    """Non-empty equal-width bins: mean predicted probability, observed fake fraction, count (reliability diagram)."""
    y, p = _check(y_true, y_prob)
    if y.size == 0:
        return pd.DataFrame(columns=["bin", "prob_pred", "prob_true", "count"])
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    count = np.bincount(_bin_ids(p, n_bins), minlength=n_bins)
    return pd.DataFrame({"bin": np.flatnonzero(count), "prob_pred": prob_pred, "prob_true": prob_true,
                         "count": count[count > 0]})
