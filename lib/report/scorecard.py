"""The evaluate command's small report: the same tables as markdown (report.md) and as one HTML page (report.html)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from lib.fileio import write_text


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (floats to 3 decimals, NaN blank)."""
    if frame.empty:
        return "(none)"
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v).replace("|", "/") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def write_scorecard(out: str | Path, title: str, facts: Sequence[str], tables: Mapping[str, pd.DataFrame]) -> tuple[Path, Path]:
    """Write out/report.md and out/report.html: a title, a list of facts (one line each), then each named table."""
    out = Path(out)
    md = [f"# {title}", "", *[f"- {fact}" for fact in facts], ""]
    page = [f"<h1>{html.escape(title)}</h1>", "<ul>", *[f"<li>{html.escape(f)}</li>" for f in facts], "</ul>"]
    for name, frame in tables.items():
        md += [f"## {name}", "", markdown_table(frame), ""]
        shown = frame.apply(lambda col: col.map(_cell)) if not frame.empty else frame
        page += [f"<h2>{html.escape(name)}</h2>", shown.to_html(index=False, escape=True, border=0) if not frame.empty
                 else "<p>(none)</p>"]
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}")
    document = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>{''.join(page)}</body></html>")
    return write_text(out / "report.md", "\n".join(md)), write_text(out / "report.html", document)
