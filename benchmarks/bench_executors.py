"""Benchmark: the default profile's Phase 1 grid (notebook 03: its models x folds, as params/default sets them) trained
from scratch by each executor, `local`, `processes` and `ray`, in the same session, each into its own empty run store.

Each executor's start-up is included (a process pool's fork server, a local Ray instance and its workers). Prints the
wall time of each, the ratios against `local` measured in the same run, and whether the fold tables (keys and
metrics) are identical, as they must be.

    python benchmarks/bench_executors.py                  # the cores of this machine
    python benchmarks/bench_executors.py --workers 2 --executors local,ray
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from lib.config import declared_parameters, resolve_parameters
from lib.executors import EXECUTORS, LocalExecutor, ProcessExecutor, RayExecutor
from lib.paths import NOTEBOOKS_DIR
from lib.studies.common import baseline_recipe, open_study, train_config
from lib.training.runstore import CVJob, run_cv_many


def phase1_grid(profile: str) -> tuple:
    """(study, jobs) of notebook 03 under `profile`."""
    notebook = NOTEBOOKS_DIR / "03_phase1_baselines.ipynb"
    defaults = {k: ast.literal_eval(v["default"]) for k, v in declared_parameters(notebook).items()}
    p = {**defaults, **resolve_parameters(notebook, profile)}  # what papermill would inject over the notebook's own
    study = open_study(p["data_root"], p["layout"], p["embedded_preset"], p["seed"], p["n_folds"], p["test_ratio"],
                       p["val_ratio"], group_regex=p["group_regex"])
    config = train_config(p["epochs"], p["batch_size"], p["optimizer"], p["lr"], p["weight_decay"], p["scheduler"],
                          p["t_max"], p["patience"], p["seed"])
    recipe = baseline_recipe(p["image_size"], p["resize_mode"])
    return study, [CVJob(recipe, name, config) for name in p["models"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="workers of processes and ray")
    parser.add_argument("--executors", default=",".join(EXECUTORS), help="comma-separated, in the order to run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    study, jobs = phase1_grid(args.profile)
    names = [n.strip() for n in args.executors.split(",") if n.strip()]
    makers = {"local": LocalExecutor, "processes": lambda: ProcessExecutor(args.workers),
              "ray": lambda: RayExecutor(args.workers)}
    seconds, tables = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench_executors_") as tmp:
        for name in names:
            executor = makers[name]()
            start = time.perf_counter()
            tables[name] = pd.concat(run_cv_many(study.dataset, study.splits, jobs, runs_dir=Path(tmp) / name,
                                                 progress=False, executor=executor), ignore_index=True)
            seconds[name] = time.perf_counter() - start
            if hasattr(executor, "shutdown"):
                executor.shutdown()
    runs = len(tables[names[0]])
    base = names[0]
    print(f"Phase 1 grid of the {args.profile} profile: {runs} runs ({', '.join(j.model for j in jobs)}), "
          f"{args.workers} workers, start-up included; {os.cpu_count()} CPU cores")
    result = {"profile": args.profile, "runs": runs, "workers": args.workers, "seconds": {}, "identical": {}}
    for name in names:
        same = tables[name].drop(columns=["seconds", "trained"]).equals(tables[base].drop(columns=["seconds", "trained"]))
        print(f"  {name:<10} {seconds[name]:8.1f} s   {base} / {name} = {seconds[base] / seconds[name]:.2f}x   "
              f"same runs as {base}: {same}")
        result["seconds"][name] = round(seconds[name], 1)
        result["identical"][name] = bool(same)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
