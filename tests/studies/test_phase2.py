"""Phase 2 helpers: re-scoring stored checkpoints, per-run metrics and the computed rules of notebook 04."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.evaluation import compare
from lib.studies import phase2
from lib.data.augment import AugmentPolicy
from lib.data.cache import build_cache, channel_stats
from lib.fileio import sha256_file
from lib.data.recipes import Recipe
from lib.training.runstore import collect_predictions, run_cv
from lib.training.fit import TrainConfig, normalization_stats

CFG = TrainConfig(epochs=1, batch_size=8, lr=1e-2, seed=0, device="cpu", eval_batch_size=16)
MODEL_KW = {"widths": [4, 8]}  # a very small simple_cnn


def _tiny_study(root, geometry: bool):
    """24 PNGs in 12 groups (a real and a fake each); reals 20x16 when ``geometry`` else 16x16, fakes 16x16.
    Fakes are brighter, so a model learns something in one epoch. Hand-made splits: 2 folds, 4 test rows."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        label, group = i % 2, f"g{i // 2}"
        width = 20 if (geometry and label == 0) else 16
        img = (rng.integers(0, 150, (16, width, 3)) + 90 * label).clip(0, 255).astype(np.uint8)
        path = root / "img" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        rows.append({"path": path.as_posix(), "label": label, "source": ("gen_a" if i % 4 == 1 else "gen_b") if label else "real",
                     "group": group, "sha256": sha256_file(path), "width": width, "height": 16,
                     "bytes": path.stat().st_size, "format": "PNG", "jpeg_quality": np.nan})
    manifest = pd.DataFrame(rows)
    split = ["trainval"] * 20 + ["test"] * 4
    fold = [(i // 2) % 2 for i in range(20)] + [-1] * 4
    splits = pd.DataFrame({"sha256": manifest["sha256"], "split": split, "fold": fold})
    dataset = SimpleNamespace(name="tiny", manifest=manifest, fingerprint=f"fp-tiny-{geometry}")
    return SimpleNamespace(dataset=dataset, splits=splits, runs=root / "runs", cache=root / "cache")


@pytest.fixture
def study(tmp_path):
    return _tiny_study(tmp_path, geometry=True)


def _cv(study, recipe=Recipe(size=16), config=CFG):
    return run_cv(study.dataset, study.splits, recipe, "simple_cnn", config, model_kwargs=MODEL_KW,
                  runs_dir=study.runs, cache_dir=study.cache, progress=False).assign(condition="c")


# --- re-scoring stored checkpoints ---------------------------------------------------------------------------

def test_evaluate_runs_reproduces_stored_predictions_and_scores_the_training_part(study):
    cv = _cv(study)
    scored = phase2.evaluate_runs(cv, study.dataset, study.splits, Recipe(size=16), parts=("train", "val", "test"),
                                  runs_dir=study.runs, cache_dir=study.cache, progress=False)
    stored = collect_predictions(cv, runs_dir=study.runs)
    merged = stored.merge(scored, on=["run_key", "row", "split"], suffixes=("_stored", "_scored"))
    assert len(merged) == len(stored)
    np.testing.assert_allclose(merged["probability_stored"], merged["probability_scored"], rtol=1e-6)
    train = scored[scored["split"] == "train"]
    assert len(train) == 2 * 10 and set(train["condition"]) == {"c"}  # each fold's training part: 10 rows
    # cached: a second call reads the stored scores
    again = phase2.evaluate_runs(cv, study.dataset, study.splits, Recipe(size=16), parts=("train", "val", "test"),
                                 runs_dir=study.runs, cache_dir=study.cache, progress=False)
    pd.testing.assert_frame_equal(again, scored)


def test_evaluate_runs_refuses_other_splits_sizes_and_parts(study):
    cv = _cv(study)
    kw = dict(runs_dir=study.runs, cache_dir=study.cache, progress=False)
    other = study.splits.assign(fold=study.splits["fold"].replace({0: 1, 1: 0}))
    with pytest.raises(ValueError, match="another split table"):
        phase2.evaluate_runs(cv, study.dataset, other, Recipe(size=16), **kw)
    with pytest.raises(ValueError, match="trained at 16 px"):
        phase2.evaluate_runs(cv, study.dataset, study.splits, Recipe(size=24), **kw)
    with pytest.raises(ValueError, match="parts"):
        phase2.evaluate_runs(cv, study.dataset, study.splits, Recipe(size=16), parts=("everything",), **kw)
    with pytest.raises(ValueError, match="face boxes"):
        phase2.evaluate_runs(cv, study.dataset, study.splits, Recipe(size=16, mode="face", face_detector="x"), **kw)


def test_evaluation_of_an_augmented_run_is_never_augmented(study):
    """An aggressive policy at training time; every stored and re-scored probability equals a plain forward pass
    on the cached pixels, so evaluation data never went through the policy."""
    from lib.training.runstore import load_model
    from lib.training.fit import predict

    policy = AugmentPolicy(hflip_p=1.0, crop_scale=(0.5, 0.6), brightness=0.5, noise_std=0.2, jpeg_p=1.0, blur_p=1.0)
    cv = _cv(study, config=TrainConfig(**{**CFG.to_dict(), "augment": policy}))
    images = build_cache(study.dataset.manifest, Recipe(size=16), cache_dir=study.cache, progress=False)
    stored = collect_predictions(cv, runs_dir=study.runs)
    for key, part in stored.groupby("run_key"):
        plain = predict(load_model(study.runs / key), images, part["row"].to_numpy(), device="cpu")
        np.testing.assert_allclose(part["probability"], plain, rtol=1e-6)


def test_train_real_normalisation_uses_real_training_images_only(study):
    images = build_cache(study.dataset.manifest, Recipe(size=16), cache_dir=study.cache, progress=False)
    labels = study.dataset.manifest["label"].to_numpy()
    train = np.arange(20)
    cfg = TrainConfig(normalization="train_real")
    assert normalization_stats(cfg, images, train, labels) == channel_stats(images, train[labels[train] == 0])
    assert normalization_stats(cfg, images, train, labels) != channel_stats(images, train)
    with pytest.raises(ValueError, match="labels"):
        normalization_stats(cfg, images, train)
    with pytest.raises(ValueError, match="no real"):
        normalization_stats(cfg, images, train[labels[train] == 1], labels)
    # through the run store: the run records the real-only statistics of its fold
    cv = _cv(study, config=TrainConfig(**{**CFG.to_dict(), "normalization": "train_real"}))
    train0 = np.flatnonzero((study.splits["split"] == "trainval") & (study.splits["fold"] != 0))
    recorded = phase2.run_normalization(cv.loc[cv["fold"] == 0, "run_key"].iloc[0], runs_dir=study.runs)
    np.testing.assert_allclose(recorded["mean"], channel_stats(images, train0[labels[train0] == 0])[0])
    table = phase2.normalization_table(cv, "c", runs_dir=study.runs).set_index("fold")
    assert list(table.columns) == ["model", "mean_R", "mean_G", "mean_B", "std_R", "std_G", "std_B"]
    np.testing.assert_allclose(table.loc[0, ["mean_R", "mean_G", "mean_B"]].astype(float), recorded["mean"])
    assert phase2.normalization_table(cv, "other", runs_dir=study.runs).empty


def test_run_conditions_tags_rows_and_needs_boxes_for_face_crops(study):
    base = phase2.Condition("baseline", "2A", Recipe(size=16), CFG, ("simple_cnn",), model_kwargs=MODEL_KW)
    face = phase2.Condition("face_crop", "2C", Recipe(size=16, mode="face", face_detector="test"), CFG, ("simple_cnn",),
                            model_kwargs=MODEL_KW)
    kw = dict(runs_dir=study.runs, cache_dir=study.cache, progress=False)
    with pytest.raises(ValueError, match="face boxes"):
        phase2.run_conditions(study.dataset, study.splits, [base, face], **kw)
    boxes = np.full((len(study.dataset.manifest), 4), np.nan)
    boxes[::3] = [2, 2, 12, 12]
    cv = phase2.run_conditions(study.dataset, study.splits, [base, face], boxes=boxes, **kw)
    assert list(dict.fromkeys(cv["condition"])) == ["baseline", "face_crop"] and len(cv) == 4
    predictions = phase2.score_conditions(cv, study.dataset, study.splits, [base, face], boxes=boxes, **kw)
    runs = phase2.run_metrics(predictions)
    assert set(runs["condition"]) == {"baseline", "face_crop"}
    assert runs[["train_auc", "val_auc", "test_auc", "gap"]].notna().all().all()
    np.testing.assert_allclose(runs["gap"], runs["train_auc"] - runs["val_auc"])
    with pytest.raises(ValueError, match="unique"):
        phase2.condition_table([base, base])
    with pytest.raises(ValueError, match="subphase"):
        phase2.Condition("x", "9Z", Recipe(), CFG, ("simple_cnn",))


# --- per-run metrics -----------------------------------------------------------------------------------------

def _predictions(rng, n=40, sources=("a", "b", "c"), strength=(3.0, 1.0, 0.0)):
    """Test predictions of one run: reals N(0, 1); fakes of source s shifted by strength[s] (AUC from ~0.98 to 0.5)."""
    rows = []
    for s, shift in zip(sources, strength):
        rows += [{"source": s, "label": 1, "score": rng.normal(shift)} for _ in range(n)]
    rows += [{"source": "real", "label": 0, "score": rng.normal()} for _ in range(n)]
    frame = pd.DataFrame(rows)
    frame["probability"] = 1 / (1 + np.exp(-frame["score"]))
    return frame


def test_source_auc_variance_is_large_when_sources_differ_and_nan_with_one_source():
    rng = np.random.default_rng(0)
    uneven, n = phase2.source_auc_variance(_predictions(rng))
    even, _ = phase2.source_auc_variance(_predictions(rng, strength=(1.0, 1.0, 1.0)))
    assert n == 3 and uneven > 0.02 > even
    one, n1 = phase2.source_auc_variance(_predictions(rng, sources=("a",), strength=(1.0,)))
    assert n1 == 1 and np.isnan(one)


# --- synthetic predictions of arms (condition or view, model) ---------------------------------------------------

def _arm_predictions(shifts: dict, n_groups: int = 10, per_group: int = 3, seed: int = 0, by: str = "condition",
                     splits=("val", "test"), noise: float = 0.0):
    """Predictions of arms {(level, model): shift or {split: shift}} on shared images: per split, ``n_groups``
    photographs, each with ``per_group`` real and ``per_group`` fake images (one group = a photograph and its fakes).
    Score = a per-image base shared by every arm + shift * label (+ arm noise), so the AUC grows with the shift and two
    arms with the same shift score identically."""
    rng = np.random.default_rng(seed)
    rows = [{"path": f"{split}/g{g}/{label}/{k}", "label": label, "group": f"{split}-g{g}", "split": split,
             "source": "real" if label == 0 else ("gen_a" if k % 2 else "gen_b")}
            for split in splits for g in range(n_groups) for label in (0, 1) for k in range(per_group)]
    images = pd.DataFrame(rows)
    base = rng.normal(size=len(images))
    frames = []
    for (level, model), shift in shifts.items():
        s = images["split"].map(shift).to_numpy(dtype=float) if isinstance(shift, dict) else float(shift)
        score = base + s * images["label"].to_numpy() + rng.normal(scale=noise, size=len(images))
        frames.append(images.assign(**{by: level}, model=model, run_key=f"{level}-{model}", fold=0,
                                    probability=1 / (1 + np.exp(-score))))
    return pd.concat(frames, ignore_index=True)


def test_level_intervals_and_compare_levels_pair_within_models_and_apply_holm():
    preds = _arm_predictions({("base", "a"): 1.0, ("x", "a"): 3.0, ("base", "b"): 1.0, ("x", "b"): 1.0})
    intervals = phase2.level_intervals(preds, "condition", n_boot=500)
    assert list(intervals.columns[:4]) == ["condition", "model", "set", "metric"]
    assert len(intervals) == 8 and intervals["ci_low"].between(0, 1).all() and intervals["ci_high"].between(0, 1).all()
    assert (intervals["real_groups"] == 10).all() and (intervals["fake_groups"] == 10).all()
    out = phase2.compare_levels(preds, "condition", phase2.level_pairs(preds, "condition", "base"), n_boot=500)
    assert list(out["model"]) == ["a", "b", "a", "b"] and list(out["set"]) == ["oof", "oof", "test", "test"]
    assert (out["a"] == "x").all() and (out["b"] == "base").all() and out.at[0, "claim"] == "x · a > base · a"
    rows = out.set_index(["model", "set"])
    assert rows.at[("a", "oof"), "verdict"] == "supported" and rows.at[("b", "oof"), "verdict"] == "inconclusive"
    assert (out["p_holm"] >= out["p"]).all()
    assert rows.at[("a", "oof"), "level"] == pytest.approx(0.975) and rows.at[("b", "oof"), "level"] == pytest.approx(0.95)
    # a model that did not run the level is left out, not an error
    assert set(phase2.compare_levels(preds[preds["model"] == "a"], "condition", [("x", "base")], n_boot=200)["model"]) == {"a"}


# --- geometry decision ----------------------------------------------------------------------------------------

def _view_tests(drops, set_name="oof"):
    """Rows of compare_levels(by="view", direction="less") with the given verdicts per model."""
    return pd.DataFrame([{"model": m, "a": "center_crop", "b": "resize", "set": set_name, "metric": "auc", "diff": d,
                          "verdict": v} for m, (d, v) in drops.items()])


def test_geometry_decision_on_synthetic_inputs():
    flagged = {"flagged": True, "auc_mean": 0.99, "auc_ci_low": 0.97, "auc_ci_high": 1.0}
    clean = {"flagged": False, "auc_mean": 0.5, "auc_ci_low": 0.5, "auc_ci_high": 0.5}
    on = phase2.geometry_shortcut(flagged, _view_tests({"cnn": (-0.2, "supported"), "resnet": (-0.01, "inconclusive")}))
    assert on["detected"] and on["exploited"] and on["exploited_by"] == ["cnn"] and on["decision_set"] == "oof"
    present = phase2.geometry_shortcut(flagged, _view_tests({"cnn": (0.01, "inconclusive")}))
    assert present["detected"] and not present["exploited"]
    off = phase2.geometry_shortcut(clean, _view_tests({"cnn": (0.0, "inconclusive")}))
    assert not off["detected"] and not off["exploited"]
    # a drop without the shortcut in the data is not called a geometry shortcut
    assert not phase2.geometry_shortcut(clean, _view_tests({"cnn": (-0.2, "supported")}))["exploited"]
    # the decision reads the validation rows only: a drop on the test hold-out alone decides nothing
    both = pd.concat([_view_tests({"cnn": (-0.01, "inconclusive")}), _view_tests({"cnn": (-0.2, "supported")}, "test")])
    assert not phase2.geometry_shortcut(flagged, both)["exploited"]
    with pytest.raises(KeyError):
        phase2.geometry_shortcut({"flagged": True}, _view_tests({}))
    with pytest.raises(ValueError, match="no comparison"):
        phase2.geometry_shortcut(flagged, _view_tests({"cnn": (0.0, "inconclusive")}).assign(a="letterbox_real"))


@pytest.mark.parametrize("geometry", [True, False])
def test_geometry_pipeline_detects_exactly_the_planted_shortcut(tmp_path, geometry):
    """End to end on tiny builds: probe, geometry views of a trained checkpoint, paired comparisons, decision."""
    study = _tiny_study(tmp_path, geometry)
    kw = dict(runs_dir=study.runs, cache_dir=study.cache)
    baseline = phase2.Condition("baseline", "2A", Recipe(size=16), CFG, ("simple_cnn",), model_kwargs=MODEL_KW)
    cv = phase2.run_conditions(study.dataset, study.splits, [baseline], progress=False, **kw)
    predictions = phase2.score_conditions(cv, study.dataset, study.splits, [baseline], progress=False, **kw)
    views = phase2.geometry_views(16)
    preds = phase2.score_geometry_views(baseline, cv, predictions, study.dataset, study.splits, views, **kw)
    assert list(dict.fromkeys(preds["view"])) == list(views)
    own = preds[preds["view"] == "resize"].drop(columns="view").reset_index(drop=True)
    pd.testing.assert_frame_equal(own, predictions)  # the training view is the baseline's own scoring
    probe = phase2.shortcut_probes(study.dataset.manifest, study.splits, n_folds=3, seed=0)["geometry"]
    assert probe["real_images"] + probe["fake_images"] == 20  # the train+validation part only
    analysis = phase2.geometry_analysis(study.dataset.manifest, preds, probe, n_boot=200)
    tests, decision = analysis.view_tests, analysis.decision
    assert decision["detected"] is geometry
    assert set(tests["a"]) == {"letterbox_real", "center_crop"} and set(tests["set"]) == {"oof", "test"}
    assert (analysis.view_summary["kind"] == "evaluation view").all()
    assert {"auc", "auc_ci_low", "real_groups", "delta", "verdict"} <= set(analysis.view_summary.columns)
    assert "fold_auc" not in analysis.probe_table() and analysis.record(None)["card_geometry_shortcut"] is None
    with pytest.raises(ValueError, match="training view"):
        phase2.score_geometry_views(baseline, cv, predictions, study.dataset, study.splits,
                                    {**views, "resize": Recipe(size=16, mode="center_crop")}, **kw)
    if not geometry:  # every view shows square images identically: the checkpoints' scores cannot move
        assert (tests["diff"] == 0).all() and not decision["exploited"]
        pixels = [build_cache(study.dataset.manifest, r, cache_dir=study.cache, progress=False) for r in views.values()]
        assert all(np.array_equal(pixels[0], p) for p in pixels[1:])


@pytest.mark.parametrize("geometry", [True, False])
def test_shortcut_probes_on_the_embedded_smoke_build(geometry):
    """The embedded builder's geometry switch, as the notebook sees it; compression is not planted, so the
    compression probe (bytes per pixel, JPEG quality, format: not the file size, which grows with the pixel count)
    does not flag it."""
    from lib.data.dataset import load_dataset
    from lib.data.splits import make_splits

    ds = load_dataset("", "auto", "smoke", embedded_overrides=None if geometry else {"geometry_shortcut": False},
                      progress=False)
    assert ds.card["params"]["geometry_shortcut"] is geometry and not ds.card["params"]["compression"]
    splits = make_splits(ds.manifest, n_folds=3, seed=42)
    probes = phase2.shortcut_probes(ds.manifest, splits, n_folds=3, seed=42)
    assert probes["geometry"]["flagged"] is geometry and probes["compression"]["flagged"] is False
    assert probes["compression"]["features"][:2] == ["bytes_per_pixel", "jpeg_quality"]
    assert all(f.startswith("format_") for f in probes["compression"]["features"][2:])
    assert probes["geometry"]["real_images"] + probes["geometry"]["fake_images"] == int((splits["split"] == "trainval").sum())
    assert list(phase2.probe_table(probes)["shortcut"]) == ["geometry", "compression"]
    by_class = phase2.geometry_by_class(ds.manifest).set_index("class")
    assert by_class.at["fake", "square"] == 1.0 and by_class.at["real", "square"] == (0.0 if geometry else 1.0)
    if not geometry:
        views = [build_cache(ds.manifest, r, progress=False) for r in phase2.geometry_views(32).values()]
        assert all(np.array_equal(views[0], v) for v in views[1:])


def test_carried_shortcuts():
    resize, crop, face = Recipe(size=8), Recipe(size=8, mode="center_crop"), Recipe(size=8, mode="face", face_detector="m")
    assert phase2.carried_shortcuts(resize, True, 0.0, 0.1) == ["geometry"]
    assert phase2.carried_shortcuts(resize, False, 0.0, 0.1) == []
    assert phase2.carried_shortcuts(Recipe(size=8, mode="letterbox"), True, 0.0, 0.1) == ["geometry"]
    assert phase2.carried_shortcuts(crop, True, 0.5, 0.1) == []
    assert phase2.carried_shortcuts(face, True, 0.5, 0.1) == ["face detection rate"]
    assert phase2.carried_shortcuts(face, True, 0.05, 0.1) == []
    # compression: only a re-encoding recipe removes it
    assert phase2.carried_shortcuts(crop, True, 0.0, 0.1, compression_detected=True) == ["compression"]
    assert phase2.carried_shortcuts(Recipe(size=8, mode="center_crop", jpeg_quality=75), True, 0.0, 0.1, True) == []
    assert phase2.carried_shortcuts(Recipe(size=8, jpeg_quality=75), True, 0.0, 0.1, True) == ["geometry"]


# --- the one comparison rule with shared real images: the source hold-out ------------------------------------

def _holdout_arms(held_shift: float, in_shift: float = 3.0, n_groups: int = 8, seed: int = 0, extra_real: bool = False):
    """Arms of one (source, model): the same real test images on both sides (scored by each side's models), each
    side its own fakes of the source (different paths); the held-out side's fakes are shifted by ``held_shift``."""
    rng = np.random.default_rng(seed)
    rows = []
    for side, shift in (("without", held_shift), ("with", in_shift)):
        for g in range(n_groups):
            reals = [{"path": f"real/g{g}/{k}", "label": 0, "score": rng.normal()} for k in range(4)]
            fakes = [{"path": f"{side}/fake/g{g}/{k}", "label": 1, "score": rng.normal(shift)} for k in range(4)]
            for r in reals + fakes:
                rows.append(r | {"group": f"g{g}", "source": "real" if r["label"] == 0 else "ae", "model": "m",
                                 "held_source": "ae", "side": side, "arm": f"m · {side} ae"})
        if extra_real and side == "without":  # a real image only one side scored: left out of both
            rows.append({"path": "real/only-one-side", "label": 0, "score": 5.0, "group": "gx", "source": "real",
                         "model": "m", "held_source": "ae", "side": side, "arm": f"m · {side} ae"})
    frame = pd.DataFrame(rows)
    return frame.assign(probability=1 / (1 + np.exp(-frame.pop("score"))))


def test_compare_auc_shared_negatives_pairs_the_real_images_and_resamples_groups():
    arms = _holdout_arms(0.3, extra_real=True)
    out = compare.compare_auc_shared_negatives(arms, "arm", [("m · without ae", "m · with ae")], direction="less",
                                              n_boot=500)
    row = out.iloc[0]
    assert row["real_images"] == 32 and row["real_groups"] == 8  # the one-sided real image is dropped
    assert row["fake_images"] == 64 and row["fake_groups"] == 8 and row["fake_groups_a"] == row["fake_groups_b"] == 8
    assert row["estimate_a"] < row["estimate_b"] and row["ci_high"] < 0 and row["verdict"] == "supported"
    assert row["a_ci_low"] <= row["estimate_a"] <= row["a_ci_high"] and 0 <= row["a_ci_low"] and row["b_ci_high"] <= 1
    assert row["claim"] == "m · without ae < m · with ae" and row["set"] == "test"
    # the same distribution on both sides: no verdict
    same = compare.compare_auc_shared_negatives(_holdout_arms(3.0), "arm", [("m · without ae", "m · with ae")],
                                               direction="less", n_boot=500).iloc[0]
    assert same["verdict"] == "inconclusive"
    # one real photograph: the group bootstrap has nothing to resample, the interval is undefined (not 32 images' worth)
    one = compare.compare_auc_shared_negatives(_holdout_arms(0.3, n_groups=1), "arm",
                                              [("m · without ae", "m · with ae")], direction="less", n_boot=200).iloc[0]
    assert np.isnan(one["ci_low"]) and one["verdict"] == "inconclusive" and "interval undefined" in one["note"]


def test_holdout_comparison_flags_by_the_one_rule():
    arms = pd.concat([_holdout_arms(0.3), _holdout_arms(3.0, seed=1).assign(
        held_source="gan", arm=lambda t: t["arm"].str.replace(" ae", " gan"),
        path=lambda t: t["path"].where(t["label"] == 0, "gan/" + t["path"]))], ignore_index=True)
    out = phase2.holdout_comparison(arms, n_boot=500).set_index("source")
    assert list(out.index) == ["ae", "gan"] and (out["model"] == "m").all()
    assert out.at["ae", "flagged"] and not out.at["gan", "flagged"]
    assert out.at["ae", "diff"] < 0 and out.at["ae", "p_holm"] >= out.at["ae", "p"]
    summary = phase2.holdout_summary_rows(out.reset_index())
    assert list(summary["condition"]) == ["without ae", "without gan"] and (summary["kind"] == "source hold-out").all()


def test_holdout_arms_take_the_same_real_test_images_and_each_sides_fakes():
    def preds(split_of_fake, probability):
        return pd.DataFrame({"model": "m", "fold": [0] * 4 + [1] * 4, "run_key": ["k0"] * 4 + ["k1"] * 4,
                             "path": ["r1", "r2", "f1", "o1"] * 2, "label": [0, 0, 1, 1] * 2, "group": "g",
                             "source": ["real", "real", "ae", "other"] * 2,
                             "split": ["test", "test", split_of_fake, "test"] * 2, "probability": probability * 8})
    arms = phase2.holdout_arms(preds("test", [0.2]), {"ae": preds("holdout", [0.4])})
    without, within = arms[arms["side"] == "without"], arms[arms["side"] == "with"]
    assert set(without["path"]) == {"r1", "r2", "f1"} and set(within["path"]) == {"r1", "r2", "f1"}
    assert (without["probability"] == 0.4).all() and set(arms["arm"]) == {"m · without ae", "m · with ae"}


def test_heldout_scores_pool_heldout_fakes_with_test_reals():
    preds = pd.DataFrame({
        "model": "m", "fold": 0, "run_key": "k",
        "split": ["test"] * 4 + ["holdout"] * 2, "source": ["real", "real", "x", "x", "held", "held"],
        "label": [0, 0, 1, 1, 1, 1], "probability": [0.1, 0.4, 0.9, 0.8, 0.3, 0.05]})
    out = phase2.heldout_scores(preds, "held").iloc[0]
    assert out["test_auc"] == 1.0 and out["heldout_auc"] == 0.25 and out["n_heldout"] == 2


# --- augmentation rule ------------------------------------------------------------------------------------------

def _aug_runs(gap, var):
    """Per-fold metrics of plain vs augmented for one model; the arguments are the changes (augmented - plain)."""
    rng = np.random.default_rng(1)
    rows = []
    for fold in range(5):
        noise = rng.normal(0, 0.002, 2)
        rows += [{"condition": "plain", "model": "m", "fold": fold, "gap": 0.2, "source_auc_var": 0.02},
                 {"condition": "aug", "model": "m", "fold": fold, "gap": 0.2 + gap + noise[0],
                  "source_auc_var": 0.02 + var + noise[1] / 10}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("changes, expected", [
    ((-0.1, -0.01, 0.0, 0.0), "shortcuts removed"),
    ((0.0, 0.0, -2.5, -2.5), "over-regularisation"),
    ((0.0, 0.0, 0.0, 0.0), "inconclusive"),
    ((-0.1, 0.01, 0.0, 0.0), "inconclusive"),
    ((0.0, 0.0, -2.5, 0.0), "inconclusive"),
])
def test_augmentation_interpretation_rule(changes, expected):
    gap, var, train, val = changes
    preds = _arm_predictions({("plain", "m"): 3.0, ("aug", "m"): {"train": 3.0 + train, "val": 3.0 + val}},
                             splits=("train", "val"))
    tests = phase2.augmentation_tests(preds, _aug_runs(gap, var), [("aug", "plain")], n_boot=500)
    assert set(tests["metric"]) == set(phase2.AUGMENT_METRICS)
    assert set(tests.loc[tests["metric"].isin(["train_auc", "val_auc"]), "method"]) == {"group bootstrap"}
    assert tests.loc[tests["metric"] == "gap", "method"].iloc[0] == "Nadeau-Bengio over 5 folds"
    out = phase2.interpret_augmentation(tests)
    assert out["interpretation"].tolist() == [expected]
    assert out.at[0, "gap_change"] == pytest.approx(gap, abs=0.01) and out.at[0, "real_groups"] == 10
    with pytest.raises(ValueError, match="no model"):
        phase2.interpret_augmentation(tests.iloc[:0])


def test_augmentation_pairs_keep_the_trained_ones():
    assert phase2.augmentation_pairs(["baseline", "augment", "face_crop"]) == [("augment", "baseline")]
    assert phase2.augmentation_pairs(["baseline", "augment", "face_crop", "augment_face_crop"]) == list(phase2.AUGMENT_PAIRS)


# --- neutralisers -------------------------------------------------------------------------------------------------

def _probes(geometry=True, compression=False):
    return {"geometry": {"auc_mean": 0.99, "auc_ci_low": 0.97, "auc_ci_high": 1.0, "auc_n": 5, "flagged": geometry,
                         "real_groups": 8, "fake_groups": 90, "real_images": 500, "fake_images": 600},
            "compression": {"auc_mean": 0.6, "auc_ci_low": 0.57, "auc_ci_high": 0.63, "auc_n": 5,
                            "flagged": compression, "real_groups": 8, "fake_groups": 90, "real_images": 500,
                            "fake_images": 600}}


def test_neutraliser_table_reports_each_shortcut_with_and_without_its_neutraliser():
    preds = _arm_predictions({("baseline", "m"): 3.0, ("center_crop", "m"): 0.5, ("jpeg", "m"): 3.0})
    intervals = phase2.level_intervals(preds, n_boot=300)
    tests = phase2.neutraliser_tests(preds, n_boot=300)
    assert set(tests["a"]) == {"center_crop", "jpeg"} and (tests["claim"].str.contains(" < ")).all()
    table = phase2.neutraliser_table(_probes(), intervals, tests, card={"params": {"geometry_shortcut": True,
                                                                                  "compression": None}})
    assert list(table["shortcut"]) == ["geometry"] * 2 + ["compression"] * 2 and list(table["set"]) == ["oof", "test"] * 2
    geo = table[(table["shortcut"] == "geometry") & (table["set"] == "oof")].iloc[0]
    assert geo["flagged"] and geo["planted"] is True and geo["neutraliser"] == "center_crop"
    assert geo["auc_with"] < geo["auc_without"] and geo["verdict"] == "supported"  # the crop costs AUC here
    assert geo["without_ci_low"] <= geo["auc_without"] <= geo["without_ci_high"]
    jpeg = table[(table["shortcut"] == "compression") & (table["set"] == "oof")].iloc[0]
    assert not jpeg["flagged"] and jpeg["planted"] is None and jpeg["verdict"] == "inconclusive"
    lines = phase2.neutraliser_lines(table)
    assert len(lines) == 2 and lines[0].startswith("Image geometry (width, height, aspect ratio): metadata probe")
    assert "FLAGGED; dataset card: geometry_shortcut=True" in lines[0]
    assert "with `center_crop` vs" in lines[0] and "'the neutraliser costs AUC': supported" in lines[0]
    assert "not flagged; dataset card: compression=None" in lines[1]
    assert "what the neutraliser alone costs" in lines[1]
    # a profile that skips the re-encoding says so
    table = phase2.neutraliser_table(_probes(), intervals, tests[tests["a"] == "center_crop"])
    assert table.iloc[-1]["note"] == "neutraliser 'jpeg' not trained in this profile" and (table["card"] == "").all()
    assert phase2.neutraliser_lines(table)[-1].endswith("neutraliser 'jpeg' not trained in this profile.")


# --- recommendation -------------------------------------------------------------------------------------------

def _conditions():
    base = TrainConfig(epochs=1)
    aug = TrainConfig(epochs=1, augment=AugmentPolicy(brightness=0.2))
    return [
        phase2.Condition("baseline", "2A", Recipe(size=8), base, ("m",)),
        phase2.Condition("center_crop", "2A", Recipe(size=8, mode="center_crop"), base, ("m",)),
        phase2.Condition("face_crop", "2C", Recipe(size=8, mode="face", face_detector="mtcnn"), base, ("m",)),
        phase2.Condition("augment", "2D", Recipe(size=8), aug, ("m",)),
    ]


def _recommend(shifts, geometry, face_gap=0.0, **kw):
    conditions = _conditions()
    preds = _arm_predictions({(c, "m"): v for c, v in shifts.items()}, **kw)
    shortcuts = {c.name: phase2.carried_shortcuts(c.recipe, geometry, face_gap, 0.1) for c in conditions}
    return phase2.recommend(conditions, phase2.validation_predictions(preds), shortcuts, n_boot=500)


def test_recommendation_avoids_shortcut_carriers_and_significant_losses():
    shifts = {"baseline": 2.0, "center_crop": 1.0, "face_crop": 3.0, "augment": 2.5}
    # geometry detected: resize-based conditions are out; the face crop carries the detection-rate cue
    r = _recommend(shifts, geometry=True, face_gap=0.5)
    assert r["condition"] == "center_crop" and not r["fallback"] and r["selection_set"] == "oof"
    assert r["recipe"]["mode"] == "center_crop" and r["augment"] is None and r["normalization"] == "imagenet"
    assert set(r["oof_auc"]["m"]) >= {"estimate", "ci_low", "ci_high", "real_groups", "fake_groups"}
    assert r["delta_vs_baseline"]["m"] < 0 and r["delta_vs_baseline_tests"][0]["set"] == "oof"
    # no shortcut: the best out-of-fold mean wins (face crop), carrying its recipe
    r = _recommend(shifts, geometry=False)
    assert r["condition"] == "face_crop" and r["recipe"]["mode"] == "face"
    # no shortcut: a condition significantly below the (clean) baseline is excluded even if others are out
    r = _recommend({**shifts, "center_crop": 0.0, "face_crop": 0.0, "augment": 2.0}, geometry=False, face_gap=0.5)
    reasons = {c["condition"]: c["reason"] for c in r["candidates"]}
    assert "significantly below" in reasons["center_crop"] and "significantly below" in reasons["face_crop"]
    assert r["condition"] in ("baseline", "augment")
    # nothing eligible -> baseline, flagged as a fallback
    r = _recommend({"baseline": 2.0, "augment": 3.0}, geometry=True)
    assert r["condition"] == "baseline" and r["fallback"]
    assert r["rule"] == phase2.RECOMMENDATION_RULE and "mean_test_auc" not in r


def test_recommend_refuses_test_predictions_and_test_columns():
    conditions = _conditions()[:2]
    preds = _arm_predictions({("baseline", "m"): 2.0, ("center_crop", "m"): 2.5})
    with pytest.raises(ValueError, match="validation data only.*'test'"):
        phase2.recommend(conditions, preds, {})  # the test rows are still in
    val = phase2.validation_predictions(preds)
    with pytest.raises(ValueError, match="test columns \\['test_auc'\\]"):
        phase2.recommend(conditions, val.assign(test_auc=0.9), {})
    with pytest.raises(ValueError, match="validation data only"):
        phase2.phase3_recommendation(conditions, preds, {"geometry": False}, 0.0, 0.1, 0.9, "smoke")
    assert phase2.recommend(conditions, val, {}, n_boot=200)["condition"] == "center_crop"


@pytest.mark.parametrize("winner_on_val", ["face_crop", "augment"])
def test_recommendation_follows_the_validation_predictions_when_test_disagrees(winner_on_val):
    """Validation and test rank face_crop and augment in opposite orders: the choice follows validation."""
    loser = "augment" if winner_on_val == "face_crop" else "face_crop"
    shifts = {"baseline": 1.5, "center_crop": 1.5, winner_on_val: {"val": 3.0, "test": 1.0},
              loser: {"val": 1.8, "test": 3.0}}
    preds = _arm_predictions({(c, "m"): v for c, v in shifts.items()})
    test = phase2.level_intervals(preds, sets=("test",), n_boot=200).set_index("condition")["estimate"]
    assert test[loser] > test[winner_on_val]  # a choice on test AUC would have taken the other one
    r = _recommend(shifts, geometry=False)
    assert r["condition"] == winner_on_val
    mean = {c["condition"]: c["mean_oof_auc"] for c in r["candidates"]}
    assert mean[winner_on_val] == max(mean.values())


def test_phase3_recommendation_records_the_shortcuts_it_used():
    conditions = _conditions()
    preds = phase2.validation_predictions(_arm_predictions(
        {("baseline", "m"): 2.0, ("center_crop", "m"): 1.9, ("face_crop", "m"): 3.0, ("augment", "m"): 2.5}))
    r = phase2.phase3_recommendation(conditions, preds, {"geometry": True}, 0.5, 0.1, 0.9, "smoke", n_boot=300)
    assert r["condition"] == "center_crop"  # geometry rules out the resizes, the face-rate gap the face crop
    assert {k: r[k] for k in ("face_min_confidence", "geometry_shortcut", "compression_shortcut", "face_rate_gap",
                              "profile")} == {"face_min_confidence": 0.9, "geometry_shortcut": True,
                                              "compression_shortcut": False, "face_rate_gap": 0.5, "profile": "smoke"}
    detected = {"geometry": False, "compression": False}
    assert phase2.phase3_recommendation(conditions, preds, detected, 0.0, 0.1, 0.9, "smoke", n_boot=300)["condition"] == "face_crop"
    # compression detected: no condition re-encodes, so none is eligible
    r = phase2.phase3_recommendation(conditions, preds, {"compression": True}, 0.0, 0.1, 0.9, "smoke", n_boot=300)
    assert r["fallback"] and all("compression" in c["reason"] for c in r["candidates"])


def test_recommendation_file_is_stamped_and_refused_for_another_dataset(tmp_path):
    from lib.fileio import ArtefactMismatch, read_stamped_json, write_stamped_json

    r = phase2.recommend(_conditions()[:2], phase2.validation_predictions(
        _arm_predictions({("baseline", "m"): 2.0, ("center_crop", "m"): 2.5})), {}, n_boot=200)
    stamp = {"dataset": "fp-a", "split_key": "s1"}
    path = write_stamped_json(tmp_path / "phase2_recommendation.json", r, stamp)
    assert read_stamped_json(path, stamp)["condition"] == "center_crop"
    with pytest.raises(ArtefactMismatch):
        read_stamped_json(path, {"dataset": "fp-b", "split_key": "s1"})


# --- the notebook's set-up, face rates, source hold-out, summary and conclusions --------------------------------

def test_phase2_conditions_change_one_thing_of_the_baseline():
    config = TrainConfig(epochs=2, lr=1e-3, seed=3)
    conditions = phase2.phase2_conditions(config, 32, 48, ["cnn", "resnet"], ["cnn"], 0.2, 0.9, {"brightness": 0.2})
    by_name = {c.name: c for c in conditions}
    assert list(by_name) == ["baseline", "norm_real_train", "center_crop", "jpeg", "center_crop_jpeg", "resolution_48",
                             "face_crop", "augment", "augment_face_crop"]
    base = by_name["baseline"]
    assert base.models == ("cnn", "resnet") and base.train == config and base.recipe == Recipe(size=32)
    assert all(c.models == ("cnn",) for c in conditions[1:])
    # the same configurations as building them from the parameters (so the run keys do not change)
    assert by_name["norm_real_train"].train == TrainConfig(epochs=2, lr=1e-3, seed=3, normalization="train_real")
    policy = AugmentPolicy(brightness=0.2)
    assert by_name["augment"].train == by_name["augment_face_crop"].train == TrainConfig(epochs=2, lr=1e-3, seed=3,
                                                                                         augment=policy)
    assert by_name["face_crop"].recipe.face_detector == "mtcnn@0.9" and by_name["resolution_48"].recipe.size == 48
    # the neutralisers of SHORTCUTS: the re-encoding changes only the JPEG quality of the baseline recipe
    assert {s.condition for s in phase2.SHORTCUTS.values()} <= set(by_name)
    assert by_name["jpeg"].recipe == Recipe(size=32, jpeg_quality=75) and by_name["jpeg"].train == config
    assert by_name["jpeg"].recipe.key != base.recipe.key and Recipe(size=32).key == base.recipe.key
    assert by_name["center_crop_jpeg"].recipe == Recipe(size=32, mode="center_crop", jpeg_quality=75)
    skipped = phase2.phase2_conditions(config, 32, 48, ["cnn"], ["cnn"], 0.2, 0.9, {}, jpeg_quality=60,
                                       skip=["augment_face_crop", "center_crop_jpeg"])
    assert [c.name for c in skipped][-2:] == ["face_crop", "augment"] and skipped[3].recipe.jpeg_quality == 60
    with pytest.raises(ValueError, match="unknown condition"):
        phase2.phase2_conditions(config, 32, 48, ["cnn"], ["cnn"], 0.2, 0.9, {}, skip=["nope"])
    with pytest.raises(ValueError, match="baseline cannot be skipped"):
        phase2.phase2_conditions(config, 32, 48, ["cnn"], ["cnn"], 0.2, 0.9, {}, skip=["baseline"])
    phase2.check_model_subsets(["cnn", "resnet"], ["cnn"], ["resnet"])
    with pytest.raises(ValueError, match="not found: \\['vit'\\]"):
        phase2.check_model_subsets(["cnn"], ["cnn"], ["vit"])


def test_sources_to_hold_out_falls_back_to_every_fake_source():
    manifest = pd.DataFrame({"label": [0, 1, 1, 1], "source": ["real", "gan", "ae", "gan"]})
    assert phase2.sources_to_hold_out(manifest, ["gan"]) == (["gan"], "")
    assert phase2.sources_to_hold_out(manifest, []) == (["ae", "gan"], "")
    sources, note = phase2.sources_to_hold_out(manifest, ["diffusion"], data_root="/my/data")
    assert sources == ["ae", "gan"] and "diffusion" in note


def test_face_rates_pool_sources_of_a_class_and_read_the_training_part():
    rates = pd.DataFrame({"class": ["fake", "fake", "real"], "source": ["a", "b", "real"], "n": [10, 30, 20],
                          "faces": [10, 10, 18]})
    assert phase2.class_face_rates(rates) == pytest.approx({"real": 0.9, "fake": 0.5})
    assert phase2.face_rate_gap(rates) == pytest.approx(0.4)
    assert np.isnan(phase2.face_rate_gap(rates[rates["class"] == "fake"]))
    manifest = pd.DataFrame({"path": list("abcdef"), "label": [0, 0, 1, 1, 0, 1], "source": ["r", "r", "g", "g", "r", "g"],
                             "group": ["p1", "p2", "p1", "p2", "p3", "p3"]})
    splits = pd.DataFrame({"split": ["trainval"] * 4 + ["test"] * 2})
    boxes = np.array([[0, 0, 1, 1], [np.nan] * 4, [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=float)
    part_rates, counts = phase2.selection_face_rates(manifest, splits, boxes)
    assert phase2.class_face_rates(part_rates) == pytest.approx({"real": 0.5, "fake": 1.0})  # test rows not read
    assert counts == {"real_groups": 2, "fake_groups": 2, "real_images": 2, "fake_images": 2}
    line = phase2._face_rate_line(part_rates, 0.1, counts)
    assert line == ("On the train+validation images MTCNN finds a face in 50% of the real images (2 images, 2 groups) "
                    "and 100% of the fake images (2 images, 2 groups) (gap 0.50; above the tolerance 0.1; the face crop "
                    "itself tells the classes apart).")


def test_source_holdout_trains_without_each_source_and_skips_the_impossible(study, monkeypatch, capsys):
    from lib.data import splits as splits_module

    baseline = phase2.Condition("baseline", "2A", Recipe(size=16), CFG, ("simple_cnn",))
    in_source = collect_predictions(_cv(study), runs_dir=study.runs)
    make_splits = splits_module.make_splits

    def refuse_gen_b(manifest, **kw):
        if kw["holdout_sources"] == ("gen_b",):
            raise splits_module.SplitError("too few groups")
        return make_splits(manifest, **kw)

    monkeypatch.setattr(splits_module, "make_splits", refuse_gen_b)
    kw = dict(n_folds=2, test_ratio=0.3, val_ratio=0.1, seed=0, model_kwargs=MODEL_KW, runs_dir=study.runs,
              cache_dir=study.cache, progress=False, n_boot=200)
    out = phase2.source_holdout(study.dataset, baseline, in_source, ["gen_a", "gen_b"], ["simple_cnn"], **kw)
    assert out.skipped == {"gen_b": "too few groups"} and "gen_b: not held out (too few groups)" in capsys.readouterr().out
    assert set(out.runs["source"]) == {"gen_a"} and len(out.runs) == 2 and (out.runs["n_heldout"] > 0).all()
    assert list(out.comparison["source"]) == ["gen_a"] and out.sources == ("gen_a", "gen_b")
    row = out.comparison.iloc[0]
    assert row["claim"] == "simple_cnn · without gen_a < simple_cnn · with gen_a"
    assert set(out.arms["side"]) == {"with", "without"}
    reals = {side: set(out.arms.loc[(out.arms["side"] == side) & (out.arms["label"] == 0), "path"])
             for side in ("with", "without")}
    shared = reals["with"] & reals["without"]  # only the real test images both split tables hold out are compared
    assert row["real_images"] == len(shared) and (len(shared) > 0 or row["note"].startswith("no shared real images"))
    with pytest.raises(ValueError, match="no source could be held out"):
        phase2.source_holdout(study.dataset, baseline, in_source, ["gen_b"], ["simple_cnn"], **kw)


def _holdout(flagged: bool = True, skipped: dict | None = None):
    """A SourceHoldout with one source and model: held-out fakes barely separable (or as separable as in-source)."""
    arms = _holdout_arms(0.3 if flagged else 3.0)
    comparison = phase2.holdout_comparison(arms, n_boot=300)
    return phase2.SourceHoldout(pd.DataFrame(), arms, comparison, skipped or {}, ("m",), ("ae", "gan"))


def _geometry(detected: bool = True):
    """A GeometryAnalysis of one model: the centre crop lowers its AUC."""
    by_class = pd.DataFrame({"class": ["real", "fake"], "square": [0.0, 1.0]})
    preds = _arm_predictions({("resize", "m"): 3.0, ("center_crop", "m"): 0.5}, by="view")
    intervals = phase2.level_intervals(preds, "view", n_boot=300)
    tests = phase2.compare_levels(preds, "view", [("center_crop", "resize")], direction="less", n_boot=300)
    probe = {"flagged": detected, "auc_mean": 0.99, "auc_ci_low": 0.97, "auc_ci_high": 1.0, "auc_n": 3,
             "fold_auc": [0.99] * 3, "real_groups": 8, "fake_groups": 90}
    summary = phase2.summary_rows(intervals, tests, by="view", reference="resize", kind=phase2.VIEW_KIND)
    return phase2.GeometryAnalysis(by_class, probe, pd.DataFrame(), intervals, tests, summary,
                                   phase2.geometry_shortcut(probe, tests))


def _trained(shifts):
    preds = _arm_predictions({(c, "m"): v for c, v in shifts.items()})
    return preds, phase2.level_intervals(preds, n_boot=300), phase2.compare_levels(
        preds, "condition", [(c, "baseline") for c in shifts if c != "baseline"], n_boot=300)


def test_phase2_summary_holds_conditions_views_and_holdout():
    conditions = _conditions()[:2]
    _, intervals, comparisons = _trained({"baseline": 3.0, "center_crop": 0.5})
    runs = pd.DataFrame({"condition": ["baseline", "center_crop"], "model": "m", "fold": 0, "gap": [0.1, 0.2],
                         "source_auc_var": [0.01, 0.02]})
    summary = phase2.phase2_summary(intervals, comparisons, conditions, _geometry(), _holdout(), runs=runs)
    assert list(summary["condition"]) == ["baseline"] * 2 + ["center_crop"] * 2 + ["baseline @ resize"] * 2 + [
        "baseline @ center_crop"] * 2 + ["without ae"]
    assert list(summary["set"][:4]) == ["oof", "test"] * 2
    assert list(summary["kind"]) == ["trained"] * 4 + ["evaluation view"] * 4 + ["source hold-out"]
    assert (summary["subphase"] == "2A").all() and (summary["auc_ci_high"] <= 1).all()
    crop = summary[(summary["condition"] == "center_crop") & (summary["set"] == "oof")].iloc[0]
    assert crop["delta"] < 0 and crop["verdict"] == "contradicted" and crop["gap_mean"] == 0.2
    assert crop["real_groups"] == 10 and crop["level"] == pytest.approx(0.95)
    row = summary.iloc[-1]
    assert row["delta"] < 0 and row["delta_ci_high"] < 0 and row["verdict"] == "supported"
    assert row["reference"] == "in-source AUC, same real test images" and row["set"] == "test"
    display = phase2.format_summary(summary)
    assert display.at[0, "groups"] == "10 real / 10 fake" and "[" in display.at[0, "AUC [95 % CI]"]
    assert list(phase2.headline_table(display)["condition"]) == list(summary["condition"][:8])
    import matplotlib.pyplot as plt

    tests = phase2.paired_tests_table({"conditions vs baseline": comparisons, "views": _geometry().view_tests,
                                       "empty": comparisons.iloc[:0]})
    assert list(dict.fromkeys(tests["family"])) == ["conditions vs baseline", "views"]
    fig = phase2.plot_summary_deltas(summary)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["center_crop | m (oof)", "center_crop | m (test)", "view center_crop | m (oof)",
                      "view center_crop | m (test)"]  # no hold-out row
    plt.close(fig)
    fig = phase2.plot_holdout(_holdout().comparison)
    plt.close(fig)


def test_conclusions_state_every_finding_from_the_numbers():
    _, intervals, comparisons = _trained({"baseline": 3.0, "center_crop": 0.5})
    rates = pd.DataFrame({"class": ["fake", "real"], "source": ["a", "real"], "n": [10, 10], "faces": [9, 4]})
    preds = _arm_predictions({("plain", "m"): 3.0, ("aug", "m"): {"train": 0.5, "val": 0.5}}, splits=("train", "val"))
    augmentation = phase2.interpret_augmentation(phase2.augmentation_tests(preds, _aug_runs(-0.1, -0.01),
                                                                          [("aug", "plain")], n_boot=300))
    recommendation = _recommend({"baseline": 2.0, "augment": 3.0}, geometry=True)
    neutral = phase2.neutraliser_table(_probes(), intervals, phase2.neutraliser_tests(
        _arm_predictions({("baseline", "m"): 3.0, ("center_crop", "m"): 0.5}), n_boot=300))
    lines = phase2.conclusions(_geometry(), comparisons, _holdout(skipped={"gan": "too few groups"}), rates, 0.1,
                               augmentation, recommendation, ["m"], sources_note="params name sources this dataset lacks",
                               neutralisers=neutral, intervals=intervals)
    assert lines[0] == "Source hold-out: params name sources this dataset lacks"
    assert lines[1].startswith("Geometry shortcut DETECTED: on the train+validation images a classifier on "
                               "width/height/aspect alone reaches AUC 0.990 (95 % CI 0.970-1.000 over 3 group-aware folds; "
                               "8 real / 90 fake groups)")
    assert "real images are square in 0% of cases, fakes in 100%." in lines[1]
    assert "Baseline checkpoints (m) seen through `center_crop` instead of the training resize, out-of-fold validation AUC" in lines[2]
    assert lines[2].endswith("the AUC drops (the models used what this view removes).") and "10 real / 10 fake groups" in lines[2]
    assert "test hold-out AUC" in lines[3]
    assert lines[4] == ("Models rely on the geometry (AUC drops under the geometry-neutral view on the out-of-fold "
                        "validation predictions): m.")
    assert lines[5].startswith("Image geometry") and lines[6].startswith("Compression") and "not trained" in lines[6]
    assert lines[7].startswith("[m] center_crop - baseline AUC on oof: -") and lines[7].endswith("contradicted")
    assert lines[8].startswith("[m] center_crop - baseline AUC on test:")
    assert lines[9].startswith("Source hold-out ae (m): held-out AUC") and lines[9].endswith("(FLAGGED: source-specific artefacts).")
    assert "on the same 8 real test photograph group(s)" in lines[9]
    assert lines[10] == ("Source hold-out: ae flagged (1 source x model pairs, one Holm family; not held out: gan (too "
                         "few groups left for the split)).")
    assert lines[11] == ("On the train+validation images MTCNN finds a face in 40% of the real images and 90% of the "
                         "fake images (gap 0.50; above the tolerance 0.1; the face crop itself tells the classes apart).")
    assert lines[12].startswith("Augmentation aug vs plain (m): train AUC -") and lines[12].endswith(
        "-> shortcuts removed and over-regularisation.")
    assert lines[13].startswith("Recommended for Phase 3, chosen on the out-of-fold validation predictions: `baseline` "
                                "(recipe resize 8 px")
    assert lines[13].endswith("; fallback: no condition passed the rule.")
    assert lines[14].startswith("`baseline` on the test hold-out (reported, never used for the choice): m AUC ")
    assert lines[15] == "Models trained per condition: m; source hold-out: m on ae, gan."
    quiet = phase2.conclusions(_geometry(detected=False), comparisons.iloc[:0], _holdout(flagged=False), rates, 0.6,
                               augmentation.iloc[:0], recommendation, ["m"])
    assert quiet[0].startswith("Geometry shortcut not detected")
    assert "not shown for any model" in quiet[3] and quiet[5].startswith("Source hold-out: no source flagged (1 source")
    assert "within the tolerance 0.6" in quiet[6]
    record = phase2.conclusions_record(lines, _geometry(), recommendation, seconds=1.0, probes=_probes())
    assert record["geometry_shortcut_exploited"] is True and record["recommendation"] == "baseline"
    assert record["shortcuts_flagged"] == {"geometry": True, "compression": False} and record["selection_set"] == "oof"
