"""lib.studies.npr: NPR's input (native pixels), arms, evaluation views and the protocol's comparisons (intervals,
families, the seen - unseen gap), attention statistics, and the run store round trip on a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from lib.studies import npr as na
from lib.data.cache import build_cache
from lib.evaluation.compare import compare_family, metric_intervals
from lib.evaluation.stats import verdict
from lib.data.manifest import build_manifest
from lib.data.recipes import Recipe
from lib.training.runstore import load_model, load_run
from lib.training.fit import TrainConfig
from conftest import tiny_run_study


# ----------------------------------------------------------------------------- input: native pixels

def test_every_arm_reads_native_pixels_and_trains_on_crops_that_never_resample():
    recipe = na.npr_recipe(48)
    assert recipe == Recipe(size=48, mode="native_crop")
    policy = na.npr_augment(28)
    assert policy.crop == 28 and policy.crop_scale == (1.0, 1.0)  # no resized crop
    assert (policy.brightness, policy.contrast, policy.saturation, policy.blur_p, policy.noise_std, policy.jpeg_p) == (0,) * 6
    line = na.describe_input(recipe, policy)
    assert "48x48 window of native pixels" in line and "random 28x28 window" in line and "whole 48x48" in line


def test_input_size_is_resolved_from_the_images_and_checked():
    manifest = pd.DataFrame({"width": [80, 64, 300], "height": [64, 64, 300]})
    assert na.resolve_input(manifest, 48, 28) == (48, 28)
    assert na.resolve_input(manifest) == (64, 56)  # the largest square every image has; crops of 7/8 of it
    assert na.resolve_input(pd.DataFrame({"width": [1000], "height": [900]})) == (na.MAX_AUTO_WINDOW, 224)
    assert na.resolve_input(manifest, 32, 32) == (32, 32)
    with pytest.raises(ValueError, match="at least 72x72 native pixels; 2 of 3 images are smaller"):
        na.resolve_input(manifest, 72, 64)
    with pytest.raises(ValueError, match="exceeds window_size"):
        na.resolve_input(manifest, 32, 40)


# ----------------------------------------------------------------------------- arms

def test_arms_have_explicit_kwargs_so_equal_arms_share_run_keys():
    arms = na.hypothesis_arms([0.75, 0.25, 0.5], entropy_weight=0.1)
    assert [a.condition for a in arms] == ["npr", "npr_multiscale", na.CONTROL, "npr_multiscale_uniform"]
    assert arms[1].kwargs == {"scales": [0.25, 0.5, 0.75], "attention": "learned", "entropy_weight": 0.1}
    assert arms[3].kwargs["attention"] == "uniform"
    chosen = na.hypothesis_arms([0.5, 0.25], conditions=["npr_multiscale_single", "npr_multiscale"])
    assert [a.condition for a in chosen] == ["npr_multiscale", na.CONTROL]  # ARM_NAMES order
    with pytest.raises(ValueError, match="unknown arm"):
        na.hypothesis_arms([0.5], conditions=["npr", "npr_multiscale", "resnet"])
    with pytest.raises(ValueError, match="name it among"):
        na.hypothesis_arms([0.5], conditions=["npr"])
    ablation = na.ablation_arms([0.25, 0.5, 0.75], [[0.5], [0.5, 0.25], [0.25, 0.5, 0.75], [0.5]], entropy_weight=0.1)
    assert [a.condition for a in ablation] == ["scales 0.25+0.5+0.75", "scales 0.5", "scales 0.25+0.5"]
    assert ablation[0].kwargs == arms[1].kwargs  # the reference set is H2's learned arm: same run keys
    assert ablation[1].kwargs == arms[2].kwargs  # the ablation's set 0.5 is H2's control: same run keys


def test_h2_control_is_the_multiscale_architecture_at_npr_scale_and_the_primary_pair():
    control = {a.condition: a for a in na.hypothesis_arms([0.25, 0.5, 0.75])}[na.CONTROL]
    assert control.model == "npr_multiscale"
    assert control.kwargs == {"scales": [0.5], "attention": "learned", "entropy_weight": 0.0}
    assert control.scales == (0.5,) == na.SINGLE_SCALE
    assert na.CLAIM_PAIRS[0] == ("npr_multiscale", na.CONTROL)
    assert ("npr_multiscale", "npr") in na.CLAIM_PAIRS


def test_the_fold_level_comparison_functions_are_gone():
    # one comparison rule: lib.evaluation.compare's compare_family, metric_intervals, fold_tests, cv_summary
    for name in ("paired_family", "fold_summary", "claim_record", "record_tests", "describe_row"):
        assert not hasattr(na, name)
    notebook = json.loads((Path(na.__file__).parents[2] / "notebooks" / "08_npr_multiscale.ipynb").read_text())
    source = "".join("".join(c["source"]) for c in notebook["cells"])
    assert "paired_family" not in source and "fold_summary" not in source and "compare_family" in source


def test_bad_scales_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        na.check_scales([])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        na.check_scales([0.5, 1.5])
    assert na.scale_label([0.5, 0.25, 0.5]) == "0.25+0.5"


def test_holdout_sources_are_resolved_and_checked():
    manifest = pd.DataFrame({"label": [0, 1, 1, 1, 1], "source": ["real", "d", "a", "c", "b"]})
    assert na.resolve_holdout_sources(manifest, []) == ["c", "d"]
    assert na.resolve_holdout_sources(manifest, ["b"]) == ["b"]
    with pytest.raises(ValueError, match="not fake sources"):
        na.resolve_holdout_sources(manifest, ["real"])
    with pytest.raises(ValueError, match="leave no fake source"):
        na.resolve_holdout_sources(manifest, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="at least two fake sources"):
        na.resolve_holdout_sources(manifest.iloc[:2], [])


# ----------------------------------------------------------------------------- evaluation sets

def synthetic_predictions(seed=0, n_folds=3):
    """Two conditions, folds, test split (real, gen_a, gen_b) and holdout split (gen_c, fakes only); image k of a
    (split, source) belongs to group `<split>-g<k % 4>` (a photograph and the fakes made from it)."""
    rng = np.random.default_rng(seed)
    rows = []
    layout = [("test", "real", 0, 12), ("test", "gen_a", 1, 6), ("test", "gen_b", 1, 6), ("holdout", "gen_c", 1, 8),
              ("val", "real", 0, 4), ("val", "gen_a", 1, 4)]
    for condition, strength in (("strong", 0.5), ("weak", 0.1)):
        for fold in range(n_folds):
            k = 0
            for split, source, label, n in layout:
                for _ in range(n):
                    p = float(np.clip(0.5 + (strength if label else -strength) + rng.normal(0, 0.2), 0, 1))
                    rows.append({"condition": condition, "fold": fold, "split": split, "source": source,
                                 "label": label, "path": f"{split}_{source}_{k}.png", "probability": p,
                                 "group": f"{split}-g{k % 4}"})
                    k += 1
    return pd.DataFrame(rows)


def test_fold_metrics_build_the_unseen_set_from_test_reals_and_holdout_fakes():
    preds = synthetic_predictions()
    unseen = na.fold_metrics(preds, "condition", ("test",), ("holdout",), prefix="unseen")
    assert len(unseen) == 6 and set(unseen["unseen_n_real"]) == {12} and set(unseen["unseen_n_fake"]) == {8}
    one = preds[(preds["condition"] == "weak") & (preds["fold"] == 1)]
    sel = one[((one["label"] == 0) & (one["split"] == "test")) | (one["split"] == "holdout")]
    row = unseen[(unseen["condition"] == "weak") & (unseen["fold"] == 1)].iloc[0]
    assert row["unseen_auc"] == pytest.approx(roc_auc_score(sel["label"], sel["probability"]))
    # without the test reals the holdout split alone has one class: AUC undefined, not an error
    alone = na.fold_metrics(preds, "condition", ("holdout",), ("holdout",), prefix="h")
    assert alone["h_auc"].isna().all() and (alone["h_n_real"] == 0).all()
    only_a = na.fold_metrics(preds, "condition", ("test",), ("test",), fake_sources=["gen_a"])
    assert set(only_a["test_n_fake"]) == {6}


def test_source_metrics_score_each_fake_source_against_all_reals_and_add_a_mean_row():
    preds = synthetic_predictions()
    per_fold = na.source_metrics(preds, "condition", ("test",), ("test", "holdout"))
    assert set(per_fold["source"]) == {"gen_a", "gen_b", "gen_c", na.MEAN_ROW}
    one = preds[(preds["condition"] == "strong") & (preds["fold"] == 0)]
    sel = one[((one["label"] == 0) & (one["split"] == "test")) | (one["source"] == "gen_c")]
    row = per_fold[(per_fold["condition"] == "strong") & (per_fold["fold"] == 0)].set_index("source")
    assert row.loc["gen_c", "ap"] == pytest.approx(average_precision_score(sel["label"], sel["probability"]))
    pred = sel["probability"] >= 0.5
    balanced = np.mean([(~pred[sel["label"] == 0]).mean(), pred[sel["label"] == 1].mean()])
    assert row.loc["gen_c", "balanced_accuracy"] == pytest.approx(balanced)
    for metric in na.SOURCE_METRICS:
        assert row.loc[na.MEAN_ROW, metric] == pytest.approx(row.loc[["gen_a", "gen_b", "gen_c"], metric].mean())

    summary = na.source_summary(per_fold)
    assert (summary["ap_n"] == 3).all() and (summary["ap_ci_low"] <= summary["ap_mean"]).all()
    table = na.npr_paper_table(summary)
    assert list(table.index) == ["gen_a", "gen_b", "gen_c", na.MEAN_ROW]
    assert list(table.columns) == [("strong", "acc"), ("strong", "AP"), ("weak", "acc"), ("weak", "AP")]
    assert "±" in table.loc[na.MEAN_ROW, ("weak", "AP")]



# ----------------------------------------------------------------------------- the protocol: views, intervals, families

def _claim_predictions(shift, seed=0, n_groups=10, per_group=6):
    """`npr_multiscale`, its control and `npr` on val and test rows: groups of real and fake images (a photograph and
    its fakes), `npr_multiscale` separating the classes better by `shift`."""
    rng = np.random.default_rng(seed)
    rows = []
    for split in ("val", "test"):
        for g in range(n_groups):
            for k in range(per_group):
                label = k % 2
                base = rng.normal(0, 1)
                for cond, strength in (("npr_multiscale", 1.0 + shift), (na.CONTROL, 1.0), ("npr", 1.0)):
                    logit = base + (strength if label else -strength) * 0.8 + rng.normal(0, 0.3)
                    rows.append({"condition": cond, "fold": g % 3, "split": split, "label": label,
                                 "source": "gen" if label else "real", "group": f"{split}-{g}",
                                 "path": f"{split}-{g}-{k}.png", "probability": float(1 / (1 + np.exp(-logit)))})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shift,expected", [(3.0, "supported"), (-0.9, "contradicted"), (0.0, "inconclusive")])
def test_hypothesis_verdict_comes_from_compare_family(shift, expected):
    preds = _claim_predictions(shift)
    pairs = na.present_pairs(preds, na.CLAIM_PAIRS)
    assert pairs == [("npr_multiscale", na.CONTROL), ("npr_multiscale", "npr")]  # the uniform control was not run
    family = compare_family(preds, "condition", pairs, sets=na.H2_SETS, n_boot=500)
    intervals = metric_intervals(preds, "condition", sets=na.H2_SETS, n_boot=500)
    rec = na.hypothesis_record("H2", "claim", family, intervals, "test")
    assert rec["primary"] == {"a": "npr_multiscale", "b": na.CONTROL, "set": "test", "metric": "auc"}
    primary = family[(family["b"] == na.CONTROL) & (family["set"] == "test")].iloc[0]
    assert rec["verdict"] == primary["verdict"] == expected
    assert "-> claim 'npr_multiscale > npr_multiscale_single': " + expected in na.describe_hypothesis(rec)
    lines = na.family_lines(rec)
    assert len(lines) == 3 and all(line.startswith("H2: npr_multiscale - ") for line in lines)
    assert len(rec["intervals"]) == 6 and {"real_groups", "fake_groups"} <= set(rec["intervals"][0])
    table = na.intervals_table(intervals)
    assert list(table.columns) == ["oof", "test"] and "real / " in table.loc["npr", "test"]
    assert list(na.family_view(family).columns) == na.FAMILY_VIEW


def test_missing_arms_are_not_tested():
    rec = na.hypothesis_record("H3", "claim", pd.DataFrame(), pd.DataFrame(), "unseen")
    assert rec["verdict"] == "not tested" and "not tested" in na.describe_hypothesis(rec)


def test_h3_views_share_the_real_test_images_and_are_scored_as_one_set():
    preds = synthetic_predictions()
    views = na.h3_views(preds, ["gen_c"], ["gen_a", "gen_b"])
    unseen, seen = views["unseen"], views["seen"]
    assert set(unseen["split"]) == set(seen["split"]) == {"test"}
    assert set(unseen.loc[unseen["label"] == 1, "source"]) == {"gen_c"}
    assert set(seen.loc[seen["label"] == 1, "source"]) == {"gen_a", "gen_b"}
    assert set(unseen.loc[unseen["label"] == 0, "path"]) == set(seen.loc[seen["label"] == 0, "path"])
    intervals = na.view_intervals(views, n_boot=200)
    assert set(intervals["set"]) == set(na.H3_SETS) and intervals["estimate"].between(0, 1).all()
    family = na.view_family(views, [("strong", "weak")], n_boot=200)
    assert list(family["set"]) == ["unseen", "seen"] and (family["claim"] == "strong > weak").all()
    assert na.view_family(views, [("strong", "absent")]).empty


def test_gap_is_seen_minus_unseen_on_the_same_real_images_with_a_group_interval():
    preds = synthetic_predictions()
    gap = na.seen_unseen_gap(preds, ["gen_c"], ["gen_a", "gen_b"], n_boot=300)
    assert list(gap["condition"]) == ["strong", "weak"]
    ens = preds[preds["condition"] == "weak"].groupby("path").agg(
        label=("label", "first"), source=("source", "first"), split=("split", "first"), probability=("probability", "mean"))
    real = ens[(ens["label"] == 0) & (ens["split"] == "test")]
    unseen = pd.concat([real, ens[ens["source"] == "gen_c"]])
    seen = pd.concat([real, ens[ens["source"].isin(["gen_a", "gen_b"]) & (ens["split"] == "test")]])
    row = gap.set_index("condition").loc["weak"]
    assert row["unseen_auc"] == pytest.approx(roc_auc_score(unseen["label"], unseen["probability"]))
    assert row["seen_auc"] == pytest.approx(roc_auc_score(seen["label"], seen["probability"]))
    assert row["gap"] == pytest.approx(row["seen_auc"] - row["unseen_auc"])
    assert row["ci_low"] <= row["gap"] <= row["ci_high"]
    assert (row["real_groups"], row["seen_fake_groups"], row["unseen_fake_groups"]) == (4, 4, 4)
    assert (row["real_images"], row["seen_fake_images"], row["unseen_fake_images"]) == (12, 12, 8)
    assert "gap " in na.gap_text(row) and "4 real / 4 seen-fake / 4 unseen-fake groups" in na.gap_text(row)
    one_group = na.seen_unseen_gap(preds.assign(group="one"), ["gen_c"], ["gen_a"], n_boot=50)
    assert one_group["ci_low"].isna().all() and "undefined" in one_group["note"].iloc[0]


def test_source_intervals_score_each_generator_against_every_real_test_image():
    preds = synthetic_predictions()
    per_source = na.source_intervals(preds, "condition", ("test",), ("test", "holdout"), held=["gen_c"], n_boot=200)
    assert list(per_source.columns[:3]) == ["condition", "source", "in_training"]
    assert set(per_source["source"]) == {"gen_a", "gen_b", "gen_c"}
    assert set(per_source.loc[per_source["source"] == "gen_c", "in_training"]) == {"unseen"}
    row = per_source[(per_source["condition"] == "strong") & (per_source["source"] == "gen_c")].iloc[0]
    assert (row["real_images"], row["fake_images"]) == (12, 8)


def test_fold_view_and_image_level_tests():
    cv = pd.DataFrame([{"condition": c, "fold": f, "val_auc": 0.7 + 0.05 * (c == "npr_multiscale") + 0.01 * f,
                        "test_auc": 0.7} for f in range(3) for c in ("npr", "npr_multiscale")])
    summary, tests = na.fold_view(cv, na.CLAIM_PAIRS)
    assert list(summary.columns) == ["val_auc", "test_auc"] and "±" in summary.loc["npr", "val_auc"]
    assert list(zip(tests["a"], tests["b"])) == [("npr_multiscale", "npr")] and tests["wilcoxon_p"].isna().all()
    preds = synthetic_predictions().replace({"condition": {"strong": "npr_multiscale", "weak": "npr"}})
    table, note = na.image_level_tests(preds)
    assert table.empty and "omitted" in note and "not independent" in note  # groups hold several images
    table, note = na.image_level_tests(preds.assign(group=preds["path"]))
    assert list(zip(table["a"], table["b"])) == [("npr_multiscale", "npr")] and "each its own group" in note


def test_the_best_scale_set_is_chosen_on_validation_only():
    preds = _claim_predictions(1.0).replace({"condition": {"npr_multiscale": "scales 0.25+0.5", na.CONTROL: "scales 0.5",
                                                          "npr": "scales 0.25"}})
    arms = na.ablation_arms([0.5], [[0.25, 0.5], [0.25]])
    abl = na.compare_ablation(preds, arms, n_boot=300)
    assert abl.reference == "scales 0.5" and abl.best == "scales 0.25+0.5"
    assert set(zip(abl.family["a"], abl.family["b"])) == {("scales 0.25+0.5", "scales 0.5"), ("scales 0.25", "scales 0.5")}
    assert set(abl.family["set"]) == {"oof", "test"}
    with pytest.raises(ValueError, match="validation"):
        na.best_on_validation(abl.intervals)  # test rows given to a choice
    with pytest.raises(ValueError, match="test columns"):
        na.best_on_validation(abl.intervals[abl.intervals["set"] == "oof"].assign(test_auc=0.5))
    cv = pd.DataFrame({"condition": ["scales 0.5", "scales 0.25+0.5", "scales 0.25"], "n_parameters": [1, 2, 1]})
    table = na.ablation_table(cv, abl)
    assert table.loc["scales 0.25+0.5", "parameters"] == 2 and list(table.index)[0] == "scales 0.5"
    line = na.ablation_line(abl)
    assert line.startswith("Scale ablation: highest out-of-fold AUC with scales 0.25+0.5 (")
    assert line.count("-> claim") == 4 and line.endswith(".")
    assert set(abl.record()) == {"reference", "best_oof", "intervals", "family"}


# ----------------------------------------------------------------------------- attention statistics

def _attention_frame(adaptive: bool, n=30, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for fold in range(2):
        for source, favourite in (("real", 0), ("gan", 1), ("ae", 2)):
            if adaptive:
                w = np.full((n, 3), 0.1)
                w[:, favourite] = 0.8
                w += rng.normal(0, 0.01, w.shape)
            else:
                w = np.full((n, 3), 1 / 3) + rng.normal(0, 0.001, (n, 3))
            w = np.abs(w) / np.abs(w).sum(axis=1, keepdims=True)
            meta = pd.DataFrame({"condition": "npr_multiscale", "fold": fold, "source": [source] * n})
            frames.append(pd.concat([meta, na._weight_columns(w, (0.25, 0.5, 0.75))], axis=1))
    return pd.concat(frames, ignore_index=True)


def test_attention_statistics_tell_adaptive_from_uniform():
    adaptive, uniform = _attention_frame(True), _attention_frame(False)
    s = na.attention_summary(adaptive)
    assert set(s["scale"]) == {"0.25", "0.5", "0.75"}
    assert s.groupby("source")["mean"].sum().round(6).eq(1).all()       # mean weights sum to 1 per source
    assert s.set_index(["source", "scale"]).loc[("gan", "0.5"), "mean"] > 0.7
    cons = na.argmax_consistency(adaptive).set_index("source")
    assert cons.loc["gan", "majority_scale"] == 0.5 and cons.loc["all", "differs_from_majority"] == 0
    assert cons.loc["all", "mean_entropy"] < 0.8
    assert na.argmax_consistency(uniform).set_index("source").loc["all", "mean_entropy"] > 0.99
    assert na.attention_source_tests(adaptive)["differs"].all()
    assert not na.attention_source_tests(uniform)["differs"].all()
    long = na.attention_long(adaptive)
    assert len(long) == 3 * len(adaptive) and set(long.columns) >= {"scale", "weight", "source"}


def test_npr_maps_follow_npr_map():
    img = np.random.default_rng(0).integers(0, 256, (18, 22, 3), dtype=np.uint8)
    maps = na.npr_maps(img, [0.5, 0.25, 0.75])
    assert [m.shape for m in maps] == [(18, 22), (16, 20), (16, 20)]
    assert np.all(maps[0][::2, ::2] == 0) and np.all(np.abs(maps[1]) <= 1)


# ----------------------------------------------------------------------------- run store round trip

@pytest.fixture
def tiny_study(tmp_path):
    """32 PNGs 16x16 (fakes carry a 2x2 block pattern), 2 folds, a test part."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(32):
        img = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
        if i % 2:
            img = np.repeat(np.repeat(img[::2, ::2], 2, axis=0), 2, axis=1)  # nearest up-sampling artefact
        images.append(img)
    sources = [("up_a" if i % 4 == 1 else "up_b") if i % 2 else "real" for i in range(32)]
    return tiny_run_study(tmp_path, images, sources, [("trainval", 24), ("test", 8)], "fp-npr-tiny")


