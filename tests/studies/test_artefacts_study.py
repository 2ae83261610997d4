"""lib.studies.artefacts (notebook 11): arms, claims, the seen/unseen evaluation by the one rule, the run store round
trip with SAFE's policy, cost, headline and computed conclusions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from lib.data.augment import safe_policy
from lib.studies import artefacts as af
from lib.studies import npr as na
from lib.training.fit import TrainConfig
from lib.training.runstore import load_run
from tests.studies.test_npr_study import tiny_study  # noqa: F401  (fixture)


def predictions(seed=0, n_folds=2):
    """rgb, npr and safe_dwt on a test split (real, gen_a) and a holdout split (gen_c); safe_dwt separates the unseen
    fakes, rgb does not; image k of a (split, source) is in group `<split>-g<k % 8>`."""
    rng = np.random.default_rng(seed)
    rows = []
    layout = [("test", "real", 0, 20), ("test", "gen_a", 1, 10), ("holdout", "gen_c", 1, 10), ("val", "real", 0, 6),
              ("val", "gen_a", 1, 6)]
    strength = {"rgb": (0.3, 0.0), "npr": (0.3, 0.15), "safe_dwt": (0.3, 0.45)}  # (seen, unseen)
    for condition, (seen, unseen) in strength.items():
        for fold in range(n_folds):
            k = 0
            for split, source, label, n in layout:
                for _ in range(n):
                    s = unseen if split == "holdout" else seen
                    p = float(np.clip(0.4 + (s if label else 0.0) + rng.normal(0, 0.15), 0, 1))
                    rows.append({"condition": condition, "fold": fold, "split": split, "source": source, "label": label,
                                 "path": f"{split}_{source}_{k}.png", "probability": p, "group": f"{split}-g{k % 8}"})
                    k += 1
    return pd.DataFrame(rows)


def test_arms_map_front_ends_to_models_and_safe_arms_carry_the_policy():
    arms = af.front_end_arms(["rgb", "npr", "safe_dwt", "sobel"], ["safe_dwt"], crop=24, mask_patch=4)
    assert [(a.condition, a.model) for a in arms] == [("rgb", "rgb_trunk"), ("npr", "npr"), ("safe_dwt", "safe"),
                                                      ("sobel", "sobel_trunk"), ("safe_dwt+safe_aug", "safe")]
    assert arms[-1].augment == safe_policy(24, mask_patch=4) and all(a.augment is None for a in arms[:-1])
    with pytest.raises(ValueError, match="control"):
        af.front_end_arms(["npr", "safe_dwt"])
    with pytest.raises(ValueError, match="unknown"):
        af.front_end_arms(["rgb", "wavelet_packets"])
    with pytest.raises(ValueError, match="without the policy"):
        af.front_end_arms(["rgb", "npr"], ["safe_dwt"])
    table = af.arm_table(arms)
    assert list(table["front_end"]) == ["rgb", "npr", "safe_dwt", "sobel", "safe_dwt"]


def test_claims_are_against_the_control_npr_and_the_unaugmented_front_end():
    arms = af.front_end_arms(["rgb", "npr", "safe_dwt"], ["safe_dwt", "rgb"], crop=8)
    assert af.claim_pairs(arms) == [
        ("npr", "rgb"), ("safe_dwt", "rgb"), ("safe_dwt+safe_aug", "rgb"), ("rgb+safe_aug", "rgb"),
        ("safe_dwt", "npr"), ("safe_dwt+safe_aug", "npr"), ("rgb+safe_aug", "npr"),
        ("safe_dwt+safe_aug", "safe_dwt")]
    assert af.claim_pairs(af.front_end_arms(["rgb", "sobel"])) == [("sobel", "rgb")]  # no npr: no claims against it


def test_evaluation_scores_both_views_and_the_verdict_follows_the_numbers():
    preds = predictions()
    arms = af.front_end_arms(["rgb", "npr", "safe_dwt"])
    intervals, family = af.evaluate(preds, arms, held=["gen_c"], seen=["gen_a"], n_boot=300)
    assert set(intervals["set"]) == {"seen", "unseen"} and set(intervals["metric"]) == {"auc", "ap"}
    assert set(family["set"]) == {"seen", "unseen"}
    # AP of the unseen view is scikit-learn's on the fold ensemble of the test reals and the held-out fakes
    ens = preds[preds["condition"] == "safe_dwt"].groupby("path").agg(
        label=("label", "first"), split=("split", "first"), probability=("probability", "mean"))
    view = ens[((ens["label"] == 0) & (ens["split"] == "test")) | (ens["split"] == "holdout")]
    row = intervals.query("condition == 'safe_dwt' and set == 'unseen' and metric == 'ap'").iloc[0]
    assert row["estimate"] == pytest.approx(average_precision_score(view["label"], view["probability"]))
    assert (row["real_groups"], row["fake_groups"]) == (8, 8)
    claims = af.verdicts(family, "unseen").set_index("condition")
    assert claims.loc["safe_dwt", "verdict"] == "supported" and claims.loc["safe_dwt", "diff"] > 0.3
    assert af.verdicts(family, "seen").set_index("condition").loc["safe_dwt", "verdict"] == "inconclusive"
    # the same data with the labels of the arms swapped: the claim is contradicted, not supported
    swapped = preds.assign(condition=preds["condition"].replace({"rgb": "safe_dwt", "safe_dwt": "rgb"}))
    _, family_swapped = af.evaluate(swapped, arms, held=["gen_c"], seen=["gen_a"], n_boot=300)
    assert af.verdicts(family_swapped).set_index("condition").loc["safe_dwt", "verdict"] == "contradicted"


def test_headline_and_conclusions_are_computed_from_the_tables():
    preds = predictions()
    arms = af.front_end_arms(["rgb", "npr", "safe_dwt"])
    intervals, family = af.evaluate(preds, arms, held=["gen_c"], seen=["gen_a"], n_boot=200)
    gap = na.seen_unseen_gap(preds, ["gen_c"], ["gen_a"], n_boot=200)
    costs = pd.DataFrame({"condition": ["rgb", "npr", "safe_dwt"], "parameters": [100, 100, 100],
                          "epoch_seconds": [1.0, 1.0, 1.2], "images_per_s": [300.0, 320.0, 250.0]})
    table = af.headline(intervals, family, gap, costs)
    assert list(table["condition"]) == ["rgb", "npr", "safe_dwt"]
    verdict = af.verdicts(family).set_index("condition").loc["safe_dwt", "verdict"]
    assert table.set_index("condition").loc["safe_dwt", "unseen: vs rgb"].endswith(verdict)
    assert table.set_index("condition").loc["rgb", "unseen: vs rgb"] == ""  # the control has no claim of its own
    lines = af.conclusions(family, intervals, gap, costs, ["gen_c"], "input line")
    assert lines[0] == "input line" and any("'safe_dwt > rgb': " + verdict in line for line in lines)
    assert any(line.startswith("Highest unseen AUC: safe_dwt") for line in lines)
    assert any("Every arm has 100 parameters" in line and "fastest at inference: npr" in line for line in lines)


def test_arms_with_safes_policy_train_through_the_run_store(tiny_study, tmp_path):  # noqa: F811
    s = tiny_study
    recipe = na.npr_recipe(16)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, seed=0, device="cpu", eval_batch_size=16,
                         augment=na.npr_augment(12))
    arms = af.front_end_arms(["rgb", "safe_dwt"], ["safe_dwt"], crop=12, mask_patch=4)
    cv, preds = na.run_arms(s.dataset, s.splits, recipe, config, arms, runs_dir=s.runs, progress=False,
                            cache_dir=s.cache)
    assert len(cv) == 6 and cv["trained"].all() and set(preds["condition"]) == {a.condition for a in arms}
    keys = cv.groupby("condition")["run_key"].apply(set)
    assert not keys["safe_dwt"] & keys["safe_dwt+safe_aug"]  # the policy is part of the run key
    augmented = load_run(s.runs / cv.loc[cv["condition"] == "safe_dwt+safe_aug", "run_key"].iloc[0]).spec.train.augment
    plain = load_run(s.runs / cv.loc[cv["condition"] == "safe_dwt", "run_key"].iloc[0]).spec.train.augment
    assert augmented == safe_policy(12, mask_patch=4) and plain == na.npr_augment(12)
    costs = af.cost(cv, 16, batch_size=4, repeats=1, runs_dir=s.runs)
    assert list(costs["condition"]) == ["rgb", "safe_dwt", "safe_dwt+safe_aug"]
    assert (costs["parameters"] == costs["parameters"].iloc[0]).all() and (costs["images_per_s"] > 0).all()
    examples = af.pick_examples(s.dataset.manifest, s.splits)
    assert sorted(examples["label"]) == [0, 1]
