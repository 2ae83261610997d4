"""Notebook 04 (Phase 2) on the smoke profile: what it saved agrees with the planted dataset card and with Phase 1."""

import json

import pandas as pd
import pytest

from lib.data.augment import AugmentPolicy
from lib.studies.phase2 import AUGMENT_RULE, RECOMMENDATION_RULE, carries_geometry_cue
from lib.data.recipes import Recipe
from lib.training.fit import NORMALIZATIONS

pytestmark = pytest.mark.notebooks  # the session fixture `smoke_reports` (conftest.py) runs them once


def _json(reports, name):
    return json.loads((reports / "tables" / name).read_text())


def test_geometry_conclusion_matches_the_smoke_card(smoke_reports):
    geometry = _json(smoke_reports, "phase2_geometry.json")
    assert geometry["card_geometry_shortcut"] is True  # the smoke build plants it
    assert geometry["detected"] is True and geometry["probe_auc_ci"][0] > 0.6
    assert geometry["exploited"] == bool(geometry["exploited_by"])
    conclusions = _json(smoke_reports, "phase2_conclusions.json")
    assert conclusions["geometry_shortcut_detected"] is True
    assert any(line.startswith("Geometry shortcut DETECTED") for line in conclusions["conclusions"])
    views = pd.read_csv(smoke_reports / "tables" / "phase2_geometry_views.csv")
    assert set(views["view"]) == {"resize", "letterbox_real", "center_crop"}
    assert views[["train_auc", "val_auc", "test_auc", "gap"]].notna().all().all()


def test_baseline_reuses_phase1_runs_and_every_condition_ran(smoke_reports):
    folds = pd.read_csv(smoke_reports / "tables" / "phase2_folds.csv")
    phase1 = pd.read_csv(smoke_reports / "tables" / "phase1_folds.csv")
    assert set(folds.loc[folds["condition"] == "baseline", "run_key"]) == set(phase1["run_key"])
    summary = pd.read_csv(smoke_reports / "tables" / "phase2_summary.csv")
    trained = summary[summary["kind"] == "trained"]
    assert set(trained["subphase"]) == {"2A", "2B", "2C", "2D", "2E"}
    assert trained.loc[trained["condition"] != "baseline", "delta"].notna().all()
    assert {"evaluation view", "source hold-out"} <= set(summary["kind"])


def test_recommendation_is_readable_by_later_notebooks_and_follows_the_rule(smoke_reports):
    rec = _json(smoke_reports, "phase2_recommendation.json")
    recipe = Recipe.from_dict(rec["recipe"])
    assert rec["augment"] is None or isinstance(AugmentPolicy.from_dict(rec["augment"]), AugmentPolicy)
    assert rec["normalization"] in NORMALIZATIONS and rec["rule"] == RECOMMENDATION_RULE
    candidates = pd.DataFrame(rec["candidates"])
    assert rec["condition"] in set(candidates["condition"])
    if not rec["fallback"]:
        chosen = candidates.set_index("condition").loc[rec["condition"]]
        assert chosen["eligible"] and chosen["mean_test_auc"] == candidates.loc[candidates["eligible"], "mean_test_auc"].max()
        if rec["geometry_shortcut"]:
            assert not carries_geometry_cue(recipe)


def test_augmentation_holdout_and_face_tables_are_consistent(smoke_reports):
    tables = smoke_reports / "tables"
    aug = pd.read_csv(tables / "phase2_augmentation.csv")
    assert set(aug["plain"]) == {"baseline", "face_crop"}
    assert aug["interpretation"].isin(["shortcuts removed", "over-regularisation",
                                       "shortcuts removed and over-regularisation", "inconclusive"]).all()
    assert "gap" in AUGMENT_RULE
    holdout = pd.read_csv(tables / "phase2_source_holdout.csv")
    assert (holdout["flagged"] == (holdout["difference"] > 0.05)).all()
    skipped = json.loads((tables / "phase2_source_holdout_skipped.json").read_text())
    assert set(holdout["source"]).isdisjoint(skipped)
    rates = pd.read_csv(tables / "phase2_face_rates.csv")
    assert rates["rate"].between(0, 1).all() and set(rates["class"]) == {"real", "fake"}
