"""Every path the project uses, computed from the package location (no absolute paths, no sys.path edits)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
REPORTS_DIR = PROJECT_ROOT / "reports"
PARAMS_DIR = PROJECT_ROOT / "params"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"

EMBEDDED_DIR = DATA_DIR / "embedded"   # one sub-folder per embedded preset
CACHE_DIR = DATA_DIR / "cache"         # manifests, split tables, tensor caches: all rebuildable
RUNS_DIR = REPORTS_DIR / "runs"        # run store, shared by profiles (keys include the dataset)


def report_dir(profile: str) -> Path:
    """Folder of one profile's executed notebooks, tables and figures (created on demand)."""
    out = REPORTS_DIR / profile
    for sub in ("tables", "figures"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    return out


def tables_dir(profile: str) -> Path:
    return report_dir(profile) / "tables"


def figures_dir(profile: str) -> Path:
    return report_dir(profile) / "figures"
