"""The reader's page: `reports/<profile>/index.html`, built from saved tables and the run log, never by re-running."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from lib.fileio import read_json, write_json, write_text
from lib.paths import report_dir

RUN_LOG = "run_log.json"
HEADLINES = "headlines"


def headline_path(profile: str, notebook: str) -> Path:
    return report_dir(profile) / "tables" / HEADLINES / f"{notebook}.json"


def save_headline(
    profile: str,
    notebook: str,
    table: pd.DataFrame | None = None,
    title: str = "",
    conclusions: Iterable[str] = (),
    figures: Iterable[str | Path] = (),
) -> Path:
    """Record what a notebook wants on the index page: one table, computed conclusion lines, key figures."""
    out = report_dir(profile)
    record = {
        "title": title,
        "table": None if table is None else table.to_dict(orient="split"),
        "conclusions": list(conclusions),
        "figures": [os.path.relpath(Path(f).resolve(), out.resolve()) for f in figures],
    }
    return write_json(headline_path(profile, notebook), record)


def load_run_log(profile: str) -> dict[str, Any]:
    path = report_dir(profile) / RUN_LOG
    return read_json(path) if path.exists() else {"profile": profile, "notebooks": {}}


def save_run_log(profile: str, log: dict[str, Any]) -> None:
    write_json(report_dir(profile) / RUN_LOG, log)


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666} section{border-top:1px solid #ddd;margin-top:1.5em;padding-top:.5em}
.ok{color:#1a7f37;font-weight:600} .failed{color:#c62828;font-weight:600} .skipped{color:#8a6d3b}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0} td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f4f4f4} img{max-width:48%;margin:4px;border:1px solid #eee} li{margin:.2em 0}
"""


def _table_html(split: dict[str, Any]) -> str:
    df = pd.DataFrame(split["data"], index=split["index"], columns=split["columns"])
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0)


def build_index(profile: str) -> Path:
    """Write `reports/<profile>/index.html` from the run log and each notebook's saved headline."""
    out = report_dir(profile)
    log = load_run_log(profile)
    rows, sections = [], []
    for name, entry in sorted(log.get("notebooks", {}).items()):
        status = entry.get("status", "?")
        link = f'<a href="{html.escape(name)}.html">{html.escape(name)}</a>'
        rows.append(
            f"<tr><td style='text-align:left'>{link}</td><td class='{status}'>{status}</td>"
            f"<td>{entry.get('seconds', float('nan')):.1f}</td><td style='text-align:left'>{html.escape(entry.get('error', ''))}</td></tr>"
        )
        hl_path = headline_path(profile, name)
        if status == "ok" and hl_path.exists():
            hl = read_json(hl_path)
            parts = [f"<section><h2>{html.escape(hl.get('title') or name)}</h2>"]
            if hl.get("conclusions"):
                parts.append("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in hl["conclusions"]) + "</ul>")
            if hl.get("table"):
                parts.append(_table_html(hl["table"]))
            parts += [f'<img src="{html.escape(f)}" alt="{html.escape(f)}">' for f in hl.get("figures", [])]
            parts.append(f"<p>Full report: {link}</p></section>")
            sections.append("".join(parts))
    total = sum(e.get("seconds", 0.0) for e in log.get("notebooks", {}).values())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fakedet lab: {profile}</title>
<style>{_STYLE}</style></head><body>
<h1>AI-generated image detection: {html.escape(profile)} profile</h1>
<p class="meta">Dataset: {html.escape(str(log.get('dataset', 'embedded')))} · last run {html.escape(str(log.get('finished', '')))}
 · total notebook time {total:.0f} s</p>
<table><tr><th>notebook</th><th>status</th><th>seconds</th><th>error</th></tr>{''.join(rows)}</table>
{''.join(sections)}
</body></html>"""
    return write_text(out / "index.html", page)