def test_arms_attention_and_external_set_through_the_run_store(tiny_study, generic_tree, tmp_path):
    s = tiny_study
    recipe = na.npr_recipe(16)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, seed=0, device="cpu", eval_batch_size=16,
                         augment=na.npr_augment(12))
    arms = na.hypothesis_arms([0.25, 0.5], conditions=["npr", "npr_multiscale", na.CONTROL])
    cv, preds = na.run_arms(s.dataset, s.splits, recipe, config, arms, runs_dir=s.runs, progress=False, cache_dir=s.cache)
    assert len(cv) == 6 and cv["trained"].all() and set(preds["condition"]) == {a.condition for a in arms}
    assert set(cv.loc[cv["condition"] == "npr_multiscale", "scales"]) == {"0.25+0.5"}
    spec = load_run(s.runs / cv["run_key"].iloc[0]).spec
    assert spec.recipe.mode == "native_crop" and spec.train.augment.crop == 12  # every arm: the same input

    # the ablation's reference arm is H2's learned arm and its set 0.5 is H2's control: loaded, not retrained
    cv_abl, _ = na.run_arms(s.dataset, s.splits, recipe, config, na.ablation_arms([0.5, 0.25], [[0.5]]),
                            runs_dir=s.runs, progress=False, cache_dir=s.cache)
    assert not cv_abl["trained"].any()
    assert set(cv_abl["run_key"]) == set(cv.loc[cv["condition"].isin(["npr_multiscale", na.CONTROL]), "run_key"])

    # checkpoints record their scales
    key = cv.loc[cv["condition"] == "npr_multiscale", "run_key"].iloc[0]
    assert load_run(s.runs / key).spec.model_kwargs["scales"] == [0.25, 0.5]
    assert load_model(s.runs / key).scales == (0.25, 0.5)

    images = build_cache(s.dataset.manifest, recipe, cache_dir=s.cache, progress=False)
    assert images.shape[1:] == (3, 16, 16)
    att = na.attention_table(cv, preds, images, splits=("test",), runs_dir=s.runs, progress=False)
    assert len(att) == 2 * 8 and set(att["condition"]) == {"npr_multiscale"}  # the single-scale control is skipped
    assert np.allclose(att[["w_0.25", "w_0.5"]].sum(axis=1), 1.0)

    manifest, _ = build_manifest(generic_tree, layout="generic", cache_dir=tmp_path / "manifests", progress=False)
    external = SimpleNamespace(root=generic_tree, manifest=manifest)
    ext = na.evaluate_external(cv.assign(part="H2"), external, extra=["part"], runs_dir=s.runs,
                               progress=False, cache_dir=s.cache)
    assert len(ext) == len(cv) * len(manifest) and (ext["split"] == "external").all() and set(ext["part"]) == {"H2"}
    assert ext["probability"].between(0, 1).all()
    per_source = na.external_per_source(ext.assign(arm="all sources: " + ext["condition"]))
    assert set(per_source["source"]) == set(manifest.loc[manifest["label"] == 1, "source"]) | {na.MEAN_ROW}
    intervals, family = na.external_comparison(ext.assign(arm="all sources: " + ext["condition"]), ["all sources"],
                                               n_boot=100)
    assert set(intervals["set"]) == {"external"} and set(family["set"]) == {"external"}
    assert list(zip(family["a"], family["b"])) == [("all sources: npr_multiscale", "all sources: npr_multiscale_single"),
                                                   ("all sources: npr_multiscale", "all sources: npr")]
    record = na.external_record(SimpleNamespace(root="/ext", layout="generic", manifest=manifest), per_source,
                                intervals, family)
    assert not record["skipped"] and record["n_images"] == len(manifest)
    assert na.external_line(record).startswith("External test set: all sources: npr_multiscale - ")
    assert "skipped" in na.external_line({"skipped": True})


