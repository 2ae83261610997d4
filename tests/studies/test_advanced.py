"""lib.studies.advanced (notebook 09): arms with one change each, ensembles fitted on validation only, temperature
scaling that leaves the raw probabilities alone, the one comparison rule per view and metric, computed conclusions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.studies import advanced as adv
from lib.training.fit import TrainConfig

CONFIG = TrainConfig(epochs=2, batch_size=8, seed=0)


def predictions(seed=0, n_folds=2):
    """baseline, focal (stronger) and noise on val / test / holdout (unseen gen_c); image k of a (split, source) is in
    group `<split>-<source>-g<k % 6>`; the val rows of fold f are their own images."""
    rng = np.random.default_rng(seed)
    strength = {"baseline": 0.2, "focal": 0.45, "noise": 0.0}
    layout = [("test", "real", 0, 18), ("test", "gen_a", 1, 12), ("holdout", "gen_c", 1, 12), ("val", "real", 0, 12),
              ("val", "gen_a", 1, 12)]
    rows = []
    for condition, s in strength.items():
        for fold in range(n_folds):
            row_id = 0
            for split, source, label, n in layout:
                for k in range(n):
                    p = float(np.clip(0.4 + (s if label else 0.0) + rng.normal(0, 0.15), 0.01, 0.99))
                    tag = f"f{fold}" if split == "val" else ""
                    rows.append({"condition": condition, "run_key": f"{condition}-{fold}", "fold": fold,
                                 "split": split, "source": source, "label": label, "row": row_id + 1000 * (split == "val") * (fold + 1),
                                 "path": f"{split}{tag}_{source}_{k}.png", "probability": p,
                                 "group": f"{split}{tag}-{source}-g{k % 6}"})
                    row_id += 1
    return pd.DataFrame(rows)


def test_arms_change_one_thing_each_and_refuse_no_op_or_unknown_changes():
    arms = adv.training_arms("simple_cnn", CONFIG, {
        "focal": {"loss": "focal", "focal_gamma": 2.0}, "se": {"model_kwargs": {"attention": "se"}},
        "srm": {"model": "srm_cnn"}, "erasing": {"augment": {"hflip_p": 0.0, "erasing_p": 0.25}}})
    assert [a["condition"] for a in arms] == ["baseline", "focal", "se", "srm", "erasing"]
    assert arms[1]["config"].loss == "focal" and arms[1]["model"] == "simple_cnn"
    assert arms[2]["config"] == CONFIG and arms[2]["model_kwargs"] == {"attention": "se"}
    assert arms[3]["model"] == "srm_cnn" and arms[4]["config"].augment.erasing_p == 0.25
    table = adv.arm_table(arms)
    assert table.loc[1, "changes"] == "loss=focal" and table.loc[0, "changes"] == "(baseline)"
    with pytest.raises(ValueError, match="changes nothing"):
        adv.training_arms("simple_cnn", CONFIG, {"same": {"epochs": 2}})
    with pytest.raises(ValueError, match="TrainConfig fields"):
        adv.training_arms("simple_cnn", CONFIG, {"typo": {"focal_gama": 1.0}})
    with pytest.raises(ValueError, match="taken"):
        adv.training_arms("simple_cnn", CONFIG, {"baseline": {"loss": "focal"}})


def test_ensembles_are_fitted_on_validation_only_and_favour_the_informative_member():
    preds = predictions()
    ensembles, weights = adv.ensemble_conditions(preds, ["baseline", "focal", "noise"])
    assert set(ensembles["condition"]) == set(adv.ENSEMBLES)
    assert np.allclose(weights[["baseline", "focal", "noise"]].sum(axis=1), 1.0)
    assert (weights["focal"] > weights["noise"]).all()
    # the soft ensemble of one fold is the mean of its members on every image
    test = preds[(preds["split"] == "test") & (preds["fold"] == 0)]
    mean = test.groupby("row")["probability"].mean()
    soft = ensembles[(ensembles["condition"] == "ensemble soft") & (ensembles["split"] == "test")
                     & (ensembles["fold"] == 0)].set_index("row")["probability"]
    pd.testing.assert_series_equal(soft.sort_index(), mean.sort_index(), check_names=False)
    # changing the test predictions does not move the fitted weights (they see validation rows only)
    shaken = preds.copy()
    shaken.loc[shaken["split"] != "val", "probability"] = 1 - shaken.loc[shaken["split"] != "val", "probability"]
    _, weights_after = adv.ensemble_conditions(shaken, ["baseline", "focal", "noise"])
    pd.testing.assert_frame_equal(weights, weights_after)
    assert adv.best_single_on_validation(preds, ["baseline", "focal", "noise"]) == "focal"


def overconfident(seed=0, n=240):
    """A baseline whose labels are drawn from sigmoid(z) but which reports sigmoid(3 z): over-confident by T = 3."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, source in (("val", "gen_a"), ("test", "gen_a"), ("holdout", "gen_c")):
        z = rng.normal(0, 1.5, n)
        label = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
        if split == "holdout":  # the unseen view: its fakes against the test reals
            z, label = z[label == 1], label[label == 1]
        for k in range(len(z)):
            rows.append({"condition": "baseline", "run_key": "b-0", "fold": 0, "split": split,
                         "source": source if label[k] else "real", "label": int(label[k]), "row": len(rows),
                         "path": f"{split}_{k}.png", "probability": float(1 / (1 + np.exp(-3 * z[k]))),
                         "group": f"{split}-g{k % 30}"})
    return pd.DataFrame(rows)


