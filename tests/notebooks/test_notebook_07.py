"""Notebook 07 (Grad-CAM deep dive) on the smoke profile: energy shares are sane and 1x1 maps are skipped."""

import json

import pandas as pd
import pytest

from lib.report.explain import expected_border_share

pytestmark = pytest.mark.notebooks


def test_energy_shares_and_uniform_expectation(smoke_reports):
    tables = smoke_reports / "tables"
    energy = pd.read_csv(tables / "gradcam_energy.csv")
    assert len(energy) > 0
    assert energy["border_share"].dropna().between(0, 1).all()
    assert (energy["border_share"] + energy["centre_share"]).dropna().round(6).eq(1).all()
    for size, expected in energy.groupby("image_size")["border_expected"].first().items():
        assert expected == pytest.approx(expected_border_share(size, size, 0.15))
    border = pd.read_csv(tables / "gradcam_border.csv")
    assert set(border["finding"]) <= {"above uniform", "below uniform", "not different"}
    assert set(border["subject"]) == set(energy["subject"])


def test_uninformative_cams_are_skipped_with_a_reason(smoke_reports):
    result = json.loads((smoke_reports / "tables" / "gradcam_conclusions.json").read_text())
    assert result["explained"], "at least one run has a spatial Grad-CAM map"
    for subject, reason in result["skipped"].items():
        assert "Grad-CAM map" in reason
    energy = pd.read_csv(smoke_reports / "tables" / "gradcam_energy.csv")
    # on the smoke profile (32 px) the ResNets' maps are 1x1: never explained
    assert not ((energy["model"].str.startswith("resnet")) & (energy["image_size"] <= 32)).any()


def test_stored_fold_tables_are_read_with_their_stamp(smoke_reports):
    result = json.loads((smoke_reports / "tables" / "gradcam_conclusions.json").read_text())
    subjects = [*result["explained"], *result["skipped"]]
    assert any(s.endswith("· Phase 3") for s in subjects), "Phase 3 models come from the stamped phase3_folds.csv"