def test_external_set_must_not_be_empty(tiny_study):
    empty = SimpleNamespace(root="nowhere", manifest=tiny_study.dataset.manifest.iloc[:0])
    with pytest.raises(ValueError, match="no usable image"):
        na.evaluate_external(pd.DataFrame({"run_key": []}), empty)


# ----------------------------------------------------------------------------- notebook steps

def test_setup_tables_list_every_arm_and_every_scale_of_the_map_figure():
    arms = na.hypothesis_arms([0.25, 0.75]) + na.ablation_arms([0.25, 0.75], [[0.9]])
    table = na.arm_table(arms)
    assert list(table["condition"]) == ["npr", "npr_multiscale", na.CONTROL, "npr_multiscale_uniform",
                                        "scales 0.25+0.75", "scales 0.9"]
    assert pd.isna(table.loc[0, "attention"]) and table.loc[3, "attention"] == "uniform"
    assert na.map_scales(arms) == [0.25, 0.5, 0.75, 0.9]  # NPR's 0.5 always, each scale once


def test_npr_map_figure_shows_the_stored_window(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    manifest = pd.DataFrame({"path": ["a", "b", "c"], "source": ["real", "gen", "gen"], "label": [0, 1, 1],
                             "split": ["test", "test", "trainval"]})
    examples = na.pick_examples(manifest, "test", 1, seed=0)
    assert list(examples["row"]) == [0, 1] and list(examples["source"]) == ["real", "gen"]
    fig = na.npr_map_figure(examples, images, [0.5], path=tmp_path / "maps.png")
    shown = fig.axes[0].images[0].get_array()
    assert np.array_equal(np.asarray(shown), images[0].transpose(1, 2, 0))  # native pixels, as cached
    assert "16x16 native" in fig.axes[0].get_title() and (tmp_path / "maps.png").exists()


def test_holdout_plan_splits_fake_sources_and_notes_unknown_names_on_own_data():
    manifest = pd.DataFrame({"label": [0, 1, 1, 1, 1], "source": ["real", "d", "a", "c", "b"]})
    assert na.holdout_plan(manifest, ["b"]) == (["b"], ["d", "a", "c"], "")
    held, seen, note = na.holdout_plan(manifest, ["b", "zz"], data_root="/my/data")
    assert (held, seen) == (["b"], ["d", "a", "c"]) and "zz" in note
    held, seen, note = na.holdout_plan(manifest, ["zz"], data_root="/my/data")  # nothing left: the default rule
    assert held == ["c", "d"] and seen == ["a", "b"] and "default rule" in note
    with pytest.raises(ValueError, match="not fake sources"):
        na.holdout_plan(manifest, ["zz"])  # on the embedded data an unknown name is a typo


def test_split_counts_count_images_per_source_and_split():
    manifest = pd.DataFrame({"source": ["real", "real", "gan", "gan", "gan"]})
    splits = pd.DataFrame({"sha256": list("abcde"), "split": ["test", "trainval", "test", "holdout", "holdout"]})
    counts = na.split_counts(SimpleNamespace(manifest=manifest, splits=splits))
    assert counts.loc["gan"].to_dict() == {"holdout": 2, "test": 1, "trainval": 0}
    assert counts.loc["real"].to_dict() == {"holdout": 0, "test": 1, "trainval": 1}


def test_unseen_fold_metrics_score_held_out_and_seen_fakes_against_the_test_reals():
    preds = synthetic_predictions()
    folds = na.unseen_fold_metrics(preds, ["gen_c"], ["gen_a"])
    assert len(folds) == 6 and set(folds["unseen_n_fake"]) == {8} and set(folds["seen_n_fake"]) == {6}
    assert set(folds["unseen_n_real"]) == set(folds["seen_n_real"]) == {12}
    assert np.allclose(folds["gap_auc"], folds["seen_auc"] - folds["unseen_auc"])
    one = preds[(preds["condition"] == "strong") & (preds["fold"] == 2)]
    sel = one[((one["label"] == 0) & (one["split"] == "test")) | ((one["source"] == "gen_a") & (one["split"] == "test"))]
    row = folds[(folds["condition"] == "strong") & (folds["fold"] == 2)].iloc[0]
    assert row["seen_auc"] == pytest.approx(roc_auc_score(sel["label"], sel["probability"]))


def test_holdout_tables_mark_the_unseen_sources():
    preds = synthetic_predictions()
    summary = na.holdout_source_summary(preds, ["gen_c"])
    assert list(summary.columns[:3]) == ["condition", "source", "in_training"]
    kinds = summary.drop_duplicates("source").set_index("source")["in_training"].to_dict()
    assert kinds == {"gen_a": "seen", "gen_b": "seen", "gen_c": "unseen", na.MEAN_ROW: "all"}
    table = na.holdout_paper_table(summary, ["gen_c"])
    assert list(table.index) == ["gen_a", "gen_b", "gen_c (unseen)", na.MEAN_ROW]
    att = pd.DataFrame({"source": ["gen_c", "real"], "w_0.5": [1.0, 1.0]})
    assert list(na.label_unseen(att, ["gen_c"])["source"]) == ["gen_c (unseen)", "real"]
    assert list(att["source"]) == ["gen_c", "real"]  # the input table is left as it was


def test_attention_statistics_save_one_table_each_and_summarise_as_text(tmp_path):
    stats = na.attention_statistics(_attention_frame(True))
    stats.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "npr_attention_argmax.csv", "npr_attention_images.csv", "npr_attention_kruskal.csv", "npr_attention_summary.csv"]
    text = na.attention_summary_text(stats.summary)
    assert text.shape == (3, 3) and text.loc["gan", "0.5"].startswith("0.8") and " ± " in text.loc["gan", "0.5"]
    line = na.attention_line(stats)
    assert "for 3 scales" in line and "in 2 of 2 fold models" in line and "for 0% of images" in line
    assert set(stats.record()) == {"summary", "argmax", "kruskal"}


