"""Dataset folder -> manifest: one row per usable image, every file decoded once, every bad file reported.

The manifest (columns in ``MANIFEST_COLUMNS``, see the shared data contract, plus ``phash``, the image's 64-bit
perceptual hash in hex) is cached as parquet under ``cache_dir/manifests/`` keyed by the folder, the layout, each
file's size and modification time and the layout's labels and groups, so a second call only walks the tree and a
changed tree is rebuilt.

Groups are merged before anything is split, because an image shared by two groups would leak across a split:
byte-identical files (same sha256) always, and near-duplicates (perceptual hashes within
``near_duplicate_distance`` bits, ``lib.data.duplicates``) unless ``merge_near_duplicates=False``. Byte-identical
copies that carry different labels are contradictory and are skipped. ``build_manifest_tables`` also returns the
merges made (one linking image pair per merge); ``build_manifest`` returns the manifest and the skipped files.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from lib.progress import tqdm

from lib.fileio import read_table, stable_hash, write_table
from lib.data.duplicates import from_hex, merge_groups, phash, to_hex
from lib.data.imageio import MAX_PIXELS, MIN_SIDE, ImageError, read_image
from lib.data.layouts import read_layout
from lib.paths import CACHE_DIR

MANIFEST_COLUMNS = ["path", "label", "source", "group", "width", "height", "format", "mode", "bytes", "sha256",
                    "jpeg_quality", "orig_split", "phash"]
SKIPPED_COLUMNS = ["path", "reason"]
NEAR_DUPLICATE_DISTANCE = 4   # bits of the 64-bit perceptual hash
_CACHE_VERSION = 2   # bump when the manifest's content rules change, so old caches are not reused


@dataclass
class ManifestTables:
    manifest: pd.DataFrame   # MANIFEST_COLUMNS, groups merged
    skipped: pd.DataFrame    # SKIPPED_COLUMNS: every file left out and why
    merges: pd.DataFrame     # lib.data.duplicates.MERGE_COLUMNS: one linking image pair per merge of two groups


class ManifestError(ValueError):
    """The folder yields no usable two-class dataset (or, with ``allow_one_class``, no usable image)."""


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
            "bytes": image.bytes, "sha256": image.sha256, "jpeg_quality": image.jpeg_quality,
            "phash": to_hex(phash(image.pixels))}


def _skip_conflicts(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Skip byte-identical files with conflicting labels (the groups of other copies are merged later)."""
    labels_per_hash = manifest.groupby("sha256")["label"].nunique()
    conflicting = manifest["sha256"].isin(labels_per_hash.index[labels_per_hash > 1])
    skipped = pd.DataFrame({"path": manifest.loc[conflicting, "path"],
                            "reason": "byte-identical copy of a file with the other label"})
    return manifest.loc[~conflicting].reset_index(drop=True), skipped


