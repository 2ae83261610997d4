from __future__ import annotations

import hashlib

import warnings

import numpy as np
import pandas as pd
import pytest

from lib.data.splits import (MIN_EVAL_GROUPS, SplitError, SplitWarning, fold_ids, fold_indices, holdout_indices,
                             make_splits, split_summary, test_indices)


def synthetic_manifest(n_photos: int = 40, crops: int = 3, fake_sources=("ae", "inpaint"),
                       singleton_fakes: int = 20, seed: int = 0) -> pd.DataFrame:
    """Embedded-like manifest without files: each photo a group of real crops and their fakes, plus GAN fakes
    that are groups of their own. Only the columns splitting reads."""
    rows = []
    for p in range(n_photos):
        for c in range(crops):
            rows.append((f"photo{p}", 0, "real"))
            rows += [(f"photo{p}", 1, src) for src in fake_sources]
    rows += [(f"gan{i}", 1, "gan") for i in range(singleton_fakes)]
    df = pd.DataFrame(rows, columns=["group", "label", "source"])
    df["sha256"] = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(len(df))]
    df["path"] = [f"/data/{i}.png" for i in range(len(df))]
    return df


def groups_of(manifest, index) -> set:
    return set(manifest["group"].to_numpy()[index])


def test_contract_and_no_group_crosses_roles(tmp_path):
    manifest = synthetic_manifest()
    splits = make_splits(manifest, n_folds=4, cache_dir=tmp_path)
    assert list(splits.columns) == ["sha256", "split", "fold"] and len(splits) == len(manifest)
    assert isinstance(splits.index, pd.RangeIndex)
    assert (splits["sha256"] == manifest["sha256"]).all()
    assert set(splits["split"]) == {"trainval", "test"}
    assert fold_ids(splits) == [0, 1, 2, 3]
    assert (splits.loc[splits["split"] != "trainval", "fold"] == -1).all()
    test_groups = groups_of(manifest, test_indices(splits))
    seen_val = []
    for f in range(4):
        train, val = fold_indices(splits, f)
        assert not groups_of(manifest, train) & groups_of(manifest, val)
        assert not (groups_of(manifest, train) | groups_of(manifest, val)) & test_groups
        seen_val.append(val)
    assert sorted(np.concatenate(seen_val)) == sorted(np.flatnonzero(splits["split"] == "trainval"))
    summary = split_summary(manifest, splits)
    assert (summary["shared_groups"].dropna() == 0).all()
    assert set(summary["role"]) == {"train", "val", "test", "holdout", "unused"}
    assert summary.loc[summary["role"] == "test", "images"].item() == len(test_indices(splits))


def test_test_ratio_and_class_balance_per_fold(tmp_path):
    manifest = synthetic_manifest(n_photos=60, singleton_fakes=60)
    splits = make_splits(manifest, n_folds=5, test_ratio=0.1, cache_dir=None)
    assert 0.05 < len(test_indices(splits)) / len(manifest) < 0.15
    overall = manifest["label"].mean()
    for f in range(5):
        _, val = fold_indices(splits, f)
        assert abs(manifest["label"].to_numpy()[val].mean() - overall) < 0.08
        assert 0.1 < len(val) / (splits["split"] == "trainval").sum() < 0.3


def test_same_seed_same_splits_other_seed_different():
    manifest = synthetic_manifest()
    a = make_splits(manifest, seed=1, cache_dir=None)
    b = make_splits(manifest, seed=1, cache_dir=None)
    c = make_splits(manifest, seed=2, cache_dir=None)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_cache_reuse(tmp_path, monkeypatch):
    manifest = synthetic_manifest()
    first = make_splits(manifest, n_folds=3, cache_dir=tmp_path)
    files = list((tmp_path / "splits").glob("*.csv"))
    assert len(files) == 1
    import lib.data.splits

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(lib.data.splits, "_compute_splits", fail)
    pd.testing.assert_frame_equal(make_splits(manifest, n_folds=3, cache_dir=tmp_path), first)
    with pytest.raises(AssertionError, match="recomputed"):
        make_splits(manifest, n_folds=3, seed=5, cache_dir=tmp_path)     # other parameters: another key