def test_trained_arms_tag_each_distinct_model_with_its_training_sources():
    cv_h2 = pd.DataFrame({"run_key": ["a", "b"], "condition": ["npr", "npr_multiscale"]})
    cv_abl = pd.DataFrame({"run_key": ["b", "c"], "condition": ["scales 0.25+0.5", "scales 0.5"]})
    cv_h3 = pd.DataFrame({"run_key": ["d"], "condition": ["npr"]})
    arms = na.trained_arms(cv_h2, cv_abl, cv_h3)
    assert list(arms["run_key"]) == ["a", "b", "c", "d"]  # b: H2's learned arm is the ablation's reference
    assert list(arms["arm"]) == ["all sources: npr", "all sources: npr_multiscale", "all sources: scales 0.5",
                                 "seen sources: npr"]
    assert set(na.trained_arms(cv_h2, cv_abl)["trained_on"]) == {"all sources"}




def _hypothesis_parts():
    preds = _claim_predictions(0.5)
    pairs = na.present_pairs(preds, na.CLAIM_PAIRS)
    h2_intervals = metric_intervals(preds, "condition", sets=na.H2_SETS, n_boot=200)
    h2 = na.hypothesis_record("H2", "claim", compare_family(preds, "condition", pairs, sets=na.H2_SETS, n_boot=200),
                              h2_intervals, "test")
    cv_h2 = pd.DataFrame({"condition": ["npr", "npr_multiscale", na.CONTROL], "n_parameters": [1500, 4500, 700],
                          "run_key": ["a", "b", "c"]})
    abl_preds = preds.replace({"condition": {"npr_multiscale": "scales 0.25+0.5+0.75", na.CONTROL: "scales 0.5"}})
    abl = na.compare_ablation(abl_preds[abl_preds["condition"] != "npr"],
                              na.ablation_arms([0.25, 0.5, 0.75], [[0.5]]), n_boot=200)
    syn = synthetic_predictions().replace({"condition": {"strong": "npr_multiscale", "weak": na.CONTROL}})
    views = na.h3_views(syn, ["gen_c"], ["gen_a", "gen_b"])
    h3_intervals = na.view_intervals(views, n_boot=200)
    h3 = na.hypothesis_record("H3", "claim", na.view_family(views, na.CLAIM_PAIRS, n_boot=200), h3_intervals, "unseen")
    gap = na.seen_unseen_gap(syn, ["gen_c"], ["gen_a", "gen_b"], n_boot=200)
    att = na.attention_statistics(_attention_frame(False))
    return cv_h2, h2, h2_intervals, abl, att, h3, h3_intervals, gap


