"""Phase 2 helpers: re-scoring stored checkpoints, per-run metrics and the computed rules of notebook 04."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

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


# --- geometry decision ----------------------------------------------------------------------------------------

def _view_tests(drops):
    """Rows of compare_conditions(by="view", direction="less") with the given verdicts per model."""
    return pd.DataFrame([{"model": m, "a": "center_crop", "b": "resize", "metric": "test_auc", "mean_diff": d,
                          "verdict": v} for m, (d, v) in drops.items()])


def test_geometry_decision_on_synthetic_inputs():
    flagged = {"flagged": True, "auc_mean": 0.99, "auc_ci_low": 0.97, "auc_ci_high": 1.0}
    clean = {"flagged": False, "auc_mean": 0.5, "auc_ci_low": 0.5, "auc_ci_high": 0.5}
    on = phase2.geometry_shortcut(flagged, _view_tests({"cnn": (-0.2, "supported"), "resnet": (-0.01, "inconclusive")}))
    assert on["detected"] and on["exploited"] and on["exploited_by"] == ["cnn"]
    present = phase2.geometry_shortcut(flagged, _view_tests({"cnn": (0.01, "inconclusive")}))
    assert present["detected"] and not present["exploited"]
    off = phase2.geometry_shortcut(clean, _view_tests({"cnn": (0.0, "inconclusive")}))
    assert not off["detected"] and not off["exploited"]
    # a drop without the shortcut in the data is not called a geometry shortcut
    assert not phase2.geometry_shortcut(clean, _view_tests({"cnn": (-0.2, "supported")}))["exploited"]
    with pytest.raises(KeyError):
        phase2.geometry_shortcut({"flagged": True}, _view_tests({}))
    with pytest.raises(ValueError, match="no comparison"):
        phase2.geometry_shortcut(flagged, _view_tests({"cnn": (0.0, "inconclusive")}).assign(a="letterbox_real"))


@pytest.mark.parametrize("geometry", [True, False])
def test_geometry_pipeline_detects_exactly_the_planted_shortcut(tmp_path, geometry):
    """End to end on tiny builds: probe, geometry views of a trained checkpoint, paired tests, decision."""
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
    analysis = phase2.geometry_analysis(study.dataset.manifest, preds, n_folds=3, seed=0)
    tests, decision = analysis.view_tests, analysis.decision
    assert decision["detected"] is geometry
    assert set(tests["a"]) == {"letterbox_real", "center_crop"} and (analysis.view_summary["kind"] == "evaluation view").all()
    assert "fold_auc" not in analysis.probe_table() and analysis.record(None)["card_geometry_shortcut"] is None
    with pytest.raises(ValueError, match="training view"):
        phase2.score_geometry_views(baseline, cv, predictions, study.dataset, study.splits,
                                    {**views, "resize": Recipe(size=16, mode="center_crop")}, **kw)
    if not geometry:  # every view shows square images identically: the checkpoints' scores cannot move
        assert (tests["mean_diff"] == 0).all() and not decision["exploited"]
        pixels = [build_cache(study.dataset.manifest, r, cache_dir=study.cache, progress=False) for r in views.values()]
        assert all(np.array_equal(pixels[0], p) for p in pixels[1:])


@pytest.mark.parametrize("geometry", [True, False])
def test_geometry_probe_on_the_embedded_smoke_build(geometry):
    """The embedded builder's geometry switch, as the notebook sees it."""
    from lib.data.dataset import load_dataset

    ds = load_dataset("", "auto", "smoke", embedded_overrides=None if geometry else {"geometry_shortcut": False},
                      progress=False)
    assert ds.card["params"]["geometry_shortcut"] is geometry
    probe = phase2.geometry_probe(ds.manifest, n_folds=3, seed=42)
    assert probe["flagged"] is geometry
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


# --- comparisons, augmentation rule, hold-out flag -----------------------------------------------------------

