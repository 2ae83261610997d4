#!/usr/bin/env python
"""Execute the numbered notebooks with papermill into reports/<profile>/ (ipynb + HTML) and build index.html.

    python run_all.py --profile default
    python run_all.py --profile full --data-root /path/to/dataset [--layout cifake]
    python run_all.py --profile smoke --only 01,03
    python run_all.py --profile default --only 08 --set external_root=/data/other --set epochs=3

Notebooks whose inputs are ready run side by side (`--jobs`, default 2; see NEEDS): a kernel spends much of its
time on one core (imports, statistics, figures), so two of them keep a 2-core machine busy. Every notebook's numbers
are the same as when run alone: runs are keyed and stored atomically, and each trains with a fixed thread count.

Progress bars live on this console: one line per notebook with its time, and a bar over the notebooks. The rendered
reports carry none (the kernels run with TQDM_DISABLE=1); each notebook is rendered twice, `NN_name.html` with the
code and `NN_name.reader.html` without it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the notebook kernels; see lib/__init__.py

import yaml
from tqdm import tqdm

from lib.config import PROFILES, ParamsError, declared_parameters, resolve_parameters
from lib.paths import NOTEBOOKS_DIR, report_dir
from lib.report.index import build_index, load_run_log, save_run_log
from lib.executors import ENV_EXECUTOR, ENV_WORKERS, EXECUTORS

# The kernel's own start-up warnings (e.g. "running over TCP without encryption") concern no reader of the report.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]

# What each notebook reads from earlier ones: the face boxes (02; 04 would otherwise detect them again), stored runs
# and tables (03 -> 04 -> 05 -> 06, and 07 reads Phase 2 and 3's fold tables). The dataset is no edge: whichever
# notebook comes first builds it while the others wait on its lock. A notebook not listed waits for every earlier one.
NEEDS = {"01": set(), "02": set(), "03": set(), "04": {"02", "03"}, "05": {"04"}, "06": {"05"}, "07": {"04", "05"},
         "08": set(), "09": {"04"}, "10": {"06", "08"}, "11": set()}
# 09 reuses the baseline runs of 04's source hold-out; 10 scores the saved final models of 06 and NPR arms of 08
# Smoke runs train in a second or two: starting worker processes (each imports torch, ~10 s on a slow machine)
# would cost more than it saves; notebooks side by side use the cores instead.
PROFILE_EXECUTOR = {"smoke": "local"}


def numbered_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    return sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def select(notebooks: list[Path], only: str | None) -> list[Path]:
    if not only:
        return notebooks
    wanted = {token.strip() for token in only.split(",") if token.strip()}
    chosen = [nb for nb in notebooks if nb.stem[:2] in wanted or nb.stem in wanted]
    missing = wanted - {nb.stem[:2] for nb in chosen} - {nb.stem for nb in chosen}
    if missing:
        raise SystemExit(f"--only: no notebook matches {', '.join(sorted(missing))}; have {', '.join(nb.stem for nb in notebooks)}")
    return chosen


def parse_sets(pairs: list[str], notebooks: list[Path]) -> dict[str, Any]:
    """`--set key=value` pairs, values read as YAML (3 -> int, 0.5 -> float, [a, b] -> list, text -> str).

    A key that none of the selected notebooks declares is an error; types are checked per notebook later.
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set expects key=value, got {pair!r}")
        values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    declared = set().union(*(declared_parameters(nb) for nb in notebooks)) if notebooks else set()
    unknown = sorted(set(values) - declared)
    if unknown:
        raise ParamsError(f"--set {', '.join(unknown)}: no selected notebook declares it; "
                          f"their parameters are: {', '.join(sorted(declared))}")
    return values


def prerequisites(notebooks: list[Path]) -> dict[str, set[str]]:
    """For each selected notebook, the selected notebooks it must wait for (NEEDS; unlisted: every earlier one)."""
    numbers = [nb.stem[:2] for nb in notebooks]
    return {n: (NEEDS[n] if n in NEEDS else set(numbers[:i])) & set(numbers) for i, n in enumerate(numbers)}


def start_order(needs: dict[str, set[str]]) -> list[str]:
    """Notebooks by how many others wait on them, directly or not (most first), then by number: the long chain
    03 -> 04 -> 05 -> 06 starts at once and the notebooks nothing waits for fill the other core."""
    def waiting_on(n: str) -> set[str]:
        direct = {m for m, pre in needs.items() if n in pre}
        return direct.union(*(waiting_on(m) for m in direct)) if direct else set()

    return sorted(needs, key=lambda n: (-len(waiting_on(n)), n))