def _merge(manifest: pd.DataFrame, near_duplicates: bool, max_distance: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    hashes = from_hex(manifest["phash"]) if near_duplicates else None
    groups, merges = merge_groups(manifest, hashes, max_distance)
    return manifest.assign(group=groups), merges


def _check_classes(manifest: pd.DataFrame, layout_labels: set[int], skipped: pd.DataFrame, root: Path,
                   allow_one_class: bool = False) -> None:
    names = {0: "real (label 0)", 1: "fake (label 1)"}
    if len(manifest) == 0:
        reasons = skipped["reason"].value_counts().head(5).to_dict()
        raise ManifestError(f"no usable images in {root}: {len(skipped)} file(s) skipped; most common reasons: "
                            f"{reasons or 'none (the folder has no image files)'}")
    if allow_one_class:   # evaluation only: one class is enough
        return
    if layout_labels != {0, 1}:
        present = " and ".join(names[label] for label in sorted(layout_labels))
        raise ManifestError(f"{root} is a one-class dataset: the layout only has {present} images; a detector "
                            f"needs both real and fake images (for evaluation, pass allow_one_class=True / use "
                            f"`python -m lib.evaluate`)")
    present = set(manifest["label"].unique().tolist())
    for label in (0, 1):
        if label not in present:
            raise ManifestError(f"no {names[label]} images remain in {root} after skipping {len(skipped)} bad "
                                f"file(s); see the skipped table for the reasons")


def build_manifest(root: str | Path, layout: str = "auto", cache_dir: str | Path | None = CACHE_DIR,
                   progress: bool = True, workers: int | None = None, max_pixels: int = MAX_PIXELS,
                   min_side: int = MIN_SIDE, group_regex: str = "", merge_near_duplicates: bool = True,
                   near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE,
                   allow_one_class: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest, skipped) of ``build_manifest_tables`` (same arguments)."""
    tables = build_manifest_tables(root, layout, cache_dir, progress, workers, max_pixels, min_side, group_regex,
                                   merge_near_duplicates, near_duplicate_distance, allow_one_class)
    return tables.manifest, tables.skipped


def build_manifest_tables(root: str | Path, layout: str = "auto", cache_dir: str | Path | None = CACHE_DIR,
                          progress: bool = True, workers: int | None = None, max_pixels: int = MAX_PIXELS,
                          min_side: int = MIN_SIDE, group_regex: str = "", merge_near_duplicates: bool = True,
                          near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE,
                          allow_one_class: bool = False) -> ManifestTables:
    """Manifest, skipped files and group merges of the dataset at ``root``.

    ``group_regex`` overrides the layout's groups (``lib.data.layouts.read_layout``). Groups sharing a byte-identical
    file are always merged; groups sharing near-duplicates (perceptual hashes within ``near_duplicate_distance``
    bits) too, unless ``merge_near_duplicates=False``. ``workers`` decoding threads (PIL and hashlib release the
    GIL); default: the number of CPU cores, at most 8. ``cache_dir=None`` disables the cache.

    A manifest needs both classes (ManifestError otherwise) unless ``allow_one_class=True``: a one-class folder
    (e.g. layout "real_only"/"fake_only") is valid for evaluating a trained detector, never for training one. An
    empty manifest always raises.
    """
    root = Path(root).resolve()
    rows = read_layout(root, layout, group_regex=group_regex)
    layout = rows.attrs["layout"]
    ignored = pd.DataFrame(rows.attrs.get("ignored", []), columns=SKIPPED_COLUMNS)
    labels = set(rows["label"].unique().tolist())

    cache_path = None
    if cache_dir is not None:
        key = _cache_key(rows, root, layout, max_pixels, min_side)
        cache_path = Path(cache_dir) / "manifests" / f"{root.name}-{key}.parquet"
        skipped_path = cache_path.with_suffix(".skipped.parquet")
        if cache_path.exists() and skipped_path.exists():
            unmerged, skipped = read_table(cache_path), read_table(skipped_path)
            _check_classes(unmerged, labels, skipped, root, allow_one_class)
            manifest, merges = _merge(unmerged, merge_near_duplicates, near_duplicate_distance)
            return ManifestTables(manifest, skipped, merges)

    workers = workers or min(8, os.cpu_count() or 1)
    paths = rows["path"].tolist()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(lambda p: _inspect(p, max_pixels, min_side), paths), total=len(paths),
                            desc=f"decoding {root.name}", unit="img", disable=not progress))
    ok = np.array([isinstance(r, dict) for r in results], dtype=bool)
    bad = pd.DataFrame({"path": [p for p, r in zip(paths, results) if not isinstance(r, dict)],
                        "reason": [r for r in results if not isinstance(r, dict)]})
    facts = pd.DataFrame([r for r in results if isinstance(r, dict)],
                         columns=["width", "height", "format", "mode", "bytes", "sha256", "jpeg_quality", "phash"])
    unmerged = pd.concat([rows.loc[ok].reset_index(drop=True), facts], axis=1)
    unmerged = unmerged.astype({"label": "int64", "width": "int64", "height": "int64", "bytes": "int64",
                                "jpeg_quality": "float64", "source": str, "group": str, "orig_split": str,
                                "phash": str})
    unmerged, conflicts = _skip_conflicts(unmerged)
    unmerged = unmerged[MANIFEST_COLUMNS].reset_index(drop=True)
    unmerged.attrs = {}
    skipped = pd.concat([ignored, bad, conflicts], ignore_index=True)[SKIPPED_COLUMNS]
    skipped = skipped.astype({"path": str, "reason": str})

    _check_classes(unmerged, labels, skipped, root, allow_one_class)
    if cache_path is not None:   # cached before merging, so the merge settings can change without decoding again
        write_table(cache_path, unmerged)
        write_table(skipped_path, skipped)
    manifest, merges = _merge(unmerged, merge_near_duplicates, near_duplicate_distance)
    return ManifestTables(manifest, skipped, merges)
