"""Notebook 08 (NPR and multi-scale attention NPR) on the smoke profile: what it saved is consistent."""

import json
import math

import pandas as pd
import pytest

from lib.data.augment import AugmentPolicy
from lib.data.recipes import Recipe
from lib.evaluation.stats import verdict
from lib.paths import RUNS_DIR
from lib.training.runstore import load_run

pytestmark = pytest.mark.notebooks  # the session fixture `smoke_reports` (conftest.py) runs them once

VERDICTS = {"supported", "contradicted", "inconclusive"}


@pytest.fixture(scope="module")
def hypotheses(smoke_reports):
    return json.loads((smoke_reports / "tables" / "npr_hypotheses.json").read_text())


def _rule(row, alpha=0.05):
    """compare_family's verdict rule, recomputed from the row's numbers."""
    if row["p_holm"] is None or math.isnan(row["p_holm"]) or row["p_holm"] > alpha:
        return "inconclusive"
    return verdict(row["ci_low"], row["ci_high"], "greater")


def test_verdicts_come_from_compare_family_against_the_architecture_matched_control(hypotheses):
    for name, sets, primary_set in (("H2", {"oof", "test"}, "test"), ("H3", {"unseen", "seen"}, "unseen")):
        rec = hypotheses[name]
        assert rec["verdict"] in VERDICTS
        assert rec["primary"] == {"a": "npr_multiscale", "b": "npr_multiscale_single", "set": primary_set, "metric": "auc"}
        family = pd.DataFrame(rec["family"])
        assert set(family["set"]) == sets and (family["a"] == "npr_multiscale").all()
        assert {"npr_multiscale_single", "npr"} <= set(family["b"])
        for _, row in family.iterrows():
            assert row["verdict"] == _rule(row)
            assert row["real_groups"] >= 1 and row["fake_groups"] >= 1
        primary = family[(family["b"] == "npr_multiscale_single") & (family["set"] == rec["primary"]["set"])].iloc[0]
        assert rec["verdict"] == primary["verdict"]
        intervals = pd.DataFrame(rec["intervals"])
        defined = intervals.dropna(subset=["ci_low"])
        assert ((defined["ci_low"] >= 0) & (defined["ci_low"] <= defined["estimate"])
                & (defined["estimate"] <= defined["ci_high"]) & (defined["ci_high"] <= 1)).all()
        assert (intervals.loc[intervals["ci_low"].isna(), "note"].str.startswith("interval undefined")).all()
    assert "npr_multiscale_uniform" in set(pd.DataFrame(hypotheses["H2"]["family"])["b"])


def test_every_arm_reads_native_pixels_and_trains_on_crops(hypotheses):
    settings = hypotheses["settings"]
    assert settings["recipe"]["mode"] == "native_crop"
    augment = settings["augment"]
    assert 0 < augment["crop"] <= settings["recipe"]["size"] and augment["crop_scale"] == [1.0, 1.0]
    assert augment["blur_p"] == augment["jpeg_p"] == augment["noise_std"] == augment["brightness"] == 0
    keys = {k for part in hypotheses["run_keys"].values() for k in part}
    for key in keys:  # H2, H3 and the ablation: one input for every arm
        spec = load_run(RUNS_DIR / key).spec
        assert spec.recipe == Recipe.from_dict(settings["recipe"]) and spec.train.augment == AugmentPolicy(**augment)


def test_gap_pairs_seen_and_unseen_auc_on_the_same_real_images(smoke_reports, hypotheses):
    gap = pd.DataFrame(hypotheses["H3"]["gap"])
    assert set(gap["condition"]) == set(hypotheses["settings"]["h3_conditions"])
    assert ((gap["seen_auc"] - gap["unseen_auc"] - gap["gap"]).abs() < 1e-9).all()
    defined = gap.dropna(subset=["ci_low"])
    assert ((defined["ci_low"] <= defined["gap"]) & (defined["gap"] <= defined["ci_high"])).all()
    sources = pd.read_csv(smoke_reports / "tables" / "npr_h3_source_intervals.csv")
    held = set(hypotheses["settings"]["holdout_sources"])
    assert set(sources.loc[sources["source"].isin(held), "in_training"]) == {"unseen"}
    # every generator is scored against the same real test images
    assert sources["real_images"].nunique() == 1


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


def test_ablation_reuses_the_h2_runs_and_chooses_on_validation(hypotheses, smoke_reports):
    abl = pd.read_csv(smoke_reports / "tables" / "npr_ablation_folds.csv")
    h2 = pd.read_csv(smoke_reports / "tables" / "npr_h2_folds.csv")
    reference = hypotheses["ablation"]["reference"]
    assert set(abl.loc[abl["condition"] == reference, "run_key"]) == \
        set(h2.loc[h2["condition"] == "npr_multiscale", "run_key"])
    assert set(abl.loc[abl["condition"] == "scales 0.5", "run_key"]) == \
        set(h2.loc[h2["condition"] == "npr_multiscale_single", "run_key"])  # the control is the ablation's set 0.5
    family = pd.DataFrame(hypotheses["ablation"]["family"])
    assert (family["b"] == reference).all() and all(family.apply(_rule, axis=1) == family["verdict"])
    oof = pd.DataFrame(hypotheses["ablation"]["intervals"]).query("set == 'oof' and metric == 'auc'")
    assert hypotheses["ablation"]["best_oof"] == oof.sort_values("estimate", ascending=False).iloc[0]["condition"]


def test_attention_tables_are_distributions(smoke_reports):
    tables = smoke_reports / "tables"
    images = pd.read_csv(tables / "npr_attention_images.csv")
    assert set(images["condition"]) == {"npr_multiscale"}  # learned attention over several scales only
    weights = images[[c for c in images.columns if c.startswith("w_")]]
    assert len(weights.columns) == 3 and ((weights.sum(axis=1) - 1).abs() < 1e-4).all()
    summary = pd.read_csv(tables / "npr_attention_summary.csv")
    assert ((summary.groupby("source")["mean"].sum() - 1).abs() < 1e-4).all()
    argmax = pd.read_csv(tables / "npr_attention_argmax.csv").set_index("source")
    assert argmax[["differs_from_majority", "mean_entropy"]].stack().between(0, 1 + 1e-9).all()
    assert "all" in argmax.index


def test_external_skipped_figures_saved_and_headline_numbers_carry_intervals(smoke_reports, hypotheses):
    assert hypotheses["external"]["skipped"] is True
    assert any("External test set: skipped" in line for line in hypotheses["conclusions"])
    for name in ("npr_maps.png", "npr_h2_scales.png", "npr_h3.png", "npr_attention_h2.png", "npr_attention_h3.png"):
        assert (smoke_reports / "figures" / name).stat().st_size > 5_000
    headline = json.loads((smoke_reports / "tables" / "headlines" / "08_npr_multiscale.json").read_text())
    assert headline["conclusions"] == hypotheses["conclusions"]
    table = pd.DataFrame(**headline["table"])
    for col in ("H2 oof AUC", "H2 test AUC", "H3 unseen AUC", "H3 seen AUC"):
        assert table[col].dropna().str.contains(r" real / \d+ fake groups").all()
    assert any(line.startswith("Input of every arm: the centred") for line in hypotheses["conclusions"])
