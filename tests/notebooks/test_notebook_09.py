"""Notebook 09 (advanced training and inference) on the smoke profile: every technique measured against the baseline,
choices on validation, raw probabilities untouched."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lib.paths import PARAMS_DIR, RUNS_DIR
from lib.training.runstore import load_run

pytestmark = pytest.mark.notebooks  # the session fixture `smoke_reports` (conftest.py) runs them once


@pytest.fixture(scope="module")
def study(smoke_reports):
    return json.loads((smoke_reports / "tables" / "advanced_study.json").read_text())


def test_every_technique_is_an_arm_on_the_same_folds_and_compared_to_the_baseline(smoke_reports, study):
    params = yaml.safe_load((PARAMS_DIR / "smoke" / "09_advanced_training.yaml").read_text())
    folds = pd.read_csv(smoke_reports / "tables" / "advanced_folds.csv")
    assert list(dict.fromkeys(folds["condition"])) == ["baseline", *params["techniques"]]
    assert folds.groupby("condition")["fold"].apply(sorted).apply(tuple).nunique() == 1  # the same folds
    family = pd.DataFrame(study["family"])
    against = family[family["b"] == "baseline"]
    expected = set(params["techniques"]) | {"baseline+tta", "baseline+mc_dropout", "ensemble soft", "ensemble hard",
                                           "ensemble weighted"}
    assert set(against["a"]) == expected
    assert set(family["metric"]) == {"auc", "accuracy"} and set(family["verdict"]) <= {"supported", "contradicted",
                                                                                       "inconclusive"}
    for (view, metric), rows in family.groupby(["set", "metric"]):  # one Holm family per view and metric
        assert (rows["p_holm"].dropna() >= rows["p"].dropna()).all()


def test_temperature_leaves_the_run_store_probabilities_raw(smoke_reports, study):
    scaled = pd.read_csv(smoke_reports / "tables" / "advanced_calibrated_predictions.csv")
    assert (scaled["temperature"] > 0).all() and scaled.groupby("run_key")["temperature"].nunique().eq(1).all()
    for key, rows in scaled.groupby("run_key"):
        stored = load_run(RUNS_DIR / key).predictions
        merged = rows.merge(stored, on=["row", "split"], suffixes=("", "_stored"))
        np.testing.assert_allclose(merged["probability"], merged["probability_stored"])
    calibration = pd.DataFrame(study["calibration"])
    assert {"ece_before", "ece_after", "brier_before", "brier_after"} <= set(calibration.columns)


def test_ensemble_weights_are_convex_and_the_headline_has_a_row_per_condition(smoke_reports, study):
    weights = pd.DataFrame(study["ensemble_weights"])
    members = [c for c in weights.columns if c != "fold"]
    assert np.allclose(weights[members].sum(axis=1), 1.0) and (weights[members] >= 0).all().all()
    headline = json.loads((smoke_reports / "tables" / "headlines" / "09_advanced_training.json").read_text())
    conditions = [row[0] for row in headline["table"]["data"]]
    assert conditions[0] == "baseline" and "baseline+temperature" in conditions
    assert any("techniques whose AUC gain" in line for line in headline["conclusions"])
