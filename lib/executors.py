"""Where independent runs execute: `local` (one after another in this process), `processes` (a pool of worker
processes) or `ray` (Ray tasks, on a local Ray instance or a cluster). A run's numbers never depend on the executor:
every run trains with the thread count of its TrainConfig.

The default comes from the environment, so that `run_all.py --executor/--workers` reaches the notebook kernels:
`FAKEDET_EXECUTOR` (`processes` unless set) and `FAKEDET_WORKERS` (default: the number of CPU cores). Ray reads
`RAY_ADDRESS` itself: `auto` (or a head's address) joins a running cluster; unset, a local instance starts with
`FAKEDET_WORKERS` CPUs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

from lib.progress import tqdm

EXECUTORS = ("local", "processes", "ray")
ENV_EXECUTOR, ENV_WORKERS = "FAKEDET_EXECUTOR", "FAKEDET_WORKERS"


class LocalExecutor:
    """Runs the jobs one after another in this process."""

    name, workers = "local", 1

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], desc: str = "runs", progress: bool = True) -> list:
        return [fn(job) for job in tqdm(jobs, desc=desc, unit="run", disable=not progress or len(jobs) < 2)]


# What every worker imports anyway: the fork server imports it once and forks the workers from it.
PRELOAD = ["lib.training.runstore"]


class ProcessExecutor:
    """Runs the jobs in a pool of `workers` processes, kept alive between calls (a worker start costs seconds).

    Workers come from a fork server (multiprocessing's "forkserver"), never from the caller: a fork of a process whose
    OpenMP threads are running (a notebook kernel that has trained) can deadlock. The fork server is a fresh process
    that imports torch and the run store once (PRELOAD, about 10 s on a slow machine) and uses no threads, so forking
    it is safe and each worker starts in milliseconds instead of importing torch again. When a job fails, the others
    still finish (their runs are written atomically), then the first error is raised.
    """

    name = "processes"

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], desc: str = "runs", progress: bool = True) -> list:
        if len(jobs) < 2 or self.workers == 1:  # nothing to overlap: skip the pool's start-up
            return LocalExecutor().run(fn, jobs, desc, progress)
        pool = self._get_pool()
        futures: list[Future] = [pool.submit(fn, job) for job in jobs]
        with tqdm(total=len(futures), desc=f"{desc} ({self.workers} workers)", unit="run", disable=not progress) as bar:
            for _ in as_completed(futures):
                bar.update(1)
        return [f.result() for f in futures]

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker)
        return self._pool

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _init_worker() -> None:
    # Ctrl-C (or a kernel's shutdown) reaches the whole process group: the parent decides, workers do not print
    # a traceback each; they end when the parent's pool shuts down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see lib/__init__.py
    import torch

    torch.set_num_threads(1)  # each run sets its own count; this only bounds imports and set-up


class RayExecutor:
    """Runs each job as a Ray task: on a running cluster when `address` (or $RAY_ADDRESS) names one (`auto` finds
    the local head), else on a local instance with `workers` CPUs that lives as long as this process.

    A task takes one CPU (every run trains with its own fixed thread count) and, when the cluster has GPUs, its share
    of them (`gpu_share`: the GPUs spread over the CPUs, at most one).
    A task whose worker dies (a killed process, a lost node) is retried up to `max_retries` times; an error raised by
    the job itself is not retried (it would fail again) and is re-raised after the other tasks finish. Jobs must be
    idempotent and write their results atomically, as the run store does: a retried run starts from scratch and a
    half-written one never counts. Workers import `lib` from the same installation as this process, so on a cluster
    every node needs the project installed (`pip install -e .`) and the data and run folders on a shared path.
    """

    name = "ray"

    def __init__(self, workers: int, address: str | None = None, max_retries: int = 2):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers, self.address, self.max_retries = workers, address, max_retries
        self._started = False  # whether this executor started (or joined) Ray, and so may shut it down

    def _connect(self):
        import logging

        import ray

        if not ray.is_initialized():
            self._started = True
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            local = {} if address else {"num_cpus": self.workers}
            # no dashboard, no worker logs forwarded into notebooks: reports stay free of Ray's console output
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     **local)
            if threading.current_thread() is threading.main_thread():
                # ray.init replaces this process's SIGTERM handler with one that prints a stack dump; a notebook
                # kernel stopped by its client (papermill) would print it on the console. Ray's reaper still stops
                # the local instance's processes.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return ray

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], desc: str = "runs", progress: bool = True) -> list:
        if not jobs:
            return []
        ray = self._connect()
        task = ray.remote(num_cpus=1, num_gpus=gpu_share(ray.cluster_resources()), max_retries=self.max_retries, retry_exceptions=False)(
            _call_in_ray_worker)
        refs = [task.remote(fn, job) for job in jobs]
        pending, results, errors = list(refs), {}, []
        with tqdm(total=len(refs), desc=f"{desc} (ray)", unit="run", disable=not progress) as bar:
            while pending:
                (ref,), pending = ray.wait(pending, num_returns=1)
                try:
                    results[ref] = ray.get(ref)
                except Exception as err:  # the others still finish: their runs are written atomically
                    errors.append(err)
                bar.update(1)
        if errors:
            first = errors[0]
            raise getattr(first, "cause", None) or first  # a RayTaskError wraps the job's own exception
        return [results[ref] for ref in refs]

    def shutdown(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def gpu_share(resources: dict[str, float]) -> float:
    """The GPU fraction each Ray task asks for: the cluster's GPUs spread over its CPUs (one task per CPU), at most one
    whole GPU. A whole GPU per task would run the tasks one at a time on a one-GPU machine while its CPUs idle; a
    share lets small runs train side by side on it (measured on an H100: README, "Speed")."""
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    return 0.0 if gpus <= 0 else min(1.0, round(gpus / max(cpus, 1.0), 4))


def _call_in_ray_worker(fn: Callable[[Any], Any], job: Any) -> Any:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see lib/__init__.py
    return fn(job)


_SHARED: dict[tuple[str, int], ProcessExecutor | RayExecutor] = {}


def get_executor(name: str | None = None, workers: int | None = None) -> LocalExecutor | ProcessExecutor | RayExecutor:
    """The executor `name` (default: $FAKEDET_EXECUTOR, else `processes`) with `workers` processes (default:
    $FAKEDET_WORKERS, else the number of CPU cores). Pools are shared within a process."""
    name = name or os.environ.get(ENV_EXECUTOR) or "processes"
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    workers = int(workers or os.environ.get(ENV_WORKERS) or os.cpu_count() or 1)
    if name == "local" or (name == "processes" and workers == 1):
        return LocalExecutor()
    key = (name, workers)
    if key not in _SHARED:
        _SHARED[key] = ProcessExecutor(workers) if name == "processes" else RayExecutor(workers)
    return _SHARED[key]
