import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import lib.training.runstore as runstore
from lib.data.augment import AugmentPolicy
from lib.data.recipes import Recipe
from lib.executors import LocalExecutor, ProcessExecutor, get_executor
from lib.training.runstore import RunSpec, collect_predictions, is_complete, load_model, run_cv, split_key, train_or_load
from lib.training.fit import TrainConfig, predict

RECIPE = Recipe(size=16)
CFG = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=0, device="cpu", eval_batch_size=8)
MODEL_KW = {"widths": [4, 8]}  # a very small simple_cnn


def _spec(s, fold=0, **changes):
    spec = RunSpec.for_fold(s.dataset, s.splits, RECIPE, "simple_cnn", CFG, fold, MODEL_KW)
    return RunSpec(**{**spec.__dict__, **changes})


def test_key_is_stable_and_covers_every_part(study):
    spec = _spec(study)
    assert spec.key == _spec(study).key
    assert spec.key == RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).key  # survives JSON
    augmented = _spec(study, train=TrainConfig(augment=AugmentPolicy(crop_scale=(0.5, 1.0), jpeg_p=0.3)))
    restored = RunSpec.from_dict(json.loads(json.dumps(augmented.to_dict())))
    assert restored == augmented and restored.key == augmented.key  # tuples came back from JSON lists
    others = [_spec(study, fold=1), _spec(study, recipe=Recipe(size=32)), _spec(study, model="cifake_cnn"),
              _spec(study, train=TrainConfig(epochs=3)), _spec(study, model_kwargs={"widths": [4, 16]}),
              _spec(study, dataset="other"), _spec(study, split_key="other")]
    assert len({spec.key} | {o.key for o in others}) == 8
    changed = study.splits.copy()
    changed.loc[0, "fold"] = 1
    assert split_key(changed) != split_key(study.splits)


