"""Notebook 04 (Phase 2) on the smoke profile: what it saved agrees with the planted dataset card, with Phase 1 and with
the protocol (choice on validation only, intervals over groups, one comparison rule, stamped artefacts)."""

import json

import pandas as pd
import pytest

from lib.data.augment import AugmentPolicy
from lib.fileio import ArtefactMismatch, read_stamped_json, read_stamped_table
from lib.studies.phase2 import AUGMENT_RULE, RECOMMENDATION_RULE, SHORTCUTS, carries_geometry_cue
from lib.data.recipes import Recipe
from lib.training.fit import NORMALIZATIONS

pytestmark = pytest.mark.notebooks  # the session fixture `smoke_reports` (conftest.py) runs them once


def _json(reports, name):
    return json.loads((reports / "tables" / name).read_text())


def test_geometry_conclusion_matches_the_smoke_card(smoke_reports):
    geometry = _json(smoke_reports, "phase2_geometry.json")
    assert geometry["card_geometry_shortcut"] is True  # the smoke build plants it
    assert geometry["detected"] is True and geometry["probe_auc_ci"][0] > 0.6 and geometry["decision_set"] == "oof"
    assert geometry["exploited"] == bool(geometry["exploited_by"])
    conclusions = _json(smoke_reports, "phase2_conclusions.json")
    assert conclusions["geometry_shortcut_detected"] is True
    assert conclusions["shortcuts_flagged"] == {"geometry": True, "compression": False}  # compression is not planted
    assert any(line.startswith("Geometry shortcut DETECTED") for line in conclusions["conclusions"])
    views = pd.read_csv(smoke_reports / "tables" / "phase2_geometry_views.csv")
    assert set(views["view"]) == {"resize", "letterbox_real", "center_crop"}
    assert views[["train_auc", "val_auc", "test_auc", "gap"]].notna().all().all()


def test_baseline_reuses_phase1_runs_every_condition_ran_and_numbers_carry_groups(smoke_reports):
    tables = smoke_reports / "tables"
    stamp = json.loads((tables / "phase2_folds.csv.stamp.json").read_text())
    folds = read_stamped_table(tables / "phase2_folds.csv", stamp)
    phase1 = pd.read_csv(tables / "phase1_folds.csv")
    assert set(folds.loc[folds["condition"] == "baseline", "run_key"]) == set(phase1["run_key"])
    with pytest.raises(ArtefactMismatch):
        read_stamped_table(tables / "phase2_folds.csv", {**stamp, "dataset": "another"})
    summary = pd.read_csv(tables / "phase2_summary.csv")
    trained = summary[summary["kind"] == "trained"]
    assert set(trained["subphase"]) == {"2A", "2B", "2C", "2D"}  # 2E is skipped in smoke (params)
    assert {s.condition for s in SHORTCUTS.values()} <= set(trained["condition"])
    assert set(trained["set"]) == {"oof", "test"} and trained[["real_groups", "fake_groups"]].notna().all().all()
    assert trained.loc[trained["condition"] != "baseline", "delta"].notna().all()
    assert trained["verdict"].dropna().isin(["supported", "contradicted", "inconclusive"]).all()
    defined = trained.dropna(subset=["auc_ci_low"])
    assert defined["auc_ci_low"].between(0, 1).all() and defined["auc_ci_high"].between(0, 1).all()
    assert {"evaluation view", "source hold-out"} <= set(summary["kind"])
    tests = pd.read_csv(tables / "phase2_tests.csv")
    assert {"conditions vs baseline", "geometry views vs resize", "neutraliser costs AUC", "augmentation",
            "source hold-out"} == set(tests["family"])


def test_neutraliser_table_reports_each_shortcut(smoke_reports):
    table = pd.read_csv(smoke_reports / "tables" / "phase2_neutralisers.csv")
    assert list(dict.fromkeys(table["shortcut"])) == list(SHORTCUTS)
    assert set(table["neutraliser"]) == {s.condition for s in SHORTCUTS.values()}
    assert set(table["set"]) == {"oof", "test"} and table["auc_with"].notna().all()
    assert table.set_index("shortcut").loc["geometry", "flagged"].all()
    lines = _json(smoke_reports, "phase2_conclusions.json")["conclusions"]
    assert any(line.startswith("Compression (JPEG quality") and "not flagged" in line for line in lines)


def test_recommendation_is_stamped_chosen_on_validation_and_follows_the_rule(smoke_reports):
    tables = smoke_reports / "tables"
    stamp = json.loads((tables / "phase2_folds.csv.stamp.json").read_text())
    rec = read_stamped_json(tables / "phase2_recommendation.json", stamp)
    with pytest.raises(ArtefactMismatch):
        read_stamped_json(tables / "phase2_recommendation.json", {**stamp, "split_key": "another"})
    recipe = Recipe.from_dict(rec["recipe"])
    assert rec["augment"] is None or isinstance(AugmentPolicy.from_dict(rec["augment"]), AugmentPolicy)
    assert rec["normalization"] in NORMALIZATIONS and rec["rule"] == RECOMMENDATION_RULE
    assert rec["selection_set"] == "oof" and "mean_test_auc" not in rec
    candidates = pd.DataFrame(rec["candidates"])
    assert rec["condition"] in set(candidates["condition"])
    if not rec["fallback"]:
        chosen = candidates.set_index("condition").loc[rec["condition"]]
        assert chosen["eligible"] and chosen["mean_oof_auc"] == candidates.loc[candidates["eligible"], "mean_oof_auc"].max()
        if rec["geometry_shortcut"]:
            assert not carries_geometry_cue(recipe)
    # the mean out-of-fold AUC is the one of the intervals table (the "oof" rows), not a test number
    intervals = pd.read_csv(tables / "phase2_intervals.csv")
    oof = intervals[(intervals["condition"] == rec["condition"]) & (intervals["set"] == "oof")
                    & intervals["model"].isin(rec["models_compared"])]
    assert rec["mean_oof_auc"] == pytest.approx(oof["estimate"].mean())


def test_augmentation_holdout_and_face_tables_are_consistent(smoke_reports):
    tables = smoke_reports / "tables"
    aug = pd.read_csv(tables / "phase2_augmentation.csv")
    assert set(aug["plain"]) == {"baseline"}  # augment_face_crop is skipped in smoke
    assert aug["interpretation"].isin(["shortcuts removed", "over-regularisation",
                                       "shortcuts removed and over-regularisation", "inconclusive"]).all()
    assert "gap" in AUGMENT_RULE
    holdout = pd.read_csv(tables / "phase2_source_holdout.csv")
    assert (holdout["flagged"] == (holdout["verdict"] == "supported")).all()
    assert (holdout["set"] == "test").all() and holdout["real_groups"].notna().all()
    skipped = json.loads((tables / "phase2_source_holdout_skipped.json").read_text())
    assert set(holdout["source"]).isdisjoint(skipped)
    rates = pd.read_csv(tables / "phase2_face_rates.csv")
    assert rates["rate"].between(0, 1).all() and set(rates["class"]) == {"real", "fake"}
