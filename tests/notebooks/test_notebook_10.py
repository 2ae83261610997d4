"""Notebook 10 (transfer and robustness) on the smoke profile: the saved detectors of 06 and 08 re-scored on the
unseen generator and under test-time perturbations, without training anything."""

import json

import pandas as pd
import pytest
import yaml

from lib.data.perturbations import grid_from_params
from lib.paths import PARAMS_DIR

pytestmark = pytest.mark.notebooks  # the session fixture `smoke_reports` (conftest.py) runs them once


@pytest.fixture(scope="module")
def record(smoke_reports):
    return json.loads((smoke_reports / "tables" / "transfer_robustness.json").read_text())


def test_every_detector_of_06_and_08_is_swept_at_every_severity(smoke_reports, record):
    params = yaml.safe_load((PARAMS_DIR / "smoke" / "10_transfer_and_robustness.yaml").read_text())
    grid = grid_from_params(params["robustness"])
    table = pd.read_csv(smoke_reports / "tables" / "robustness_intervals.csv")
    detectors = pd.DataFrame(record["detectors"])
    swept = set(detectors.loc[detectors["same_split"], "detector"])
    assert set(detectors["origin"].str[:2]) == {"06", "08"} and set(table["detector"]) == swept
    assert set(table["condition"]) == {"clean", *(p.spec for p in grid)}
    auc = table[table["metric"] == "auc"]
    assert auc["estimate"].between(0, 1).all() and (auc["real_groups"] > 0).all() and (auc["fake_groups"] > 0).all()
    bounded = auc.dropna(subset=["ci_low"])
    assert ((bounded["ci_low"] <= bounded["estimate"]) & (bounded["estimate"] <= bounded["ci_high"])).all()
    assert record["clean_gap"] < 1e-6   # re-scoring the clean test images reproduces the saved predictions
    family = pd.read_csv(smoke_reports / "tables" / "robustness_family.csv")
    assert len(family) == len(swept) * len({p.kind for p in grid})
    assert set(family["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    assert (family["p_holm"].dropna() >= family["p"].dropna()).all()


def test_the_unseen_generator_is_seen_only_by_the_detectors_that_trained_on_it(smoke_reports, record):
    unseen = pd.read_csv(smoke_reports / "tables" / "transfer_unseen_generator.csv")
    assert set(unseen["generator"]) == set(record["generators"]) and record["generators"]
    never = unseen[~unseen["seen_in_training"]]
    assert not never.empty and never["detector"].str.endswith("(seen sources)").all()
    rates = unseen[unseen["metric"] == "detection_rate"]
    assert rates["estimate"].between(0, 1).all() and (rates["real_groups"] == 0).all()


def test_the_index_page_carries_the_robustness_headline(smoke_reports):
    index = (smoke_reports / "index.html").read_text()
    assert "10_transfer_and_robustness" in index and "figures/robustness_auc.png" in index
    assert (smoke_reports / "figures" / "robustness_auc.png").stat().st_size > 10_000
