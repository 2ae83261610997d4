"""Detection metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from lib.evaluation import metrics as M


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, 200), 0, 1)
    return y, p


def test_binary_metrics_match_sklearn(scored):
    y, p = scored
    y0, p0 = y.copy(), p.copy()
    m = M.binary_metrics(y, p, threshold=0.5)
    pred = (p >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["ap"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred)) == pytest.approx(m["fake_accuracy"])
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["real_accuracy"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert (m["n"], m["n_real"], m["n_fake"]) == (200, int((y == 0).sum()), int(y.sum()))
    assert np.array_equal(y, y0) and np.array_equal(p, p0)        # inputs untouched


def test_hand_computed_case():
    y = [0, 0, 1, 1]
    p = [0.1, 0.6, 0.4, 0.9]
    m = M.binary_metrics(y, p)
    assert m["accuracy"] == 0.5 and m["real_accuracy"] == 0.5 and m["fake_accuracy"] == 0.5
    assert m["auc"] == 0.75                                        # 3 of 4 (fake, real) pairs ordered correctly
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)


def test_undefined_values_are_nan_not_errors():
    m = M.binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(m["auc"]) and math.isnan(m["ap"]) and math.isnan(m["eer"]) and math.isnan(m["real_accuracy"])
    assert m["fake_accuracy"] == pytest.approx(2 / 3)
    m = M.binary_metrics([0, 0], [0.1, 0.2])
    assert math.isnan(m["precision"]) and math.isnan(m["recall"]) and m["accuracy"] == 1.0
    empty = M.binary_metrics([], [])
    assert empty["n"] == 0 and math.isnan(empty["accuracy"])


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="length"):
        M.binary_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        M.binary_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        M.binary_metrics([0, 1], [0.5, 1.5])


def test_eer_perfect_inverted_and_random():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert M.equal_error_rate(y, p) == 0.0
    assert M.equal_error_rate(y, 1 - p) == 1.0
    assert M.equal_error_rate(y, np.full(6, 0.5)) == pytest.approx(0.5)
    # one real above one fake out of three each: FPR = FNR = 1/3 at the crossing
    assert M.equal_error_rate(y, [0.1, 0.2, 0.75, 0.7, 0.8, 0.9]) == pytest.approx(1 / 3)


def test_ece_zero_for_perfectly_calibrated_bins():
    # 10 images at p = 0.3 with 3 fakes, 10 at p = 0.8 with 8 fakes: each bin's fake rate equals its probability
    y = np.array([1] * 3 + [0] * 7 + [1] * 8 + [0] * 2)
    p = np.array([0.3] * 10 + [0.8] * 10)
    assert M.expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.0)
    # shift every probability by 0.05 inside the same bins -> ECE 0.05
    assert M.expected_calibration_error(y, p + 0.05, n_bins=10) == pytest.approx(0.05)


def test_calibration_table_matches_sklearn(scored):
    y, p = scored
    table = M.calibration_table(y, p, n_bins=8)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=8)
    assert np.allclose(table["prob_true"], prob_true) and np.allclose(table["prob_pred"], prob_pred)
    assert table["count"].sum() == len(y)
    # ECE is the count-weighted gap of the same bins
    ece = float((table["count"] * (table["prob_true"] - table["prob_pred"]).abs()).sum() / len(y))
    assert M.expected_calibration_error(y, p, n_bins=8) == pytest.approx(ece)


def test_threshold_sweep_matches_sklearn(scored):
    y, p = scored
    sweep = M.threshold_sweep(y, p, thresholds=[0.2, 0.5, 0.8])
    for row in sweep.itertuples():
        pred = (p >= row.threshold).astype(int)
        assert row.accuracy == pytest.approx(skm.accuracy_score(y, pred))
        assert row.precision == pytest.approx(skm.precision_score(y, pred))
        assert row.recall == pytest.approx(skm.recall_score(y, pred))
        assert row.f1 == pytest.approx(skm.f1_score(y, pred))
        assert row.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert len(M.threshold_sweep(y, p)) == 101


def test_best_threshold_separates_and_is_optimal(scored):
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.9])
    t = M.best_threshold(y, p)
    assert 0.2 < t < 0.3 and t == pytest.approx(0.25)
    y, p = scored
    for metric in M.THRESHOLD_METRICS:
        t = M.best_threshold(y, p, metric=metric)
        best_dense = M.threshold_sweep(y, p, np.unique(p))[metric].max()
        assert M.threshold_sweep(y, p, [t])[metric].iloc[0] == pytest.approx(best_dense)
    with pytest.raises(ValueError, match="unknown metric"):
        M.best_threshold(y, p, metric="auc")
    with pytest.raises(ValueError, match="both"):
        M.best_threshold([1, 1], [0.2, 0.3])


def test_curves_are_thin_sklearn_wrappers(scored):
    y, p = scored
    roc = M.roc_points(y, p)
    fpr, tpr, _ = skm.roc_curve(y, p)
    assert np.allclose(roc["fpr"], fpr) and np.allclose(roc["tpr"], tpr)
    pr = M.pr_points(y, p)
    assert np.isnan(pr["threshold"].iloc[-1]) and pr["recall"].iloc[-1] == 0
    assert M.roc_points([1, 1], [0.1, 0.2]).empty


def test_per_source_metrics_compares_each_fake_source_with_all_reals():
    df = pd.DataFrame({
        "source": ["real"] * 4 + ["gan"] * 2 + ["ae"] * 2,
        "label": [0] * 4 + [1] * 4,
        "probability": [0.1, 0.2, 0.3, 0.6, 0.9, 0.8, 0.4, 0.5],
    })
    before = df.copy()
    table = M.per_source_metrics(df).set_index("source")
    assert table.loc["gan", "auc"] == 1.0                    # both gan fakes above every real
    reals = df[df.source == "real"]
    ae = df[df.source.isin(["real", "ae"])]
    assert table.loc["ae", "auc"] == pytest.approx(skm.roc_auc_score(ae.label, ae.probability))
    assert table.loc["ae", "accuracy"] == 0.5 and table.loc["real", "accuracy"] == 0.75
    assert table.loc["real", "n"] == len(reals) and table.loc["real", "label"] == 0
    assert table.loc["real", "auc"] == pytest.approx(skm.roc_auc_score(df.label, df.probability))
    pd.testing.assert_frame_equal(df, before)
    with pytest.raises(KeyError, match="probability"):
        M.per_source_metrics(df.drop(columns="probability"))
