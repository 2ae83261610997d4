"""Manifest -> split table: group-aware stratified test hold-out and k folds, computed once and saved.

Order of decisions (each one only sees what the previous left):
1. Source hold-out: groups made only of ``holdout_sources`` rows go to "holdout" whole.
2. Test hold-out: one of ``round(1 / test_ratio)`` group folds (below) over the remaining groups. In those test
   groups, rows of held-out sources are "holdout" (evaluation only, like test); in the other groups they are
   "unused", because training on a photo and evaluating on its held-out fake would share content.
3. Subsample: whole groups of the trainval part, stratified by the groups' label mix; the rest is "unused".
4. k folds over trainval. ``n_folds == 1``: one validation part of about ``val_ratio`` (fold 0); the other trainval
   rows get fold -1, i.e. training-only (fold 0's training part is "trainval rows with fold != 0", as for every fold).

That is ``protocol="cv"`` (the default). ``protocol="own"`` keeps the dataset's own train/test split, which the layout
readers record in the manifest's ``orig_split`` column (the split folder's name: train/training, val/valid/validation,
test/testing, any case; "" = none):
1. Source hold-out as above.
2. Test part = the rows whose orig_split is a test name (``test_ratio`` is ignored); held-out sources among them are
   "holdout". Training candidates = rows whose orig_split is a train or val name. Group-aware: a group with a row in
   the test part never trains, its train/val rows are "unused" (near-duplicate merging can join groups across the
   dataset's own split); rows with no recognised orig_split are "unused" too.
3. Subsample as above (the own train and val parts separately, so both keep their share).
4. If the candidates include the dataset's own validation part, it is fold 0's validation part and the training
   rows get fold -1: one fold, ``n_folds`` is ignored (a group with a validation row never trains: its train rows are
   "unused"). Otherwise k folds over the train part exactly as in step 4 above (``n_folds``, ``val_ratio``).

``train_classes`` (either protocol; empty = no filter): folder names, compared case-insensitively with the folders of
each training candidate's path below the folder all manifest paths share; a candidate with none of them is "unused".
The test and holdout parts are never filtered. This is NPR's ForenSynths recipe: train on ProGAN's car, cat, chair and
horse folders, test on every generator.

Group folds: the group is the unit of inference, so groups (not images) are stratified. Each group's stratum is its
label mix (real only, fake only, both) and, when every such stratum spans at least as many groups as there are
folds, its set of sources too. Groups are dealt in a seeded random order (larger groups first) to the fold with the
fewest groups of their stratum, then the fewest images: every fold gets as many groups of each stratum as possible
(counts differ by at most one), e.g. as many real photographs. No group is ever shared between a training/validation
part and test or holdout, nor between a fold's training and validation parts. Test and holdout may share groups: both
are evaluation-only (e.g. a real photo in test and its held-out fake). ``make_splits`` warns (``SplitWarning``) when
the test hold-out or a validation part holds fewer than ``MIN_EVAL_GROUPS`` groups of a class, and
``split_summary`` reports the real and fake groups of every part.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np
import pandas as pd

from lib.fileio import read_table, stable_hash, write_table
from lib.data.manifest import manifest_fingerprint
from lib.paths import CACHE_DIR

SPLIT_COLUMNS = ["sha256", "split", "fold"]
ROLES = ("trainval", "test", "holdout", "unused")
MIN_EVAL_GROUPS = 2   # fewer real (or fake) groups in an evaluation part make its numbers anecdotes
_VERSION = 2   # bump when the algorithm changes, so cached tables are recomputed
PROTOCOLS = ("cv", "own")
TRAIN_SPLIT_NAMES = ("train", "training")        # orig_split values (any case) read by protocol="own"
VAL_SPLIT_NAMES = ("val", "valid", "validation")
TEST_SPLIT_NAMES = ("test", "testing")


class SplitError(ValueError):
    """The requested split cannot be made from this manifest."""


class SplitWarning(UserWarning):
    """The split was made, but an evaluation part holds too few groups of a class."""


# --- helpers ------------------------------------------------------------------------------------------------

def _group_strata(frame: pd.DataFrame, n_splits: int) -> pd.DataFrame:
    """One row per group (sorted by name): size and stratum (label mix, plus the set of sources when every such
    stratum spans at least ``n_splits`` groups and there are at most 62 sources)."""
    per_group = frame.groupby("group", sort=True).agg(size=("label", "size"), lowest=("label", "min"),
                                                      highest=("label", "max"))
    mix = per_group["lowest"].astype(str) + "+" + per_group["highest"].astype(str)   # 0+0, 0+1, 1+1
    per_group["stratum"] = mix
    codes, names = pd.factorize(frame["source"], sort=True)
    if len(names) <= 62:   # a group's set of sources as a bit mask
        bits = pd.DataFrame({"group": frame["group"].to_numpy(), "bit": np.left_shift(1, codes.astype(np.int64))})
        sources = bits.drop_duplicates().groupby("group", sort=True)["bit"].sum()
        fine = mix + "|" + sources.reindex(per_group.index).astype(str)
        if fine.value_counts().min() >= n_splits:
            per_group["stratum"] = fine
    return per_group


def _group_folds(frame: pd.DataFrame, n_splits: int, seed: int, what: str) -> np.ndarray:
    """Fold number (0..n_splits-1) of each row of ``frame``: whole groups, stratified groups (module docstring)."""
    n_groups = frame["group"].nunique()
    if n_groups < n_splits:
        raise SplitError(f"{what}: only {n_groups} group(s) for {n_splits} splits; every split needs at least one "
                         f"whole group. Use fewer folds or a smaller ratio.")
    per_group = _group_strata(frame, n_splits)
    rng = np.random.default_rng(seed)
    shuffled = per_group.iloc[rng.permutation(len(per_group))]
    ordered = shuffled.sort_values(["stratum", "size"], ascending=[True, False], kind="stable")
    sizes, strata = ordered["size"].to_numpy(), ordered["stratum"].to_numpy()
    images_in = np.zeros(n_splits, dtype=np.int64)
    priority = rng.permutation(n_splits)   # breaks the remaining ties
    fold_of = np.empty(len(ordered), dtype=np.int64)
    bounds = np.flatnonzero(np.r_[True, strata[1:] != strata[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:]):   # one stratum: deal its groups in rounds of one per fold
        for start in range(lo, hi, n_splits):
            chunk = np.arange(start, min(start + n_splits, hi))
            folds = np.lexsort((priority, images_in))[:len(chunk)]   # largest group to the fold with fewest images
            fold_of[chunk] = folds
            images_in[folds] += sizes[chunk]
    return frame["group"].map(dict(zip(ordered.index, fold_of))).to_numpy(dtype=np.int64)


def _has_both_labels(labels: pd.Series) -> bool:
    return labels.nunique() == 2


def _subsample_groups(frame: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask keeping whole groups, about ``fraction`` of the rows of each label-mix stratum of groups."""
    per_group = frame.groupby("group").agg(size=("label", "size"), lowest=("label", "min"), highest=("label", "max"))
    per_group["mix"] = per_group["lowest"].astype(str) + "+" + per_group["highest"].astype(str)  # 0+0, 0+1, 1+1
    rng = np.random.default_rng(seed)
    kept: list[str] = []
    for _, stratum in per_group.groupby("mix", sort=True):
        order = stratum.index.to_numpy()[rng.permutation(len(stratum))]
        cumulative = stratum.loc[order, "size"].cumsum().to_numpy()
        target = fraction * cumulative[-1]
        count = max(1, int(np.argmin(np.abs(cumulative - target))) + 1)   # closest row count, at least one group
        kept.extend(order[:count])
    return frame["group"].isin(kept).to_numpy()