def test_subsample_keeps_whole_groups_and_fraction():
    manifest = synthetic_manifest(n_photos=80, singleton_fakes=80)
    full = make_splits(manifest, subsample=1.0, cache_dir=None)
    half = make_splits(manifest, subsample=0.5, cache_dir=None)
    pd.testing.assert_series_equal(full["split"] == "test", half["split"] == "test")   # test never moves
    n_full, n_half = (full["split"] == "trainval").sum(), (half["split"] == "trainval").sum()
    assert abs(n_half / n_full - 0.5) < 0.08
    unused = groups_of(manifest, np.flatnonzero(half["split"] == "unused"))
    assert not unused & groups_of(manifest, np.flatnonzero(half["split"] == "trainval"))
    trainval_labels = manifest["label"].to_numpy()[half["split"] == "trainval"]
    assert abs(trainval_labels.mean() - manifest["label"].mean()) < 0.05


def test_source_holdout_singleton_groups_go_whole():
    manifest = synthetic_manifest()
    splits = make_splits(manifest, holdout_sources=["gan"], cache_dir=None)
    is_gan = (manifest["source"] == "gan").to_numpy()
    assert (splits["split"].to_numpy()[is_gan] == "holdout").all()
    assert set(holdout_indices(splits)) == set(np.flatnonzero(is_gan))
    assert (splits["split"].to_numpy()[~is_gan] != "holdout").all()


def test_source_holdout_inside_shared_groups_never_meets_training():
    manifest = synthetic_manifest()
    splits = make_splits(manifest, n_folds=3, holdout_sources=["inpaint"], cache_dir=None)
    role = splits["split"].to_numpy()
    inpaint = (manifest["source"] == "inpaint").to_numpy()
    assert set(role[inpaint]) == {"holdout", "unused"}           # never trained or validated on
    assert not (role[~inpaint] == "holdout").any()
    holdout_groups = groups_of(manifest, holdout_indices(splits))
    assert holdout_groups and holdout_groups <= groups_of(manifest, test_indices(splits))
    assert not holdout_groups & groups_of(manifest, np.flatnonzero(role == "trainval"))
    summary = split_summary(manifest, splits)
    assert (summary["shared_groups"].dropna() == 0).all()


def test_single_fold_uses_val_ratio():
    manifest = synthetic_manifest(n_photos=60, singleton_fakes=60)
    splits = make_splits(manifest, n_folds=1, val_ratio=0.2, cache_dir=None)
    assert fold_ids(splits) == [0]
    train, val = fold_indices(splits, 0)
    assert 0.12 < len(val) / (len(train) + len(val)) < 0.28
    assert not groups_of(manifest, train) & groups_of(manifest, val)
    assert set(splits.loc[train, "fold"]) == {-1}


def test_no_test_holdout():
    splits = make_splits(synthetic_manifest(), test_ratio=0, n_folds=2, cache_dir=None)
    assert len(test_indices(splits)) == 0 and set(splits["split"]) == {"trainval"}


def test_fewer_groups_than_folds():
    manifest = synthetic_manifest(n_photos=3, singleton_fakes=0)
    with pytest.raises(SplitError, match="only 3 group"):
        make_splits(manifest, n_folds=5, test_ratio=0, cache_dir=None)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_one_class_validation_fold_is_named():
    # two real-only groups and many fake groups: with 4 folds, some validation fold has no real image
    rows = [("r0", 0, "real"), ("r1", 0, "real")] + [(f"f{i}", 1, "gan") for i in range(12)]
    manifest = pd.DataFrame(rows, columns=["group", "label", "source"])
    manifest["sha256"] = [str(i) for i in range(len(manifest))]
    with pytest.raises(SplitError, match=r"fold \d: its validation part has no real images.*fewer folds"):
        make_splits(manifest, n_folds=4, test_ratio=0, cache_dir=None)


def test_bad_arguments():
    manifest = synthetic_manifest()
    with pytest.raises(SplitError, match="holdout source"):
        make_splits(manifest, holdout_sources=["nope"], cache_dir=None)
    with pytest.raises(SplitError, match="subsample"):
        make_splits(manifest, subsample=0, cache_dir=None)
    with pytest.raises(SplitError, match="RangeIndex"):
        make_splits(manifest.iloc[1:], cache_dir=None)
    splits = make_splits(manifest, n_folds=2, cache_dir=None)
    with pytest.raises(SplitError, match="fold 7 does not exist"):
        fold_indices(splits, 7)


