"""Calibration of saved probabilities: temperature scaling fitted on validation, before/after scores, and whether the
model's uncertainty points at its own errors.

Saved runs store probabilities, not logits, so logits are recovered with a clipped logit. Temperature scaling divides
every logit by one T > 0: ranking (AUC) is unchanged, only the confidence moves. T is fitted on VALIDATION only and
applied unchanged to test and holdout. ECE and the reliability table are the ones of `lib.evaluation.metrics`
(re-exported here), so every notebook bins the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, logit
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from lib.evaluation.metrics import _check, calibration_table, expected_calibration_error

__all__ = ["apply_temperature", "calibration_report", "expected_calibration_error", "fit_temperature",
           "logits_from_probabilities", "reliability_table", "temperature_scale", "uncertainty_error_auroc"]

reliability_table = calibration_table  # bin, prob_pred (mean confidence), prob_true (observed fake rate), count
PROBABILITY_EPS = 1e-12  # float64 still resolves 1 - 1e-12; the clip caps recovered logits at about +-27.6
TEMPERATURE_BOUNDS = (1e-2, 1e2)


def logits_from_probabilities(probs: Any, eps: float = PROBABILITY_EPS) -> np.ndarray:
    """Logits of saved probabilities; clipped so that probabilities of exactly 0 or 1 give finite logits."""
    p = np.array(probs, dtype=float).ravel()
    return logit(np.clip(p, eps, 1.0 - eps))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Probabilities sigmoid(logit / T)."""
    if not temperature > 0:
        raise ValueError(f"the temperature must be > 0, got {temperature}")
    return expit(np.asarray(logits, dtype=float) / temperature)


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    # log_expit is exact for large |logit|, where log(sigmoid) of a rounded probability is not
    return float(-np.mean(y * log_expit(logits) + (1 - y) * log_expit(-logits)))


def fit_temperature(val_logits: Any, val_labels: Any, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """T minimising the validation NLL of sigmoid(logit / T); searched on log T (bounded), since T is a scale."""
    z = np.array(val_logits, dtype=float).ravel()
    if not np.isfinite(z).all():
        raise ValueError("fit_temperature: logits must be finite")
    y, _ = _check(val_labels, expit(z))  # validates the labels and the length
    if not 0 < y.sum() < y.size:
        raise ValueError("fit_temperature needs real and fake validation images (one class drives T to a bound)")
    result = minimize_scalar(lambda log_t: _nll(z / math.exp(log_t), y), bounds=np.log(bounds), method="bounded",
                             options={"xatol": 1e-6})
    return float(math.exp(result.x))


def _scores(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict[str, float]:
    return {"ece": expected_calibration_error(y, p, n_bins), "brier": float(brier_score_loss(y, p, labels=[0, 1])),
            "nll": float(log_loss(y, p, labels=[0, 1]))}


def calibration_report(labels: Any, probs: Any, temperature: float, n_bins: int = 15) -> pd.DataFrame:
    """ECE, Brier and NLL of one set before and after temperature scaling (rows "before", "after")."""
    y, p = _check(labels, probs)
    if y.size == 0:
        raise ValueError("calibration_report: no images")
    after = apply_temperature(logits_from_probabilities(p), temperature)
    rows = [{"stage": "before", "temperature": 1.0, **_scores(y, p, n_bins)},
            {"stage": "after", "temperature": float(temperature), **_scores(y, after, n_bins)}]
    return pd.DataFrame(rows).assign(n=int(y.size))


def temperature_scale(predictions: pd.DataFrame, prob_col: str = "probability",
                      out_col: str = "calibrated_probability") -> pd.DataFrame:
    """A copy of saved predictions with `temperature` and `out_col` added; one T per run, fitted on its "val" rows.

    Runs are told apart by ``run_key`` (as `collect_predictions` gives them); without it the frame must be one run
    (one fold). The raw `prob_col` is left as it is.
    """
    missing = {prob_col, "label", "split"} - set(predictions.columns)
    if missing:
        raise KeyError(f"temperature_scale: missing column(s) {sorted(missing)}")
    if "run_key" in predictions.columns:
        runs = predictions.groupby("run_key", sort=False).indices.values()  # row positions of each run
    elif "fold" in predictions.columns and predictions["fold"].nunique() > 1:
        raise ValueError("temperature_scale: several folds but no run_key column; fit one temperature per run")
    else:
        runs = [np.arange(len(predictions))]
    probs, labels = predictions[prob_col].to_numpy(dtype=float), predictions["label"].to_numpy()
    is_val = (predictions["split"] == "val").to_numpy()
    temperature, calibrated = np.full(len(probs), np.nan), np.full(len(probs), np.nan)
    for pos in runs:
        val = pos[is_val[pos]]
        if val.size == 0:
            raise ValueError("temperature_scale: a run has no validation rows to fit its temperature on")
        t = fit_temperature(logits_from_probabilities(probs[val]), labels[val])
        temperature[pos], calibrated[pos] = t, apply_temperature(logits_from_probabilities(probs[pos]), t)
    return predictions.assign(**{"temperature": temperature, out_col: calibrated})


def uncertainty_error_auroc(labels: Any, mean_prob: Any, spread: Any, threshold: float = 0.5) -> dict[str, Any]:
    """How well the spread (e.g. MC-dropout std) ranks wrong predictions above right ones: AUROC with "wrong" as the
    positive class (0.5 = uninformative). NaN, with the reason in `note`, when every prediction is right or wrong."""
    y, p = _check(labels, mean_prob)
    s = np.array(spread, dtype=float).ravel()
    if s.shape != y.shape or not np.isfinite(s).all():
        raise ValueError(f"spread must be {y.size} finite values, got {s.size}")
    wrong = ((p >= threshold).astype(int) != y).astype(int)
    out: dict[str, Any] = {"auroc": math.nan, "n": int(y.size), "n_errors": int(wrong.sum()), "note": ""}
    if wrong.sum() == 0:
        out["note"] = "every prediction is right: no error to detect"
    elif wrong.sum() == wrong.size:
        out["note"] = "every prediction is wrong: no right prediction to compare with"
    else:
        out["auroc"] = float(roc_auc_score(wrong, s))
    return out