def _table(values: dict, metric="test_auc"):
    """{(condition, model): [per-fold values]} -> a per-run table."""
    rows = [{"condition": c, "model": m, "fold": f, metric: v}
            for (c, m), vals in values.items() for f, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_compare_conditions_pairs_within_models_and_applies_holm():
    table = _table({("base", "a"): [0.70, 0.72, 0.71, 0.69], ("x", "a"): [0.80, 0.83, 0.81, 0.80],
                    ("base", "b"): [0.60, 0.62, 0.61, 0.64], ("x", "b"): [0.61, 0.60, 0.63, 0.62]})
    out = phase2.compare_conditions(table, "base")
    assert list(out["model"]) == ["a", "b"] and (out["b"] == "base").all()
    assert out.set_index("model").at["a", "verdict"] == "supported"
    assert out.set_index("model").at["b", "verdict"] == "inconclusive"
    assert (out["t_p_holm"] >= out["t_p"]).all()


def _aug_table(gap, var, train, val):
    """Per-fold metrics of plain vs augmented for one model; the arguments are the changes (augmented - plain)."""
    rng = np.random.default_rng(1)
    rows = []
    for fold in range(5):
        noise = rng.normal(0, 0.002, 4)
        plain = {"gap": 0.2, "source_auc_var": 0.02, "train_auc": 0.95, "val_auc": 0.8}
        aug = {"gap": 0.2 + gap + noise[0], "source_auc_var": 0.02 + var + noise[1] / 10,
               "train_auc": 0.95 + train + noise[2], "val_auc": 0.8 + val + noise[3]}
        rows += [{"condition": "plain", "model": "m", "fold": fold, **plain},
                 {"condition": "aug", "model": "m", "fold": fold, **aug}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("changes, expected", [
    ((-0.1, -0.01, 0.0, 0.05), "shortcuts removed"),
    ((0.0, 0.0, -0.1, -0.1), "over-regularisation"),
    ((0.0, 0.0, 0.0, 0.0), "inconclusive"),
    ((-0.1, 0.01, 0.0, 0.0), "inconclusive"),
])
def test_augmentation_interpretation_rule(changes, expected):
    out = phase2.interpret_augmentation(_aug_table(*changes), "aug", "plain")
    assert out["interpretation"].tolist() == [expected]
    assert out.at[0, "gap_change"] == pytest.approx(changes[0], abs=0.01)


def test_holdout_flags_sources_that_lose_more_than_the_threshold():
    heldout = pd.DataFrame([{"model": "m", "source": s, "fold": f, "run_key": f"{s}{f}", "n_heldout": 5,
                             "heldout_auc": v} for s, vals in {"ae": [0.6, 0.62, 0.58], "gan": [0.9, 0.91, 0.89]}.items()
                            for f, v in enumerate(vals)])
    in_source = pd.DataFrame([{"model": "m", "source": s, "fold": f, "in_source_auc": v}
                              for s, vals in {"ae": [0.9, 0.92, 0.91], "gan": [0.92, 0.9, 0.91]}.items()
                              for f, v in enumerate(vals)])
    out = phase2.holdout_comparison(heldout, in_source, threshold=0.05).set_index("source")
    assert out.at["ae", "flagged"] and not out.at["gan", "flagged"]
    assert out.at["ae", "difference"] == pytest.approx(0.31, abs=1e-9)
    assert out.at["ae", "diff_ci_low"] > 0 and out.at["ae", "welch_p_holm"] < 0.05


def test_heldout_scores_pool_heldout_fakes_with_test_reals():
    preds = pd.DataFrame({
        "model": "m", "fold": 0, "run_key": "k",
        "split": ["test"] * 4 + ["holdout"] * 2, "source": ["real", "real", "x", "x", "held", "held"],
        "label": [0, 0, 1, 1, 1, 1], "probability": [0.1, 0.4, 0.9, 0.8, 0.3, 0.05]})
    out = phase2.heldout_scores(preds, "held").iloc[0]
    assert out["test_auc"] == 1.0 and out["heldout_auc"] == 0.25 and out["n_heldout"] == 2


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


def _recommend(aucs, geometry, face_gap=0.0):
    conditions = _conditions()
    table = _table({(c, "m"): v for c, v in aucs.items()})
    comparisons = phase2.compare_conditions(table, "baseline")
    shortcuts = {c.name: phase2.carried_shortcuts(c.recipe, geometry, face_gap, 0.1) for c in conditions}
    return phase2.recommend(conditions, table, comparisons, shortcuts)


def test_recommendation_avoids_shortcut_carriers_and_significant_losses():
    aucs = {"baseline": [0.80, 0.82, 0.81], "center_crop": [0.70, 0.71, 0.69], "face_crop": [0.90, 0.91, 0.92],
            "augment": [0.85, 0.86, 0.84]}
    # geometry detected: resize-based conditions are out; the face crop carries the detection-rate cue
    r = _recommend(aucs, geometry=True, face_gap=0.5)
    assert r["condition"] == "center_crop" and not r["fallback"]
    assert r["recipe"]["mode"] == "center_crop" and r["augment"] is None and r["normalization"] == "imagenet"
    # no shortcut: the best mean wins (face crop), carrying its recipe
    r = _recommend(aucs, geometry=False)
    assert r["condition"] == "face_crop" and r["recipe"]["mode"] == "face"
    # no shortcut: a condition significantly below the (clean) baseline is excluded even if others are out
    r = _recommend({**aucs, "face_crop": [0.5, 0.53, 0.5]}, geometry=False)
    assert r["condition"] == "augment" and r["augment"]["brightness"] == 0.2
    reasons = {c["condition"]: c["reason"] for c in r["candidates"]}
    assert "significantly below" in reasons["center_crop"]
    # nothing eligible -> baseline, flagged as a fallback
    r = _recommend({"baseline": [0.8, 0.82, 0.79], "augment": [0.9, 0.91, 0.88]}, geometry=True)
    assert r["condition"] == "baseline" and r["fallback"]
    assert r["rule"] == phase2.RECOMMENDATION_RULE


# --- the notebook's set-up, face rates, source hold-out, summary and conclusions --------------------------------

def test_phase2_conditions_change_one_thing_of_the_baseline():
    config = TrainConfig(epochs=2, lr=1e-3, seed=3)
    conditions = phase2.phase2_conditions(config, 32, 48, ["cnn", "resnet"], ["cnn"], 0.2, 0.9, {"brightness": 0.2})
    by_name = {c.name: c for c in conditions}
    assert list(by_name) == ["baseline", "norm_real_train", "center_crop", "resolution_48", "face_crop", "augment",
                             "augment_face_crop"]
    base = by_name["baseline"]
    assert base.models == ("cnn", "resnet") and base.train == config and base.recipe == Recipe(size=32)
    assert all(c.models == ("cnn",) for c in conditions[1:])
    # the same configurations as building them from the parameters (so the run keys do not change)
    assert by_name["norm_real_train"].train == TrainConfig(epochs=2, lr=1e-3, seed=3, normalization="train_real")
    policy = AugmentPolicy(brightness=0.2)
    assert by_name["augment"].train == by_name["augment_face_crop"].train == TrainConfig(epochs=2, lr=1e-3, seed=3,
                                                                                         augment=policy)
    assert by_name["face_crop"].recipe.face_detector == "mtcnn@0.9" and by_name["resolution_48"].recipe.size == 48
    phase2.check_model_subsets(["cnn", "resnet"], ["cnn"], ["resnet"])
    with pytest.raises(ValueError, match="not found: \\['vit'\\]"):
        phase2.check_model_subsets(["cnn"], ["cnn"], ["vit"])


def test_sources_to_hold_out_falls_back_to_every_fake_source():
    manifest = pd.DataFrame({"label": [0, 1, 1, 1], "source": ["real", "gan", "ae", "gan"]})
    assert phase2.sources_to_hold_out(manifest, ["gan"]) == (["gan"], "")
    assert phase2.sources_to_hold_out(manifest, []) == (["ae", "gan"], "")
    sources, note = phase2.sources_to_hold_out(manifest, ["diffusion"], data_root="/my/data")
    assert sources == ["ae", "gan"] and "diffusion" in note


def test_face_rate_gap_pools_sources_of_a_class():
    rates = pd.DataFrame({"class": ["fake", "fake", "real"], "source": ["a", "b", "real"], "n": [10, 30, 20],
                          "faces": [10, 10, 18]})
    assert phase2.class_face_rates(rates) == pytest.approx({"real": 0.9, "fake": 0.5})
    assert phase2.face_rate_gap(rates) == pytest.approx(0.4)
    assert np.isnan(phase2.face_rate_gap(rates[rates["class"] == "fake"]))


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
    kw = dict(threshold=0.05, n_folds=2, test_ratio=0.3, val_ratio=0.1, seed=0, model_kwargs=MODEL_KW,
              runs_dir=study.runs, cache_dir=study.cache, progress=False)
    out = phase2.source_holdout(study.dataset, baseline, in_source, ["gen_a", "gen_b"], ["simple_cnn"], **kw)
    assert out.skipped == {"gen_b": "too few groups"} and "gen_b: not held out (too few groups)" in capsys.readouterr().out
    assert set(out.runs["source"]) == {"gen_a"} and len(out.runs) == 2 and (out.runs["n_heldout"] > 0).all()
    assert list(out.comparison["source"]) == ["gen_a"] and out.sources == ("gen_a", "gen_b")
    with pytest.raises(ValueError, match="no source could be held out"):
        phase2.source_holdout(study.dataset, baseline, in_source, ["gen_b"], ["simple_cnn"], **kw)


def _holdout(flagged: bool = True, skipped: dict | None = None):
    """A SourceHoldout with one source and model: held-out AUC 0.6 (or 0.9) against an in-source AUC of 0.91."""
    held = [0.6, 0.62, 0.58] if flagged else [0.9, 0.91, 0.92]
    heldout = pd.DataFrame([{"model": "m", "source": "ae", "fold": f, "run_key": f"k{f}", "n_heldout": 5,
                             "heldout_auc": v} for f, v in enumerate(held)])
    in_source = pd.DataFrame([{"model": "m", "source": "ae", "fold": f, "in_source_auc": v}
                              for f, v in enumerate([0.9, 0.92, 0.91])])
    comparison = phase2.holdout_comparison(heldout, in_source, threshold=0.05)
    return phase2.SourceHoldout(heldout, comparison, skipped or {}, 0.05, ("m",), ("ae", "gan"))


def _geometry(detected: bool = True):
    """A GeometryAnalysis of one model: the centre crop lowers its test AUC."""
    by_class = pd.DataFrame({"class": ["real", "fake"], "square": [0.0, 1.0]})
    view_runs = _table({("resize", "m"): [0.9, 0.92, 0.91], ("center_crop", "m"): [0.7, 0.71, 0.69]}).rename(
        columns={"condition": "view"})
    tests = phase2.compare_conditions(view_runs, "resize", by="view", direction="less")
    probe = {"flagged": detected, "auc_mean": 0.99, "auc_ci_low": 0.97, "auc_ci_high": 1.0, "fold_auc": [0.99] * 3}
    summary = phase2.summary_rows(view_runs, tests, by="view", reference="resize", kind=phase2.VIEW_KIND)
    return phase2.GeometryAnalysis(by_class, probe, view_runs, tests, summary, phase2.geometry_shortcut(probe, tests))


def test_phase2_summary_holds_conditions_views_and_holdout():
    conditions = _conditions()[:2]
    runs = _table({("baseline", "m"): [0.80, 0.82, 0.81], ("center_crop", "m"): [0.70, 0.71, 0.69]})
    comparisons = phase2.compare_conditions(runs, "baseline")
    summary = phase2.phase2_summary(runs, comparisons, conditions, _geometry(), _holdout())
    assert list(summary["condition"]) == ["baseline", "center_crop", "baseline @ resize", "baseline @ center_crop",
                                          "without ae"]
    assert list(summary["kind"]) == ["trained"] * 2 + ["evaluation view"] * 2 + ["source hold-out"]
    assert (summary["subphase"] == "2A").all()
    row = summary.iloc[-1]
    assert row["delta"] == pytest.approx(-0.31) and row["delta_ci_high"] < 0 and row["verdict"] == "flagged (> 0.05)"
    assert row["mean"] == pytest.approx(0.6) and row["reference"] == "in-source AUC"
    display = phase2.format_summary(summary)
    assert list(phase2.headline_table(display)["condition"]) == list(summary["condition"][:4])
    import matplotlib.pyplot as plt

    tests = phase2.paired_tests_table(comparisons, _geometry().view_tests)
    assert list(tests["family"]) == ["conditions vs baseline", "geometry views vs resize"]
    fig = phase2.plot_summary_deltas(summary)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["center_crop | m (test_auc)", "view center_crop | m (test_auc)"]  # no hold-out row
    plt.close(fig)


def test_phase3_recommendation_records_the_shortcuts_it_used():
    conditions = _conditions()
    aucs = {"baseline": [0.80, 0.82, 0.81], "center_crop": [0.79, 0.8, 0.81], "face_crop": [0.9, 0.91, 0.92],
            "augment": [0.85, 0.86, 0.84]}
    runs = _table({(c, "m"): v for c, v in aucs.items()})
    comparisons = phase2.compare_conditions(runs, "baseline")
    r = phase2.phase3_recommendation(conditions, runs, comparisons, True, 0.5, 0.1, 0.9, "smoke")
    assert r["condition"] == "center_crop"  # geometry rules out the resizes, the face-rate gap the face crop
    assert {k: r[k] for k in ("face_min_confidence", "geometry_shortcut", "face_rate_gap", "profile")} == {
        "face_min_confidence": 0.9, "geometry_shortcut": True, "face_rate_gap": 0.5, "profile": "smoke"}
    assert phase2.phase3_recommendation(conditions, runs, comparisons, False, 0.0, 0.1, 0.9, "smoke")["condition"] == "face_crop"


def test_conclusions_state_every_finding_from_the_numbers():
    runs = _table({("baseline", "m"): [0.80, 0.82, 0.81], ("center_crop", "m"): [0.70, 0.71, 0.69]})
    comparisons = phase2.compare_conditions(runs, "baseline")
    rates = pd.DataFrame({"class": ["fake", "real"], "source": ["a", "real"], "n": [10, 10], "faces": [9, 4]})
    augmentation = phase2.interpret_augmentation(_aug_table(-0.1, -0.01, 0.0, 0.05), "aug", "plain")
    recommendation = _recommend({"baseline": [0.8, 0.82, 0.79], "augment": [0.9, 0.91, 0.88]}, geometry=True)
    lines = phase2.conclusions(_geometry(), comparisons, _holdout(skipped={"gan": "too few groups"}), rates, 0.1,
                               augmentation, recommendation, ["m"], sources_note="params name sources this dataset lacks")
    assert lines[0] == "Source hold-out: params name sources this dataset lacks"
    assert lines[1].startswith("Geometry shortcut DETECTED: a classifier on width/height/aspect alone reaches AUC 0.990")
    assert "real images are square in 0% of cases, fakes in 100%." in lines[1]
    assert "`center_crop` instead of the training resize (m): test AUC 0.910 -> 0.700" in lines[2]
    assert lines[2].endswith("the AUC drops (the models used what this view removes).")
    assert lines[3] == "Models rely on the geometry (AUC drops under the geometry-neutral view): m."
    assert lines[4].startswith("[m] center_crop - baseline AUC: -0.110")
    assert lines[5] == ("Source hold-out (threshold 0.05): ae (m): held-out AUC 0.600 vs in-source 0.910 flagged "
                        "(1 source x model pairs; not held out: gan (too few groups left for the split)).")
    assert lines[6] == ("MTCNN finds a face in 40% of real and 90% of fake images (gap 0.50; above the tolerance 0.1).")
    assert lines[7].startswith("Augmentation aug vs plain (m): gap -0.1") and lines[7].endswith("-> shortcuts removed.")
    assert lines[8].startswith("Recommended for Phase 3: `baseline` (recipe resize 8 px")
    assert lines[8].endswith("; fallback: no condition passed the rule.")
    assert lines[9] == "Models trained per condition: m; source hold-out: m on ae, gan."
    quiet = phase2.conclusions(_geometry(detected=False), comparisons.iloc[:0], _holdout(flagged=False), rates, 0.6,
                               augmentation.iloc[:0], recommendation, ["m"])
    assert quiet[0].startswith("Geometry shortcut not detected")
    assert "not shown for any model" in quiet[2] and "no source flagged (1 source x model pairs)." in quiet[3]
    assert "within the tolerance 0.6" in quiet[4]
    record = phase2.conclusions_record(lines, _geometry(), recommendation, seconds=1.0)
    assert record["geometry_shortcut_exploited"] is True and record["recommendation"] == "baseline"
