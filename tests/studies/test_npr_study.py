"""lib.studies.npr: arms, evaluation sets (in distribution, unseen sources, NPR-paper table), hypothesis records,
attention statistics, and the run store round trip (attention, external test set) on a tiny dataset."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from lib.studies import npr as na
from lib.data.cache import build_cache
from lib.fileio import sha256_file
from lib.data.manifest import build_manifest
from lib.data.recipes import Recipe
from lib.training.runstore import load_model, load_run
from lib.evaluation.stats import verdict
from lib.training.fit import TrainConfig


# ----------------------------------------------------------------------------- arms

def test_arms_have_explicit_kwargs_so_equal_arms_share_run_keys():
    arms = na.hypothesis_arms([0.75, 0.25, 0.5], entropy_weight=0.1)
    assert [a.condition for a in arms] == ["npr", "npr_multiscale", "npr_multiscale_uniform"]
    assert arms[1].kwargs == {"scales": [0.25, 0.5, 0.75], "attention": "learned", "entropy_weight": 0.1}
    assert arms[2].kwargs["attention"] == "uniform"
    assert len(na.hypothesis_arms([0.5], include_uniform=False)) == 2
    ablation = na.ablation_arms([0.25, 0.5, 0.75], [[0.5], [0.5, 0.25], [0.25, 0.5, 0.75], [0.5]], entropy_weight=0.1)
    assert [a.condition for a in ablation] == ["scales 0.25+0.5+0.75", "scales 0.5", "scales 0.25+0.5"]
    assert ablation[0].kwargs == arms[1].kwargs  # the reference set is H2's learned arm: same run keys


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
    """Two conditions, folds, test split (real, gen_a, gen_b) and holdout split (gen_c, fakes only)."""
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
                                 "label": label, "path": f"{split}_{source}_{k}.png", "probability": p})
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


def _fold_table(shift, n_folds=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for fold in range(n_folds):
        base = 0.7 + rng.normal(0, 0.02)
        for cond, auc in (("npr", base), ("npr_multiscale", base + shift + rng.normal(0, 0.005)),
                          ("npr_multiscale_uniform", base + rng.normal(0, 0.005))):
            rows.append({"condition": cond, "fold": fold, "test_auc": auc, "test_ap": auc})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shift,expected", [(0.05, "supported"), (-0.05, "contradicted"), (0.0, "inconclusive")])
def test_hypothesis_verdict_follows_the_interval_of_the_paired_difference(shift, expected):
    pairs = [("npr_multiscale", "npr"), ("npr_multiscale", "npr_multiscale_uniform")]
    rec = na.hypothesis_record("H2", "claim", _fold_table(shift), "condition", pairs, ["test_auc", "test_ap"],
                               ("npr_multiscale", "npr", "test_auc"))
    comparisons = pd.DataFrame(rec["comparisons"])
    assert len(comparisons) == 4 and (comparisons["t_p_holm"] >= comparisons["t_p"] - 1e-12).all()
    assert rec["verdict"] == expected == verdict(rec["diff_ci_low_adj"], rec["diff_ci_high_adj"])
    assert rec["family_size"] == 4
    # the family-wise (Bonferroni) interval contains the unadjusted 95 % one
    assert (comparisons["diff_ci_low_adj"] <= comparisons["diff_ci_low"]).all()
    assert (comparisons["diff_ci_high_adj"] >= comparisons["diff_ci_high"]).all()
    assert "-> " + expected in na.describe_hypothesis(rec)
    assert {r["metric"] for r in rec["per_model"]} == {"test_auc", "test_ap"}


def test_adjusted_verdict_is_stricter_than_the_unadjusted_one():
    # one clear and three borderline differences: the family-wise interval can only remove "supported" verdicts
    rng = np.random.default_rng(3)
    rows = [{"condition": c, "fold": f, "test_auc": 0.7 + d * (c != "base") + rng.normal(0, 0.02)}
            for f in range(3) for c, d in (("base", 0), ("x", 0.03))]
    table = pd.DataFrame(rows)
    out = na.paired_family(table, "condition", [("x", "base")] * 6, ["test_auc"])
    assert (out["family_size"] == 6).all()
    assert not ((out["verdict_adjusted"] == "supported") & (out["verdict"] != "supported")).any()


def test_missing_arm_is_not_tested():
    table = _fold_table(0.05)
    rec = na.hypothesis_record("H3", "claim", table[table["condition"] != "npr"], "condition",
                               [("npr_multiscale", "npr")], ["test_auc"], ("npr_multiscale", "npr", "test_auc"))
    assert rec["verdict"] == "not tested" and "not tested" in na.describe_hypothesis(rec)


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
    rows = []
    for i in range(32):
        label = i % 2
        img = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
        if label:
            img = np.repeat(np.repeat(img[::2, ::2], 2, axis=0), 2, axis=1)  # nearest up-sampling artefact
        path = tmp_path / "img" / f"{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(path)
        rows.append({"path": path.as_posix(), "label": label, "source": ("up_a" if i % 4 == 1 else "up_b") if label else "real",
                     "group": f"g{i // 2}", "sha256": sha256_file(path)})
    manifest = pd.DataFrame(rows)
    split = ["trainval"] * 24 + ["test"] * 8
    fold = [(i // 2) % 2 for i in range(24)] + [-1] * 8
    splits = pd.DataFrame({"sha256": manifest["sha256"], "split": split, "fold": fold})
    dataset = SimpleNamespace(name="tiny", manifest=manifest, fingerprint="fp-npr-tiny")
    return SimpleNamespace(dataset=dataset, splits=splits, runs=tmp_path / "runs", cache=tmp_path / "cache")


def test_arms_attention_and_external_set_through_the_run_store(tiny_study, generic_tree, tmp_path):
    s = tiny_study
    recipe = Recipe(size=16)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, seed=0, device="cpu", eval_batch_size=16)
    arms = na.hypothesis_arms([0.25, 0.5])
    cv, preds = na.run_arms(s.dataset, s.splits, recipe, config, arms, runs_dir=s.runs, progress=False, cache_dir=s.cache)
    assert len(cv) == 6 and cv["trained"].all() and set(preds["condition"]) == {a.condition for a in arms}
    assert set(cv.loc[cv["condition"] == "npr_multiscale", "scales"]) == {"0.25+0.5"}

    # the ablation's reference arm is H2's learned arm: loaded, not retrained
    cv_abl, _ = na.run_arms(s.dataset, s.splits, recipe, config, na.ablation_arms([0.5, 0.25], []),
                            runs_dir=s.runs, progress=False, cache_dir=s.cache)
    assert not cv_abl["trained"].any()
    assert set(cv_abl["run_key"]) == set(cv.loc[cv["condition"] == "npr_multiscale", "run_key"])

    # checkpoints record their scales
    key = cv.loc[cv["condition"] == "npr_multiscale", "run_key"].iloc[0]
    assert load_run(s.runs / key).spec.model_kwargs["scales"] == [0.25, 0.5]
    assert load_model(s.runs / key).scales == (0.25, 0.5)

    images = build_cache(s.dataset.manifest, recipe, cache_dir=s.cache, progress=False)
    att = na.attention_table(cv, preds, images, splits=("test",), runs_dir=s.runs, progress=False)
    assert len(att) == 2 * 8 and set(att["condition"]) == {"npr_multiscale"}  # the uniform control is skipped
    assert np.allclose(att[["w_0.25", "w_0.5"]].sum(axis=1), 1.0)

    manifest, _ = build_manifest(generic_tree, layout="generic", cache_dir=tmp_path / "manifests", progress=False)
    external = SimpleNamespace(root=generic_tree, manifest=manifest)
    ext = na.evaluate_external(cv.assign(part="H2"), external, recipe, extra=["part"], runs_dir=s.runs,
                               progress=False, cache_dir=s.cache)
    assert len(ext) == len(cv) * len(manifest) and (ext["split"] == "external").all() and set(ext["part"]) == {"H2"}
    assert ext["probability"].between(0, 1).all()
    folds = na.fold_metrics(ext, "condition", ("external",), ("external",), prefix="external")
    assert len(folds) == 6 and folds["external_auc"].notna().all()
    per_source = na.source_metrics(ext, "condition", ("external",), ("external",))
    assert set(per_source["source"]) == set(manifest.loc[manifest["label"] == 1, "source"]) | {na.MEAN_ROW}


def test_external_set_must_not_be_empty(tiny_study):
    empty = SimpleNamespace(root="nowhere", manifest=tiny_study.dataset.manifest.iloc[:0])
    with pytest.raises(ValueError, match="no usable image"):
        na.evaluate_external(pd.DataFrame({"run_key": []}), empty, Recipe(size=16))


# ----------------------------------------------------------------------------- notebook steps

def test_setup_tables_list_every_arm_and_every_scale_of_the_map_figure():
    arms = na.hypothesis_arms([0.25, 0.75]) + na.ablation_arms([0.25, 0.75], [[0.9]])
    table = na.arm_table(arms)
    assert list(table["condition"]) == ["npr", "npr_multiscale", "npr_multiscale_uniform", "scales 0.25+0.75", "scales 0.9"]
    assert pd.isna(table.loc[0, "attention"]) and table.loc[2, "attention"] == "uniform"
    assert na.map_scales(arms) == [0.25, 0.5, 0.75, 0.9]  # NPR's 0.5 always, each scale once


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


def test_claim_record_tests_the_claim_pairs_on_auc_and_ap_with_the_first_pair_on_auc_as_primary():
    folds = _fold_table(0.05).rename(columns={"test_auc": "unseen_auc", "test_ap": "unseen_ap"})
    rec = na.claim_record("H3", "claim", folds, "unseen")
    assert rec["primary"] == {"a": "npr_multiscale", "b": "npr", "metric": "unseen_auc"}
    tests = na.record_tests(rec)
    assert set(zip(tests["b"], tests["metric"])) == {(b, m) for b in ("npr", "npr_multiscale_uniform")
                                                     for m in ("unseen_auc", "unseen_ap")}
    assert list(na.tests_view(tests).columns) == na.TEST_COLUMNS
    assert na.tests_view(pd.DataFrame()).empty
    table = na.summary_table(folds, ["unseen_auc"])
    assert list(table.index) == ["npr", "npr_multiscale", "npr_multiscale_uniform"] and "±" in table.iloc[0, 0]


def test_fold_ensemble_tests_skip_pairs_with_an_arm_that_was_not_run():
    preds = synthetic_predictions().replace({"condition": {"strong": "npr_multiscale", "weak": "npr"}})
    out = na.fold_ensemble_tests(preds)
    assert list(zip(out["a"], out["b"])) == [("npr_multiscale", "npr")]  # no uniform control in these predictions
    assert out.loc[0, "n_test"] == 24 and 0 <= out.loc[0, "delong_p"] <= 1


def _ablation_folds():
    table = _fold_table(0.05).replace({"condition": {"npr_multiscale": "scales 0.25+0.5", "npr": "scales 0.5",
                                                     "npr_multiscale_uniform": "scales 0.25"}})
    return table.assign(test_accuracy=0.7, n_parameters=table["condition"].map(
        {"scales 0.25+0.5": 200, "scales 0.5": 100, "scales 0.25": 100}))


def test_ablation_compares_every_set_with_the_reference_and_names_the_best():
    arms = na.ablation_arms([0.5], [[0.25, 0.5], [0.25]])
    cv = _ablation_folds()
    abl = na.compare_ablation(cv, arms)
    assert abl.reference == "scales 0.5"
    assert set(zip(abl.tests["a"], abl.tests["b"])) == {("scales 0.25+0.5", "scales 0.5"), ("scales 0.25", "scales 0.5")}
    assert (abl.tests["family_size"] == 4).all()
    assert set(abl.summary["metric"]) == {"test_auc", "test_ap", "test_accuracy"}
    table = na.ablation_table(cv, abl)
    assert table.loc["scales 0.25+0.5", "parameters"] == 200 and list(table.index)[0] == "scales 0.5"
    line = na.ablation_line(abl)
    assert line.startswith("Scale ablation: highest mean test AUC with scales 0.25+0.5 (")
    assert "; scales 0.25+0.5 vs scales 0.5: +0.0" in line and "(Holm p = " in line and "-> supported" in line
    assert line.count(" vs ") == 2 and line.endswith(".")
    assert set(abl.record()) == {"reference", "per_model", "comparisons"}


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


def test_external_hypotheses_compare_the_arms_of_each_training_group():
    folds = pd.concat([_fold_table(0.05, seed=s).assign(arm=lambda t, g=group: g + ": " + t["condition"])
                       for s, group in enumerate(["all sources", "seen sources"])], ignore_index=True)
    folds = folds.rename(columns={"test_auc": "external_auc", "test_ap": "external_ap"})
    records = na.external_hypotheses(folds, ["all sources", "seen sources"])
    assert [r["name"] for r in records] == ["external (all sources)", "external (seen sources)"]
    assert records[1]["primary"] == {"a": "seen sources: npr_multiscale", "b": "seen sources: npr", "metric": "external_auc"}
    assert all(len(r["comparisons"]) == 4 for r in records)
    dataset = SimpleNamespace(root="/ext", layout="generic", manifest=pd.DataFrame({"path": ["x", "y"]}))
    external = na.external_record(dataset, pd.DataFrame({"arm": ["all sources: npr"]}), records)
    assert external["n_images"] == 2 and not external["skipped"]
    assert na.external_line(external) == " ".join(na.describe_hypothesis(r) for r in records)
    assert "skipped" in na.external_line({"skipped": True})


def _hypothesis_parts():
    cv_h2 = _fold_table(0.05).assign(n_parameters=lambda t: t["condition"].map(
        {"npr": 1500, "npr_multiscale": 4500, "npr_multiscale_uniform": 4500}), run_key=lambda t: t.index.astype(str))
    h2 = na.claim_record("H2", "claim", cv_h2, "test")
    abl = na.compare_ablation(_ablation_folds(), na.ablation_arms([0.5], [[0.25, 0.5], [0.25]]))
    folds_h3 = _fold_table(0.02).rename(columns={"test_auc": "unseen_auc", "test_ap": "unseen_ap"})
    folds_h3 = folds_h3.assign(seen_auc=folds_h3["unseen_auc"] + 0.1, gap_auc=0.1)
    h3 = na.claim_record("H3", "claim", folds_h3, "unseen")
    return cv_h2, h2, abl, na.attention_statistics(_attention_frame(False)), {"skipped": True}, h3, folds_h3


def test_conclusions_are_computed_from_each_part():
    cv_h2, h2, abl, att, external, h3, folds_h3 = _hypothesis_parts()
    lines = na.conclusions(cv_h2, h2, abl, att, external, h3, folds_h3, sources_note="params name sources ...")
    assert lines[0] == "H3: params name sources ..."
    assert lines[1].startswith("npr (1,500 parameters): test AUC 0.") and lines[1].endswith("5 folds).")
    assert lines[4] == na.describe_hypothesis(h2)
    assert lines[5].startswith("Does learned attention matter (vs fixed uniform weights)? npr_multiscale - "
                               "npr_multiscale_uniform test_auc")
    assert lines[6] == na.ablation_line(abl) and lines[7] == na.describe_hypothesis(h3)
    assert lines[8].startswith("Generalisation gap (seen - unseen AUC): npr +0.100 ± 0.000, npr_multiscale +0.100")
    assert lines[9] == na.attention_line(att) and lines[10].startswith("External test set: skipped")
    not_run = na.conclusions(cv_h2, h2, abl, att, external, {"name": "H3", "verdict": "not run"})
    assert len(not_run) == 9 and not_run[6] == "H3 was not run (run_h3 is false)."


def test_hypotheses_record_and_headline_table():
    cv_h2, h2, abl, att, external, h3, folds_h3 = _hypothesis_parts()
    record = na.hypotheses_record({"scales": [0.5]}, h2, h3, abl, att, external, ["a line"],
                                  {"H2": cv_h2, "ablation": cv_h2.iloc[:2], "H3": None})
    assert list(record) == ["settings", "H2", "H3", "ablation", "attention", "external", "conclusions", "run_keys"]
    assert record["run_keys"] == {"H2": [str(i) for i in range(15)], "ablation": ["0", "1"], "H3": []}
    headline = na.headline_table(cv_h2, folds_h3)
    assert list(headline.columns) == ["condition", "H2 test_auc", "H2 test_ap", "H3 unseen_auc", "H3 seen_auc"]
    assert list(headline["condition"]) == ["npr", "npr_multiscale", "npr_multiscale_uniform"]
    assert list(na.headline_table(cv_h2).columns) == ["condition", "H2 test_auc", "H2 test_ap"]


def test_fold_points_figure_has_one_panel_per_metric(tmp_path):
    fig = na.fold_points_figure(_fold_table(0.05), ["test_auc"], "H2", path=tmp_path / "folds.png")
    assert [ax.get_title() for ax in fig.axes] == ["H2: test_auc per fold (black: mean and 95 % CI)"]
    assert (tmp_path / "folds.png").exists()
