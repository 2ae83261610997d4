"""One-class folders: readable by every layout, valid for evaluation (allow_one_class=True), never for training."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from conftest import write_image
from lib.data.layouts import AUTO_LAYOUTS, LAYOUTS, LayoutError, detect_layout, read_layout
from lib.data.manifest import ManifestError, build_manifest, build_manifest_tables


def _rel(df, root: Path) -> list[str]:
    return sorted(Path(p).relative_to(root.resolve()).as_posix() for p in df["path"])


@pytest.fixture
def loose_tree(tmp_path: Path) -> Path:
    """A flat folder of images with sub-folders and a stray text file: no class folder anywhere."""
    root = tmp_path / "loose"
    write_image(root / "a.png")
    write_image(root / "shots" / "b.png")
    write_image(root / "shots" / "deeper" / "c.jpg", quality=95)
    (root / "notes.txt").write_text("not an image")
    return root


def test_real_only_generic_folder_needs_allow_one_class(tmp_path):
    for i in range(3):
        write_image(tmp_path / "real" / f"{i}.png")
    assert detect_layout(tmp_path) == "generic"
    with pytest.raises(ManifestError, match=r"one-class dataset.*real \(label 0\).*allow_one_class=True"):
        build_manifest(tmp_path, cache_dir=None, progress=False)
    manifest, _ = build_manifest(tmp_path, cache_dir=None, progress=False, allow_one_class=True)
    assert len(manifest) == 3 and set(manifest["label"]) == {0} and set(manifest["source"]) == {"real"}


@pytest.mark.parametrize("layout, label, source", [("real_only", 0, "real"), ("fake_only", 1, "fake")])
def test_one_class_layouts_read_every_image_below_the_root(loose_tree, layout, label, source):
    df = read_layout(loose_tree, layout=layout)
    assert df.attrs["layout"] == layout
    assert _rel(df, loose_tree) == ["a.png", "shots/b.png", "shots/deeper/c.jpg"]
    assert set(df["label"]) == {label} and set(df["source"]) == {source} and set(df["orig_split"]) == {""}
    assert sorted(df["group"]) == ["a.png", "shots/b.png", "shots/deeper/c.jpg"]   # relative paths
    assert [Path(i["path"]).name for i in df.attrs["ignored"]] == ["notes.txt"]

    with pytest.raises(ManifestError, match="one-class dataset"):
        build_manifest(loose_tree, layout=layout, cache_dir=None, progress=False)
    manifest, skipped = build_manifest(loose_tree, layout=layout, cache_dir=None, progress=False,
                                       allow_one_class=True)
    assert len(manifest) == 3 and set(manifest["label"]) == {label}
    assert skipped["path"].str.endswith("notes.txt").tolist() == [True]


def test_one_class_layouts_are_never_detected(loose_tree, tmp_path):
    assert "real_only" in LAYOUTS and "fake_only" in LAYOUTS
    assert "real_only" not in AUTO_LAYOUTS and "fake_only" not in AUTO_LAYOUTS
    with pytest.raises(LayoutError, match="cannot recognise") as info:
        detect_layout(loose_tree)
    assert "layout='real_only'" in str(info.value)   # the error says how to choose them
    write_image(tmp_path / "gen" / "real" / "a.png")
    assert detect_layout(tmp_path / "gen") == "generic"


def test_fake_only_forensynths_tree(tmp_path):
    root = tmp_path / "fs"
    for gen in ("progan", "stylegan"):
        for i in range(2):
            write_image(root / "test" / gen / "1_fake" / f"{i:05d}.png")
    assert detect_layout(root) == "forensynths"
    with pytest.raises(ManifestError, match=r"one-class dataset.*fake \(label 1\)"):
        build_manifest(root, cache_dir=None, progress=False)
    manifest, _ = build_manifest(root, cache_dir=None, progress=False, allow_one_class=True)
    assert set(manifest["label"]) == {1} and set(manifest["source"]) == {"progan", "stylegan"}
    assert set(manifest["orig_split"]) == {"test"}


def test_real_only_forensynths_and_cifake_trees_are_detected(tmp_path):
    for i in range(2):
        write_image(tmp_path / "fs" / "train" / "cat" / "0_real" / f"{i}.png")
        write_image(tmp_path / "cifake" / "train" / "REAL" / f"{i}.jpg", (32, 32))
    assert detect_layout(tmp_path / "fs") == "forensynths"
    assert detect_layout(tmp_path / "cifake") == "cifake"
    df = read_layout(tmp_path / "cifake")
    assert set(df["label"]) == {0} and set(df["source"]) == {"cifar10"} and set(df["orig_split"]) == {"train"}
    manifest, _ = build_manifest(tmp_path / "cifake", cache_dir=None, progress=False, allow_one_class=True)
    assert len(manifest) == 2


def test_mixed_case_class_folders_stay_generic(tmp_path):
    """train/REAL next to train/fake is not CIFAKE (its reader would drop the lower-case folder)."""
    write_image(tmp_path / "train" / "REAL" / "a.png")
    write_image(tmp_path / "train" / "fake" / "a.png")
    assert detect_layout(tmp_path) == "generic"
    assert sorted(read_layout(tmp_path)["label"]) == [0, 1]


def test_empty_folder_still_raises_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"no usable images.*no image files"):
        build_manifest(tmp_path / "empty", layout="real_only", cache_dir=None, progress=False, allow_one_class=True)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "x.png").write_text("not a png")
    with pytest.raises(ManifestError, match="no usable images"):
        build_manifest(tmp_path / "text", layout="fake_only", cache_dir=None, progress=False, allow_one_class=True)


def test_load_dataset_passes_allow_one_class(loose_tree, tmp_path, monkeypatch):
    from lib.data.dataset import load_dataset

    monkeypatch.setattr("lib.data.dataset.build_manifest_tables",
                        partial(build_manifest_tables, cache_dir=tmp_path / "cache"))
    with pytest.raises(ManifestError, match="python -m lib.evaluate"):
        load_dataset(str(loose_tree), layout="fake_only", progress=False)
    ds = load_dataset(str(loose_tree), layout="fake_only", progress=False, allow_one_class=True)
    assert ds.layout == "fake_only" and len(ds.manifest) == 3 and set(ds.manifest["label"]) == {1}
    again = load_dataset(str(loose_tree), layout="fake_only", progress=False, allow_one_class=True)   # cached
    assert again.fingerprint == ds.fingerprint
