"""Statistics: t-intervals, paired tests, DeLong, McNemar, Holm, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from lib.evaluation import stats as S


def test_summarize_t_interval_by_hand():
    values = [0.80, 0.82, 0.85, 0.79, 0.84]
    out = S.summarize(values)
    mean = sum(values) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    half = 2.7764451051977987 * std / math.sqrt(5)           # t(0.975, df=4)
    assert out["n"] == 5 and out["mean"] == pytest.approx(mean) and out["std"] == pytest.approx(std)
    assert out["ci_low"] == pytest.approx(mean - half) and out["ci_high"] == pytest.approx(mean + half)


def test_summarize_small_and_nan_inputs():
    one = S.summarize([0.7])
    assert one["mean"] == 0.7 and one["n"] == 1 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    assert S.summarize([np.nan, 1.0, 3.0])["n"] == 2
    assert S.summarize([])["n"] == 0
    constant = S.summarize([0.5, 0.5, 0.5])
    assert constant["ci_low"] == constant["ci_high"] == 0.5


def test_summarize_table_groups():
    df = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 2, "auc": [0.8, 0.9, 1.0, 0.6, 0.7], "acc": [1, 1, 1, 0, 1]})
    table = S.summarize_table(df, "model", ["auc", "acc"]).set_index("model")
    assert table.loc["a", "auc_mean"] == pytest.approx(0.9) and table.loc["a", "auc_n"] == 3
    assert table.loc["b", "acc_std"] == pytest.approx(S.summarize([0, 1])["std"])
    with pytest.raises(KeyError, match="f1"):
        S.summarize_table(df, "model", ["f1"])


def test_paired_tests_match_scipy():
    a = np.array([0.81, 0.84, 0.80, 0.86, 0.83])
    b = np.array([0.78, 0.80, 0.79, 0.81, 0.80])
    a0 = a.copy()
    out = S.paired_tests(a, b)
    assert out["mean_diff"] == pytest.approx(np.mean(a - b))
    assert out["t_p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert out["wilcoxon_p"] == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert out["diff_ci_low"] > 0 and S.verdict(out["diff_ci_low"], out["diff_ci_high"]) == "supported"
    assert np.array_equal(a, a0)


def test_paired_tests_degenerate_cases_give_reasons():
    same = S.paired_tests([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert math.isnan(same["wilcoxon_p"]) and "zero" in same["wilcoxon_note"]
    assert math.isnan(same["t_p"]) and same["t_note"]
    one = S.paired_tests([0.5], [0.4])
    assert one["n"] == 1 and math.isnan(one["t_p"]) and "2 pairs" in one["wilcoxon_note"]
    with pytest.raises(ValueError, match="equally long"):
        S.paired_tests([1, 2], [1])


def _slow_delong(y, p1, p2):
    """O(m n) DeLong from the placement-value definition (psi kernel), for checking the fast version."""
    y = np.asarray(y)
    out = []
    for p in (np.asarray(p1), np.asarray(p2)):
        pos, neg = p[y == 1][:, None], p[y == 0][None, :]
        out.append((pos > neg) + 0.5 * (pos == neg))
    m, n = out[0].shape
    v10 = np.array([k.mean(axis=1) for k in out])   # per positive
    v01 = np.array([k.mean(axis=0) for k in out])   # per negative
    cov = np.cov(v10) / m + np.cov(v01) / n
    aucs = np.array([k.mean() for k in out])
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return aucs, var


def test_delong_matches_brute_force_and_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p1 = np.round(0.4 * y + rng.uniform(0, 0.6, 120), 2)     # rounding creates ties (midranks matter)
    p2 = np.round(0.2 * y + rng.uniform(0, 0.8, 120), 2)
    out = S.delong_test(y, p1, p2)
    assert out["auc1"] == pytest.approx(roc_auc_score(y, p1)) and out["auc2"] == pytest.approx(roc_auc_score(y, p2))
    aucs, var = _slow_delong(y, p1, p2)
    assert out["se"] == pytest.approx(math.sqrt(var))
    assert out["z"] == pytest.approx((aucs[0] - aucs[1]) / math.sqrt(var))
    assert out["p"] == pytest.approx(2 * sps.norm.sf(abs(out["z"])))
    assert out["p"] < 0.05                                   # a clearly better first model


def test_delong_identical_predictions_give_p_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = rng.uniform(size=50)
    out = S.delong_test(y, p, p)
    assert out["diff"] == 0 and out["p"] == 1.0
    with pytest.raises(ValueError, match="both"):
        S.delong_test([1, 1], [0.1, 0.2], [0.2, 0.3])


def test_mcnemar_exact_and_chi_square():
    y = np.zeros(20, dtype=int)
    pred1 = np.zeros(20, dtype=int)
    pred2 = np.zeros(20, dtype=int)
    pred2[:6] = 1                       # model 1 right, model 2 wrong on 6 images; never the reverse
    out = S.mcnemar_test(y, pred1, pred2)
    assert (out["b"], out["c"], out["method"]) == (6, 0, "exact binomial")
    assert out["p"] == pytest.approx(2 * 0.5 ** 6)          # two-sided exact binomial, 6 of 6
    assert S.mcnemar_test(y, pred1, pred1)["p"] == 1.0
    # 30 discordant pairs, b = 20, c = 10: chi2 = (|20 - 10| - 1)^2 / 30 = 2.7
    y = np.zeros(40, dtype=int)
    pred1, pred2 = np.zeros(40, dtype=int), np.zeros(40, dtype=int)
    pred2[:20] = 1
    pred1[20:30] = 1
    out = S.mcnemar_test(y, pred1, pred2)
    assert out["statistic"] == pytest.approx(2.7) and out["p"] == pytest.approx(sps.chi2.sf(2.7, 1))
    assert out["method"].startswith("chi-square")


def test_holm_known_example():
    adjusted = S.holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert np.allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    with_nan = S.holm([0.2, np.nan, 0.6])
    assert np.isnan(with_nan[1]) and np.allclose(with_nan[[0, 2]], [0.4, 0.6])
    assert S.holm([0.5, 0.9])[0] == 1.0                      # capped at 1


def test_verdict():
    assert S.verdict(0.01, 0.05) == "supported"
    assert S.verdict(-0.05, -0.01) == "contradicted"
    assert S.verdict(-0.01, 0.05) == "inconclusive"
    assert S.verdict(-0.05, -0.01, direction="less") == "supported"
    assert S.verdict(float("nan"), 0.1) == "inconclusive"
    with pytest.raises(ValueError):
        S.verdict(0, 1, direction="two-sided")


def test_holm_levels_are_consistent_with_the_step_down():
    holm_levels, holm = S.holm_levels, S.holm
    p = np.array([0.001, 0.04, 0.02, np.nan])
    levels = holm_levels(p)
    # ranks: 0.001 (0.05/3, rejected), 0.02 (0.05/2 = 0.025, rejected), 0.04 (0.05/1, rejected)
    assert levels[0] == pytest.approx(0.05 / 3) and levels[2] == pytest.approx(0.025) and levels[1] == pytest.approx(0.05)
    stopped = holm_levels([0.001, 0.03, 0.04])   # 0.03 > 0.05/2: the step-down stops, the rest keep that level
    assert stopped[0] == pytest.approx(0.05 / 3) and stopped[1] == stopped[2] == pytest.approx(0.025)
    assert (holm(np.array([0.001, 0.03, 0.04])) <= 0.05).tolist() == [True, False, False]


def test_weighted_average_precision_is_sklearns_with_group_counts_as_weights():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    n, n_groups = 120, 30
    groups = rng.integers(0, n_groups, n)
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.random(n) * 0.5 + 0.3 * labels, 2)  # rounded: ties across classes
    counts = rng.integers(0, 3, (5, n_groups))
    counts[0] = 1
    out = S.weighted_average_precision(groups, labels, scores, counts)
    for row, c in enumerate(counts):
        weights = c[groups]
        expected = average_precision_score(labels, scores, sample_weight=weights)
        assert out[row] == pytest.approx(expected, abs=1e-12)
