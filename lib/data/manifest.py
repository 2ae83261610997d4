"""Dataset folder -> manifest: one row per usable image, every file decoded once, every bad file reported.

The manifest (columns in ``MANIFEST_COLUMNS``, see the shared data contract) is cached as parquet under
``cache_dir/manifests/`` keyed by the folder, the layout, each file's size and modification time and the layout's
labels, so a second call only walks the tree and a changed tree is rebuilt.

Byte-identical files are found through their sha256: copies that carry different labels are contradictory and are
skipped; copies in different groups get their groups merged, because a duplicate split across training and test
would leak the answer.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from lib.fileio import read_table, stable_hash, write_table
from lib.data.imageio import MAX_PIXELS, MIN_SIDE, ImageError, read_image
from lib.data.layouts import read_layout
from lib.paths import CACHE_DIR

MANIFEST_COLUMNS = ["path", "label", "source", "group", "width", "height", "format", "mode", "bytes", "sha256",
                    "jpeg_quality", "orig_split"]
SKIPPED_COLUMNS = ["path", "reason"]
_CACHE_VERSION = 1   # bump when the manifest's content rules change, so old caches are not reused


class ManifestError(ValueError):
    """The folder yields no usable two-class dataset."""


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """Stable hash of what defines a dataset for splitting and training: sha256, label, source, group per row."""
    columns = ["sha256", "label", "source", "group"]
    return stable_hash({c: manifest[c].astype(str).tolist() for c in columns})


def _cache_key(rows: pd.DataFrame, root: Path, layout: str, max_pixels: int, min_side: int) -> str:
    stats = []
    for path in rows["path"]:
        try:
            st = os.stat(path)
            stats.append((st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((-1, -1))
    return stable_hash({"version": _CACHE_VERSION, "root": root.as_posix(), "layout": layout,
                        "rows": rows[["path", "label", "source", "group", "orig_split"]].values.tolist(),
                        "stats": stats, "max_pixels": max_pixels, "min_side": min_side})


def _inspect(path: str, max_pixels: int, min_side: int) -> dict | str:
    """File facts for the manifest, or the reason it cannot be used."""
    try:
        image = read_image(path, max_pixels=max_pixels, min_side=min_side)
    except ImageError as exc:
        return exc.reason
    return {"width": image.width, "height": image.height, "format": image.format, "mode": image.mode,
            "bytes": image.bytes, "sha256": image.sha256, "jpeg_quality": image.jpeg_quality}


def _resolve_duplicates(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Skip byte-identical files with conflicting labels; merge the groups of the other duplicates."""
    labels_per_hash = manifest.groupby("sha256")["label"].nunique()
    conflicting = manifest["sha256"].isin(labels_per_hash.index[labels_per_hash > 1])
    skipped = pd.DataFrame({"path": manifest.loc[conflicting, "path"],
                            "reason": "byte-identical copy of a file with the other label"})
    manifest = manifest.loc[~conflicting].reset_index(drop=True)
    if manifest.empty:
        return manifest, skipped

    # Groups and hashes as nodes of one graph, an edge per row: connected groups must stay together.
    group_codes, group_names = pd.factorize(manifest["group"])
    hash_codes, _ = pd.factorize(manifest["sha256"])
    n_groups = len(group_names)
    n_nodes = n_groups + int(hash_codes.max(initial=-1)) + 1
    graph = coo_matrix((np.ones(len(manifest)), (group_codes, n_groups + hash_codes)), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    # Each merged group takes the smallest name among its members, so names stay readable and deterministic.
    names = pd.Series(np.asarray(group_names, dtype=object)).groupby(component[:n_groups]).transform("min")
    manifest["group"] = names.to_numpy()[group_codes]
    return manifest, skipped


def _check_classes(manifest: pd.DataFrame, layout_labels: set[int], skipped: pd.DataFrame, root: Path) -> None:
    names = {0: "real (label 0)", 1: "fake (label 1)"}
    if len(manifest) == 0:
        reasons = skipped["reason"].value_counts().head(5).to_dict()
        raise ManifestError(f"no usable images in {root}: {len(skipped)} file(s) skipped; most common reasons: "
                            f"{reasons or 'none (the folder has no image files)'}")
    if layout_labels != {0, 1}:
        present = " and ".join(names[label] for label in sorted(layout_labels))
        raise ManifestError(f"{root} is a one-class dataset: the layout only has {present} images; a detector "
                            f"needs both real and fake images")
    present = set(manifest["label"].unique().tolist())
    for label in (0, 1):
        if label not in present:
            raise ManifestError(f"no {names[label]} images remain in {root} after skipping {len(skipped)} bad "
                                f"file(s); see the skipped table for the reasons")


def build_manifest(root: str | Path, layout: str = "auto", cache_dir: str | Path | None = CACHE_DIR,
                   progress: bool = True, workers: int | None = None, max_pixels: int = MAX_PIXELS,
                   min_side: int = MIN_SIDE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest, skipped) for the dataset at ``root``; ``skipped`` lists (path, reason) of every file left out.

    ``workers`` decoding threads (PIL and hashlib release the GIL); default: the number of CPU cores, at most 8.
    ``cache_dir=None`` disables the cache.
    """
    root = Path(root).resolve()
    rows = read_layout(root, layout)
    layout = rows.attrs["layout"]
    ignored = pd.DataFrame(rows.attrs.get("ignored", []), columns=SKIPPED_COLUMNS)

    cache_path = None
    if cache_dir is not None:
        key = _cache_key(rows, root, layout, max_pixels, min_side)
        cache_path = Path(cache_dir) / "manifests" / f"{root.name}-{key}.parquet"
        skipped_path = cache_path.with_suffix(".skipped.parquet")
        if cache_path.exists() and skipped_path.exists():
            manifest, skipped = read_table(cache_path), read_table(skipped_path)
            _check_classes(manifest, set(rows["label"].unique().tolist()), skipped, root)
            return manifest, skipped

    workers = workers or min(8, os.cpu_count() or 1)
    paths = rows["path"].tolist()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(lambda p: _inspect(p, max_pixels, min_side), paths), total=len(paths),
                            desc=f"decoding {root.name}", unit="img", disable=not progress))
    ok = np.array([isinstance(r, dict) for r in results], dtype=bool)
    bad = pd.DataFrame({"path": [p for p, r in zip(paths, results) if not isinstance(r, dict)],
                        "reason": [r for r in results if not isinstance(r, dict)]})
    facts = pd.DataFrame([r for r in results if isinstance(r, dict)],
                         columns=["width", "height", "format", "mode", "bytes", "sha256", "jpeg_quality"])
    manifest = pd.concat([rows.loc[ok].reset_index(drop=True), facts], axis=1)
    manifest = manifest.astype({"label": "int64", "width": "int64", "height": "int64", "bytes": "int64",
                                "jpeg_quality": "float64", "source": str, "group": str, "orig_split": str})
    manifest, conflicts = _resolve_duplicates(manifest)
    manifest = manifest[MANIFEST_COLUMNS].reset_index(drop=True)
    manifest.attrs = {}
    skipped = pd.concat([ignored, bad, conflicts], ignore_index=True)[SKIPPED_COLUMNS]
    skipped = skipped.astype({"path": str, "reason": str})

    _check_classes(manifest, set(rows["label"].unique().tolist()), skipped, root)
    if cache_path is not None:
        write_table(cache_path, manifest)
        write_table(skipped_path, skipped)
    return manifest, skipped