def embedded_like_manifest(photos: int = 19, crops: int = 32, per_source: int = 8, faces: int = 96) -> pd.DataFrame:
    """The default embedded dataset's group structure: each photograph a group of real crops and as many fakes over
    four sources, plus DCGAN faces that are groups of their own."""
    rows = []
    for p in range(photos):
        rows += [(f"photo{p}", 0, "real")] * crops
        rows += [(f"photo{p}", 1, src) for src in ("ae_t", "ae_n", "ae_b", "inpaint") for _ in range(per_source)]
    rows += [(f"dcgan_{i}", 1, "dcgan_faces") for i in range(faces)]
    df = pd.DataFrame(rows, columns=["group", "label", "source"])
    df["sha256"] = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(df))]
    df["path"] = [f"/data/{i}.png" for i in range(len(df))]
    return df


@pytest.mark.parametrize("seed", [42, 0, 1, 7])
def test_default_profile_holds_enough_photographs_per_evaluation_part(seed):
    manifest = embedded_like_manifest()
    assert manifest.loc[manifest["label"] == 0, "group"].nunique() == 19 and manifest["group"].nunique() == 115
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWarning)
        splits = make_splits(manifest, n_folds=3, seed=seed, cache_dir=None)   # the default test_ratio
    summary = split_summary(manifest, splits).set_index(["role", "fold"])
    assert summary.loc[("test", -1), "real_groups"] >= 3
    real_per_fold = [summary.loc[("val", f), "real_groups"] for f in range(3)]
    assert min(real_per_fold) >= 2 and max(real_per_fold) - min(real_per_fold) <= 1   # photographs spread evenly
    assert sum(real_per_fold) + summary.loc[("test", -1), "real_groups"] == 19
    assert not summary["few_groups"].any()


def test_groups_of_each_label_mix_are_spread_evenly():
    manifest = synthetic_manifest(n_photos=23, singleton_fakes=50)
    splits = make_splits(manifest, n_folds=5, test_ratio=0, cache_dir=None)
    summary = split_summary(manifest, splits)
    val = summary[summary["role"] == "val"]
    assert val["real_groups"].max() - val["real_groups"].min() <= 1        # 23 photos: 5 + 5 + 5 + 4 + 4
    assert (val["fake_groups"] - val["real_groups"]).max() - (val["fake_groups"] - val["real_groups"]).min() <= 1


def test_too_few_groups_in_an_evaluation_part_warns_and_is_reported():
    manifest = synthetic_manifest(n_photos=6, singleton_fakes=30)
    with pytest.warns(SplitWarning, match=r"fewer than 2 real or fake groups: test \(1 real"):
        splits = make_splits(manifest, n_folds=2, test_ratio=0.2, cache_dir=None)   # 6 photos over 5 test folds
    summary = split_summary(manifest, splits)
    test_row = summary[summary["role"] == "test"].iloc[0]
    assert test_row["real_groups"] < MIN_EVAL_GROUPS and bool(test_row["few_groups"])
    assert not summary.loc[summary["role"].isin(["train", "unused", "holdout"]), "few_groups"].any()


def test_groups_of_unequal_size_are_spread_by_count_not_by_images():
    # 15 real-only groups of very different sizes (e.g. identities) and fake singletons: balancing images would put
    # one or two big real groups in a part; balancing groups gives every part its share of real groups
    sizes = [2, 3, 5, 8, 12, 20, 30, 45, 60, 90, 120, 160, 220, 300, 400]
    rows = [(f"person{p}", 0, "real") for p, n in enumerate(sizes) for _ in range(n)]
    rows += [(f"gan{i}", 1, "gan") for i in range(sum(sizes))]
    manifest = pd.DataFrame(rows, columns=["group", "label", "source"])
    manifest["sha256"] = [str(i) for i in range(len(manifest))]
    summary = split_summary(manifest, make_splits(manifest, n_folds=3, test_ratio=0.2, cache_dir=None))
    assert summary.loc[summary["role"] == "test", "real_groups"].item() == 3
    assert summary.loc[summary["role"] == "val", "real_groups"].tolist() == [4, 4, 4]
