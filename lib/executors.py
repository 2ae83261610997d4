"""Where independent runs execute: `local` (one after another in this process) or `processes` (a pool of worker
processes). A run's numbers never depend on the executor: every run trains with the thread count of its TrainConfig.

The default comes from the environment, so that `run_all.py --executor/--workers` reaches the notebook kernels:
`FAKEDET_EXECUTOR` (`processes` unless set) and `FAKEDET_WORKERS` (default: the number of CPU cores).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

from lib.progress import tqdm

EXECUTORS = ("local", "processes")
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


_SHARED: dict[tuple[str, int], LocalExecutor | ProcessExecutor] = {}


def get_executor(name: str | None = None, workers: int | None = None) -> LocalExecutor | ProcessExecutor:
    """The executor `name` (default: $FAKEDET_EXECUTOR, else `processes`) with `workers` processes (default:
    $FAKEDET_WORKERS, else the number of CPU cores). Pools are shared within a process."""
    name = name or os.environ.get(ENV_EXECUTOR) or "processes"
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    workers = int(workers or os.environ.get(ENV_WORKERS) or os.cpu_count() or 1)
    if name == "local" or workers == 1:
        return LocalExecutor()
    key = (name, workers)
    if key not in _SHARED:
        _SHARED[key] = ProcessExecutor(workers)
    return _SHARED[key]