def test_conclusions_are_computed_from_each_part():
    cv_h2, h2, h2_intervals, abl, att, h3, h3_intervals, gap = _hypothesis_parts()
    lines = na.conclusions("input line", cv_h2, h2, abl, att, {"skipped": True}, h3, gap, "image note",
                           sources_note="params name sources ...")
    assert lines[:2] == ["H3: params name sources ...", "input line"]
    assert lines[2].startswith("npr_multiscale (4,500 parameters): oof AUC 0.") and "; test AUC 0." in lines[2]
    assert lines[4].startswith("npr (1,500 parameters): oof AUC 0.")
    assert "real / " in lines[2] and lines[2].endswith("groups.")
    assert lines[5] == na.describe_hypothesis(h2) and lines[6:9] == na.family_lines(h2)
    assert lines[9] == na.ablation_line(abl) and lines[10] == na.describe_hypothesis(h3)
    n3 = len(na.family_lines(h3))
    assert lines[11 + n3].startswith("Generalisation gap of npr_multiscale (same real test images): seen AUC ")
    assert lines[-3:] == ["image note", na.attention_line(att), "External test set: skipped (external_root is empty)."]
    not_run = na.conclusions("input line", cv_h2, h2, abl, att, {"skipped": True}, {"name": "H3", "verdict": "not run"})
    assert "H3 was not run (run_h3 is false)." in not_run and len(not_run) == 12


