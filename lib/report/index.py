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


DATASET = "dataset.json"
DASHBOARD_FIGURE = "figures/phase4_dashboard.png"  # notebook 06's evaluation dashboard of the final models


def save_dataset_summary(profile: str, dataset: Any, splits: pd.DataFrame | None = None) -> Path:
    """What the index page says about the data: images and groups per source and label, the split roles' groups,
    and the dataset card's build parameters (planted shortcuts) when there is a card."""
    m = dataset.manifest
    per_source = (m.groupby(["source", "label"]).agg(images=("path", "size"), groups=("group", "nunique"))
                  .reset_index().to_dict("records"))
    roles = []
    if splits is not None:
        parts = m.assign(role=splits["split"].to_numpy())
        roles = (parts.groupby(["role", "label"]).agg(images=("path", "size"), groups=("group", "nunique"))
                 .reset_index().to_dict("records"))
    card = dataset.card if isinstance(dataset.card, dict) else {}
    record = {"name": dataset.name, "layout": dataset.layout, "fingerprint": dataset.fingerprint,
              "images": int(len(m)), "skipped": int(len(dataset.skipped)), "per_source": per_source, "roles": roles,
              "card_params": card.get("params", {})}
    return write_json(report_dir(profile) / "tables" / DATASET, record)


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666} section{border-top:1px solid #ddd;margin-top:1.5em;padding-top:.5em}
.ok{color:#1a7f37;font-weight:600} .failed{color:#c62828;font-weight:600} .skipped{color:#8a6d3b}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0} td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f4f4f4} img{max-width:48%;margin:4px;border:1px solid #eee} img.wide{max-width:100%} li{margin:.2em 0}
img.broken{outline:3px solid #c62828}
"""

# Marks every image once the page has loaded, so a headless browser (and a reader) can see which failed to load.
_CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  let broken = 0;
  for (const img of document.images) {
    const ok = img.complete && img.naturalWidth > 0;
    img.dataset.loaded = ok ? 'yes' : 'no';
    if (!ok) { img.classList.add('broken'); broken++; }
  }
  document.body.dataset.brokenImages = String(broken);
});
</script>"""


def _table_html(split: dict[str, Any], notebook: str = "") -> str:
    df = pd.DataFrame(split["data"], index=split["index"], columns=split["columns"])
    table = df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0, classes="headline")
    return table.replace('<table class="dataframe headline">',
                         f'<table class="dataframe headline" data-notebook="{html.escape(notebook)}">', 1)


def _dataset_html(out: Path) -> str:
    path = out / "tables" / DATASET
    if not path.exists():
        return ""
    d = read_json(path)
    parts = [f"<section id='dataset'><h2>Dataset</h2><p>{html.escape(str(d['name']))} (layout {html.escape(d['layout'])},"
             f" fingerprint {html.escape(d['fingerprint'])}): {d['images']} images, {d['skipped']} files skipped.</p>"]
    per_source = pd.DataFrame(d["per_source"])
    if len(per_source):
        per_source["class"] = per_source.pop("label").map({0: "real", 1: "fake"})
        parts.append("<p>Images and independent groups (photographs, identities, generator seeds) per source:</p>"
                     + per_source.to_html(index=False, border=0, classes="dataset"))
    roles = pd.DataFrame(d["roles"])
    if len(roles):
        roles["class"] = roles.pop("label").map({0: "real", 1: "fake"})
        parts.append("<p>Split roles (every interval is only as wide as the groups behind it):</p>"
                     + roles.to_html(index=False, border=0, classes="dataset"))
    if d.get("card_params"):
        params = ", ".join(f"{k}={v}" for k, v in sorted(d["card_params"].items()))
        parts.append(f"<p class='meta'>Dataset card build parameters: {html.escape(params)}</p>")
    return "".join(parts) + "</section>"


def build_index(profile: str) -> Path:
    """Write `reports/<profile>/index.html`, the study's dashboard, from the run log and the saved tables."""
    out = report_dir(profile)
    log = load_run_log(profile)
    rows, sections = [], []
    for name, entry in sorted(log.get("notebooks", {}).items()):
        status = entry.get("status", "?")
        link = f'<a href="{html.escape(name)}.html">{html.escape(name)}</a>'
        reader = (f'<a href="{html.escape(name)}.reader.html">reader</a>'
                  if (out / f"{name}.reader.html").exists() else "")
        rows.append(
            f"<tr><td style='text-align:left'>{link}</td><td>{reader}</td><td class='{status}'>{status}</td>"
            f"<td>{entry.get('seconds', float('nan')):.1f}</td><td style='text-align:left'>{html.escape(entry.get('error', ''))}</td></tr>"
        )
        hl_path = headline_path(profile, name)
        if status == "ok" and hl_path.exists():
            hl = read_json(hl_path)
            parts = [f"<section id='{html.escape(name)}'><h2>{html.escape(hl.get('title') or name)}</h2>"]
            if hl.get("table"):
                parts.append(_table_html(hl["table"], name))
            if hl.get("conclusions"):
                parts.append("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in hl["conclusions"]) + "</ul>")
            parts += [f'<img src="{html.escape(f)}" alt="{html.escape(f)}">' for f in hl.get("figures", [])
                      if f != DASHBOARD_FIGURE]
            parts.append(f"<p>Full report: {link}{' · ' + reader if reader else ''}</p></section>")
            sections.append("".join(parts))
    dashboard = ""
    if (out / DASHBOARD_FIGURE).exists() and log.get("notebooks", {}).get("06_phase4_final", {}).get("status") == "ok":
        dashboard = (f"<section id='dashboard'><h2>Final models on the test hold-out</h2><img class='wide' "
                     f"src='{DASHBOARD_FIGURE}' alt='evaluation dashboard: ROC, PR, confusion matrix, reliability, "
                     f"confidence histogram, AUC per source'></section>")
    notebook_seconds = sum(e.get("seconds", 0.0) for e in log.get("notebooks", {}).values())
    total = log.get("total_seconds", notebook_seconds)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fakedet lab: {profile}</title>
<style>{_STYLE}</style></head><body>
<h1>AI-generated image detection: {html.escape(profile)} profile</h1>
<p class="meta">Dataset: {html.escape(str(log.get('dataset', 'embedded')))} · last run {html.escape(str(log.get('finished', '')))}
 · run time {total:.0f} s (notebooks {notebook_seconds:.0f} s)</p>
<table id="notebooks"><tr><th>report</th><th>without code</th><th>status</th><th>seconds</th><th>error</th></tr>{''.join(rows)}</table>
{dashboard}
{_dataset_html(out)}
{''.join(sections)}
{_CHECK_IMAGES}
</body></html>"""
    return write_text(out / "index.html", page)