def _check_manifest(manifest: pd.DataFrame) -> None:
    missing = {"sha256", "label", "source", "group"} - set(manifest.columns)
    if missing:
        raise SplitError(f"manifest lacks column(s) {sorted(missing)}")
    if not isinstance(manifest.index, pd.RangeIndex) or manifest.index.start != 0 or manifest.index.step != 1:
        raise SplitError("manifest must have a RangeIndex starting at 0 (use .reset_index(drop=True))")


def _own_roles(manifest: pd.DataFrame) -> np.ndarray:
    """Per row: "train", "val", "test" or "" from the manifest's orig_split column (the dataset's own split)."""
    if "orig_split" not in manifest.columns:
        return np.full(len(manifest), "", dtype=object)
    lowered = manifest["orig_split"].fillna("").astype(str).str.strip().str.lower()
    roles = np.full(len(manifest), "", dtype=object)
    for role, names in (("train", TRAIN_SPLIT_NAMES), ("val", VAL_SPLIT_NAMES), ("test", TEST_SPLIT_NAMES)):
        roles[lowered.isin(names).to_numpy()] = role
    return roles


def _folder_parts(manifest: pd.DataFrame) -> list[tuple[str, ...]]:
    """Per row: the lower-cased folder names of its path below the folder that every manifest path shares."""
    if "path" not in manifest.columns:
        raise SplitError("train_classes needs the manifest's path column (folder names are read from the paths)")
    parents = [PurePosixPath(str(p)).parent for p in manifest["path"]]
    common = len(PurePosixPath(os.path.commonpath([p.as_posix() for p in parents])).parts) if parents else 0
    return [tuple(part.lower() for part in p.parts[common:]) for p in parents]