def test_hypotheses_record_and_headline_table():
    cv_h2, h2, h2_intervals, abl, att, h3, h3_intervals, gap = _hypothesis_parts()
    record = na.hypotheses_record({"scales": [0.5]}, h2, h3, abl, att, {"skipped": True}, ["a line"],
                                  {"H2": cv_h2, "ablation": cv_h2.iloc[:2], "H3": None}, gap)
    assert list(record) == ["settings", "H2", "H3", "ablation", "attention", "external", "conclusions", "run_keys"]
    assert record["run_keys"] == {"H2": ["a", "b", "c"], "ablation": ["a", "b"], "H3": []}
    assert len(record["H3"]["gap"]) == 2
    json.dumps(record, default=str)
    headline = na.headline_table(h2_intervals, h3_intervals, gap)
    assert list(headline.columns) == ["condition", "H2 oof AUC", "H2 test AUC", "H3 unseen AUC", "H3 seen AUC",
                                      "H3 gap (seen - unseen)"]
    assert list(headline["condition"]) == ["npr_multiscale", na.CONTROL, "npr"]
    assert "groups" in headline.loc[0, "H2 test AUC"] and "groups" in headline.loc[0, "H3 unseen AUC"]
    assert list(na.headline_table(h2_intervals).columns) == ["condition", "H2 oof AUC", "H2 test AUC"]


def test_figures_of_h2_per_scale_and_h3(tmp_path):
    cv_h2, h2, h2_intervals, abl, att, h3, h3_intervals, gap = _hypothesis_parts()
    arms = na.hypothesis_arms([0.25, 0.5, 0.75])
    fig = na.scale_figure(h2_intervals, pd.DataFrame(h2["family"]), arms, path=tmp_path / "h2.png")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "npr_multiscale\n(0.25+0.5+0.75)" in labels and "npr_multiscale_single\n(0.5)" in labels
    assert len(fig.axes[1].get_xticklabels()) == 2 and (tmp_path / "h2.png").exists()
    syn = synthetic_predictions().replace({"condition": {"strong": "npr_multiscale", "weak": na.CONTROL}})
    per_source = na.source_intervals(syn, "condition", ("test",), ("test", "holdout"), ["gen_c"], n_boot=100)
    fig = na.h3_figure(per_source, gap, path=tmp_path / "h3.png")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["gen_a", "gen_b", "gen_c (unseen)"]
    assert len(fig.axes[1].get_lines()) == 2 and (tmp_path / "h3.png").exists()