def test_train_writes_a_complete_folder_then_loads_it(study):
    spec = _spec(study)
    first = train_or_load(spec, study.dataset, study.splits, runs_dir=study.runs, progress=False, cache_dir=study.cache)
    run_dir = study.runs / spec.key
    assert first.trained and is_complete(run_dir)
    assert {p.name for p in run_dir.iterdir()} == set(runstore.RUN_FILES)

    preds = first.predictions
    assert set(preds.columns) >= {"path", "label", "source", "group", "split", "fold", "probability"}
    assert preds.groupby("split").size().to_dict() == {"val": 8, "test": 4, "holdout": 2}
    val_rows = np.flatnonzero((study.splits["split"] == "trainval") & (study.splits["fold"] == 0))
    assert sorted(preds.loc[preds["split"] == "val", "row"]) == val_rows.tolist()
    assert ((preds["probability"] >= 0) & (preds["probability"] <= 1)).all()
    m = first.metrics
    assert m["epochs_trained"] == 2 and m["n_parameters"] > 0 and m["test"]["n"] == 4 and "auc" in m["val"]

    again = train_or_load(spec, study.dataset, study.splits, runs_dir=study.runs, progress=False, cache_dir=study.cache)
    assert not again.trained
    pd.testing.assert_frame_equal(again.predictions, preds)

    # the stored weights reproduce the stored predictions
    from lib.data.cache import build_cache

    images = build_cache(study.dataset.manifest, RECIPE, cache_dir=study.cache, progress=False)
    mean, std = m["normalization"]["mean"], m["normalization"]["std"]
    test = preds[preds["split"] == "test"]
    reloaded = predict(load_model(run_dir), images, test["row"].to_numpy(), mean=mean, std=std, device="cpu")
    np.testing.assert_allclose(reloaded, test["probability"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_checkpoint_cannot_be_loaded_into_another_architecture(study):
    spec = _spec(study)
    train_or_load(spec, study.dataset, study.splits, runs_dir=study.runs, progress=False, cache_dir=study.cache)
    config_path = study.runs / spec.key / "config.json"
    config = json.loads(config_path.read_text())
    config["spec"]["model_kwargs"] = {"widths": [4, 16]}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        load_model(study.runs / spec.key)
    config["key"] = RunSpec.from_dict(config["spec"]).key  # even a consistent-looking config fails strictly
    config_path.write_text(json.dumps(config))
    with pytest.raises(RuntimeError):
        load_model(study.runs / spec.key)


def test_mismatched_dataset_or_splits_are_refused(study):
    with pytest.raises(ValueError, match="dataset"):
        train_or_load(_spec(study, dataset="other"), study.dataset, study.splits, runs_dir=study.runs, progress=False)
    with pytest.raises(ValueError, match="split"):
        train_or_load(_spec(study, split_key="other"), study.dataset, study.splits, runs_dir=study.runs, progress=False)


def test_two_trainers_of_one_run_leave_one_complete_folder(study, monkeypatch):
    """Two notebooks side by side may train the same run: the first folder to land stays, the second is dropped,
    and no reader ever sees a half-written run (it is written under a private name and renamed)."""
    spec = _spec(study)
    run_dir = study.runs / spec.key
    real_write = runstore._write_run
    seen_during_write = []

    def other_process_finishes_first(tmp, *args):
        real_write(tmp, *args)
        seen_during_write.append(run_dir.exists())
        if not run_dir.exists():  # the "other process" publishes the same run meanwhile
            real_write(run_dir.parent / "other", *args)
            (run_dir.parent / "other").rename(run_dir)
            (run_dir / "marker").write_text("first")

    monkeypatch.setattr(runstore, "_write_run", other_process_finishes_first)
    result = train_or_load(spec, study.dataset, study.splits, runs_dir=study.runs, progress=False,
                           cache_dir=study.cache)
    assert seen_during_write == [False]  # nothing visible under the run's name while it was being written
    assert is_complete(run_dir) and (run_dir / "marker").read_text() == "first"  # the first folder stayed
    assert result.trained and [p.name for p in study.runs.iterdir()] == [spec.key]  # no temporary folder left
    assert train_or_load(spec, study.dataset, study.splits, runs_dir=study.runs, progress=False).trained is False


def test_interrupted_study_resumes_with_only_the_missing_folds(study, monkeypatch):
    real_fit = runstore.fit
    calls = []

    def crash_on_second_fold(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed during fold 1")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runstore, "fit", crash_on_second_fold)  # patched in this process: the local executor
    kwargs = dict(model_kwargs=MODEL_KW, runs_dir=study.runs, progress=False, cache_dir=study.cache,
                  executor=LocalExecutor())
    with pytest.raises(KeyboardInterrupt):
        run_cv(study.dataset, study.splits, RECIPE, "simple_cnn", CFG, **kwargs)
    assert is_complete(study.runs / _spec(study, fold=0).key)
    assert not (study.runs / _spec(study, fold=1).key).exists()

    # an incomplete folder (config.json missing) counts as not done
    (study.runs / _spec(study, fold=1).key).mkdir()
    (study.runs / _spec(study, fold=1).key / "history.csv").write_text("partial")

    calls.clear()
    monkeypatch.setattr(runstore, "fit", lambda *a, **k: (calls.append(1), real_fit(*a, **k))[1])
    table = run_cv(study.dataset, study.splits, RECIPE, "simple_cnn", CFG, **kwargs)
    assert len(calls) == 1  # only fold 1 was trained
    assert table["fold"].tolist() == [0, 1] and table["trained"].tolist() == [False, True]
    assert {"val_auc", "test_auc", "holdout_accuracy", "run_key", "seconds"} <= set(table.columns)

    calls.clear()
    run_cv(study.dataset, study.splits, RECIPE, "simple_cnn", CFG, **kwargs)
    assert calls == []  # warm: everything loaded

    preds = collect_predictions(table, runs_dir=study.runs)
    assert set(preds["run_key"]) == set(table["run_key"]) and (preds["model"] == "simple_cnn").all()
    assert len(preds) == (8 + 4 + 2) + (6 + 4 + 2)  # fold 0 validates 4 groups, fold 1 three


def test_key_of_an_unrevised_model_is_the_plain_config_hash_and_a_revision_changes_it(study, monkeypatch):
    from lib.fileio import stable_hash
    from lib.models import registry

    spec = _spec(study)
    key = spec.key
    # keys as before revisions, Recipe.jpeg_quality and Recipe.perturbation: the hash of the config with those options
    # left off
    plain = dataclasses.asdict(spec)
    del plain["recipe"]["jpeg_quality"], plain["recipe"]["perturbation"]
    assert registry.model_revision("simple_cnn") == 0 and key == stable_hash(plain)
    assert dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe, jpeg_quality=75)).key != key
    assert registry.model_revision("npr") >= 1 and registry.model_revision("no_such_model") == 0
    monkeypatch.setitem(registry._REGISTRY, "simple_cnn",
                        dataclasses.replace(registry._REGISTRY["simple_cnn"], revision=1))
    assert _spec(study).key != key  # a changed architecture never reuses the old runs


def test_worker_processes_give_the_same_runs_as_the_local_executor(study):
    jobs = [runstore.CVJob(RECIPE, "simple_cnn", CFG, MODEL_KW), runstore.CVJob(RECIPE, "cifake_cnn", CFG)]
    common = dict(progress=False, cache_dir=study.cache)
    local = runstore.run_cv_many(study.dataset, study.splits, jobs, runs_dir=study.runs / "local",
                                 executor=LocalExecutor(), **common)
    pool = ProcessExecutor(2)
    try:
        parallel = runstore.run_cv_many(study.dataset, study.splits, jobs, runs_dir=study.runs / "pool",
                                        executor=pool, **common)
    finally:
        pool.shutdown()
    for a, b in zip(local, parallel):
        assert b["trained"].all()
        pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))  # same keys, same metrics
        for key in a["run_key"]:
            pd.testing.assert_frame_equal(collect_predictions([key], study.runs / "local"),
                                          collect_predictions([key], study.runs / "pool"))
            wa = load_model(study.runs / "local" / key).state_dict()
            wb = load_model(study.runs / "pool" / key).state_dict()
            assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    again = runstore.run_cv_many(study.dataset, study.splits, jobs, runs_dir=study.runs / "pool", **common)
    assert not any(t["trained"].any() for t in again)  # warm: loaded, nothing dispatched