def _class_mask(folders: list[tuple[str, ...]], classes: list[str]) -> np.ndarray:
    wanted = set(classes)
    return np.array([not wanted.isdisjoint(parts) for parts in folders], dtype=bool)


def _check_train_classes(folders: list[tuple[str, ...]], candidates: np.ndarray, classes: list[str]) -> None:
    """SplitError naming every train_classes folder that no training candidate's path has."""
    seen = {part for i in np.flatnonzero(candidates) for part in folders[i]}
    missing = [c for c in classes if c not in seen]
    if missing:
        listed = sorted(seen)
        shown = ", ".join(listed[:40]) + (f", ... ({len(listed)} in all)" if len(listed) > 40 else "")
        raise SplitError(f"train_classes {missing}: no training image has any of these folder names in its path "
                         f"(compared case-insensitively); folders in the training images' paths: {shown or 'none'}")


def _cv_folds(trainval: pd.DataFrame, n_folds: int, val_ratio: float, seed: int) -> np.ndarray:
    """Fold of each trainval row: k group folds, or for ``n_folds == 1`` one validation part (fold 0, the rest -1)."""
    if n_folds >= 2:
        folds = _group_folds(trainval, n_folds, seed, f"{n_folds}-fold cross-validation")
        _check_folds(trainval["label"].to_numpy(), folds, range(n_folds), f"n_folds={n_folds}")
        return folds
    n_splits = max(2, round(1 / val_ratio))
    candidate_folds = _group_folds(trainval, n_splits, seed, f"validation split (val_ratio={val_ratio})")
    labels = trainval["label"].to_numpy()
    chosen = next((f for f in range(n_splits) if _has_both_labels(pd.Series(labels[candidate_folds == f]))
                   and _has_both_labels(pd.Series(labels[candidate_folds != f]))), None)
    if chosen is None:
        raise SplitError(f"no validation part of val_ratio={val_ratio} holds both classes; try a larger val_ratio")
    return np.where(candidate_folds == chosen, 0, -1)


# --- main entry ---------------------------------------------------------------------------------------------

