from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_image
from lib.data.layouts import COLUMNS, LAYOUTS, LayoutError, detect_layout, read_layout


def _rel(df, root: Path) -> list[str]:
    return [Path(p).relative_to(root.resolve()).as_posix() for p in df["path"]]


def _by_rel(df, root: Path):
    """Rows indexed by their path relative to the tree root."""
    return df.set_axis(_rel(df, root), axis=0)


@pytest.mark.parametrize("fixture, expected", [
    ("generic_tree", "generic"), ("cifake_tree", "cifake"), ("forensynths_tree", "forensynths"),
    ("deepfakeface_tree", "deepfakeface"), ("embedded_tree", "embedded"),
])
def test_detection(request, fixture, expected):
    root = request.getfixturevalue(fixture)
    assert detect_layout(root) == expected
    df = read_layout(root)
    assert df.attrs["layout"] == expected
    assert list(df.columns) == COLUMNS
    assert set(df["label"]) == {0, 1}
    assert all(Path(p).is_absolute() and "\\" not in p for p in df["path"])


def test_generic(generic_tree):
    df = read_layout(generic_tree)
    assert len(df) == 16
    row = _by_rel(df, generic_tree).loc["train/fake/gen_a/img1.png"]
    assert (row["label"], row["source"], row["group"], row["orig_split"]) == (1, "gen_a", "train/fake/gen_a/img1.png",
                                                                              "train")
    assert df["group"].is_unique   # one group per file: train/real/img1.png and train/fake/gen_a/img1.png differ
    real = df[df["label"] == 0]
    assert set(real["source"]) == {"real"} and set(real["orig_split"]) == {"train", "test"}
    assert [Path(i["path"]).name for i in df.attrs["ignored"]] == ["README.txt"]


def test_generic_flat_mixed_case_and_numbered(tmp_path):
    write_image(tmp_path / "Real" / "a.png")
    write_image(tmp_path / "1_fake" / "a.png")
    write_image(tmp_path / "1_fake" / "b.png")
    write_image(tmp_path / "loose.png")                 # no class folder: reported, not guessed
    df = read_layout(tmp_path)
    assert df.attrs["layout"] == "generic"
    assert sorted(zip(_rel(df, tmp_path), df["label"], df["source"])) == [
        ("1_fake/a.png", 1, "fake"), ("1_fake/b.png", 1, "fake"), ("Real/a.png", 0, "real")]
    assert set(df["orig_split"]) == {""}
    assert df.loc[df["label"] == 0, "group"].item() == "Real/a.png"
    assert df["group"].is_unique   # Real/a.png and 1_fake/a.png are unrelated images
    assert any("no label" in i["reason"] for i in df.attrs["ignored"])


def test_cifake_labels_are_inverted_from_the_dataset_indices(cifake_tree):
    df = read_layout(cifake_tree)
    assert len(df) == 24
    by_path = _by_rel(df, cifake_tree)
    assert by_path.loc["train/FAKE/1 (2).jpg", "label"] == 1 and by_path.loc["train/FAKE/1 (2).jpg", "source"] == "sd14"
    assert by_path.loc["test/REAL/0.jpg", "label"] == 0 and by_path.loc["test/REAL/0.jpg", "source"] == "cifar10"
    assert by_path.loc["test/REAL/0.jpg", "orig_split"] == "test"
    assert df["group"].is_unique                      # one group per file (REAL and FAKE names are unrelated)


def test_cifake_lowercase_is_generic(tmp_path):
    for cls in ("real", "fake"):
        write_image(tmp_path / "train" / cls / "x.png")
    assert detect_layout(tmp_path) == "generic"


def test_forensynths(forensynths_tree):
    df = read_layout(forensynths_tree)
    by_path = _by_rel(df, forensynths_tree)
    train_fake = by_path.loc["train/cat/1_fake/00001.png"]
    assert (train_fake["source"], train_fake["group"], train_fake["orig_split"]) == (
        "progan", "train/cat/1_fake/00001.png", "train")
    test_real = by_path.loc["test/stylegan/car/0_real/00002.png"]
    assert (test_real["label"], test_real["source"], test_real["group"]) == (
        0, "stylegan_real", "test/stylegan/car/0_real/00002.png")
    no_class = by_path.loc["test/biggan/1_fake/00000.png"]
    assert (no_class["source"], no_class["group"]) == ("biggan", "test/biggan/1_fake/00000.png")
    assert df["group"].is_unique   # 0_real/00001.png and 1_fake/00001.png are not pairs
    assert set(df["source"]) == {"progan", "progan_real", "stylegan", "stylegan_real", "biggan", "biggan_real"}


