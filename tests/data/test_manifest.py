from __future__ import annotations

import os
import shutil
import sys
import time
import types
from functools import partial

import numpy as np
import pandas as pd
import pytest

from conftest import write_image
from lib.data import manifest as manifest_module
from lib.data.dataset import Dataset, load_dataset
from lib.data.duplicates import MERGE_COLUMNS
from lib.data.manifest import (MANIFEST_COLUMNS, ManifestError, build_manifest, build_manifest_tables,
                               manifest_fingerprint)


@pytest.fixture
def tree_with_odd_files(generic_tree, odd_files):
    """The generic tree plus every odd file under train/fake (so each one is a candidate image)."""
    for name, path in odd_files.items():
        shutil.copy(path, generic_tree / "train" / "fake" / f"odd_{name}{path.suffix}")
    return generic_tree


def test_manifest_columns_and_facts(generic_tree, tmp_path):
    write_image(generic_tree / "train" / "real" / "photo.jpg", (40, 24), quality=80)
    manifest, skipped = build_manifest(generic_tree, cache_dir=tmp_path / "cache", progress=False)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert isinstance(manifest.index, pd.RangeIndex) and len(manifest) == 17
    row = manifest[manifest["path"].str.endswith("photo.jpg")].iloc[0]
    assert (row["width"], row["height"], row["format"], row["mode"]) == (40, 24, "JPEG", "RGB")
    assert abs(row["jpeg_quality"] - 80) <= 3
    assert row["bytes"] == (generic_tree / "train" / "real" / "photo.jpg").stat().st_size
    png = manifest[manifest["format"] == "PNG"]
    assert png["jpeg_quality"].isna().all() and (png["width"] == 16).all()
    assert manifest["sha256"].str.len().eq(64).all() and manifest["sha256"].is_unique
    assert manifest["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert list(skipped.columns) == ["path", "reason"]
    assert skipped["path"].str.endswith("README.txt").tolist() == [True]


def test_odd_files_converted_or_skipped_with_reason(tree_with_odd_files, tmp_path):
    manifest, skipped = build_manifest(tree_with_odd_files, cache_dir=None, progress=False, workers=2)
    reasons = {os.path.basename(p): r for p, r in zip(skipped["path"], skipped["reason"])}
    assert "not an image" in reasons["odd_not_an_image.jpg"]
    assert "truncated" in reasons["odd_truncated_jpeg.jpg"]
    assert "too small" in reasons["odd_tiny.png"]
    assert "too large" in reasons["odd_huge_header.png"]
    names = manifest["path"].map(os.path.basename)
    modes = dict(zip(names, manifest["mode"]))
    assert modes["odd_cmyk_white.jpg"] == "CMYK" and modes["odd_grey16.png"].startswith("I")
    assert modes["odd_palette_transparent.png"] == "P" and modes["odd_rgba.png"] == "RGBA"
    assert len(manifest) + len(skipped) == 16 + 9 + 1   # images + odd files + README


def test_cache_reused_and_invalidated(generic_tree, tmp_path):
    cache = tmp_path / "cache"
    first, _ = build_manifest(generic_tree, cache_dir=cache, progress=False)
    cached_files = sorted((cache / "manifests").glob("*.parquet"))
    assert len(cached_files) == 2
    start = time.perf_counter()
    second, _ = build_manifest(generic_tree, cache_dir=cache, progress=False)
    assert time.perf_counter() - start < 1.0
    pd.testing.assert_frame_equal(first, second)

    changed = generic_tree / "test" / "real" / "img0.png"
    write_image(changed, (20, 20))
    os.utime(changed, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    third, _ = build_manifest(generic_tree, cache_dir=cache, progress=False)
    assert third.loc[third["path"] == changed.resolve().as_posix(), "width"].item() == 20
    assert len(list((cache / "manifests").glob("*.parquet"))) == 4


def test_duplicates_merge_groups_and_conflicts_are_skipped(tmp_path):
    root = tmp_path / "d"
    a = write_image(root / "real" / "a.png")
    write_image(root / "fake" / "b.png")
    write_image(root / "fake" / "c.png")
    write_image(root / "real" / "e.png")
    shutil.copy(a, root / "real" / "copy_of_a.png")          # same label, another group -> merged with "a"
    shutil.copy(root / "fake" / "c.png", root / "real" / "c_as_real.png")   # same bytes, both labels -> skipped
    manifest, skipped = build_manifest(root, cache_dir=None, progress=False)
    groups = dict(zip(manifest["path"].map(os.path.basename), manifest["group"]))
    assert groups["a.png"] == groups["copy_of_a.png"] == "real/a.png"   # the smaller name of the two
    assert "c.png" not in groups and "c_as_real.png" not in groups
    assert skipped["reason"].str.contains("other label").sum() == 2


def test_no_images_error(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "x.jpg").write_text("not a jpeg")
    with pytest.raises(ManifestError, match="no usable images"):
        build_manifest(tmp_path, layout="generic", cache_dir=None, progress=False)


def test_empty_class_error_names_the_class(tmp_path):
    write_image(tmp_path / "real" / "a.png")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "x.jpg").write_text("not a jpeg")
    with pytest.raises(ManifestError, match=r"no fake \(label 1\) images remain"):
        build_manifest(tmp_path, cache_dir=None, progress=False)


def test_one_class_dataset_error(tmp_path):
    write_image(tmp_path / "real" / "a.png")
    write_image(tmp_path / "real" / "b.png")
    with pytest.raises(ManifestError, match="one-class dataset"):
        build_manifest(tmp_path, cache_dir=None, progress=False)


def test_fingerprint_tracks_content_not_paths(generic_tree, tmp_path):
    manifest, _ = build_manifest(generic_tree, cache_dir=None, progress=False)
    moved = manifest.assign(path=manifest["path"].str.replace("generic", "elsewhere"))
    assert manifest_fingerprint(moved) == manifest_fingerprint(manifest)
    relabelled = manifest.assign(label=1 - manifest["label"])
    assert manifest_fingerprint(relabelled) != manifest_fingerprint(manifest)


def test_load_dataset_from_folder(embedded_tree, monkeypatch, tmp_path):
    monkeypatch.setattr("lib.data.dataset.build_manifest_tables",
                        partial(build_manifest_tables, cache_dir=tmp_path / "cache"))
    ds = load_dataset(str(embedded_tree), progress=False)
    assert isinstance(ds, Dataset)
    assert (ds.layout, ds.name, ds.root) == ("embedded", "embedded_tiny", embedded_tree.resolve())
    assert ds.card == {"name": "embedded_tiny", "preset": "test"}
    assert ds.fingerprint == manifest_fingerprint(ds.manifest) and len(ds.manifest) == 36
    assert "36 images (12 real, 24 fake)" in repr(ds)
    assert list(ds.merges.columns) == MERGE_COLUMNS and ds.merges.empty   # noise images: nothing to merge


def test_load_dataset_embedded_builds_on_demand(embedded_tree, monkeypatch, tmp_path):
    calls = []

    def build_embedded(preset, seed=42, progress=True, **overrides):
        calls.append((preset, seed, progress, overrides))
        return embedded_tree

    monkeypatch.setitem(sys.modules, "lib.data.embedded", types.SimpleNamespace(build_embedded=build_embedded))
    monkeypatch.setattr("lib.data.dataset.build_manifest_tables",
                        partial(build_manifest_tables, cache_dir=tmp_path / "cache"))
    ds = load_dataset("", embedded_preset="tiny", seed=7, embedded_overrides={"n_real": 3}, progress=False)
    assert calls == [("tiny", 7, False, {"n_real": 3})]
    assert ds.layout == "embedded" and set(ds.manifest["label"]) == {0, 1}
    assert (ds.manifest["width"] == 16).all()


def test_load_dataset_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_dataset(str(tmp_path / "nope"), progress=False)


def _near_duplicate_tree(root):
    """real/a.png and fake/b.png: the same picture 3 grey levels apart (other bytes, a perceptual hash within 4 bits)."""
    from PIL import Image

    a = write_image(root / "real" / "a.png", (32, 32))
    pixels = np.asarray(Image.open(a)).astype(int)
    write_image(root / "real" / "c.png", (32, 32))
    write_image(root / "fake" / "d.png", (32, 32))
    Image.fromarray(np.clip(pixels + 3, 0, 255).astype(np.uint8)).save(root / "fake" / "b.png")
    return root


def test_near_duplicates_across_groups_are_merged_and_reported(tmp_path, monkeypatch):
    root = _near_duplicate_tree(tmp_path / "nd")
    cache = tmp_path / "cache"
    tables = build_manifest_tables(root, cache_dir=cache, progress=False)
    groups = dict(zip(tables.manifest["path"].map(os.path.basename), tables.manifest["group"]))
    assert groups["a.png"] == groups["b.png"] == "fake/b.png" and groups["c.png"] == "real/c.png"
    merge = tables.merges.iloc[0]
    assert len(tables.merges) == 1 and list(tables.merges.columns) == MERGE_COLUMNS
    assert {os.path.basename(merge["path_a"]), os.path.basename(merge["path_b"])} == {"a.png", "b.png"}
    assert {merge["group_a"], merge["group_b"]} == {"real/a.png", "fake/b.png"}
    # the images are random (write_image), so the two hashes may differ by a few bits: within the 4-bit threshold
    assert merge["distance"] <= 4 and (merge["kind"], merge["new_group"]) == ("perceptual hash", "fake/b.png")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(manifest_module, "_inspect", no_decoding)   # the merge settings are applied after the cache
    off = build_manifest_tables(root, cache_dir=cache, progress=False, merge_near_duplicates=False)
    assert off.manifest["group"].is_unique and off.merges.empty
    assert manifest_fingerprint(off.manifest) != manifest_fingerprint(tables.manifest)
    again, _ = build_manifest(root, cache_dir=cache, progress=False)
    pd.testing.assert_frame_equal(again, tables.manifest)


def test_load_dataset_passes_group_and_merge_options(tmp_path, monkeypatch):
    root = _near_duplicate_tree(tmp_path / "nd")
    monkeypatch.setattr("lib.data.dataset.build_manifest_tables",
                        partial(build_manifest_tables, cache_dir=tmp_path / "cache"))
    ds = load_dataset(str(root), progress=False)
    assert len(ds.merges) == 1 and ds.manifest["group"].nunique() == 3 and "1 group merge(s)" in repr(ds)
    kept = load_dataset(str(root), progress=False, merge_near_duplicates=False)
    assert kept.merges.empty and kept.manifest["group"].nunique() == 4
    by_folder = load_dataset(str(root), progress=False, group_regex=r"^(\w+)/", merge_near_duplicates=False)
    assert sorted(by_folder.manifest["group"].unique()) == ["fake", "real"]
    merged = load_dataset(str(root), progress=False, group_regex=r"^(\w+)/")   # a.png and b.png link both folders
    assert set(merged.manifest["group"]) == {"fake"} and len(merged.merges) == 1