def make_splits(manifest: pd.DataFrame, n_folds: int = 5, test_ratio: float = 0.2, val_ratio: float = 0.1,
                seed: int = 42, subsample: float = 1.0, holdout_sources: Iterable[str] = (),
                cache_dir: str | Path | None = CACHE_DIR, protocol: str = "cv",
                train_classes: Iterable[str] = ()) -> pd.DataFrame:
    """Split table aligned with ``manifest``: sha256, split (trainval/test/holdout/unused), fold (-1 if none).

    ``protocol``: "cv" (group-aware test hold-out of ``test_ratio`` and k folds) or "own" (the dataset's own
    train/val/test split from the manifest's ``orig_split`` column; ``test_ratio`` is ignored, and so is ``n_folds``
    when the dataset has its own validation part). ``train_classes``: folder names the training part is restricted to
    (module docstring). Saved as ``cache_dir/splits/<key>.csv`` (key = hash of the manifest fingerprint and these
    parameters) and reloaded from there when present; ``cache_dir=None`` disables the cache. Warns
    (``SplitWarning``) when the test hold-out or a validation part holds fewer than ``MIN_EVAL_GROUPS`` real or fake
    groups.
    """
    _check_manifest(manifest)
    holdout_sources = sorted(set(holdout_sources))
    if protocol not in PROTOCOLS:
        raise SplitError(f"unknown protocol {protocol!r}; choose one of {', '.join(map(repr, PROTOCOLS))}")
    if isinstance(train_classes, str):   # one folder name, not its letters
        train_classes = [train_classes]
    classes = sorted({str(c).strip().lower() for c in train_classes} - {""})
    if not (isinstance(n_folds, (int, np.integer)) and n_folds >= 1):
        raise SplitError(f"n_folds must be an integer >= 1, got {n_folds!r}")
    if not 0 <= test_ratio <= 0.5:
        raise SplitError(f"test_ratio must be in [0, 0.5] (0 = no test hold-out), got {test_ratio}")
    if n_folds == 1 and not 0 < val_ratio <= 0.5:
        raise SplitError(f"val_ratio must be in (0, 0.5] when n_folds == 1, got {val_ratio}")
    if not 0 < subsample <= 1:
        raise SplitError(f"subsample must be in (0, 1], got {subsample}")
    unknown = set(holdout_sources) - set(manifest["source"].unique())
    if unknown:
        raise SplitError(f"holdout source(s) {sorted(unknown)} not in the manifest; sources are "
                         f"{sorted(manifest['source'].unique())}")
    roles = _own_roles(manifest) if protocol == "own" else None
    if roles is not None and not (roles == "test").any():
        raise SplitError("this dataset has no own test split (orig_split); use protocol='cv'")
    folders = _folder_parts(manifest) if classes else None

    params = {"n_folds": int(n_folds), "test_ratio": float(test_ratio), "val_ratio": float(val_ratio),
              "seed": int(seed), "subsample": float(subsample), "holdout_sources": holdout_sources}
    # only a non-default protocol or class filter enters the key, so "cv" tables keep the keys they always had; the
    # manifest fingerprint covers neither orig_split nor the paths, so what they decide enters the key too
    extra: dict = {}
    if protocol != "cv" or classes:
        extra = {"protocol": protocol, "train_classes": classes,
                 "own_roles": stable_hash(roles.tolist()) if roles is not None else "",
                 "class_mask": stable_hash(_class_mask(folders, classes).astype(int).tolist()) if classes else ""}
    cache_path = None
    if cache_dir is not None:
        key = stable_hash({"version": _VERSION, "manifest": manifest_fingerprint(manifest), **params, **extra})
        cache_path = Path(cache_dir) / "splits" / f"{key}.csv"
        if cache_path.exists():
            cached = read_table(cache_path)
            if len(cached) == len(manifest) and (cached["sha256"].to_numpy() == manifest["sha256"].to_numpy()).all():
                splits = cached.astype({"sha256": str, "split": str, "fold": "int64"})[SPLIT_COLUMNS]
                _warn_few_groups(manifest, splits)
                return splits

    splits = _compute_splits(manifest, **params, own_roles=roles, train_classes=classes, folders=folders)
    if cache_path is not None:
        write_table(cache_path, splits)
    _warn_few_groups(manifest, splits)
    return splits


def _warn_few_groups(manifest: pd.DataFrame, splits: pd.DataFrame) -> None:
    summary = split_summary(manifest, splits)
    few = summary[summary["few_groups"]]
    if len(few):
        parts = ", ".join(f"{'test' if r.role == 'test' else f'fold {r.fold} validation'} ({r.real_groups} real, "
                          f"{r.fake_groups} fake)" for r in few.itertuples())
        warnings.warn(f"evaluation parts with fewer than {MIN_EVAL_GROUPS} real or fake groups: {parts}; their "
                      f"numbers rest on too few independent units. Use a larger test_ratio, fewer folds, or a "
                      f"dataset with more groups.", SplitWarning, stacklevel=3)


