"""Notebook 06 (Phase 4: data scaling, final report) on the smoke profile."""

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.notebooks


def test_subsamples_keep_the_test_set_and_reuse_the_full_runs(smoke_reports):
    tables = smoke_reports / "tables"
    check = pd.read_csv(tables / "phase4_scaling_splits.csv")
    assert check["test_identical"].all() and check["trainval_subset"].all()
    assert check["trainval"].is_monotonic_increasing
    scaling = pd.read_csv(tables / "phase4_scaling_folds.csv")
    selection = json.loads((tables / "phase3_selection.json").read_text())
    first = selection["entries"][0]
    full = scaling[(scaling["model"] == first["label"]) & np.isclose(scaling["fraction"], 1.0)]
    assert full["run_key"].tolist() == first["run_keys"], "the 100 % runs are notebook 05's"
    curve = pd.read_csv(tables / "phase4_learning_curve.csv")
    assert set(curve["fraction"]) == set(check["fraction"]) and set(curve["set"]) == {"oof", "test"}
    test = curve[curve["set"] == "test"]
    assert test.groupby("metric")["real_groups"].nunique().eq(1).all(), "one test hold-out for every fraction"
    tests = pd.read_csv(tables / "phase4_scaling_tests.csv")
    assert set(tests["verdict"]) <= {"supported", "contradicted", "inconclusive"}


def test_final_report_has_intervals_over_groups_and_says_the_selection_was_on_validation(smoke_reports):
    tables = smoke_reports / "tables"
    selection = json.loads((tables / "phase3_selection.json").read_text())
    intervals = pd.read_csv(tables / "phase4_final_intervals.csv")
    assert set(selection["selected"]) <= set(intervals["model"]) and set(intervals["set"]) == {"oof", "test"}
    bounded = intervals.dropna(subset=["ci_low"])
    assert ((bounded["ci_low"] >= 0) & (bounded["ci_high"] <= 1)).all()
    assert (intervals["real_groups"] >= 1).all() and (intervals["fake_groups"] >= 1).all()
    family = pd.read_csv(tables / "phase4_final_tests.csv")
    assert set(family["verdict"].dropna()) <= {"supported", "contradicted", "inconclusive"}
    conclusions = json.loads((tables / "phase4_conclusions.json").read_text())["conclusions"]
    assert any("chosen on out-of-fold validation predictions" in line for line in conclusions)
    assert any("real /" in line and "fake groups" in line for line in conclusions)
    headline = json.loads((tables / "headlines" / "06_phase4_final.json").read_text())["table"]
    assert {"oof AUC", "test AUC", "oof groups", "test groups"} <= set(headline["columns"])


def test_final_evaluation_tables(smoke_reports):
    tables = smoke_reports / "tables"
    selection = json.loads((tables / "phase3_selection.json").read_text())
    summary = pd.read_csv(tables / "phase4_final_summary.csv")
    assert set(selection["selected"]) <= set(summary["model"])
    assert {"auc", "ece", "brier"} <= set(summary["metric"])
    hard = pd.read_csv(tables / "phase4_hard_examples.csv")
    fp, fn = hard[hard["kind"] == "false positive"], hard[hard["kind"] == "false negative"]
    assert (fp["label"] == 0).all() and (fp["probability"] >= fp["threshold"]).all()
    assert (fn["label"] == 1).all() and (fn["probability"] < fn["threshold"]).all()
    reliability = pd.read_csv(tables / "phase4_reliability.csv")
    assert reliability["prob_true"].between(0, 1).all() and (reliability["count"] > 0).all()
    assert (smoke_reports / "figures" / "phase4_reliability.png").stat().st_size > 5_000
