#!/usr/bin/env python
"""Execute the numbered notebooks with papermill into reports/<profile>/ (ipynb + HTML) and build index.html.

    python run_all.py --profile default
    python run_all.py --profile full --data-root /path/to/dataset [--layout cifake]
    python run_all.py --profile smoke --only 01,03
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the notebook kernels; see lib/__init__.py

from lib.config import PROFILES, ParamsError, resolve_parameters
from lib.paths import NOTEBOOKS_DIR, report_dir
from lib.report.index import build_index, load_run_log, save_run_log


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


def export_html(ipynb: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(ipynb, as_version=4))
    html_path = ipynb.with_suffix(".html")
    html_path.write_text(body, encoding="utf-8")
    return html_path


def run_notebook(nb: Path, out: Path, parameters: dict) -> None:
    import papermill

    papermill.execute_notebook(
        str(nb), str(out), parameters=parameters, kernel_name="python3",
        cwd=str(nb.parent), progress_bar=False, log_output=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="default")
    parser.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 01,03")
    parser.add_argument("--data-root", help="dataset folder (default: the embedded dataset, built on demand)")
    parser.add_argument("--layout", help="dataset layout (default: auto-detected)")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML export")
    args = parser.parse_args(argv)

    notebooks = select(numbered_notebooks(), args.only)
    if not notebooks:
        print(f"no numbered notebooks in {NOTEBOOKS_DIR}", file=sys.stderr)
        return 1
    cli = {"data_root": args.data_root, "layout": args.layout}

    # Validate every params file before executing anything: a typo should not cost a 20-minute run.
    try:
        plan = [(nb, resolve_parameters(nb, args.profile, cli)) for nb in notebooks]
    except ParamsError as err:
        print(f"params error: {err}", file=sys.stderr)
        return 2

    out_dir = report_dir(args.profile)
    log = load_run_log(args.profile)
    log["dataset"] = args.data_root or "embedded"
    started = time.perf_counter()
    failed = None
    for i, (nb, parameters) in enumerate(plan, 1):
        out = out_dir / nb.name
        print(f"[{i}/{len(plan)}] {nb.stem} ...", flush=True)
        t0 = time.perf_counter()
        entry = {"parameters": parameters}
        try:
            run_notebook(nb, out, parameters)
            entry["status"] = "ok"
        except Exception as err:  # papermill raises PapermillExecutionError with the failing cell
            entry["status"] = "failed"
            entry["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            failed = out
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        if out.exists() and not args.no_html:
            export_html(out)
        log.setdefault("notebooks", {})[nb.stem] = entry
        log["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        save_run_log(args.profile, log)
        print(f"[{i}/{len(plan)}] {nb.stem} {entry['status']} in {entry['seconds']:.1f} s", flush=True)
        if failed:
            break
    index = build_index(args.profile)
    total = time.perf_counter() - started
    if failed:
        print(f"FAILED: {failed} (see {failed.with_suffix('.html')}); total {total:.1f} s", file=sys.stderr)
        return 1
    print(f"done: {len(plan)} notebook(s) in {total:.1f} s; open {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