def test_temperature_is_fitted_on_validation_and_the_raw_probabilities_stay():
    preds = overconfident()
    scaled = adv.temperature_scaled(pd.concat([preds, preds.assign(condition="other")], ignore_index=True))
    assert set(scaled["condition"]) == {"baseline"} and 2 < scaled["temperature"].iloc[0] < 4.5
    np.testing.assert_array_equal(scaled["probability"].to_numpy(), preds["probability"].to_numpy())  # raw kept
    val_only = adv.temperature_scaled(preds.assign(probability=np.where(preds["split"] == "val", preds["probability"],
                                                                        0.5)))
    assert val_only["temperature"].iloc[0] == scaled["temperature"].iloc[0]  # test rows never move it
    summary = adv.calibration_summary(scaled, ["gen_c"], n_boot=200)
    assert list(summary["set"]) == ["test", "unseen"]
    assert (summary["ci_low"] <= summary["brier_diff"]).all() and (summary["brier_diff"] <= summary["ci_high"]).all()
    test = summary.iloc[0]
    assert test["ece_after"] < test["ece_before"] and test["brier_after"] < test["brier_before"]
    assert test["verdict"] == "supported"  # lower Brier, with the interval below zero


def test_one_rule_per_view_and_metric_and_computed_conclusions():
    preds = predictions()
    pairs = adv.claim_pairs(["baseline", "focal", "noise", *adv.ENSEMBLES], best_single="focal")
    assert ("focal", "baseline") in pairs and ("ensemble soft", "focal") in pairs
    intervals, family = adv.evaluate(preds, ["gen_c"], pairs, n_boot=200)
    assert set(family["set"]) == {"test", "unseen"} and set(family["metric"]) == {"auc", "accuracy"}
    assert set(family["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    focal = family[(family["a"] == "focal") & (family["set"] == "test") & (family["metric"] == "auc")].iloc[0]
    assert focal["verdict"] == "supported" and focal["diff"] > 0
    noise = family[(family["a"] == "noise") & (family["set"] == "test") & (family["metric"] == "auc")].iloc[0]
    assert noise["verdict"] == "contradicted"
    ece = adv.ece_table(preds, ["gen_c"])
    table = adv.headline(intervals, family, pd.DataFrame(), ece)
    assert list(table["condition"]) == ["baseline", "focal", "noise"] and "test: Δ AUC" in table.columns
    lines = adv.conclusions(family, intervals, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), "focal", ["gen_c"], [0, 1])
    assert any("focal > baseline" in line and "supported" in line for line in lines)
    assert any(line.startswith("test: techniques whose AUC gain") and "focal" in line for line in lines)
    sources = adv.per_source(preds, ["gen_c"], n_boot=200)
    assert set(sources["source"]) == {"gen_a", "gen_c"} and sources.loc[sources["source"] == "gen_c", "unseen"].all()


def test_bad_inputs_are_refused_or_skipped_and_said(capsys):
    with pytest.raises(ValueError, match="unknown inference"):
        adv.check_inference(["tta", "dropconnect"])
    assert adv.check_inference(["tta", "tta", "ensembles"]) == ["tta", "ensembles"]
    preds = predictions()
    one_class = (preds["split"] == "val") & (preds["fold"] == 1)
    preds = preds[~(one_class & (preds["label"] == 1))]  # fold 1 validates reals only
    ensembles, weights = adv.ensemble_conditions(preds, ["baseline", "focal", "noise"])
    assert list(weights["fold"]) == [0] and set(ensembles["fold"]) == {0}
    scaled = adv.temperature_scaled(preds)
    assert set(scaled["run_key"]) == {"baseline-0"}
    out = capsys.readouterr().out
    assert "fold 1: no ensemble" in out and "run baseline-1: no temperature" in out
    with pytest.raises(ValueError, match="no fold has both classes"):
        adv.ensemble_conditions(preds[preds["fold"] == 1], ["baseline", "focal"])


def test_mc_dropout_is_skipped_and_said_for_a_model_without_dropout(study, capsys):
    from lib.data.cache import build_cache
    from lib.data.recipes import Recipe
    from lib.executors import LocalExecutor
    from lib.training.runstore import run_cv

    recipe = Recipe(size=16)
    cv = run_cv(study.dataset, study.splits, recipe, "cifake_cnn", CONFIG, folds=[0], runs_dir=study.runs,
                progress=False, cache_dir=study.cache, executor=LocalExecutor()).assign(condition="baseline")
    images = build_cache(study.dataset.manifest, recipe, cache_dir=study.cache, progress=False)
    rescore = adv.rescored(cv, images, mc_passes=3, runs_dir=study.runs)
    assert "mc_probability" not in rescore.columns and rescore["tta_probability"].notna().all()
    assert "MC dropout skipped: cifake_cnn has no dropout layer" in capsys.readouterr().out
    assert set(adv.inference_conditions(rescore)["condition"]) == {adv.TTA}
