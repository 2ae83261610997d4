"""Notebook 06 (Phase 4: data scaling, final evaluation) on the smoke profile."""

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
    assert set(curve["fraction"]) == set(check["fraction"])
    delta = pd.read_csv(tables / "phase4_scaling_delta.csv")
    assert set(delta["verdict"]) <= {"supported", "contradicted", "inconclusive"}


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