def export_html(ipynb: Path) -> tuple[Path, Path]:
    """The full report (code and outputs) and the reader's report (outputs only), beside the executed notebook."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    full = ipynb.with_suffix(".html")
    reader = ipynb.with_suffix(".reader.html")
    full.write_text(HTMLExporter().from_notebook_node(nb)[0], encoding="utf-8")
    reader_exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    reader.write_text(reader_exporter.from_notebook_node(nb)[0], encoding="utf-8")
    return full, reader


def run_notebook(nb: Path, out: Path, parameters: dict) -> None:
    import papermill

    papermill.execute_notebook(
        str(nb), str(out), parameters=parameters, kernel_name="python3",
        cwd=str(nb.parent), progress_bar=False, log_output=False, extra_arguments=KERNEL_ARGUMENTS,
    )


def describe_error(err: BaseException) -> str:
    """`Type: message` of the error raised inside the notebook (papermill keeps the cell's ename/evalue)."""
    name, value = getattr(err, "ename", None), getattr(err, "evalue", None)
    if name is None:
        name, text = type(err).__name__, str(err).strip()
        value = text.splitlines()[-1] if text else ""
    return f"{name}: {value}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="default")
    parser.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 01,03")
    parser.add_argument("--data-root", help="dataset folder (default: the embedded dataset, built on demand)")
    parser.add_argument("--layout", help="dataset layout (default: auto-detected)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one notebook parameter (repeatable; checked like the params files)")
    parser.add_argument("--executor", choices=EXECUTORS, help="where independent runs train (default: processes; "
                        "ray: Ray tasks, on the cluster of --ray-address or a local instance)")
    parser.add_argument("--ray-address", help="Ray cluster to join with --executor ray ('auto': the one started on this "
                        "machine with `ray start`; default: $RAY_ADDRESS, else a local instance per notebook)")
    parser.add_argument("--workers", type=int, help="worker processes of each notebook's processes executor "
                        "(default: CPU cores / --jobs, the cores shared by the notebooks side by side)")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run side by side when their inputs are ready "
                        "(default: 2; 1 runs them one after another)")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML export")
    args = parser.parse_args(argv)

    notebooks = select(numbered_notebooks(), args.only)
    if not notebooks:
        print(f"no numbered notebooks in {NOTEBOOKS_DIR}", file=sys.stderr)
        return 1

    # Validate every params file before executing anything: a typo should not cost a 20-minute run.
    try:
        cli = {"data_root": args.data_root, "layout": args.layout, **parse_sets(args.sets, notebooks)}
        plan = [(nb, resolve_parameters(nb, args.profile, cli)) for nb in notebooks]
    except ParamsError as err:
        print(f"params error: {err}", file=sys.stderr)
        return 2

    # inherited by the notebook kernels and their worker processes
    os.environ["TQDM_DISABLE"] = "1"
    if args.jobs < 1:
        print("--jobs must be at least 1", file=sys.stderr)
        return 2
    executor = args.executor or PROFILE_EXECUTOR.get(args.profile)
    if executor:
        os.environ[ENV_EXECUTOR] = executor
    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address  # ray.init reads it in every kernel
    if args.workers:
        os.environ[ENV_WORKERS] = str(args.workers)
    elif ENV_WORKERS not in os.environ:
        # Two notebooks side by side share the cores: on 2 cores each trains in its own kernel (1 worker: no pool),
        # which measured 4 % faster cold than two pools of 2 workers each competing for the same cores.
        os.environ[ENV_WORKERS] = str(max(1, (os.cpu_count() or 1) // args.jobs))

    out_dir = report_dir(args.profile)
    log = load_run_log(args.profile)
    log["dataset"] = args.data_root or "embedded"
    started = time.perf_counter()
    bar = tqdm(total=len(plan), desc=f"{args.profile} profile", unit="notebook", disable=False, file=sys.stderr)
    exporter = ThreadPoolExecutor(max_workers=1)  # renders a report's HTML while other notebooks run
    exports = []

    def execute(nb: Path, parameters: dict) -> dict[str, Any]:
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"parameters": parameters}
        try:
            run_notebook(nb, out_dir / nb.name, parameters)
            entry["status"] = "ok"
        except Exception as err:  # papermill raises PapermillExecutionError with the failing cell
            entry.update(status="failed", error=describe_error(err))
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        return entry

    needs = prerequisites([nb for nb, _ in plan])
    by_number = {nb.stem[:2]: (nb, parameters) for nb, parameters in plan}
    waiting = {n: by_number[n] for n in start_order(needs)}
    done: set[str] = set()
    failed: list[tuple[Path, dict]] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        running: dict[Future, Path] = {}
        while waiting or running:
            if not failed:  # after a failure, no new notebook starts; the running ones finish
                for number in [n for n in waiting if needs[n] <= done][: args.jobs - len(running)]:
                    nb, parameters = waiting.pop(number)
                    running[pool.submit(execute, nb, parameters)] = nb
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                nb = running.pop(future)
                entry = future.result()
                out = out_dir / nb.name
                if out.exists() and not args.no_html:
                    exports.append(exporter.submit(export_html, out))
                log.setdefault("notebooks", {})[nb.stem] = entry
                log["finished"] = dt.datetime.now().isoformat(timespec="seconds")
                save_run_log(args.profile, log)
                bar.write(f"[{len(done) + len(failed) + 1}/{len(plan)}] {nb.stem} {entry['status']} in "
                          f"{entry['seconds']:.1f} s", file=sys.stdout)
                bar.update(1)
                if entry["status"] == "ok":
                    done.add(nb.stem[:2])
                else:
                    failed.append((out, entry))
    bar.close()
    for export in exports:
        export.result()  # raises if an export failed
    exporter.shutdown()
    log["total_seconds"] = round(time.perf_counter() - started, 1)
    save_run_log(args.profile, log)
    index = build_index(args.profile)
    total = time.perf_counter() - started
    if failed:
        for out, entry in failed:
            print(f"FAILED: {out.stem}: {entry['error']}\n  partial report: {out} (and {out.with_suffix('.html')})",
                  file=sys.stderr)
        skipped = [nb.stem for nb, _ in waiting.values()]
        print(f"not run: {', '.join(skipped) or 'none'}; total {total:.1f} s", file=sys.stderr)
        return 1
    print(f"done: {len(plan)} notebook(s) in {total:.1f} s; open {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
