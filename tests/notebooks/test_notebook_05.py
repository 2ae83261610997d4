"""Notebook 05 (Phase 3 architectures) on the smoke profile: what it saved is consistent, reuses Phase 1, reports
intervals over groups and selects on out-of-fold validation predictions only."""

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
    stamp = json.loads((tables / "phase3_folds.csv.stamp.json").read_text())
    assert set(stamp) == {"dataset", "split_key"}, "notebook 07 reads the fold table only with its stamp"


def test_intervals_cost_and_comparisons_cover_every_model(smoke_reports):
    tables = smoke_reports / "tables"
    folds = pd.read_csv(tables / "phase3_folds.csv")
    models = set(folds["model"])
    intervals = pd.read_csv(tables / "phase3_intervals.csv")
    assert set(intervals["model"]) == models and set(intervals["set"]) == {"oof", "test"}
    assert intervals["estimate"].between(0, 1).all()
    bounded = intervals.dropna(subset=["ci_low"])
    assert ((bounded["ci_low"] >= 0) & (bounded["ci_high"] <= 1)).all(), "no interval leaves the metric's range"
    assert (intervals["real_groups"] >= 1).all() and (intervals["fake_groups"] >= 1).all()
    assert (intervals["ci_low"].isna() == intervals["note"].notna()).all(), "an undefined interval says why"
    cost = pd.read_csv(tables / "phase3_cost.csv").set_index("model")
    assert set(cost.index) == models and (cost["images_per_s"] > 0).all() and (cost["parameters"] > 0).all()
    family = pd.read_csv(tables / "phase3_tests.csv")
    assert set(family["set"]) == {"oof", "test"} and set(family["verdict"]) <= {"supported", "contradicted",
                                                                                "inconclusive"}
    assert (family["p_holm"].dropna() >= family["p"].dropna() - 1e-12).all()
    assert set(family["b"]) <= set(folds.loc[folds["group"] == "Phase 1 baseline", "model"])
    assert "nb_p" in pd.read_csv(tables / "phase3_fold_tests.csv").columns


def test_selection_is_made_on_oof_by_the_rule_and_stamped(smoke_reports):
    tables = smoke_reports / "tables"
    selection = json.loads((tables / "phase3_selection.json").read_text())
    assert selection["metric"] == "oof_auc" and selection["chosen_on"] == "oof"
    assert set(selection["made_from"]) == {"dataset", "split_key"}
    ranking = pd.DataFrame(selection["ranking"])
    assert 1 <= len(selection["selected"]) <= selection["top_k"]
    assert selection["selected"][0] == ranking.sort_values("rank").iloc[0]["model"], "the best estimate first"
    assert ranking.sort_values("rank")["estimate"].is_monotonic_decreasing
    assert not ranking.set_index("model").loc[selection["selected"], "significantly_worse"].any()
    oof = pd.read_csv(tables / "phase3_intervals.csv").query("set == 'oof' and metric == 'auc'").set_index("model")
    for _, row in ranking.iterrows():
        assert row["estimate"] == pytest.approx(oof.loc[row["model"], "estimate"]), "ranked on the oof AUC"
    folds = pd.read_csv(tables / "phase3_folds.csv")
    for entry in selection["entries"]:
        assert entry["run_keys"] == folds.loc[folds["model"] == entry["label"], "run_key"].tolist()
        assert {"recipe", "train", "model", "kwargs"} <= set(entry)
    recommended = (tables / "phase2_recommendation.json").exists()
    assert ("Phase 2 recommendation" in selection["preprocessing"]["origin"]) == recommended
    if (folds["group"] == "baseline, Phase 3 preprocessing").any():
        assert not set(ranking["model"]) & set(folds.loc[folds["group"] == "Phase 1 baseline", "model"]), \
            "Phase 1 baselines with another preprocessing are references, not candidates"
