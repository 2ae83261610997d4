"""Notebook 05 (Phase 3 architectures) on the smoke profile: what it saved is consistent and reuses Phase 1."""

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.notebooks  # the session fixture `smoke_reports` (conftest.py) runs every notebook once


def test_phase1_baselines_are_reused_not_retrained(smoke_reports):
    tables = smoke_reports / "tables"
    folds = pd.read_csv(tables / "phase3_folds.csv")
    phase1 = pd.read_csv(tables / "phase1_folds.csv")
    baselines = folds[folds["group"] == "Phase 1 baseline"]
    assert set(baselines["run_key"]) == set(phase1["run_key"]), "same configuration must give the same run keys"
    assert not baselines["trained"].any()


def test_summary_cost_and_tests_cover_every_model(smoke_reports):
    tables = smoke_reports / "tables"
    folds = pd.read_csv(tables / "phase3_folds.csv")
    models = set(folds["model"])
    summary = pd.read_csv(tables / "phase3_summary.csv")
    auc = summary[summary["metric"] == "auc"]
    assert set(auc["model"]) == models and auc["mean"].between(0, 1).all()
    cost = pd.read_csv(tables / "phase3_cost.csv").set_index("model")
    assert set(cost.index) == models and (cost["images_per_s"] > 0).all() and (cost["parameters"] > 0).all()
    tests = pd.read_csv(tables / "phase3_tests.csv")
    assert (tests["t_p_holm"].dropna() >= tests["t_p"].dropna() - 1e-12).all()
    assert set(tests["b"]) <= set(folds.loc[folds["group"] == "Phase 1 baseline", "model"])


def test_selection_follows_the_rule_and_is_reproducible(smoke_reports):
    tables = smoke_reports / "tables"
    selection = json.loads((tables / "phase3_selection.json").read_text())
    ranking = pd.DataFrame(selection["ranking"])
    assert 1 <= len(selection["selected"]) <= selection["top_k"]
    assert selection["selected"][0] == ranking.sort_values("rank").iloc[0]["model"], "the best mean is selected first"
    assert not ranking.set_index("model").loc[selection["selected"], "significantly_worse"].any()
    folds = pd.read_csv(tables / "phase3_folds.csv")
    for entry in selection["entries"]:
        assert entry["run_keys"] == folds.loc[folds["model"] == entry["label"], "run_key"].tolist()
        assert {"recipe", "train", "model", "kwargs"} <= set(entry)
    recommended = (tables / "phase2_recommendation.json").exists()
    assert ("Phase 2 recommendation" in selection["preprocessing"]["origin"]) == recommended
