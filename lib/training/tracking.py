"""Experiment tracking: every run the run store trains is also logged to MLflow. The run folder stays the record.

A notebook calls `configure(mode, experiment, uri)` once (its `tracking` and `tracking_uri` parameters); the run store
then logs each run it TRAINS (a run loaded from the store was logged when it was trained) with:
- parameters: the run's full spec, flattened (`train.lr`, `recipe.size`, ...);
- per-epoch metrics of its history as `epoch/train_loss`, `epoch/val_loss`, `epoch/val_auc`, `epoch/val_accuracy`,
  `epoch/lr`, `epoch/seconds` (step = epoch);
- final metrics (`val_auc`, `test_auc`, ... as in `metrics.json`, best epoch, training seconds);
- tags: the run key, model, fold, dataset fingerprint, split key and the run folder;
- artifacts: history.csv, predictions.parquet, metrics.json and config.json (copies: small files); the checkpoint by
  reference (tag `checkpoint`: its path in the run store), since a backbone's weights would double the disk used.

Tracking never changes results or run keys, and a tracking failure (a server that is down) is a warning, never the end
of the notebook: the runs are already in the run store. A run key already logged (two notebooks side by side trained
the same run) is not logged again.

Default store: a SQLite database `reports/mlruns/mlflow.db` with artifacts under `reports/mlruns/artifacts`. MLflow 3
keeps the plain-folder store in maintenance mode (it refuses to open one unless MLFLOW_ALLOW_FILE_STORE is set), so
the database is the embedded default; `mlflow ui --backend-store-uri sqlite:///reports/mlruns/mlflow.db` shows it.
`MLFLOW_TRACKING_URI`, or a notebook's `tracking_uri`, points it at a user's server or database instead.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from lib.paths import REPORTS_DIR

TRACKING_MODES = ("mlflow", "none")
MLRUNS_DIR = REPORTS_DIR / "mlruns"
HISTORY_METRICS = ("train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds")
ARTIFACTS = ("history.csv", "predictions.parquet", "metrics.json", "config.json")


@dataclass(frozen=True)
class Tracking:
    mode: str = "none"
    experiment: str = ""
    uri: str = ""  # resolved store URI ("" while mode is none)

    @property
    def enabled(self) -> bool:
        return self.mode == "mlflow"


_ACTIVE = Tracking()


def default_uri(mlruns_dir: str | Path = MLRUNS_DIR) -> str:
    """$MLFLOW_TRACKING_URI, else the project's SQLite store under reports/mlruns."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(mlruns_dir).resolve() / 'mlflow.db'}"


def configure(mode: str, experiment: str, uri: str = "") -> Tracking:
    """Log the runs this process trains to MLflow experiment `experiment` (mode "mlflow"), or nowhere ("none")."""
    global _ACTIVE
    if mode not in TRACKING_MODES:
        raise ValueError(f"unknown tracking {mode!r}; choose one of {', '.join(TRACKING_MODES)}")
    if mode == "mlflow" and not experiment:
        raise ValueError("tracking with mlflow needs an experiment name")
    _ACTIVE = Tracking(mode, experiment, (uri or default_uri()) if mode == "mlflow" else "")
    return _ACTIVE


def active() -> Tracking:
    return _ACTIVE


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts as MLflow parameters: dotted names, JSON values for lists (their order matters)."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for key, value in obj.items():
            out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: json.dumps(obj) if isinstance(obj, (list, tuple)) else str(obj)}


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of a run's metrics.json: `val_auc`, `test_auc`, ..., `best_epoch`, `train_seconds`."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            out |= {f"{name}_{k}": float(v) for k, v in value.items() if _is_number(v)}
        elif _is_number(value):
            out[name] = float(value)
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Kernels side by side take turns on a local SQLite store: its first creation (schema migrations) and its writes
    are not safe to race."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel when the process dies, too
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _experiment_id(client: Any, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the current folder
        location = (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def _logged(client: Any, experiments: list[str], run_key: str) -> bool:
    """Is `run_key` in any of the store's experiments (another notebook may have logged it)?"""
    return bool(client.search_runs(experiments, f"tags.run_key = '{run_key}'", max_results=1))


def log_runs(results: Iterable[Any], tracking: Tracking | None = None) -> int:
    """Log trained runs (run store `RunResult`s) to the configured MLflow experiment; returns how many were logged.

    Runs whose key is already in the store are skipped. Any tracking error is a warning: the runs stay in the run store.
    """
    tracking = tracking or _ACTIVE
    results = list(results)
    if not tracking.enabled or not results:
        return 0
    try:
        return _log(results, tracking)
    except Exception as err:  # never lose a notebook's computed runs to a tracking server
        warnings.warn(f"MLflow tracking to {tracking.uri} failed ({type(err).__name__}: {err}); the runs are in the "
                      "run store, but not in the tracking store", RuntimeWarning, stacklevel=2)
        return 0


def _log(results: list[Any], tracking: Tracking) -> int:
    import logging

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" lines in the reports
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logged = 0
    with _store_lock(tracking.uri), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # MLflow's own SQLAlchemy deprecations: not ours to show
        client = MlflowClient(tracking_uri=tracking.uri)
        experiment = _experiment_id(client, tracking.experiment, tracking.uri)
        experiments = [e.experiment_id for e in client.search_experiments()]  # ours included; the lock keeps it so
        for result in results:
            if _logged(client, experiments, result.key):
                continue
            spec = result.spec
            tags = {"run_key": result.key, "model": spec.model, "fold": str(spec.fold), "dataset": spec.dataset,
                    "split_key": spec.split_key, "run_dir": str(Path(result.run_dir).resolve()),
                    "checkpoint": str((Path(result.run_dir) / "model.safetensors").resolve())}
            run = client.create_run(experiment, run_name=f"{spec.model} fold {spec.fold} {result.key[:8]}",
                                    tags=tags)
            run_id = run.info.run_id
            params = [Param(k[:250], v[:6000]) for k, v in sorted(flatten(spec.to_dict()).items())]
            history = [Metric(f"epoch/{name}", float(row[name]), 0, int(row["epoch"]))
                       for row in result.history.to_dict("records") for name in HISTORY_METRICS
                       if name in row and _is_number(row[name]) and math.isfinite(float(row[name]))]
            final = [Metric(k, v, 0, 0) for k, v in sorted(final_metrics(result.metrics).items())]
            for start in range(0, max(len(params), 1), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(run_id, params=params[start:start + 100])
            client.log_batch(run_id, metrics=history + final, tags=[RunTag("mlflow.note.content", _note(result))])
            for name in ARTIFACTS:
                if (Path(result.run_dir) / name).is_file():
                    client.log_artifact(run_id, str(Path(result.run_dir) / name))
            client.set_terminated(run_id)
            logged += 1
    return logged


def _note(result: Any) -> str:
    return (f"Run `{result.key}` of the fakedet run store, trained in this experiment. The run folder "
            f"`{Path(result.run_dir).resolve()}` is the record; this entry mirrors it.")