def _compute_splits(manifest: pd.DataFrame, n_folds: int, test_ratio: float, val_ratio: float, seed: int,
                    subsample: float, holdout_sources: list[str], own_roles: np.ndarray | None = None,
                    train_classes: list[str] = (), folders: list[tuple[str, ...]] | None = None) -> pd.DataFrame:
    """The split table; ``own_roles`` (``_own_roles``) selects protocol "own", None protocol "cv"."""
    n = len(manifest)
    split = np.full(n, "unused", dtype=object)
    fold = np.full(n, -1, dtype=np.int64)
    held_source = manifest["source"].isin(holdout_sources).to_numpy()
    groups = manifest["group"].to_numpy()

    # 1. groups made only of held-out sources
    pure_holdout = pd.Series(held_source).groupby(groups).transform("all").to_numpy()
    split[pure_holdout] = "holdout"

    # 2. test hold-out over the remaining groups
    rest = np.flatnonzero(~pure_holdout)
    if len(rest) == 0:
        raise SplitError("every group belongs to a held-out source: nothing is left to train on")
    in_test = np.zeros(n, dtype=bool)
    if own_roles is not None:   # the dataset's own test part; a group with a test row never trains
        in_test = (own_roles == "test") & ~pure_holdout
        evaluated = np.isin(groups, pd.unique(groups[in_test | pure_holdout]))
        candidates = np.isin(own_roles, ["train", "val"]) & ~evaluated & ~held_source
    elif test_ratio > 0:
        n_splits = max(2, round(1 / test_ratio))
        frame = manifest.iloc[rest]
        test_folds = _group_folds(frame, n_splits, seed, f"test hold-out (test_ratio={test_ratio})")
        usable = frame["label"].to_numpy()
        chosen = next((f for f in range(n_splits)
                       if _has_both_labels(pd.Series(usable[(test_folds == f) & ~held_source[rest]]))), None)
        if chosen is None:
            raise SplitError(f"no test fold of test_ratio={test_ratio} holds both real and fake images: the groups "
                             f"are too few or too unbalanced; try a larger test_ratio")
        in_test[rest[test_folds == chosen]] = True
    split[in_test & held_source] = "holdout"
    split[in_test & ~held_source] = "test"
    if own_roles is None:
        candidates = ~pure_holdout & ~in_test & ~held_source   # held-out sources in training groups stay "unused"

    # 2b. training restricted to the train_classes folders (test and holdout are never filtered)
    if train_classes:
        _check_train_classes(folders, candidates, train_classes)
        candidates = candidates & _class_mask(folders, train_classes)
    own_val = np.zeros(n, dtype=bool)
    if own_roles is not None:   # the dataset's own validation part: a group with a validation row never trains
        own_val = candidates & (own_roles == "val")
        candidates = candidates & ~(np.isin(groups, pd.unique(groups[own_val])) & ~own_val)
    if not candidates.any():
        if own_roles is not None:
            raise SplitError("no training images remain: protocol 'own' trains on the images whose orig_split is "
                             "train/training or val/valid/validation and whose group has no test image, less the "
                             "held-out sources and the folders outside train_classes; this dataset has none")
        raise SplitError("no training images remain after the test hold-out, the source hold-out and train_classes")

    # 3. subsample of the trainval part (the own validation part on its own, so it keeps its share)
    idx = np.flatnonzero(candidates)
    if subsample < 1:
        if own_val.any():
            parts = [np.flatnonzero(candidates & ~own_val), np.flatnonzero(own_val)]
            idx = np.sort(np.concatenate([p[_subsample_groups(manifest.iloc[p], subsample, seed)] for p in parts]))
        else:
            idx = idx[_subsample_groups(manifest.iloc[idx], subsample, seed)]
    split[idx] = "trainval"
    trainval = manifest.iloc[idx]
    if not _has_both_labels(trainval["label"]):
        if own_roles is None and not train_classes:
            raise SplitError("the training part holds only one class after the test hold-out, source hold-out and "
                             "subsample; use a larger subsample or fewer held-out sources")
        only = "real" if int(trainval["label"].iloc[0]) == 0 else "fake"
        first = "dataset's own test split" if own_roles is not None else "test hold-out"
        raise SplitError(f"the training part holds only one class ({only} images) after the {first}, source "
                         f"hold-out, train_classes {list(train_classes)} and subsample; a detector needs both real "
                         f"and fake training images")

    # 4. folds: the dataset's own validation part, else group folds over the training part
    if own_val.any():
        folds = np.where(own_val[idx], 0, -1)
        labels = trainval["label"].to_numpy()
        for part, mask in (("validation", folds == 0), ("training", folds != 0)):
            present = set(np.unique(labels[mask]).tolist())
            if present != {0, 1}:
                missing = "images" if not present else "fake images" if 1 not in present else "real images"
                raise SplitError(f"the dataset's own {part} part (orig_split "
                                 f"{'val/valid/validation' if part == 'validation' else 'train/training'}) has no "
                                 f"{missing} after the test part, source hold-out, train_classes and subsample")
    else:
        folds = _cv_folds(trainval, n_folds, val_ratio, seed)
    fold[idx] = folds
    return pd.DataFrame({"sha256": manifest["sha256"].astype(str).to_numpy(), "split": split.astype(str),
                         "fold": fold})


