"""Notebook 08 (NPR and multi-scale attention NPR) on the smoke profile: what it saved is consistent."""

import json
import math

import pandas as pd
import pytest

from lib.evaluation.stats import verdict

pytestmark = pytest.mark.notebooks  # the session fixture `smoke_reports` (conftest.py) runs them once

VERDICTS = {"supported", "contradicted", "inconclusive"}


@pytest.fixture(scope="module")
def hypotheses(smoke_reports):
    return json.loads((smoke_reports / "tables" / "npr_hypotheses.json").read_text())


def test_verdicts_are_computed_from_the_paired_intervals(hypotheses):
    for name in ("H2", "H3"):
        rec = hypotheses[name]
        assert rec["verdict"] in VERDICTS
        assert rec["primary"]["a"] == "npr_multiscale" and rec["primary"]["b"] == "npr"
        # the verdict is that of the family-wise (Bonferroni) interval of the paired difference
        assert rec["verdict"] == verdict(rec["diff_ci_low_adj"], rec["diff_ci_high_adj"], "greater")
        assert rec["diff_ci_low_adj"] <= rec["diff_ci_low"] <= rec["mean_diff"] <= rec["diff_ci_high"] <= rec["diff_ci_high_adj"]
        assert rec["n_folds"] >= 2
        for row in rec["comparisons"]:
            assert row["verdict"] == verdict(row["diff_ci_low"], row["diff_ci_high"], "greater")
            assert row["verdict_adjusted"] == verdict(row["diff_ci_low_adj"], row["diff_ci_high_adj"], "greater")
            assert math.isnan(row["t_p"]) or row["t_p_holm"] >= row["t_p"] - 1e-12
        conditions = {r["condition"] for r in rec["per_model"]}
        assert {"npr", "npr_multiscale"} <= conditions
    assert "npr_multiscale_uniform" in {r["condition"] for r in hypotheses["H2"]["per_model"]}


def test_per_source_tables_cover_every_fake_source(smoke_reports, hypotheses):
    tables = smoke_reports / "tables"
    h2 = pd.read_csv(tables / "npr_h2_per_source.csv")
    fakes = {"ae_transposed", "ae_nearest", "ae_bilinear", "inpaint", "dcgan_faces"}
    assert set(h2["source"]) <= fakes | {"mean"} and "mean" in set(h2["source"])
    assert h2[["balanced_accuracy_mean", "ap_mean"]].stack().between(0, 1).all()
    h3 = pd.read_csv(tables / "npr_h3_per_source.csv")
    held = set(hypotheses["settings"]["holdout_sources"])
    assert held and held <= set(h3["source"])
    assert set(h3.loc[h3["source"].isin(held), "in_training"]) == {"unseen"}
    assert set(h3.loc[~h3["source"].isin(held | {"mean"}), "in_training"]) == {"seen"}


def test_ablation_reuses_the_h2_runs(hypotheses, smoke_reports):
    abl = pd.read_csv(smoke_reports / "tables" / "npr_ablation_folds.csv")
    h2 = pd.read_csv(smoke_reports / "tables" / "npr_h2_folds.csv")
    reference = hypotheses["ablation"]["reference"]
    assert set(abl.loc[abl["condition"] == reference, "run_key"]) == \
        set(h2.loc[h2["condition"] == "npr_multiscale", "run_key"])
    assert abl["condition"].nunique() >= 2
    assert all(r["b"] == reference for r in hypotheses["ablation"]["comparisons"])


def test_attention_tables_are_distributions(smoke_reports):
    tables = smoke_reports / "tables"
    images = pd.read_csv(tables / "npr_attention_images.csv")
    weights = images[[c for c in images.columns if c.startswith("w_")]]
    assert len(weights.columns) == 3 and ((weights.sum(axis=1) - 1).abs() < 1e-4).all()
    summary = pd.read_csv(tables / "npr_attention_summary.csv")
    assert ((summary.groupby("source")["mean"].sum() - 1).abs() < 1e-4).all()
    argmax = pd.read_csv(tables / "npr_attention_argmax.csv").set_index("source")
    assert argmax[["differs_from_majority", "mean_entropy"]].stack().between(0, 1 + 1e-9).all()
    assert "all" in argmax.index


def test_external_skipped_and_figures_saved(smoke_reports, hypotheses):
    assert hypotheses["external"]["skipped"] is True
    assert any("External test set: skipped" in line for line in hypotheses["conclusions"])
    for name in ("npr_maps.png", "npr_h2_folds.png", "npr_attention_h2.png", "npr_attention_h3.png"):
        assert (smoke_reports / "figures" / name).stat().st_size > 5_000
    headline = json.loads((smoke_reports / "tables" / "headlines" / "08_npr_multiscale.json").read_text())
    assert headline["conclusions"] == hypotheses["conclusions"]
