"""Ensembles of saved runs: soft voting, hard voting and weights fitted on validation predictions.

Every function takes a (n_images, n_models) probability matrix whose rows are the same images in every column
(`prediction_matrix` builds one from saved predictions). Weights are fitted on VALIDATION predictions only and then
applied unchanged to test and holdout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import softmax
from sklearn.metrics import log_loss

from lib.evaluation.metrics import _check

_CLIP = 1e-12  # keeps the log-loss finite when a model is certain and wrong


def _matrix(prob_matrix: Any) -> np.ndarray:
    m = np.array(prob_matrix, dtype=float)
    if m.ndim != 2 or m.shape[1] == 0:
        raise ValueError(f"expected a (n_images, n_models) probability matrix, got shape {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any() or (m > 1).any():
        raise ValueError("probabilities must be finite values in [0, 1]")
    return m


def soft_vote(prob_matrix: Any, weights: Any = None) -> np.ndarray:
    """(Weighted) mean probability per image; equal weights by default."""
    m = _matrix(prob_matrix)
    if weights is None:
        return m.mean(axis=1)
    w = np.array(weights, dtype=float).ravel()
    if w.size != m.shape[1] or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"weights must be {m.shape[1]} non-negative values summing to 1, got {w}")
    return m @ w


def hard_vote(prob_matrix: Any, threshold: Any = 0.5) -> np.ndarray:
    """Fraction of models voting fake (probability >= their threshold; a scalar or one per model).

    The fraction is the ensemble's score, so AUC stays defined; thresholding it at 0.5 is the majority vote, and a
    tie (as many fake as real votes) counts as fake, like every `>= threshold` decision in this project.
    """
    m = _matrix(prob_matrix)
    t = np.broadcast_to(np.array(threshold, dtype=float), (m.shape[1],))
    return (m >= t).mean(axis=1)


def fit_ensemble_weights(val_prob_matrix: Any, val_labels: Any) -> np.ndarray:
    """Non-negative weights summing to 1 minimising the validation log-loss of the weighted mean probability.

    Direct minimisation (scipy) under a softmax parametrisation rather than stacking: the result stays a convex
    combination of probabilities, so the ensemble's output is still a probability on the models' own scale.
    """
    m = _matrix(val_prob_matrix)
    y, _ = _check(val_labels, m[:, 0])
    if not 0 < y.sum() < y.size:
        raise ValueError("fit_ensemble_weights needs real and fake validation images")

    def loss(a: np.ndarray) -> float:
        return log_loss(y, np.clip(m @ softmax(a), _CLIP, 1 - _CLIP), labels=[0, 1])

    result = minimize(loss, np.zeros(m.shape[1]), method="L-BFGS-B")
    return softmax(result.x)


def prediction_matrix(predictions: pd.DataFrame, split: str, by: str = "model",
                      prob_col: str = "probability") -> tuple[pd.DataFrame, np.ndarray]:
    """(matrix, labels) for one split of saved predictions: one row per image (indexed by `row`), one column per
    value of `by`. Every image must be scored exactly once by every member, so filter to one fold first: test and
    holdout images are scored by every fold's run."""
    missing = {"row", "label", "split", by, prob_col} - set(predictions.columns)
    if missing:
        raise KeyError(f"prediction_matrix: missing column(s) {sorted(missing)}")
    part = predictions[predictions["split"] == split]
    if part.empty:
        raise ValueError(f"prediction_matrix: no {split!r} predictions")
    if part.duplicated(["row", by]).any():
        raise ValueError(f"prediction_matrix: an image is scored twice by the same {by}; filter to one fold first")
    matrix = part.pivot(index="row", columns=by, values=prob_col)
    if matrix.isna().any().any():
        raise ValueError(f"prediction_matrix: some {split!r} images are not scored by every {by}")
    labels = part.drop_duplicates("row").set_index("row")["label"].reindex(matrix.index)
    return matrix, labels.to_numpy(dtype=int)