def _check_folds(labels: np.ndarray, folds: np.ndarray, fold_range: Iterable[int], setting: str) -> None:
    for f in fold_range:
        for part, mask in (("validation", folds == f), ("training", folds != f)):
            present = set(np.unique(labels[mask]).tolist())
            if present != {0, 1}:
                missing = "fake" if 1 not in present else "real"
                raise SplitError(f"fold {f}: its {part} part has no {missing} images ({setting}); the classes are "
                                 f"spread over too few groups, use fewer folds")


# --- accessors ----------------------------------------------------------------------------------------------

def fold_ids(splits: pd.DataFrame) -> list[int]:
    """Folds that have a validation part (0..k-1)."""
    trainval = splits["split"] == "trainval"
    return sorted(int(f) for f in splits.loc[trainval & (splits["fold"] >= 0), "fold"].unique())


def fold_indices(splits: pd.DataFrame, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): row positions of fold ``fold``'s training and validation parts."""
    available = fold_ids(splits)
    if fold not in available:
        raise SplitError(f"fold {fold} does not exist; this split table has folds {available}")
    trainval = (splits["split"] == "trainval").to_numpy()
    is_fold = (splits["fold"] == fold).to_numpy()
    return np.flatnonzero(trainval & ~is_fold), np.flatnonzero(trainval & is_fold)


def test_indices(splits: pd.DataFrame) -> np.ndarray:
    return np.flatnonzero((splits["split"] == "test").to_numpy())


test_indices.__test__ = False   # the contract's name starts with "test_": keep pytest from collecting it


def holdout_indices(splits: pd.DataFrame) -> np.ndarray:
    return np.flatnonzero((splits["split"] == "holdout").to_numpy())


def part_indices(splits: pd.DataFrame, fold: int) -> dict[str, np.ndarray]:
    """Row positions of the fold's training and validation parts, the test hold-out and the source hold-out."""
    train_idx, val_idx = fold_indices(splits, fold)
    return {"train": train_idx, "val": val_idx, "test": test_indices(splits), "holdout": holdout_indices(splits)}


def split_summary(manifest: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Per fold and role: images, real, fake, groups, real_groups and fake_groups (groups holding a real/fake image
    there), sources, ``shared_groups`` = groups the role shares with a role it must be disjoint from (0 in a sound
    table; NA for "unused", which is never read), and ``few_groups`` = a validation or test part with fewer than
    ``MIN_EVAL_GROUPS`` real or fake groups."""
    if len(manifest) != len(splits):
        raise SplitError(f"split table has {len(splits)} rows but the manifest {len(manifest)}")
    groups = manifest["group"].to_numpy()
    role_of = splits["split"].to_numpy()
    evaluation = set(groups[np.isin(role_of, ["test", "holdout"])])
    trainval_groups = set(groups[role_of == "trainval"])

    parts: list[tuple[int, str, np.ndarray, set | None]] = []
    for f in fold_ids(splits):
        train_idx, val_idx = fold_indices(splits, f)
        train_g, val_g = set(groups[train_idx]), set(groups[val_idx])
        parts.append((f, "train", train_idx, val_g | evaluation))
        parts.append((f, "val", val_idx, train_g | evaluation))
    parts.append((-1, "test", test_indices(splits), trainval_groups))
    parts.append((-1, "holdout", holdout_indices(splits), trainval_groups))
    parts.append((-1, "unused", np.flatnonzero(role_of == "unused"), None))

    labels = manifest["label"].to_numpy()
    sources = manifest["source"].to_numpy()
    rows = []
    for f, role, index, disjoint_from in parts:
        own = set(groups[index])
        real_groups = len(set(groups[index][labels[index] == 0]))
        fake_groups = len(set(groups[index][labels[index] == 1]))
        evaluated = role in ("val", "test") and len(index) > 0
        rows.append({"fold": f, "role": role, "images": len(index), "real": int((labels[index] == 0).sum()),
                     "fake": int((labels[index] == 1).sum()), "groups": len(own), "real_groups": real_groups,
                     "fake_groups": fake_groups, "sources": len(set(sources[index])),
                     "shared_groups": pd.NA if disjoint_from is None else len(own & disjoint_from),
                     "few_groups": evaluated and min(real_groups, fake_groups) < MIN_EVAL_GROUPS})
    summary = pd.DataFrame(rows)
    summary["shared_groups"] = summary["shared_groups"].astype("Int64")
    return summary
