"""MLflow tracking of the runs the run store trains: what is logged, once, and never at the cost of results."""

import json

import pandas as pd
import pytest

import lib.training.runstore as runstore
from lib.data.recipes import Recipe
from lib.executors import LocalExecutor
from lib.training import tracking
from lib.training.fit import TrainConfig

RECIPE = Recipe(size=16)
CFG = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=0, device="cpu", eval_batch_size=8)
JOB = runstore.CVJob(RECIPE, "simple_cnn", CFG, {"widths": [4, 8]})


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Tracking into a SQLite store under tmp_path; configuration restored afterwards."""
    monkeypatch.setattr(tracking, "_ACTIVE", tracking.Tracking())
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    yield uri


def _train(study, runs_dir):
    return runstore.run_cv_many(study.dataset, study.splits, [JOB], runs_dir=runs_dir, progress=False,
                                cache_dir=study.cache, executor=LocalExecutor())[0]


def _runs(uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(experiments) if experiments else []


def test_each_trained_run_is_logged_once_with_its_config_history_metrics_and_files(study, store):
    tracking.configure("mlflow", "smoke/03_test", store)
    cv = _train(study, study.runs)
    client, runs = _runs(store)
    assert sorted(r.data.tags["run_key"] for r in runs) == sorted(cv["run_key"])  # one MLflow run per trained fold
    experiment = client.get_experiment_by_name("smoke/03_test")
    assert {r.info.experiment_id for r in runs} == {experiment.experiment_id}
    for run in runs:
        key = run.data.tags["run_key"]
        folder = study.runs / key
        spec = json.loads((folder / "config.json").read_text())["spec"]
        assert run.data.params["train.lr"] == str(spec["train"]["lr"]) and run.data.params["model"] == "simple_cnn"
        assert run.data.params["fold"] == str(spec["fold"])
        metrics = json.loads((folder / "metrics.json").read_text())
        assert run.data.metrics["test_auc"] == pytest.approx(metrics["test"]["auc"])
        assert run.data.metrics["best_epoch"] == metrics["best_epoch"]
        history = client.get_metric_history(run.info.run_id, "epoch/val_auc")
        assert [m.step for m in history] == list(range(1, metrics["epochs_trained"] + 1))
        assert [m.value for m in history] == pytest.approx(pd.read_csv(folder / "history.csv")["val_auc"].tolist())
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == set(tracking.ARTIFACTS)
        assert run.data.tags["checkpoint"].endswith(f"{key}/model.safetensors")

    again = _train(study, study.runs)  # loaded from the run store: not logged a second time
    assert not again["trained"].any()
    assert len(_runs(store)[1]) == len(runs)
    results = [runstore.load_run(study.runs / key) for key in cv["run_key"]]
    assert tracking.log_runs(results) == 0  # a key already in the store is skipped (two notebooks side by side)


def test_tracking_changes_neither_results_nor_run_keys(study, store):
    untracked = _train(study, study.runs / "untracked")
    tracking.configure("mlflow", "smoke/tracked", store)
    tracked = _train(study, study.runs / "tracked")
    pd.testing.assert_frame_equal(untracked.drop(columns="seconds"), tracked.drop(columns="seconds"))
    assert len(_runs(store)[1]) == len(tracked)


def test_tracking_off_writes_no_store_and_a_broken_store_only_warns(study, store, tmp_path):
    tracking.configure("none", "")
    _train(study, study.runs / "off")
    assert not (tmp_path / "mlruns").exists()
    tracking.configure("mlflow", "smoke/broken", "nosuchscheme://nowhere")
    with pytest.warns(RuntimeWarning, match="tracking .* failed"):
        cv = _train(study, study.runs / "broken")
    assert cv["trained"].all() and all(runstore.is_complete(study.runs / "broken" / k) for k in cv["run_key"])


def test_configuration_is_checked_and_the_default_store_is_the_project_database(monkeypatch):
    monkeypatch.setattr(tracking, "_ACTIVE", tracking.Tracking())
    with pytest.raises(ValueError, match="unknown tracking"):
        tracking.configure("tensorboard", "x")
    with pytest.raises(ValueError, match="experiment name"):
        tracking.configure("mlflow", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.configure("mlflow", "default/03").uri.endswith("reports/mlruns/mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.configure("mlflow", "default/03").uri == "http://127.0.0.1:5000"
    assert tracking.configure("mlflow", "default/03", "sqlite:///x.db").uri == "sqlite:///x.db"


def test_flatten_gives_dotted_parameters():
    assert tracking.flatten({"train": {"lr": 0.1, "augment": None}, "recipe": {"size": 16}, "scales": [0.5, 1]}) == {
        "train.lr": "0.1", "train.augment": "None", "recipe.size": "16", "scales": "[0.5, 1]"}
    assert tracking.final_metrics({"test": {"auc": 0.75, "n": 4, "name": "x"}, "val": None, "best_epoch": 2,
                                   "history": [{"a": 1}], "nan": float("nan")}) == {
        "test_auc": 0.75, "test_n": 4.0, "best_epoch": 2.0}
