"""The `ray` executor on a local Ray instance: the same runs as the local executor, and a killed task is retried
without ever leaving a complete-looking half run."""

import os
import sys

import numpy as np
import pandas as pd
import pytest

import lib.training.runstore as runstore
from lib.data.recipes import Recipe
from lib.executors import LocalExecutor, RayExecutor, get_executor, gpu_share
from lib.training.fit import TrainConfig
from lib.training.runstore import RunSpec, collect_predictions, is_complete, load_model

ray = pytest.importorskip("ray")

RECIPE = Recipe(size=16)
CFG = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=0, device="cpu", eval_batch_size=8)
JOBS = [runstore.CVJob(RECIPE, "simple_cnn", CFG, {"widths": [4, 8]}), runstore.CVJob(RECIPE, "cifake_cnn", CFG)]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for this module (starting one costs seconds)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    executor = RayExecutor(2)
    executor._connect()
    yield executor
    ray.shutdown()


def test_ray_tasks_give_the_same_runs_as_the_local_executor(study, local_ray):
    common = dict(progress=False, cache_dir=study.cache)
    local = runstore.run_cv_many(study.dataset, study.splits, JOBS, runs_dir=study.runs / "local",
                                 executor=LocalExecutor(), **common)
    remote = runstore.run_cv_many(study.dataset, study.splits, JOBS, runs_dir=study.runs / "ray",
                                  executor=local_ray, **common)
    for a, b in zip(local, remote):
        assert b["trained"].all()
        pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))  # same keys and metrics
        for key in a["run_key"]:
            pd.testing.assert_frame_equal(collect_predictions([key], study.runs / "local"),
                                          collect_predictions([key], study.runs / "ray"))
            wa, wb = (load_model(study.runs / name / key).state_dict() for name in ("local", "ray"))
            assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)  # byte-identical weights


def _train_but_die_while_writing(args):
    """A worker killed (SIGKILL-like `os._exit`) half-way through writing its run, on the first attempt only."""
    spec, dataset, splits, runs_dir, marker = args
    publish = runstore._publish

    def publish_then_die(run_dir, write):
        if not os.path.exists(marker):
            open(marker, "w").close()

            def write_half(tmp):
                write(tmp)
                (tmp / "config.json").unlink()  # as if killed before the last file
                os._exit(1)
            return publish(run_dir, write_half)
        return publish(run_dir, write)

    runstore._publish = publish_then_die
    try:
        return runstore.train_or_load(spec, dataset, splits, runs_dir=runs_dir, progress=False,
                                      cache_dir=runs_dir.parent / "cache").key
    finally:
        runstore._publish = publish


def test_a_killed_task_is_retried_and_leaves_no_half_run(study, local_ray, tmp_path):
    spec = RunSpec.for_fold(study.dataset, study.splits, RECIPE, "simple_cnn", CFG, 0, {"widths": [4, 8]})
    job = (spec, study.dataset, study.splits, study.runs, tmp_path / "died-once")

    never_retried = RayExecutor(2, max_retries=0)
    with pytest.raises(Exception, match="(?i)worker|died|crash|exit"):
        never_retried.run(_train_but_die_while_writing, [job], progress=False)
    assert not is_complete(study.runs / spec.key) and not (study.runs / spec.key).exists()

    os.remove(tmp_path / "died-once")
    assert local_ray.run(_train_but_die_while_writing, [job], progress=False) == [spec.key]  # retried: complete
    assert (tmp_path / "died-once").exists() and is_complete(study.runs / spec.key)
    # the killed attempts left only their private hidden folders, which never count as runs
    assert [p.name for p in study.runs.iterdir() if not p.name.startswith(".")] == [spec.key]


def test_a_failing_job_is_raised_as_itself_after_the_others_finish(local_ray):
    import math

    with pytest.raises(ValueError, match="math domain error"):
        local_ray.run(math.sqrt, [4.0, -1.0, 9.0], progress=False)
    assert local_ray.run(math.sqrt, [4.0, 9.0], progress=False) == [2.0, 3.0]


def test_ray_from_the_environment(monkeypatch):
    monkeypatch.setenv("FAKEDET_EXECUTOR", "ray")
    monkeypatch.setenv("FAKEDET_WORKERS", "1")
    executor = get_executor()
    assert isinstance(executor, RayExecutor) and executor.workers == 1  # a single CPU still runs on Ray


def test_ray_tasks_share_the_gpus_over_the_cpus_at_most_one_each():
    assert gpu_share({"CPU": 4.0}) == 0.0                      # no GPU: CPU-only tasks
    assert gpu_share({"CPU": 4.0, "GPU": 1.0}) == 0.25         # one GPU, four tasks side by side on it
    assert gpu_share({"CPU": 64.0, "GPU": 8.0}) == 0.125
    assert gpu_share({"CPU": 2.0, "GPU": 4.0}) == 1.0          # never more than one GPU per run
