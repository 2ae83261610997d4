"""protocol="own": the dataset's own train/val/test split (orig_split), and train_classes (NPR's ForenSynths recipe)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_image
from lib.data.manifest import build_manifest, manifest_fingerprint
from lib.data.splits import _VERSION, SplitError, fold_ids, make_splits, split_summary
from lib.fileio import stable_hash

NPR_CLASSES = ("car", "cat", "chair", "horse")
TEST_GENERATORS = ("progan", "stylegan", "biggan")


def _forensynths(root: Path) -> Path:
    """ForenSynths' release shape: train/<class>/0_real|1_fake, val/<class>/..., test/<generator>/[<class>/]..."""
    labels = ("0_real", "1_fake")
    for cls in (*NPR_CLASSES, "dog"):
        for label in labels:
            for i in range(3):
                write_image(root / "train" / cls / label / f"{i:05d}.png")
    for cls in ("car", "cat"):
        for label in labels:
            for i in range(2):
                write_image(root / "val" / cls / label / f"{i:05d}.png")
    for folder in ("progan/car", "progan/dog", "stylegan", "biggan"):
        for label in labels:
            for i in range(3):
                write_image(root / "test" / folder / label / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def forensynths(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = _forensynths(tmp_path_factory.mktemp("own") / "forensynths")
    manifest, _ = build_manifest(root, cache_dir=None, progress=False)
    return root, manifest


@pytest.fixture(scope="module")
def cifake(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("own") / "cifake"
    for split, n in (("train", 9), ("test", 4)):
        for cls in ("REAL", "FAKE"):
            for i in range(n):
                write_image(root / split / cls / f"{i}.png", (32, 32))
    manifest, _ = build_manifest(root, cache_dir=None, progress=False)
    return manifest


def _rel(manifest: pd.DataFrame, root: Path) -> pd.Series:
    return manifest["path"].map(lambda p: Path(p).relative_to(root.resolve()).as_posix())


def _own(manifest, **kwargs) -> pd.DataFrame:
    return make_splits(manifest, protocol="own", cache_dir=None, **kwargs)


def _no_shared_groups(manifest, splits) -> bool:
    summary = split_summary(manifest, splits)
    return bool((summary["shared_groups"].dropna() == 0).all())


def test_forensynths_own_split_with_npr_classes(forensynths):
    root, manifest = forensynths
    rel = _rel(manifest, root)
    splits = _own(manifest, train_classes=NPR_CLASSES)
    role = splits["split"]
    assert set(rel[role == "test"]) == set(rel[rel.str.startswith("test/")])   # exactly the dataset's test folder
    assert (role[rel.str.startswith("test/")] == "test").all()                  # test/progan/dog is not filtered
    trained = rel[role == "trainval"]
    assert set(trained.str.split("/").str[1]) == set(NPR_CLASSES)
    assert (role[rel.str.contains("/dog/") & ~rel.str.startswith("test/")] == "unused").all()
    # the dataset's own validation part is fold 0's validation part; training rows get fold -1
    assert fold_ids(splits) == [0]
    val = (role == "trainval") & (splits["fold"] == 0)
    assert set(rel[val]) == set(rel[rel.str.startswith("val/")])
    assert set(rel[(role == "trainval") & (splits["fold"] == -1)].str.split("/").str[0]) == {"train"}
    assert _no_shared_groups(manifest, splits)
    # folder names compare case-insensitively; n_folds is ignored when the dataset has its own validation part
    same = _own(manifest, train_classes=("CAR", "Cat", "chair", "horse"), n_folds=3)
    pd.testing.assert_frame_equal(same, splits)


def test_a_group_with_a_test_or_validation_row_never_trains(forensynths):
    root, manifest = forensynths
    rel = _rel(manifest, root)
    joined = manifest.copy()
    train_row = int(np.flatnonzero(rel == "train/car/0_real/00000.png")[0])
    test_row = int(np.flatnonzero(rel == "test/stylegan/0_real/00000.png")[0])
    val_row = int(np.flatnonzero(rel == "val/cat/1_fake/00000.png")[0])
    other_train = int(np.flatnonzero(rel == "train/cat/1_fake/00000.png")[0])
    joined.loc[train_row, "group"] = joined.loc[test_row, "group"]      # e.g. merged near-duplicates
    joined.loc[other_train, "group"] = joined.loc[val_row, "group"]
    splits = _own(joined, train_classes=NPR_CLASSES)
    assert splits.loc[test_row, "split"] == "test" and splits.loc[train_row, "split"] == "unused"
    assert (splits.loc[val_row, "split"], splits.loc[val_row, "fold"]) == ("trainval", 0)
    assert splits.loc[other_train, "split"] == "unused"
    assert _no_shared_groups(joined, splits)


def test_holdout_sources_in_the_own_protocol(forensynths):
    root, manifest = forensynths
    rel = _rel(manifest, root)
    splits = _own(manifest, holdout_sources=["stylegan"])
    held = rel.str.startswith("test/stylegan/1_fake")
    assert (splits["split"][held] == "holdout").all()
    assert (splits["split"][rel.str.startswith("test/stylegan/0_real")] == "test").all()
    assert set(rel[splits["split"] == "trainval"].str.split("/").str[1]) == {*NPR_CLASSES, "dog"}   # no filter


def test_cifake_own_split_without_validation_gets_group_folds(cifake):
    rel = cifake["path"].map(lambda p: "/".join(Path(p).parts[-3:]))
    splits = _own(cifake, n_folds=3)
    assert set(rel[splits["split"] == "test"]) == set(rel[rel.str.startswith("test/")])
    assert set(rel[splits["split"] == "trainval"]) == set(rel[rel.str.startswith("train/")])
    assert fold_ids(splits) == [0, 1, 2]
    per_fold = splits[splits["split"] == "trainval"].groupby("fold").size()
    assert per_fold.tolist() == [6, 6, 6]
    assert _no_shared_groups(cifake, splits)
    one = _own(cifake, n_folds=1, val_ratio=0.25)
    trainval = one[one["split"] == "trainval"]
    assert fold_ids(one) == [0] and set(trainval["fold"]) == {0, -1}
    assert 2 <= (trainval["fold"] == 0).sum() <= 8
    half = _own(cifake, n_folds=2, subsample=0.5)
    assert (half["split"] == "trainval").sum() < 18 and (half["split"] == "test").sum() == 8


def test_cv_protocol_is_unchanged(forensynths, tmp_path):
    _, manifest = forensynths
    plain = manifest.drop(columns=["orig_split", "path"])
    default = make_splits(plain, n_folds=3, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(make_splits(manifest, n_folds=3, cache_dir=None), default)
    pd.testing.assert_frame_equal(make_splits(manifest, n_folds=3, cache_dir=None, protocol="cv", train_classes=()),
                                  default)
    # the cache key is the one cv tables always had: no protocol or train_classes in it
    key = stable_hash({"version": _VERSION, "manifest": manifest_fingerprint(manifest), "n_folds": 3,
                       "test_ratio": 0.2, "val_ratio": 0.1, "seed": 42, "subsample": 1.0, "holdout_sources": []})
    assert [p.name for p in (tmp_path / "splits").iterdir()] == [f"{key}.csv"]
    make_splits(manifest, n_folds=3, cache_dir=tmp_path, protocol="own")
    make_splits(manifest, n_folds=3, cache_dir=tmp_path, train_classes=NPR_CLASSES)
    assert len(list((tmp_path / "splits").iterdir())) == 3


def test_cv_protocol_with_train_classes_filters_training_only(forensynths):
    root, manifest = forensynths
    rel = _rel(manifest, root)
    cv = make_splits(manifest, n_folds=2, cache_dir=None)
    filtered = make_splits(manifest, n_folds=2, cache_dir=None, train_classes=("car", "cat"))
    pd.testing.assert_series_equal(filtered["split"] == "test", cv["split"] == "test")   # test part untouched
    trained = rel[filtered["split"] == "trainval"].str.split("/")
    assert trained.map(lambda parts: bool({"car", "cat"} & set(parts))).all()
    assert ((cv["split"] == "trainval") & (filtered["split"] != "trainval")).any()


def test_errors(forensynths, cifake):
    root, manifest = forensynths
    rel = _rel(manifest, root)
    with pytest.raises(SplitError, match=r"no own test split \(orig_split\); use protocol='cv'"):
        _own(manifest.drop(columns="orig_split"))
    with pytest.raises(SplitError, match="no own test split"):
        _own(manifest.assign(orig_split=""))
    with pytest.raises(SplitError, match=r"unknown protocol 'kfold'; choose one of 'cv', 'own'"):
        make_splits(manifest, protocol="kfold", cache_dir=None)
    with pytest.raises(SplitError, match=r"\['airplane'\]: no training image has any of these folder names.*car"):
        _own(manifest, train_classes=("car", "airplane"))
    with pytest.raises(SplitError, match="no training images remain"):
        _own(manifest.assign(orig_split=np.where(rel.str.startswith("test/"), "test", "")))
    no_dog_fakes = manifest[~rel.str.startswith("train/dog/1_fake")].reset_index(drop=True)
    with pytest.raises(SplitError, match=r"training part holds only one class \(real images\)"):
        _own(no_dog_fakes, train_classes=("dog",))
    no_val_fakes = manifest[~rel.str.match(r"val/.*/1_fake")].reset_index(drop=True)
    with pytest.raises(SplitError, match="own validation part .* has no fake images"):
        _own(no_val_fakes)
    with pytest.raises(SplitError, match="no own test split"):
        _own(cifake[cifake["orig_split"] != "test"].reset_index(drop=True))


def test_open_study_trains_on_the_classes_and_tests_every_generator(tmp_path, monkeypatch):
    from lib.data.manifest import build_manifest_tables
    from lib.data.recipes import Recipe
    from lib.executors import LocalExecutor
    from lib.studies.common import open_study
    from lib.training.fit import TrainConfig
    from lib.training.runstore import collect_predictions, run_cv

    root = _forensynths(tmp_path / "forensynths")
    monkeypatch.setattr("lib.data.dataset.build_manifest_tables",
                        partial(build_manifest_tables, cache_dir=tmp_path / "cache"))
    monkeypatch.setattr("lib.studies.common.make_splits", partial(make_splits, cache_dir=None))
    study = open_study(str(root), n_folds=1, protocol="own", train_classes=NPR_CLASSES)
    assert fold_ids(study.splits) == [0]
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, seed=0, device="cpu", eval_batch_size=8)
    table = run_cv(study.dataset, study.splits, Recipe(size=16), "simple_cnn", config,
                   model_kwargs={"widths": [4, 8]}, folds=[0], runs_dir=tmp_path / "runs",
                   cache_dir=tmp_path / "cache", progress=False, executor=LocalExecutor())
    preds = collect_predictions(table, runs_dir=tmp_path / "runs")
    test = preds[preds["split"] == "test"]
    assert len(test) == 24
    assert set(test["source"]) == {g for gen in TEST_GENERATORS for g in (gen, f"{gen}_real")}
    assert set(preds.loc[preds["split"] == "val", "path"].map(lambda p: Path(p).parts[-4])) == {"val"}