def test_a_failing_job_raises_after_the_others_finish():
    import math

    pool = ProcessExecutor(2)
    try:
        with pytest.raises(ValueError, match="math domain error"):
            pool.run(math.sqrt, [4.0, -1.0, 9.0], progress=False)
        assert pool.run(math.sqrt, [4.0, 9.0], progress=False) == [2.0, 3.0]  # the pool survives a failed job
    finally:
        pool.shutdown()


def test_executor_choice_from_the_environment(monkeypatch):
    monkeypatch.setenv("FAKEDET_EXECUTOR", "local")
    assert isinstance(get_executor(), LocalExecutor)
    monkeypatch.setenv("FAKEDET_EXECUTOR", "processes")
    monkeypatch.setenv("FAKEDET_WORKERS", "1")
    assert isinstance(get_executor(), LocalExecutor)  # one worker: no pool to start
    monkeypatch.setenv("FAKEDET_WORKERS", "3")
    assert get_executor().workers == 3 and get_executor() is get_executor()  # the pool is shared
    with pytest.raises(ValueError, match="unknown executor"):
        get_executor("cluster")


def test_longer_runs_are_dispatched_first(study):
    small = _spec(study)
    larger = _spec(study, model_kwargs={"widths": [8, 16]})
    bigger_input = _spec(study, recipe=Recipe(size=32))
    costs = [runstore._expected_cost(s) for s in (small, larger, bigger_input)]
    assert costs[1] > costs[0] and costs[2] == 4 * costs[0]
