"""Run store: one folder per (dataset, split table, recipe, model, training config, fold).

A run folder ``RUNS_DIR/<key>/`` holds ``history.csv``, ``predictions.parquet``, ``metrics.json``,
``model.safetensors`` and, written LAST, ``config.json``: a folder without ``config.json`` is an
interrupted run and is retrained from scratch; a complete one is loaded, never retrained. A run is written under a
private name and renamed into place, so notebooks running side by side never see (or clobber) half a run. The key
hashes the full ``RunSpec``, so changing anything that affects the result gives a new folder.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib.data.cache import build_cache
from lib.data.recipes import Recipe
from lib.data.splits import fold_ids, part_indices
from lib.evaluation.metrics import binary_metrics
from lib.fileio import atomic_write, read_json, read_table, stable_hash, write_json, write_table
from lib.models import count_parameters, create_model, model_revision
from lib.executors import LocalExecutor, ProcessExecutor, RayExecutor, get_executor
from lib.paths import CACHE_DIR, RUNS_DIR
from lib.training import tracking
from lib.training.fit import TrainConfig, fit, normalization_stats, predict, seed_everything

RUN_FILES = ("history.csv", "predictions.parquet", "metrics.json", "model.safetensors", "config.json")
# Arguments that only say where initial weights come from: a trained checkpoint replaces them.
_INIT_ONLY_KWARGS = ("pretrained", "weights_path")


def split_key(splits: pd.DataFrame) -> str:
    """Hash of a split table's content (image, split, fold per row)."""
    missing = {"sha256", "split", "fold"} - set(splits.columns)
    if missing:
        raise ValueError(f"split table lacks columns {sorted(missing)}")
    return stable_hash(
        {c: splits[c].astype(str if c != "fold" else int).tolist() for c in ("sha256", "split", "fold")}, length=16
    )


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one trained model and its predictions."""

    dataset: str  # dataset fingerprint
    split_key: str
    recipe: Recipe
    model: str
    train: TrainConfig
    fold: int
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        # A model whose architecture or initialisation changed carries a new revision, so that its old runs are not
        # reused; revision 0 leaves the key as it always was (keys never depend on module paths).
        revision = model_revision(self.model)
        run = {**asdict(self), "recipe": self.recipe.to_dict()}  # the recipe's own form: options left off keep keys
        return stable_hash(run) if revision == 0 else stable_hash({"run": run, "model_revision": revision})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        d = dict(d)
        d["recipe"] = Recipe.from_dict(d["recipe"])
        d["train"] = TrainConfig.from_dict(d["train"])
        return cls(**d)

    @classmethod
    def for_fold(cls, dataset: Any, splits: pd.DataFrame, recipe: Recipe, model: str, train: TrainConfig,
                 fold: int, model_kwargs: dict[str, Any] | None = None) -> "RunSpec":
        return cls(dataset=dataset.fingerprint, split_key=split_key(splits), recipe=recipe, model=model,
                   train=train, fold=int(fold), model_kwargs=dict(model_kwargs or {}))


@dataclass
class RunResult:
    spec: RunSpec
    key: str
    run_dir: Path
    history: pd.DataFrame
    predictions: pd.DataFrame
    metrics: dict[str, Any]
    trained: bool  # True when this call trained it, False when it was loaded from the store
    model: nn.Module | None = None

    def get_model(self) -> nn.Module:
        """The trained model (loaded from ``model.safetensors`` on first use for stored runs)."""
        if self.model is None:
            self.model = load_model(self.run_dir)
        return self.model


def is_complete(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return all((run_dir / name).is_file() for name in RUN_FILES)


def load_run(run_dir: str | Path) -> RunResult:
    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        raise FileNotFoundError(f"run folder {run_dir} is incomplete (no config.json or a missing file)")
    config = read_json(run_dir / "config.json")
    return RunResult(
        spec=RunSpec.from_dict(config["spec"]), key=config["key"], run_dir=run_dir,
        history=read_table(run_dir / "history.csv"), predictions=read_table(run_dir / "predictions.parquet"),
        metrics=read_json(run_dir / "metrics.json"), trained=False,
    )


def build_model(spec: RunSpec, for_loading: bool = False) -> nn.Module:
    kwargs = dict(spec.model_kwargs)
    if for_loading:  # the checkpoint holds every weight: do not read (or require) initial weights
        for name in _INIT_ONLY_KWARGS:
            kwargs.pop(name, None)
    return create_model(spec.model, num_classes=1, **kwargs)


def load_model(run_dir: str | Path) -> nn.Module:
    """Rebuild the architecture recorded in ``config.json`` and load ``model.safetensors`` strictly.

    The architecture and its kwargs come from the run's own config, so a checkpoint cannot be loaded
    into a different model; a mismatch raises instead of loading partially.
    """
    from safetensors.torch import load_model as load_safetensors

    run_dir = Path(run_dir)
    if not is_complete(run_dir):
        raise FileNotFoundError(f"run folder {run_dir} is incomplete: no trained model to load")
    config = read_json(run_dir / "config.json")
    spec = RunSpec.from_dict(config["spec"])
    if spec.key != config["key"]:
        raise ValueError(f"{run_dir}/config.json: the recorded key {config['key']} does not match its spec ({spec.key})")
    model = build_model(spec, for_loading=True)
    load_safetensors(model, str(run_dir / "model.safetensors"), strict=True)  # raises on any mismatch
    return model.eval()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU thread count set to `n` inside the block, restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_or_load(
    spec: RunSpec,
    dataset: Any,
    splits: pd.DataFrame,
    runs_dir: str | Path = RUNS_DIR,
    progress: bool = True,
    boxes: np.ndarray | None = None,
    cache_dir: str | Path = CACHE_DIR,
) -> RunResult:
    """Load the run if its folder is complete, else train it, evaluate val/test/holdout and write it."""
    if spec.recipe.perturbation:
        raise ValueError(
            f"recipe {spec.recipe.key} carries the test-time perturbation {spec.recipe.perturbation!r}: perturbations "
            "are applied at test time only, never to training data (re-score a trained model on a perturbed cache)"
        )
    run_dir = Path(runs_dir) / spec.key
    if is_complete(run_dir):
        return load_run(run_dir)
    if spec.dataset != dataset.fingerprint:
        raise ValueError(f"RunSpec is for dataset {spec.dataset}, but the dataset given is {dataset.fingerprint}")
    if spec.split_key != split_key(splits):
        raise ValueError("RunSpec was made for another split table (split_key differs)")
    manifest = dataset.manifest
    if len(splits) != len(manifest):
        raise ValueError(f"split table ({len(splits)} rows) is not aligned with the manifest ({len(manifest)} rows)")

    images = build_cache(manifest, spec.recipe, boxes=boxes, cache_dir=cache_dir, progress=progress)
    labels = manifest["label"].to_numpy()
    parts = part_indices(splits, spec.fold)
    cfg = spec.train
    mean, std = normalization_stats(cfg, images, parts["train"], labels)

    with torch_threads(cfg.threads):  # the thread count is part of the run (see TrainConfig.threads)
        seed_everything(cfg.seed)  # initial weights are part of the run: draw them from the run's seed
        model = build_model(spec)
        start = time.perf_counter()
        model, history = fit(model, images, labels, parts["train"], parts["val"], cfg, mean=mean, std=std,
                             progress=progress, desc=f"{spec.model} fold {spec.fold}")
        train_seconds = time.perf_counter() - start
        predictions, metrics = _evaluate(model, images, manifest, parts, spec, mean, std, progress)
    best = history.loc[history["best"]].iloc[0]
    metrics.update(
        epochs_trained=int(len(history)), best_epoch=int(best["epoch"]), best_val_auc=float(best["val_auc"]),
        train_seconds=train_seconds, n_parameters=int(count_parameters(model)),
        normalization={"mean": list(mean), "std": list(std)}, history=history.to_dict("records"),
    )

    _publish(run_dir, lambda tmp: _write_run(tmp, spec, history, predictions, metrics, model))
    return RunResult(spec=spec, key=spec.key, run_dir=run_dir, history=history, predictions=predictions,
                     metrics=metrics, trained=True, model=model)


def _write_run(run_dir: Path, spec: RunSpec, history: pd.DataFrame, predictions: pd.DataFrame,
               metrics: dict[str, Any], model: nn.Module) -> None:
    write_table(run_dir / "history.csv", history)
    write_table(run_dir / "predictions.parquet", predictions)
    write_json(run_dir / "metrics.json", metrics)
    _save_weights(model, run_dir / "model.safetensors")
    write_json(run_dir / "config.json", {  # last: its presence marks the run complete
        "key": spec.key, "spec": spec.to_dict(), "cache_recipe_key": spec.recipe.key,
        "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })


def _publish(run_dir: Path, write: Any) -> None:
    """Write a run into a private sibling folder, then rename it onto `run_dir`: readers never see half a run, and of
    two processes that trained the same run (two notebooks side by side) the first one's folder stays."""
    tmp = run_dir.with_name(f".{run_dir.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if run_dir.exists() and not is_complete(run_dir):  # leftovers of an interrupted attempt
            shutil.rmtree(run_dir, ignore_errors=True)
        try:
            os.rename(tmp, run_dir)  # fails when the folder exists: another process finished the same run first
        except OSError:
            if not is_complete(run_dir):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import (
        save_model,  # handles tied/shared tensors, unlike save_file
    )

    model_cpu = model.to("cpu")
    atomic_write(path, lambda p: save_model(model_cpu, str(p)))


def _evaluate(model: nn.Module, images: np.ndarray, manifest: pd.DataFrame, parts: dict, spec: RunSpec,
              mean, std, progress: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    cols = [c for c in ("path", "label", "source", "group") if c in manifest.columns]
    frames, metrics = [], {}
    for part in ("val", "test", "holdout"):
        idx = parts[part]
        if idx is None or len(idx) == 0:
            metrics[part] = None
            continue
        prob = predict(model, images, idx, batch_size=spec.train.eval_batch_size, mean=mean, std=std,
                       device=spec.train.device, amp=spec.train.amp, progress=progress)
        frame = manifest.iloc[idx][cols].reset_index(drop=True)
        frame.insert(0, "row", np.asarray(idx, dtype=np.int64))
        frame["split"] = part
        frame["fold"] = spec.fold
        frame["probability"] = prob
        frames.append(frame)
        metrics[part] = binary_metrics(frame["label"].to_numpy(), prob)
    return pd.concat(frames, ignore_index=True), metrics


def _flat_metrics(prefix: str, m: dict[str, Any] | None) -> dict[str, Any]:
    if not m:
        return {}
    # sorted: a stored run's metrics come back from JSON in key order, a fresh one's in computation order
    return {f"{prefix}_{k}": v for k, v in sorted(m.items()) if isinstance(v, (int, float, np.integer, np.floating))}


@dataclass(frozen=True)
class CVJob:
    """One configuration to cross-validate: every fold of it is one run."""

    recipe: Recipe
    model: str
    train: TrainConfig
    model_kwargs: dict[str, Any] | None = None
    boxes: np.ndarray | None = field(default=None, compare=False)  # face boxes, for a face-crop recipe


def _expected_cost(spec: RunSpec, parameters: dict[str, int] | None = None) -> float:
    """A rough relative training cost, for ordering only: parameters x input pixels x epochs. `parameters` memoises
    the parameter count per architecture, so the folds of a job build their model once."""
    parameters = {} if parameters is None else parameters
    arch = stable_hash([spec.model, spec.model_kwargs])
    if arch not in parameters:
        parameters[arch] = count_parameters(build_model(spec, for_loading=True))
    return parameters[arch] * spec.recipe.size ** 2 * spec.train.epochs


def _train_in_worker(args: tuple) -> str:
    spec, dataset, splits, runs_dir, boxes, cache_dir = args
    return train_or_load(spec, dataset, splits, runs_dir=runs_dir, progress=False, boxes=boxes, cache_dir=cache_dir).key


def _fold_row(job: CVJob, result: RunResult) -> dict[str, Any]:
    m = result.metrics
    row = {"model": job.model, "fold": int(result.spec.fold), "run_key": result.key, "recipe": job.recipe.key,
           "trained": result.trained, "epochs": m["epochs_trained"], "best_epoch": m["best_epoch"],
           "seconds": m["train_seconds"], "n_parameters": m["n_parameters"]}
    for part in ("val", "test", "holdout"):
        row.update(_flat_metrics(part, m.get(part)))
    return row


def run_cv_many(
    dataset: Any,
    splits: pd.DataFrame,
    jobs: Sequence[CVJob],
    folds: Iterable[int] | None = None,
    runs_dir: str | Path = RUNS_DIR,
    progress: bool = True,
    cache_dir: str | Path = CACHE_DIR,
    executor: LocalExecutor | ProcessExecutor | RayExecutor | None = None,
) -> list[pd.DataFrame]:
    """Train (or load) every fold of every job; one `run_cv` table per job, in order.

    The runs still missing go to `executor` (default `get_executor()`: worker processes) all at once, so folds and
    configurations train side by side; the numbers are the same on every executor (see TrainConfig.threads). An
    interrupted call keeps every finished run; the next call trains only the missing ones. The runs trained here are
    logged to MLflow when tracking is configured (`lib.training.tracking`).
    """
    folds = list(fold_ids(splits) if folds is None else folds)
    if not folds:
        raise ValueError("the split table has no cross-validation folds")
    specs = {(i, fold): RunSpec.for_fold(dataset, splits, job.recipe, job.model, job.train, fold, job.model_kwargs)
             for i, job in enumerate(jobs) for fold in folds}
    results: dict[str, RunResult] = {}
    pending: dict[str, tuple[RunSpec, CVJob]] = {}
    for (i, _), spec in specs.items():
        if is_complete(Path(runs_dir) / spec.key):
            results[spec.key] = load_run(Path(runs_dir) / spec.key)
        else:
            pending.setdefault(spec.key, (spec, jobs[i]))
    if pending:
        for spec, job in {s.recipe.key: (s, j) for s, j in pending.values()}.values():  # decode once, before workers
            build_cache(dataset.manifest, spec.recipe, boxes=job.boxes, cache_dir=cache_dir, progress=progress)
        executor = executor or get_executor()
        if isinstance(executor, LocalExecutor):
            trained = [train_or_load(spec, dataset, splits, runs_dir=runs_dir, progress=progress, boxes=job.boxes,
                                     cache_dir=cache_dir) for spec, job in pending.values()]
        else:  # longest first: a long run started last would leave the other workers idle at the end
            parameters: dict[str, int] = {}
            order = sorted(pending.values(), key=lambda pair: _expected_cost(pair[0], parameters), reverse=True)
            keys = executor.run(_train_in_worker, [(spec, dataset, splits, runs_dir, job.boxes, cache_dir)
                                                   for spec, job in order], desc="training", progress=progress)
            trained = [dataclasses.replace(load_run(Path(runs_dir) / key), trained=True) for key in keys]
        results.update({r.key: r for r in trained})
        tracking.log_runs(r for r in trained if r.trained)  # MLflow, when the notebook configured it
    return [pd.DataFrame([_fold_row(job, results[specs[(i, fold)].key]) for fold in folds]) for i, job in enumerate(jobs)]


def run_cv(
    dataset: Any,
    splits: pd.DataFrame,
    recipe: Recipe,
    model_name: str,
    train_config: TrainConfig,
    model_kwargs: dict[str, Any] | None = None,
    folds: Iterable[int] | None = None,
    runs_dir: str | Path = RUNS_DIR,
    progress: bool = True,
    boxes: np.ndarray | None = None,
    cache_dir: str | Path = CACHE_DIR,
    executor: LocalExecutor | ProcessExecutor | RayExecutor | None = None,
) -> pd.DataFrame:
    """Train (or load) one run per fold; tidy table with one row per fold.

    Columns: model, fold, run_key, trained, epochs, best_epoch, seconds, n_parameters, then
    ``val_*``, ``test_*`` and ``holdout_*`` scalar metrics from ``lib.evaluation.metrics.binary_metrics``.
    An interrupted call keeps every finished fold; the next call trains only the missing ones.
    """
    job = CVJob(recipe, model_name, train_config, model_kwargs, boxes)
    return run_cv_many(dataset, splits, [job], folds, runs_dir, progress, cache_dir, executor)[0]


def collect_predictions(runs: pd.DataFrame | Iterable[str], runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """All predictions of the given runs (a ``run_cv`` table or run keys), with model and run_key columns."""
    keys = runs["run_key"].tolist() if isinstance(runs, pd.DataFrame) else list(runs)
    frames = []
    for key in keys:
        result = load_run(Path(runs_dir) / key)
        frame = result.predictions.copy()
        frame.insert(0, "run_key", key)
        frame.insert(0, "model", result.spec.model)
        frames.append(frame)
    if not frames:
        raise ValueError("collect_predictions: no runs given")
    return pd.concat(frames, ignore_index=True)


def collect_histories(cv: pd.DataFrame, by: str = "model", runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """Per-epoch training history of every run in a `run_cv` table, tagged with `by` and fold."""
    frames = [load_run(Path(runs_dir) / row["run_key"]).history.assign(**{by: row[by], "fold": row["fold"]})
              for _, row in cv.iterrows()]
    return pd.concat(frames, ignore_index=True)