def test_split_with_numbered_classes_is_generic_not_forensynths(tmp_path):
    for split in ("train", "test"):
        for cls in ("0_real", "1_fake"):
            write_image(tmp_path / split / cls / "x.png")
    assert detect_layout(tmp_path) == "generic"
    assert detect_layout(tmp_path / "train") == "generic"


def test_deepfakeface_groups_tie_photo_and_fakes(deepfakeface_tree):
    df = read_layout(deepfakeface_tree)
    assert len(df) == 24
    assert set(df["source"]) == {"wiki", "inpainting", "insight", "text2img"}
    assert (df.loc[df["source"] == "wiki", "label"] == 0).all() and (df.loc[df["source"] != "wiki", "label"] == 1).all()
    group = df[df["group"] == "01/01_2"]
    assert sorted(group["source"]) == ["inpainting", "insight", "text2img", "wiki"]   # .jpg and .png alike


def test_embedded(embedded_tree):
    write_image(embedded_tree / "stray.png")
    df = read_layout(embedded_tree)
    assert len(df) == 36
    assert set(df["source"]) == {"real", "ae_nearest", "inpaint"}
    assert set(df["group"]) == {"astronaut", "chelsea", "coffee", "rocket"}
    assert [Path(i["path"]).name for i in df.attrs["ignored"]] == ["stray.png"]   # card.json is expected, not reported


def test_embedded_bad_metadata(tmp_path):
    (tmp_path / "metadata.csv").write_text("path,label\na.png,0\n")
    with pytest.raises(LayoutError, match="missing column"):
        read_layout(tmp_path)


def test_unknown_structure_lists_every_layout(tmp_path):
    write_image(tmp_path / "photos" / "a.png")
    with pytest.raises(LayoutError) as info:
        detect_layout(tmp_path)
    for name in LAYOUTS:
        assert name in str(info.value)


def test_override_and_unknown_name(generic_tree, tmp_path):
    assert read_layout(generic_tree, layout="generic").attrs["layout"] == "generic"
    with pytest.raises(LayoutError, match="unknown layout 'nope'"):
        read_layout(generic_tree, layout="nope")
    with pytest.raises(LayoutError, match="does not exist"):
        read_layout(tmp_path / "missing")


def test_hidden_files_are_reported(tmp_path):
    write_image(tmp_path / "real" / "a.png")
    write_image(tmp_path / "fake" / "b.png")
    (tmp_path / "fake" / "._b.png").write_bytes(b"\x00\x05\x16\x07")
    df = read_layout(tmp_path)
    assert len(df) == 2
    assert {"hidden file"} == {i["reason"] for i in df.attrs["ignored"]}


def test_group_regex_overrides_the_layout_groups(generic_tree):
    df = read_layout(generic_tree, group_regex=r"([^/]+)\.\w+$")            # the file stem: aligned datasets
    by_path = _by_rel(df, generic_tree)
    assert by_path.loc["train/real/img1.png", "group"] == by_path.loc["train/fake/gen_a/img1.png", "group"] == "img1"
    joined = read_layout(generic_tree, group_regex=r"^(\w+)/.*?([^/]+)\.png$")  # capture groups joined with "/"
    assert _by_rel(joined, generic_tree).loc["test/fake/gen_b/img0.png", "group"] == "test/img0"


def test_group_regex_errors_are_clear(generic_tree):
    with pytest.raises(LayoutError, match="no capture group"):
        read_layout(generic_tree, group_regex=r"img\d")
    with pytest.raises(LayoutError, match="not a valid regular expression"):
        read_layout(generic_tree, group_regex=r"(img")
    with pytest.raises(LayoutError, match="does not match 'test/fake/"):
        read_layout(generic_tree, group_regex=r"^train/.*(img\d)")


def test_content_classes_are_the_innermost_folder_that_is_neither_split_nor_class(tmp_path):
    from lib.data.layouts import content_classes

    paths = [tmp_path / "cifar10" / "cat" / "1.png", tmp_path / "test" / "progan" / "car" / "0_real" / "2.png",
             tmp_path / "test" / "biggan" / "1_fake" / "3.png", tmp_path / "train" / "REAL" / "4.png",
             tmp_path / "5.png"]
    assert content_classes(paths, tmp_path) == ["cat", "car", "biggan", "", ""]
