"""Analyses of notebook 08: NPR vs multi-scale attention NPR (hypotheses H2, H3), scale ablations, attention.

Vocabulary. An *arm* is one trained configuration (a registry model plus its kwargs) under a `condition` label;
`run_arms` trains or loads every fold of every arm through the run store and tags the fold table and the
predictions with that label, so the generic comparison layer (`lib.evaluation.compare`, `by="condition"`) applies.
The arms: `npr` (Tan et al.: one scale, 0.5, ResNet-50 trunk), `npr_multiscale` (several scales, one small branch
each, learned attention), its architecture-matched control `npr_multiscale_single` (the same branch, attention
MLP and head at NPR's single scale 0.5) and the uniform-weights control `npr_multiscale_uniform`.

Input. NPR measures the residue nearest-neighbour up-sampling leaves between neighbouring pixels, which any
resampling (resize, antialiasing) erases. Every arm therefore reads the same cache, `npr_recipe(window)`: the
centred window x window of native pixels (`Recipe(mode="native_crop")`, never resampled); training takes a random
crop x crop window of it per image and epoch (`npr_augment(crop)`: `AugmentPolicy.crop`, plus horizontal flips,
which only move pixels; no resized crop, blur, noise or JPEG); evaluation sees the whole stored window (the trunks
are fully convolutional with global average pooling, so they take any size; as in the NPR paper, which trains on
random crops and tests on whole images).

Evaluation (the study's protocol, `lib.evaluation.compare`): predictions pooled into evaluation sets, ``oof`` (every
trainval group validated once) and ``test`` (fold models' mean probability on the test hold-out); intervals by
cluster bootstrap over groups with group counts beside every number (`metric_intervals`); every verdict from the one
comparison rule `compare_family` (paired over the same resampled groups, Holm within each set). H3 scores two views
of the H3 split's test hold-out: ``unseen`` (the real test images plus the fakes of the held-out sources) and
``seen`` (the same real test images plus the test fakes of the training sources); the seen - unseen gap of one model
is paired through those shared real images (`seen_unseen_gap`). Fold tables (`lib.evaluation.compare.cv_summary`,
`fold_tests`) are a secondary, training-noise view; the NPR-paper table (per fake source, accuracy at 0.5 and AP,
mean ± std over fold models) is descriptive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps
from lib.progress import tqdm

from lib.data.augment import AugmentPolicy
from lib.data.recipes import Recipe
from lib.data.splits import fold_ids
from lib.evaluation.compare import (N_BOOT, compare_family, cv_summary, describe_family_row, evaluation_set,
                                    fold_tests, groups_are_images, interval_text, metric_intervals,
                                    require_validation, summary_wide, test_set_comparison)
from lib.evaluation.metrics import binary_metrics
from lib.evaluation.stats import (cluster_bootstrap_counts, group_strata, holm, percentile_interval, summarize,
                                  weighted_auc)
from lib.fileio import write_table
from lib.paths import RUNS_DIR
from lib.studies.common import Study, named_sources

SOURCE_METRICS = ("balanced_accuracy", "accuracy", "auc", "ap")
MEAN_ROW = "mean"
CONTROL = "npr_multiscale_single"  # H2's architecture-matched control: npr_multiscale at NPR's single scale
SINGLE_SCALE = (0.5,)
ARM_NAMES = ("npr", "npr_multiscale", CONTROL, "npr_multiscale_uniform")
# the claims of H2, H3 and the external set, the architecture-matched control first (the primary comparison):
# multi-scale attention NPR beats the same architecture at one scale, plain NPR, and its uniform-weights control
CLAIM_PAIRS = (("npr_multiscale", CONTROL), ("npr_multiscale", "npr"), ("npr_multiscale", "npr_multiscale_uniform"))
H2_SETS = ("oof", "test")
H3_SETS = ("unseen", "seen")
FOLD_COLUMNS = ["condition", "fold", "trained", "epochs", "best_epoch", "seconds", "n_parameters", "val_auc", "test_auc",
                "test_accuracy"]
FAMILY_VIEW = ["claim", "set", "estimate_a", "estimate_b", "diff", "ci_low", "ci_high", "level", "p_holm", "verdict",
               "real_groups", "fake_groups", "real_images", "fake_images", "note"]
UNSEEN = " (unseen)"  # label suffix of a held-out source in H3's tables and figures


# ----------------------------------------------------------------------------- input: native pixels

def npr_recipe(window: int) -> Recipe:
    """The cache every NPR arm reads: the centred `window` x `window` of native pixels, never resampled."""
    return Recipe(size=int(window), mode="native_crop")


def npr_augment(crop: int, hflip_p: float = 0.5) -> AugmentPolicy:
    """Training-time policy of every NPR arm: a random `crop` x `crop` window (0: the whole stored window) and
    horizontal flips; nothing that resamples or changes pixel values."""
    return AugmentPolicy(hflip_p=hflip_p, crop=int(crop))


MAX_AUTO_WINDOW = 256  # window_size 0 takes the smallest image side, at most this (the NPR paper's 256 px images)


def resolve_input(manifest: pd.DataFrame, window: int = 0, crop: int = 0) -> tuple[int, int]:
    """(window, crop) in pixels, checked against the images before any cache is built.

    `window` 0: the largest square every image has (its smallest side), at most `MAX_AUTO_WINDOW`. `crop` 0: 7/8 of
    the window rounded down to a multiple of 4 (the NPR paper's 224 px crops of 256 px images); set `crop` equal to
    `window` to train on the whole window. Raises when an image is smaller than the window or the crop exceeds it.
    """
    sides = np.minimum(manifest["width"], manifest["height"]) if {"width", "height"} <= set(manifest.columns) else None
    if not window:
        if sides is None:
            raise ValueError("window_size 0 (automatic) needs the manifest's width and height columns")
        window = min(int(sides.min()), MAX_AUTO_WINDOW)
    window, crop = int(window), int(crop) or max(4, int(window * 7 / 8) // 4 * 4)
    if crop > window:
        raise ValueError(f"crop_size {crop} exceeds window_size {window}: the training crop is taken from the window")
    if sides is not None and (sides < window).any():
        raise ValueError(f"window_size {window} needs images of at least {window}x{window} native pixels; "
                         f"{int((sides < window).sum())} of {len(manifest)} images are smaller (smallest side "
                         f"{int(sides.min())} px). Lower window_size to at most {int(sides.min())}, or set it to 0.")
    return window, crop


def describe_input(recipe: Recipe, augment: AugmentPolicy | None) -> str:
    """What every NPR arm sees, in one line."""
    crop = augment.crop if augment is not None else 0
    flip = augment.hflip_p if augment is not None else 0.0
    train = (f"a random {crop}x{crop} window of it per image and epoch" if crop else "the whole window")
    return (f"Input of every arm: the centred {recipe.size}x{recipe.size} window of native pixels ({recipe.mode}, never "
            f"resampled); training sees {train} (horizontal flip p = {flip:g}; no resizing, blur, noise or JPEG); "
            f"evaluation sees the whole {recipe.size}x{recipe.size} window.")


# ----------------------------------------------------------------------------- arms and runs

@dataclass(frozen=True)
class Arm:
    """One compared configuration: `condition` (label), registry `model`, its `kwargs`, and the training policy
    when it differs from the shared one (`augment`; None: the training configuration's own)."""

    condition: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    augment: AugmentPolicy | None = None

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(self.kwargs.get("scales", SINGLE_SCALE))


def check_scales(scales: Iterable[float]) -> tuple[float, ...]:
    """Validated, de-duplicated, sorted scale tuple (each an NPR factor p/q in (0, 1))."""
    from lib.models.npr import npr_crop_size

    out = tuple(sorted({float(s) for s in scales}))
    if not out:
        raise ValueError("a scale set needs at least one scale")
    for s in out:
        npr_crop_size(16, 16, s)  # raises a clear error for a factor outside (0, 1) or not p/q
    return out


def scale_label(scales: Iterable[float]) -> str:
    """'0.25+0.5+0.75' for a scale set."""
    return "+".join(f"{s:g}" for s in check_scales(scales))


def multiscale_kwargs(scales: Iterable[float], attention: str = "learned", entropy_weight: float = 0.0) -> dict:
    """Explicit kwargs of `npr_multiscale`: equal arms always give equal run keys (hence reuse, never retraining)."""
    return {"scales": list(check_scales(scales)), "attention": attention, "entropy_weight": float(entropy_weight)}


def hypothesis_arms(scales: Iterable[float], entropy_weight: float = 0.0,
                    conditions: Sequence[str] = ARM_NAMES) -> list[Arm]:
    """The H2/H3 arms named in `conditions` (in `ARM_NAMES` order): `npr` (single scale 0.5), `npr_multiscale`
    (learned attention over `scales`), `npr_multiscale_single` (the same architecture at scale 0.5 only: the
    architecture-matched control) and `npr_multiscale_uniform` (fixed weights 1/S)."""
    unknown = sorted(set(conditions) - set(ARM_NAMES))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; valid: {list(ARM_NAMES)}")
    if "npr_multiscale" not in conditions:
        raise ValueError("the hypotheses compare npr_multiscale with its controls: name it among the conditions")
    arms = {"npr": Arm("npr", "npr"),
            "npr_multiscale": Arm("npr_multiscale", "npr_multiscale", multiscale_kwargs(scales, "learned", entropy_weight)),
            CONTROL: Arm(CONTROL, "npr_multiscale", multiscale_kwargs(SINGLE_SCALE, "learned", entropy_weight)),
            "npr_multiscale_uniform": Arm("npr_multiscale_uniform", "npr_multiscale",
                                          multiscale_kwargs(scales, "uniform", entropy_weight))}
    return [arms[name] for name in ARM_NAMES if name in conditions]


def ablation_arms(reference: Iterable[float], scale_sets: Sequence[Iterable[float]], entropy_weight: float = 0.0) -> list[Arm]:
    """Learned-attention `npr_multiscale` arms, the reference set first, one per distinct scale set."""
    arms, seen = [], set()
    for scales in [reference, *scale_sets]:
        key = check_scales(scales)
        if key in seen:
            continue
        seen.add(key)
        arms.append(Arm(f"scales {scale_label(key)}", "npr_multiscale", multiscale_kwargs(key, "learned", entropy_weight)))
    return arms


def run_arms(dataset: Any, splits: pd.DataFrame, recipe: Any, config: Any, arms: Sequence[Arm],
             runs_dir: str | Path = RUNS_DIR, progress: bool = True,
             cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or load) every fold of every arm: (fold table, predictions), both with `condition` and `scales`."""
    from lib.training.runstore import CVJob, collect_predictions, run_cv_many

    if not arms:
        raise ValueError("run_arms: no arms given")
    labels = [a.condition for a in arms]
    if len(set(labels)) != len(labels):
        raise ValueError(f"run_arms: condition labels must be unique, got {labels}")
    jobs = [CVJob(recipe, arm.model, config if arm.augment is None else replace(config, augment=arm.augment), arm.kwargs)
            for arm in arms]
    tables = run_cv_many(dataset, splits, jobs,
                         runs_dir=runs_dir, progress=progress, **({} if cache_dir is None else {"cache_dir": cache_dir}))
    cv = pd.concat([cv.assign(condition=arm.condition, scales=scale_label(arm.scales)) for arm, cv in zip(arms, tables)],
                   ignore_index=True)
    predictions = collect_predictions(cv, runs_dir=runs_dir)
    tags = cv.set_index("run_key")[["condition", "scales"]]
    predictions = predictions.join(tags, on="run_key")
    return cv, predictions


def resolve_holdout_sources(manifest: pd.DataFrame, requested: Sequence[str] = ()) -> list[str]:
    """The fake sources held out for H3. Empty `requested`: the second half of the fake sources (sorted).

    Raises when a requested source is unknown or real, or when no fake source would be left for training.
    """
    fakes = sorted(manifest.loc[manifest["label"] == 1, "source"].astype(str).unique())
    if len(fakes) < 2:
        raise ValueError(f"H3 needs at least two fake sources (one to train on, one held out); the dataset has {fakes}")
    if not requested:
        return fakes[len(fakes) - len(fakes) // 2:]
    requested = sorted(set(map(str, requested)))
    unknown = sorted(set(requested) - set(fakes))
    if unknown:
        raise ValueError(f"holdout_sources {unknown} are not fake sources of this dataset; fake sources: {fakes}")
    if set(requested) == set(fakes):
        raise ValueError(f"holdout_sources {requested} leave no fake source to train on")
    return requested


def arm_table(arms: Sequence[Arm]) -> pd.DataFrame:
    """One row per arm: condition, registry model and its kwargs."""
    return pd.DataFrame([{"condition": a.condition, "model": a.model, **a.kwargs} for a in arms])


def describe_setup(study: Study, recipe: Any, config: Any) -> str:
    """One line about the shared split table, the recipe and the training configuration."""
    return (f"{len(study.manifest)} images, {len(fold_ids(study.splits))} folds, test hold-out of "
            f"{int((study.splits['split'] == 'test').sum())} images; recipe {recipe}; {config}")


def map_scales(arms: Sequence[Arm]) -> list[float]:
    """Every scale of `arms` plus NPR's own 0.5, sorted: the columns of the NPR map figure."""
    return sorted({s for arm in arms for s in arm.scales} | {0.5})


def holdout_plan(manifest: pd.DataFrame, requested: Sequence[str] = (),
                 data_root: str = "") -> tuple[list[str], list[str], str]:
    """H3's held-out fake sources, the seen ones (manifest order) and a note about requested sources this dataset
    lacks (`lib.studies.common.named_sources`: on your own data they are dropped, then the default rule applies)."""
    named, note = named_sources(manifest, requested, data_root)
    held = resolve_holdout_sources(manifest, named)
    seen = [s for s in manifest.loc[manifest["label"] == 1, "source"].unique() if s not in held]
    return held, seen, note


def split_counts(study: Study) -> pd.DataFrame:
    """Images per source (rows) and split (columns) of a study's split table."""
    return study.splits.assign(source=study.manifest["source"]).pivot_table(
        index="source", columns="split", values="sha256", aggfunc="count", fill_value=0)


# ----------------------------------------------------------------------------- evaluation sets and metrics

def _evaluation_rows(predictions: pd.DataFrame, real_splits: Sequence[str], fake_splits: Sequence[str],
                     fake_sources: Sequence[str] | None = None) -> pd.DataFrame:
    real = (predictions["label"] == 0) & predictions["split"].isin(real_splits)
    fake = (predictions["label"] == 1) & predictions["split"].isin(fake_splits)
    if fake_sources is not None:
        fake &= predictions["source"].isin(fake_sources)
    return predictions[real | fake]


def _metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    m = binary_metrics(labels, probs)
    return {"n_real": m["n_real"], "n_fake": m["n_fake"], "auc": m["auc"], "ap": m["ap"], "accuracy": m["accuracy"],
            "balanced_accuracy": float(np.nanmean([m["real_accuracy"], m["fake_accuracy"]]))
            if m["n"] else float("nan")}


def fold_metrics(predictions: pd.DataFrame, by: str = "condition", real_splits: Sequence[str] = ("test",),
                 fake_splits: Sequence[str] = ("test",), fake_sources: Sequence[str] | None = None,
                 prefix: str = "test") -> pd.DataFrame:
    """One row per (by, fold): `{prefix}_auc/_ap/_accuracy/_balanced_accuracy/_n_real/_n_fake` on the evaluation
    set made of the real images of `real_splits` and the fakes of `fake_splits` (optionally only `fake_sources`)."""
    _require(predictions, {by, "fold", "split", "label", "source", "probability"})
    rows = []
    part = _evaluation_rows(predictions, real_splits, fake_splits, fake_sources)
    groups = dict(list(part.groupby([by, "fold"], sort=False)))
    for level, fold in predictions[[by, "fold"]].drop_duplicates().itertuples(index=False):
        sel = groups.get((level, fold), part.iloc[:0])  # a fold model with no row in the set: NaN metrics
        m = _metrics(sel["label"].to_numpy(), sel["probability"].to_numpy())
        rows.append({by: level, "fold": int(fold), **{f"{prefix}_{k}": v for k, v in m.items()}})
    return pd.DataFrame(rows)


def source_metrics(predictions: pd.DataFrame, by: str = "condition", real_splits: Sequence[str] = ("test",),
                   fake_splits: Sequence[str] = ("test",)) -> pd.DataFrame:
    """Per (by, fold, fake source): metrics on that source's fakes plus every real image of `real_splits`;
    plus a `mean` source row per (by, fold): the unweighted mean over the fake sources (as the NPR paper's mean)."""
    _require(predictions, {by, "fold", "split", "label", "source", "probability"})
    part = _evaluation_rows(predictions, real_splits, fake_splits)
    rows = []
    for (level, fold), group in part.groupby([by, "fold"], sort=False):
        real = group[group["label"] == 0]
        fakes = group[group["label"] == 1]
        per_source = []
        for source, own in fakes.groupby("source", sort=True):
            sel = pd.concat([real, own])
            m = _metrics(sel["label"].to_numpy(), sel["probability"].to_numpy())
            per_source.append({by: level, "fold": int(fold), "source": str(source), **m})
        if not per_source:
            continue
        rows.extend(per_source)
        frame = pd.DataFrame(per_source)
        rows.append({by: level, "fold": int(fold), "source": MEAN_ROW, "n_real": int(len(real)),
                     "n_fake": int(frame["n_fake"].sum()),
                     **{k: float(frame[k].mean()) for k in SOURCE_METRICS}})
    return pd.DataFrame(rows)


def source_summary(per_fold: pd.DataFrame, by: str = "condition") -> pd.DataFrame:
    """`source_metrics` summarised over folds: one row per (by, source), `<metric>_mean/_std/_ci_low/_ci_high/_n`."""
    rows = []
    for (level, source), group in per_fold.groupby([by, "source"], sort=False):
        row = {by: level, "source": source, "n_real": int(group["n_real"].iloc[0]), "n_fake": int(group["n_fake"].iloc[0])}
        for metric in SOURCE_METRICS:
            row.update({f"{metric}_{k}": v for k, v in summarize(group[metric]).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def npr_paper_table(summary: pd.DataFrame, by: str = "condition", metrics: Sequence[str] = ("balanced_accuracy", "ap"),
                    percent: bool = True, digits: int = 1) -> pd.DataFrame:
    """NPR-paper layout: rows = fake sources then `mean`, columns = (condition, metric), cells `mean ± std` over folds."""
    scale = 100.0 if percent else 1.0
    names = {"balanced_accuracy": "acc", "accuracy": "acc (raw)", "ap": "AP", "auc": "AUC"}
    sources = [s for s in dict.fromkeys(summary["source"]) if s != MEAN_ROW] + [MEAN_ROW]
    cols = {}
    for level in dict.fromkeys(summary[by]):
        sub = summary[summary[by] == level].set_index("source")
        for metric in metrics:
            mean, std = sub[f"{metric}_mean"] * scale, sub[f"{metric}_std"] * scale
            text = [f"{m:.{digits}f} ± {s:.{digits}f}" if pd.notna(s) else (f"{m:.{digits}f}" if pd.notna(m) else "")
                    for m, s in zip(mean, std)]
            cols[(level, names.get(metric, metric))] = pd.Series(text, index=sub.index)
    table = pd.DataFrame(cols).reindex(sources)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=[by, "metric"])
    table.index.name = "source"
    return table


def unseen_fold_metrics(predictions: pd.DataFrame, held: Sequence[str], seen: Sequence[str],
                        by: str = "condition") -> pd.DataFrame:
    """H3's fold table: `unseen_*` on the real test images plus the held-out fakes, `seen_*` on the real test images
    plus the test fakes of the `seen` sources, and `gap_auc` = seen - unseen AUC."""
    unseen = fold_metrics(predictions, by, ("test",), ("holdout",), held, prefix="unseen")
    folds = unseen.merge(fold_metrics(predictions, by, ("test",), ("test",), seen, prefix="seen"), on=[by, "fold"])
    folds["gap_auc"] = folds["seen_auc"] - folds["unseen_auc"]
    return folds


def mark_unseen(sources: Iterable[str], held: Sequence[str]) -> list[str]:
    """Source names, the held-out ones suffixed ' (unseen)'."""
    return [f"{s}{UNSEEN}" if s in held else s for s in sources]


def holdout_source_summary(predictions: pd.DataFrame, held: Sequence[str], by: str = "condition") -> pd.DataFrame:
    """H3's `source_summary` (real test images against each test or held-out fake source) with a third column
    `in_training`: seen, unseen, or all for the mean row."""
    summary = source_summary(source_metrics(predictions, by, ("test",), ("test", "holdout")), by)
    summary.insert(2, "in_training", np.select([summary["source"].isin(held), summary["source"] == MEAN_ROW],
                                               ["unseen", "all"], "seen"))
    return summary


def holdout_paper_table(summary: pd.DataFrame, held: Sequence[str], by: str = "condition") -> pd.DataFrame:
    """`npr_paper_table` of H3 with the held-out sources marked unseen."""
    table = npr_paper_table(summary, by)
    table.index = mark_unseen(table.index, held)
    return table




# ----------------------------------------------------------------------------- group-level evaluation (the protocol)

def present_pairs(frame: pd.DataFrame, pairs: Sequence[tuple[str, str]], by: str = "condition") -> list[tuple[str, str]]:
    """The pairs whose two levels were both run (a profile may leave a control out)."""
    levels = set(frame[by])
    return [(a, b) for a, b in pairs if a in levels and b in levels and a != b]


def as_test_view(predictions: pd.DataFrame, real_splits: Sequence[str] = ("test",),
                 fake_splits: Sequence[str] = ("test",), fake_sources: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of one evaluation view (real images of `real_splits`, fakes of `fake_splits`, optionally only
    `fake_sources`) relabelled split "test", so that `lib.evaluation.compare` scores them as one fold-ensemble set."""
    return _evaluation_rows(predictions, real_splits, fake_splits, fake_sources).assign(split="test")


def h3_views(predictions: pd.DataFrame, held: Sequence[str], seen: Sequence[str]) -> dict[str, pd.DataFrame]:
    """H3's two views of the H3 split's test hold-out, sharing its real images: ``unseen`` (plus the fakes of the
    held-out sources, split "holdout") and ``seen`` (plus the test fakes of the training sources)."""
    return {"unseen": as_test_view(predictions, ("test",), ("holdout",), held),
            "seen": as_test_view(predictions, ("test",), ("test",), seen)}


def view_intervals(views: dict[str, pd.DataFrame], by: str = "condition", n_boot: int = N_BOOT) -> pd.DataFrame:
    """`metric_intervals` (AUC) of each view, its `set` column named after the view."""
    return pd.concat([metric_intervals(frame, by, sets=("test",), n_boot=n_boot).assign(set=name)
                      for name, frame in views.items()], ignore_index=True)


def view_family(views: dict[str, pd.DataFrame], pairs: Sequence[tuple[str, str]], by: str = "condition",
                n_boot: int = N_BOOT) -> pd.DataFrame:
    """`compare_family` (AUC, claim a > b) on each view: one family per view (Holm within it), like one set."""
    frames = [compare_family(frame, by, present_pairs(frame, pairs, by), sets=("test",), n_boot=n_boot).assign(set=name)
              for name, frame in views.items() if present_pairs(frame, pairs, by)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def seen_unseen_gap(predictions: pd.DataFrame, held: Sequence[str], seen: Sequence[str], by: str = "condition",
                    n_boot: int = N_BOOT, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Per level of `by`: seen AUC, unseen AUC and the gap seen - unseen of its fold ensemble, with the gap's
    cluster-bootstrap interval over groups.

    Both AUCs use the same real test images; each replicate resamples the groups once (stratified by label mix, as
    `compare.metric_intervals`) and scores both views on it, so the gap is paired through the shared real images and
    the groups behind both views' fakes. Descriptive (no verdict): H3's claims are `view_family`'s.
    """
    views = {name: evaluation_set(frame, by, "test") for name, frame in h3_views(predictions, held, seen).items()}
    rows = []
    for level in dict.fromkeys(views["unseen"][by]):
        unseen = views["unseen"][views["unseen"][by] == level]
        seen_v = views["seen"][views["seen"][by] == level]
        frame = pd.concat([unseen[unseen["label"] == 0].assign(view="real"), seen_v[seen_v["label"] == 1].assign(view="seen"),
                           unseen[unseen["label"] == 1].assign(view="unseen")], ignore_index=True)
        groups = frame["group"].astype(str) if "group" in frame.columns else frame["path"].astype(str)
        codes, names = pd.factorize(groups)
        labels = frame["label"].astype(int).to_numpy()
        prob = frame["probability"].to_numpy(dtype=float)
        has_real = np.bincount(codes, weights=labels == 0, minlength=len(names)) > 0
        has_fake = np.bincount(codes, weights=labels == 1, minlength=len(names)) > 0
        counts = cluster_bootstrap_counts(group_strata(has_real, has_fake), n_boot, seed)
        ones = np.ones((1, len(names)), dtype=int)
        row: dict[str, Any] = {by: level}
        reps = {}
        for view in ("seen", "unseen"):
            sel = frame["view"].isin(["real", view]).to_numpy()
            row[f"{view}_auc"] = float(weighted_auc(codes[sel], labels[sel], prob[sel], ones)[0])
            reps[view] = weighted_auc(codes[sel], labels[sel], prob[sel], counts)
            row[f"{view}_fake_groups"] = int(groups[frame["view"] == view].nunique())
            row[f"{view}_fake_images"] = int((frame["view"] == view).sum())
        row["real_groups"] = int(groups[frame["view"] == "real"].nunique())
        row["real_images"] = int((frame["view"] == "real").sum())
        row["gap"] = row["seen_auc"] - row["unseen_auc"]
        enough = row["real_groups"] >= 2 and row["seen_fake_groups"] >= 2 and row["unseen_fake_groups"] >= 2
        low, high = percentile_interval(reps["seen"] - reps["unseen"], confidence) if enough else (math.nan, math.nan)
        row.update(ci_low=low, ci_high=high, note="" if enough else (
            "interval undefined: each view needs at least 2 real and 2 fake groups"))
        rows.append(row)
    return pd.DataFrame(rows)


def gap_text(row: dict | pd.Series, digits: int = 3) -> str:
    """'seen 0.93, unseen 0.71, gap +0.22 [0.10, 0.31]; 3 real / 12 seen-fake / 6 unseen-fake groups'."""
    ci = "" if pd.isna(row["ci_low"]) else f" [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]"
    return (f"seen AUC {row['seen_auc']:.{digits}f}, unseen AUC {row['unseen_auc']:.{digits}f}, gap "
            f"{row['gap']:+.{digits}f}{ci}; {int(row['real_groups'])} real / {int(row['seen_fake_groups'])} seen-fake / "
            f"{int(row['unseen_fake_groups'])} unseen-fake groups")


def source_intervals(predictions: pd.DataFrame, by: str = "condition", real_splits: Sequence[str] = ("test",),
                     fake_splits: Sequence[str] = ("test",), held: Sequence[str] = (),
                     n_boot: int = N_BOOT) -> pd.DataFrame:
    """Per fake source (its fakes of `fake_splits` against every real image of `real_splits`) and level of `by`:
    the fold ensemble's AUC with its group-bootstrap interval and counts; `in_training` marks the `held` sources."""
    fakes = predictions[(predictions["label"] == 1) & predictions["split"].isin(fake_splits)]
    frames = []
    for source in sorted(fakes["source"].astype(str).unique()):
        view = as_test_view(predictions, real_splits, fake_splits, [source])
        frames.append(metric_intervals(view, by, sets=("test",), n_boot=n_boot).assign(
            source=source, in_training="unseen" if source in held else "seen"))
    out = pd.concat(frames, ignore_index=True)
    return out[[by, "source", "in_training", *[c for c in out.columns if c not in (by, "source", "in_training")]]]


def intervals_table(intervals: pd.DataFrame, by: str = "condition", metric: str = "auc") -> pd.DataFrame:
    """`interval_text` of each (level, set): one row per level, one column per set (e.g. oof, test)."""
    part = intervals[intervals["metric"] == metric]
    text = part.apply(interval_text, axis=1)
    return part.assign(text=text).pivot(index=by, columns="set", values="text").reindex(
        index=list(dict.fromkeys(part[by])), columns=list(dict.fromkeys(part["set"])))


def family_view(family: pd.DataFrame) -> pd.DataFrame:
    """The columns of a `compare_family` table worth reading (an empty table as it is)."""
    return family[[c for c in FAMILY_VIEW if c in family.columns]] if len(family) else family


def fold_view(cv: pd.DataFrame, pairs: Sequence[tuple[str, str]], by: str = "condition") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The secondary, training-noise view: validation and test AUC per level as fold mean ± std [t-interval]
    (`cv_summary`), and the Nadeau-Bengio corrected fold test of each pair on validation AUC (`fold_tests`)."""
    summary = pd.concat([cv_summary(cv, by, part, ("auc",)).assign(metric=f"{part}_auc") for part in ("val", "test")],
                        ignore_index=True)
    return summary_wide(summary, by=by), fold_tests(cv, by, present_pairs(cv, pairs, by), metric="val_auc")


def image_level_tests(predictions: pd.DataFrame, pairs: Sequence[tuple[str, str]] = CLAIM_PAIRS,
                      by: str = "condition") -> tuple[pd.DataFrame, str]:
    """DeLong and McNemar on the test fold ensembles, only where every group is one image; otherwise an empty table
    and the computed reason."""
    test = evaluation_set(predictions, by, "test")
    one = test[test[by] == test[by].iloc[0]] if len(test) else test
    if not len(one) or not groups_are_images(one):
        groups = one["group"].nunique() if "group" in one.columns else len(one)
        return pd.DataFrame(), (f"DeLong and McNemar omitted: the test hold-out's {len(one)} images come from {groups} "
                                f"groups, so its images are not independent units; the group bootstrap above is the test.")
    table = pd.DataFrame([test_set_comparison(predictions, by, a, b) for a, b in present_pairs(predictions, pairs, by)])
    return table, f"DeLong and McNemar on {len(one)} test images, each its own group."


# ----------------------------------------------------------------------------- hypotheses

def hypothesis_record(name: str, claim: str, family: pd.DataFrame, intervals: pd.DataFrame, primary_set: str,
                      pairs: Sequence[tuple[str, str]] = CLAIM_PAIRS) -> dict[str, Any]:
    """A hypothesis: its `compare_family` rows (every verdict), the intervals of its arms, and the primary row: the
    first of `pairs` that was run, on AUC in `primary_set` ('not tested' when none was run)."""
    record = {"name": name, "claim": claim, "family": family.to_dict("records"),
              "intervals": intervals.to_dict("records")}
    run = [(a, b) for a, b in pairs if len(family) and ((family["a"] == a) & (family["b"] == b)).any()]
    if not run:
        return record | {"primary": None, "verdict": "not tested"}
    a, b = run[0]
    hit = family[(family["a"] == a) & (family["b"] == b) & (family["set"] == primary_set) & (family["metric"] == "auc")]
    record["primary"] = {"a": a, "b": b, "set": primary_set, "metric": "auc"}
    if hit.empty:
        return record | {"verdict": "not tested"}
    row = hit.iloc[0]
    return record | {"verdict": row["verdict"], "sentence": describe_family_row(row)}


def describe_hypothesis(record: dict[str, Any]) -> str:
    """One computed sentence about a hypothesis record's primary comparison."""
    if record["verdict"] == "not tested":
        return f"{record['name']} ({record['claim']}): not tested (no pair of its arms was run)."
    return f"{record['name']} ({record['claim']}): {record['sentence']}."


def family_lines(record: dict[str, Any]) -> list[str]:
    """One computed sentence per comparison of a hypothesis other than its primary one."""
    p = record.get("primary") or {}
    return [f"{record['name']}: {describe_family_row(r)}." for r in record["family"]
            if not (r["a"] == p.get("a") and r["b"] == p.get("b") and r["set"] == p.get("set"))
            and r["metric"] == "auc"]


@dataclass
class AblationResult:
    """Scale ablation: every scale set's intervals, its `compare_family` rows against the reference set, and the set
    with the highest out-of-fold AUC (chosen on validation only)."""

    reference: str
    intervals: pd.DataFrame
    family: pd.DataFrame
    best: str

    def record(self) -> dict[str, Any]:
        return {"reference": self.reference, "best_oof": self.best, "intervals": self.intervals.to_dict("records"),
                "family": self.family.to_dict("records")}


def best_on_validation(oof: pd.DataFrame, by: str = "condition", metric: str = "auc") -> str:
    """The level with the highest out-of-fold estimate of `metric` in `metric_intervals` rows of the oof set (a
    choice: any other set, or a test column, raises)."""
    oof = require_validation(oof, "best_on_validation")
    oof = oof[oof["metric"] == metric]
    if oof.empty:
        raise ValueError("best_on_validation: no out-of-fold rows")
    return str(oof.sort_values("estimate", ascending=False, kind="stable").iloc[0][by])


def compare_ablation(predictions: pd.DataFrame, arms: Sequence[Arm], n_boot: int = N_BOOT) -> AblationResult:
    """Every scale set against the first arm's (the reference) with `compare_family` on oof and test AUC."""
    reference = arms[0].condition
    pairs = present_pairs(predictions, [(a.condition, reference) for a in arms[1:]])
    intervals = metric_intervals(predictions, "condition", sets=H2_SETS, n_boot=n_boot)
    rank = {a.condition: k for k, a in enumerate(arms)}  # the reference first, then the sets as given
    intervals = intervals.sort_values("condition", key=lambda c: c.map(rank), kind="stable", ignore_index=True)
    family = compare_family(predictions, "condition", pairs, sets=H2_SETS, n_boot=n_boot) if pairs else pd.DataFrame()
    return AblationResult(reference, intervals, family, best_on_validation(intervals[intervals["set"] == "oof"]))


def ablation_table(cv: pd.DataFrame, ablation: AblationResult) -> pd.DataFrame:
    """The ablation's intervals (one row per scale set, oof and test AUC) with each set's number of parameters."""
    return intervals_table(ablation.intervals).assign(
        parameters=cv.groupby("condition", sort=False)["n_parameters"].first())


# ----------------------------------------------------------------------------- models: attention, external data

def _load(run_key: str, runs_dir: str | Path) -> tuple[torch.nn.Module, tuple, tuple]:
    from lib.training.runstore import load_model, load_run

    run_dir = Path(runs_dir) / run_key
    norm = load_run(run_dir).metrics["normalization"]
    return load_model(run_dir), tuple(norm["mean"]), tuple(norm["std"])


def attention_table(cv: pd.DataFrame, predictions: pd.DataFrame, images: np.ndarray, splits: Sequence[str] = ("test",),
                    by: str = "condition", runs_dir: str | Path = RUNS_DIR, batch_size: int = 128,
                    progress: bool = True) -> pd.DataFrame:
    """Attention weights of every learned multi-scale fold model of `cv` (two scales or more) on its images of `splits`.

    One row per (run, image): by, fold, run_key, row, path, source, label, split, then one column `w_<scale>` per
    scale, `argmax_scale`, `max_weight`, `entropy` (normalised by log S: 1 = uniform). `images` is the tensor cache
    the runs were trained on (manifest row order, the `row` column of the predictions).
    """
    from lib.data.cache import BatchLoader

    runs = cv[cv["model"] == "npr_multiscale"]
    frames = []
    for _, run in tqdm(list(runs.iterrows()), desc="attention", disable=not progress):
        model, mean, std = _load(run["run_key"], runs_dir)
        if getattr(model, "attention", "learned") != "learned" or len(model.scales) < 2:
            continue  # fixed weights, or one scale (its weight is 1): nothing learned to look at
        rows = predictions[(predictions["run_key"] == run["run_key"]) & predictions["split"].isin(splits)]
        if rows.empty:
            continue
        loader = BatchLoader(images, None, rows["row"].to_numpy(), batch_size=batch_size, mean=mean, std=std)
        weights = torch.cat([model.attention_weights(x) for x, _ in loader]).numpy()
        frame = rows[["row", "path", "source", "label", "split"]].reset_index(drop=True)
        frame.insert(0, "run_key", run["run_key"])
        frame.insert(0, "fold", int(run["fold"]))
        frame.insert(0, by, run[by])
        frames.append(pd.concat([frame, _weight_columns(weights, model.scales)], axis=1))
    if not frames:
        raise ValueError("attention_table: no learned npr_multiscale run with images in the requested splits")
    return pd.concat(frames, ignore_index=True)


def _weight_columns(weights: np.ndarray, scales: Sequence[float]) -> pd.DataFrame:
    s = len(scales)
    entropy = -(weights * np.log(np.clip(weights, 1e-12, None))).sum(axis=1)
    out = pd.DataFrame(weights, columns=[f"w_{x:g}" for x in scales])
    out["argmax_scale"] = np.asarray(scales, dtype=float)[weights.argmax(axis=1)]
    out["max_weight"] = weights.max(axis=1)
    out["entropy"] = entropy / np.log(s) if s > 1 else 0.0
    return out


def weight_columns(att: pd.DataFrame) -> list[str]:
    return [c for c in att.columns if c.startswith("w_")]


def attention_long(att: pd.DataFrame) -> pd.DataFrame:
    """Long form: one row per (run, image, scale) with `scale` and `weight` (for box/violin plots)."""
    cols = weight_columns(att)
    keep = [c for c in att.columns if c not in cols]
    long = att.melt(id_vars=keep, value_vars=cols, var_name="scale", value_name="weight")
    long["scale"] = long["scale"].str[2:]
    return long


def attention_summary(att: pd.DataFrame) -> pd.DataFrame:
    """Per (source, scale): mean, std, 95 % interval and n of the attention weight over (fold model, image) pairs."""
    long = attention_long(att)
    return pd.DataFrame([{"source": source, "scale": scale, **summarize(group["weight"])}
                         for (source, scale), group in long.groupby(["source", "scale"], sort=True)])


def argmax_consistency(att: pd.DataFrame) -> pd.DataFrame:
    """Per source: its majority argmax scale (pooled over fold models), the fraction of (model, image) pairs whose
    argmax differs from it, the mean max weight and mean normalised entropy; last row `all` (weighted by images).

    The majority is taken per fold model, then pooled: a fold model that prefers another scale for a whole source
    is model-to-model variation, not per-image adaptivity, so `differs_within_model` counts only images that
    disagree with their own fold model's majority for the source.
    """
    rows = []
    for source, group in att.groupby("source", sort=True):
        majority = group["argmax_scale"].mode().iloc[0]
        per_model_majority = group.groupby("fold")["argmax_scale"].transform(lambda s: s.mode().iloc[0])
        rows.append({"source": source, "n": int(len(group)), "majority_scale": float(majority),
                     "differs_from_majority": float((group["argmax_scale"] != majority).mean()),
                     "differs_within_model": float((group["argmax_scale"] != per_model_majority).mean()),
                     "mean_max_weight": float(group["max_weight"].mean()), "mean_entropy": float(group["entropy"].mean())})
    out = pd.DataFrame(rows)
    w = out["n"] / out["n"].sum()
    total = {"source": "all", "n": int(out["n"].sum()), "majority_scale": float("nan")}
    total.update({c: float((out[c] * w).sum()) for c in
                  ("differs_from_majority", "differs_within_model", "mean_max_weight", "mean_entropy")})
    return pd.concat([out, pd.DataFrame([total])], ignore_index=True)


def attention_source_tests(att: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Does attention depend on the source? Per fold model and scale: Kruskal-Wallis of the weight across sources
    (scipy), Holm over the scales of that model. One row per (fold, scale); `differs` = Holm p < alpha."""
    rows = []
    for fold, group in att.groupby("fold", sort=True):
        sources = [g for _, g in group.groupby("source")]
        for col in weight_columns(att):
            samples = [g[col].to_numpy() for g in sources]
            stat, p = float("nan"), float("nan")
            if len(samples) >= 2 and np.ptp(np.concatenate(samples)) > 0:  # Kruskal-Wallis needs 2 groups, not all equal
                res = sps.kruskal(*samples)
                stat, p = float(res.statistic), float(res.pvalue)
            rows.append({"fold": int(fold), "scale": col[2:], "n_sources": len(samples), "kruskal_h": stat, "p": p})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = out.groupby("fold")["p"].transform(lambda s: pd.Series(holm(s.to_numpy()), index=s.index))
        out["differs"] = out["p_holm"] < alpha
    return out


@dataclass
class AttentionStats:
    """Attention weights of learned fold models on their images, and what they say about adaptivity."""

    images: pd.DataFrame   # attention_table
    summary: pd.DataFrame  # attention_summary
    argmax: pd.DataFrame   # argmax_consistency
    kruskal: pd.DataFrame  # attention_source_tests

    def save(self, tables_dir: str | Path, prefix: str = "npr_attention") -> None:
        """One CSV per table: `<prefix>_images.csv`, `_summary.csv`, `_argmax.csv`, `_kruskal.csv`."""
        for name in ("images", "summary", "argmax", "kruskal"):
            write_table(Path(tables_dir) / f"{prefix}_{name}.csv", getattr(self, name))

    def record(self) -> dict[str, Any]:
        return {"summary": self.summary.to_dict("records"), "argmax": self.argmax.to_dict("records"),
                "kruskal": self.kruskal.to_dict("records")}


def attention_statistics(att: pd.DataFrame) -> AttentionStats:
    """Summary, argmax consistency and source tests of an `attention_table`."""
    return AttentionStats(att, attention_summary(att), argmax_consistency(att), attention_source_tests(att))


def attention_summary_text(summary: pd.DataFrame) -> pd.DataFrame:
    """`mean ± std` of each scale's weight (an `attention_summary`), sources x scales."""
    text = summary["mean"].map("{:.3f}".format) + " ± " + summary["std"].map("{:.3f}".format)
    return summary.assign(text=text).pivot(index="source", columns="scale", values="text")


def label_unseen(att: pd.DataFrame, held: Sequence[str]) -> pd.DataFrame:
    """An attention table whose held-out sources are marked unseen (their own box, violin and heatmap row)."""
    return att.assign(source=mark_unseen(att["source"], held))


def npr_maps(image: np.ndarray, scales: Sequence[float]) -> list[np.ndarray]:
    """Channel-mean NPR map (`lib.models.npr.npr_map`) of one HxWx3 uint8 image at each scale, values in [-1, 1]."""
    from lib.models.npr import npr_map

    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0  # a copy: cached arrays are read-only
    return [npr_map(x, float(s))[0].mean(dim=0).numpy() for s in scales]


def pick_examples(frame: pd.DataFrame, split: str = "test", per_source: int = 1, seed: int = 0) -> pd.DataFrame:
    """`per_source` distinct images of each source from `split` (deterministic given `seed`), with `row`: the
    image's position in `frame` (a manifest with a split column: its row in the tensor cache)."""
    part = frame.assign(row=np.arange(len(frame)))
    part = part[part["split"] == split].drop_duplicates("path")
    shuffled = part.sample(frac=1.0, random_state=seed)
    return (shuffled.groupby("source", sort=True).head(per_source)
            .sort_values(["label", "source"], kind="stable").reset_index(drop=True)[["row", "path", "source", "label"]])


def npr_map_figure(examples: pd.DataFrame, images: np.ndarray, scales: Sequence[float],
                   path: str | Path | None = None):
    """One row per example: the pixels the model sees at evaluation (its stored window of the tensor cache `images`,
    (N, 3, S, S) uint8), then the NPR map of that window at each scale."""
    from lib.report.plots import image_grid

    tiles, titles = [], []
    for _, ex in examples.iterrows():
        img = np.ascontiguousarray(images[int(ex["row"])].transpose(1, 2, 0))
        tiles.append(img)
        titles.append(f"{ex['source']} ({'fake' if ex['label'] else 'real'}), {img.shape[1]}x{img.shape[0]} native")
        tiles.extend(npr_maps(img, scales))
        titles.extend(f"NPR x{s:g}" for s in scales)
    return image_grid(tiles, titles, ncols=1 + len(scales), size=1.8,
                      suptitle="What the model sees: the stored window of native pixels and its NPR maps "
                               "(channel mean of x - up(down(x, s)))", path=path)


def evaluate_external(cv: pd.DataFrame, dataset: Any, by: str = "condition", extra: Sequence[str] = (),
                      runs_dir: str | Path = RUNS_DIR, progress: bool = True,
                      cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Score every fold model of `cv` on an external dataset (`lib.data.Dataset`, any layout).

    Each run is scored the way the evaluate command scores it (`lib.training.scoring`): its own recipe (the external
    images are decoded once per recipe into the tensor cache), its training normalisation, batch size and threads.
    Returns prediction rows like the run store's (run_key, model, by, fold, row, path, label, source, group,
    probability) with split = "external" and the `extra` columns of `cv` copied.
    """
    from lib.paths import CACHE_DIR
    from lib.training.scoring import load_detector, score_images

    manifest = dataset.manifest
    if manifest.empty:
        raise ValueError(f"external dataset {dataset.root} holds no usable image")
    frames = []
    for _, run in tqdm(list(cv.drop_duplicates("run_key").iterrows()), desc="external", disable=not progress):
        detector = load_detector(run["run_key"], runs_dir)
        frame = score_images(detector, manifest, CACHE_DIR if cache_dir is None else cache_dir, progress=False)
        frame = frame.assign(split="external", fold=int(run["fold"]))
        for col in ("run_key", "model", by, *extra):
            frame[col] = run[col]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def trained_arms(cv_h2: pd.DataFrame, cv_ablation: pd.DataFrame, cv_h3: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every distinct fold model of the notebook with `trained_on` (all sources; H3's: seen sources) and
    `arm` = '<trained_on>: <condition>', the level the external set is compared by."""
    frames = [cv_h2.assign(trained_on="all sources"), cv_ablation.assign(trained_on="all sources")]
    if cv_h3 is not None:
        frames.append(cv_h3.assign(trained_on="seen sources"))
    cv = pd.concat(frames, ignore_index=True).drop_duplicates("run_key")
    return cv.assign(arm=cv["trained_on"] + ": " + cv["condition"])


def external_per_source(predictions: pd.DataFrame) -> pd.DataFrame:
    """The external set's NPR-paper summary (`source_summary`, descriptive), by arm."""
    return source_summary(source_metrics(predictions, "arm", ("external",), ("external",)), by="arm")


def external_comparison(predictions: pd.DataFrame, groups: Iterable[str],
                        n_boot: int = N_BOOT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Intervals of every arm on the external set, and `compare_family` of each training group's claim pairs
    (one family, set "external")."""
    view = {"external": as_test_view(predictions, ("external",), ("external",))}
    pairs = [(f"{g}: {a}", f"{g}: {b}") for g in groups for a, b in CLAIM_PAIRS]
    return view_intervals(view, "arm", n_boot), view_family(view, pairs, "arm", n_boot)


def external_record(dataset: Any, per_source: pd.DataFrame, intervals: pd.DataFrame,
                    family: pd.DataFrame) -> dict[str, Any]:
    """The external set's part of npr_hypotheses.json."""
    return {"skipped": False, "root": str(dataset.root), "layout": dataset.layout, "n_images": len(dataset.manifest),
            "per_source": per_source.to_dict("records"), "intervals": intervals.to_dict("records"),
            "family": family.to_dict("records")}


def _require(frame: pd.DataFrame, columns: set[str]) -> None:
    missing = columns - set(frame.columns)
    if missing:
        raise KeyError(f"missing column(s) {sorted(missing)}; have {list(frame.columns)}")


# ----------------------------------------------------------------------------- conclusions and records

def model_lines(cv: pd.DataFrame, intervals: pd.DataFrame) -> list[str]:
    """One line per condition: its number of parameters, and its oof and test AUC with intervals and group counts."""
    params = cv.groupby("condition")["n_parameters"].first()
    auc = intervals[intervals["metric"] == "auc"]
    lines = []
    for cond in dict.fromkeys(auc["condition"]):
        rows = auc[auc["condition"] == cond].set_index("set")
        parts = [f"{name} AUC {interval_text(rows.loc[name])}" for name in rows.index]
        lines.append(f"{cond} ({int(params[cond]):,} parameters): " + "; ".join(parts) + ".")
    return lines


def ablation_line(ablation: AblationResult) -> str:
    """The scale set with the highest out-of-fold AUC (chosen on validation), and every set's comparison with the
    reference."""
    best = ablation.intervals[(ablation.intervals["condition"] == ablation.best) & (ablation.intervals["set"] == "oof")
                              & (ablation.intervals["metric"] == "auc")].iloc[0]
    rows = ablation.family[ablation.family["metric"] == "auc"] if len(ablation.family) else ablation.family
    return (f"Scale ablation: highest out-of-fold AUC with {ablation.best} ({interval_text(best)}); "
            + ("; ".join(describe_family_row(r) for _, r in rows.iterrows()) or "no set besides the reference") + ".")


def gap_lines(gap: pd.DataFrame) -> list[str]:
    """H3's generalisation gap (seen - unseen AUC on the same real test images) per condition."""
    return [f"Generalisation gap of {r['condition']} (same real test images): {gap_text(r)}." for _, r in gap.iterrows()]


def attention_line(stats: AttentionStats) -> str:
    """How spread the learned attention is, how often its argmax departs from the source's, and whether the weights
    differ between sources."""
    overall = stats.argmax.set_index("source").loc["all"]
    n_models = stats.kruskal["fold"].nunique()
    n_differs = int(stats.kruskal.groupby("fold")["differs"].any().sum()) if len(stats.kruskal) else 0
    return (f"Attention (H2 learned models, test images): mean normalised entropy {overall['mean_entropy']:.2f} "
            f"(1 = uniform), mean largest weight {overall['mean_max_weight']:.2f} for {len(weight_columns(stats.images))} "
            f"scales; argmax scale differs from its source's majority for {overall['differs_from_majority']:.0%} "
            f"of images ({overall['differs_within_model']:.0%} within a fold model); weights differ between "
            f"sources (Kruskal-Wallis, Holm, p < 0.05) in {n_differs} of {n_models} fold models.")


def external_line(external: dict[str, Any]) -> str:
    """The external set's comparisons, or that it was skipped."""
    if external["skipped"]:
        return "External test set: skipped (external_root is empty)."
    rows = external["family"]
    return "External test set: " + ("; ".join(describe_family_row(r) for r in rows) or "no pair of arms was run") + "."


def conclusions(input_line: str, cv_h2: pd.DataFrame, h2: dict[str, Any], ablation: AblationResult,
                attention: AttentionStats, external: dict[str, Any], h3: dict[str, Any],
                gap: pd.DataFrame | None = None, image_note: str = "", sources_note: str = "") -> list[str]:
    """Notebook 08's computed conclusions; `gap` None means H3 was not run."""
    lines = [f"H3: {sources_note}"] if sources_note else []
    lines += [input_line, *model_lines(cv_h2, pd.DataFrame(h2["intervals"])), describe_hypothesis(h2), *family_lines(h2)]
    lines += [ablation_line(ablation)]
    if gap is None:
        lines += ["H3 was not run (run_h3 is false)."]
    else:
        lines += [describe_hypothesis(h3), *family_lines(h3), *gap_lines(gap)]
    lines += [image_note] if image_note else []
    return lines + [attention_line(attention), external_line(external)]


def hypotheses_record(settings: dict[str, Any], h2: dict[str, Any], h3: dict[str, Any], ablation: AblationResult,
                      attention: AttentionStats, external: dict[str, Any], lines: list[str],
                      runs: dict[str, pd.DataFrame | None], gap: pd.DataFrame | None = None) -> dict[str, Any]:
    """Everything notebook 08 found, for npr_hypotheses.json; `runs`: the fold table of each part (None: not run),
    whose run keys are listed."""
    return {"settings": settings, "H2": h2, "H3": h3 | {"gap": [] if gap is None else gap.to_dict("records")},
            "ablation": ablation.record(), "attention": attention.record(), "external": external, "conclusions": lines,
            "run_keys": {part: [] if cv is None else cv["run_key"].tolist() for part, cv in runs.items()}}


def headline_table(h2_intervals: pd.DataFrame, h3_intervals: pd.DataFrame | None = None,
                   gap: pd.DataFrame | None = None) -> pd.DataFrame:
    """The index page's table, one row per condition: H2 oof and test AUC, and H3 unseen and seen AUC and the gap
    when H3 was run; each cell an interval with its group counts."""
    table = intervals_table(h2_intervals).add_prefix("H2 ").add_suffix(" AUC")
    if h3_intervals is not None:
        table = table.join(intervals_table(h3_intervals).add_prefix("H3 ").add_suffix(" AUC"), how="outer")
    if gap is not None and len(gap):
        table = table.join(gap.set_index("condition").apply(
            lambda r: f"{r['gap']:+.3f}" + ("" if pd.isna(r["ci_low"]) else f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"),
            axis=1).rename("H3 gap (seen - unseen)"), how="outer")
    order = list(dict.fromkeys([*h2_intervals["condition"], *([] if h3_intervals is None else h3_intervals["condition"])]))
    return table.reindex(order).reset_index(names="condition")


# ----------------------------------------------------------------------------- figures

def interval_points(ax, frame: pd.DataFrame, x: str, hue: str, value: str = "estimate", order: Sequence | None = None):
    """Points with asymmetric error bars (ci_low, ci_high), one colour per level of `hue`, dodged along x."""
    levels = list(dict.fromkeys(frame[x])) if order is None else list(order)
    hues = list(dict.fromkeys(frame[hue]))
    width = 0.6 / max(len(hues), 1)
    for k, h in enumerate(hues):
        sub = frame[frame[hue] == h].set_index(x).reindex(levels)
        pos = np.arange(len(levels)) - 0.3 + width * (k + 0.5)
        est = sub[value].to_numpy(dtype=float)
        low = np.where(sub["ci_low"].isna(), est, sub["ci_low"].to_numpy(dtype=float))
        high = np.where(sub["ci_high"].isna(), est, sub["ci_high"].to_numpy(dtype=float))
        ax.errorbar(pos, est, yerr=[est - low, high - est], fmt="o", capsize=3, label=str(h))
    ax.set_xticks(np.arange(len(levels)), [str(v) for v in levels], fontsize=8)
    return levels


def scale_figure(intervals: pd.DataFrame, family: pd.DataFrame, arms: Sequence[Arm], title: str = "H2",
                 path: str | Path | None = None):
    """H2 per scale: each arm's AUC (oof and test, group-bootstrap 95 % interval) labelled with its scales, and each
    claimed pair's paired difference with its Holm-stepped interval (`compare_family`)."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    scales = {a.condition: f"{a.condition}\n({'+'.join(f'{s:g}' for s in a.scales)}"
                           f"{', uniform' if a.kwargs.get('attention') == 'uniform' else ''})" for a in arms}
    auc = intervals[intervals["metric"] == "auc"].assign(label=lambda t: t["condition"].map(scales).fillna(t["condition"]))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    interval_points(axes[0], auc, "label", "set")
    axes[0].set_ylabel("AUC")
    axes[0].set_title(f"{title}: AUC per arm and scales (95 % group-bootstrap interval)")
    axes[0].legend(title="set", fontsize=8)
    rows = family[family["metric"] == "auc"] if len(family) else family
    if len(rows):
        rows = rows.assign(pair=rows["a"] + " -\n" + rows["b"])
        interval_points(axes[1], rows, "pair", "set", value="diff")
        axes[1].axhline(0, color="grey", lw=0.8, ls="--")
        axes[1].legend(title="set", fontsize=8)
    axes[1].set_ylabel("AUC difference (a - b)")
    axes[1].set_title("paired differences, Holm-stepped intervals")
    fig.tight_layout()
    return save(fig, path)


def h3_figure(per_source: pd.DataFrame, gap: pd.DataFrame, path: str | Path | None = None):
    """H3: AUC per fake source (each against the real test images; unseen sources marked) per arm, and each arm's
    seen and unseen AUC joined by its gap (interval of the paired gap in the label)."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    src = per_source[per_source["metric"] == "auc"].assign(
        label=lambda t: np.where(t["in_training"] == "unseen", t["source"] + UNSEEN, t["source"]))
    order = [*src.loc[src["in_training"] == "seen", "label"].unique(), *src.loc[src["in_training"] == "unseen", "label"].unique()]
    interval_points(axes[0], src, "label", "condition", order=order)
    axes[0].set_ylabel("AUC (fold ensemble)")
    axes[0].set_title("H3: AUC per generator against the real test images (95 % group-bootstrap interval)")
    axes[0].legend(fontsize=8)
    for k, (_, r) in enumerate(gap.iterrows()):
        axes[1].plot([0, 1], [r["seen_auc"], r["unseen_auc"]], marker="o", label=(
            f"{r['condition']}: gap {r['gap']:+.3f}" + ("" if pd.isna(r["ci_low"]) else
                                                         f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")))
    axes[1].set_xticks([0, 1], ["seen sources", "unseen sources"])
    axes[1].set_xlim(-0.3, 1.3)
    axes[1].set_ylabel("AUC (same real test images)")
    axes[1].set_title("seen vs unseen: the paired gap")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def attention_figure(att: pd.DataFrame, title: str = "", path: str | Path | None = None):
    """Box plot and violin plot of each scale's weight per source, and a sources x scales heatmap of the mean."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lib.report.plots import save

    long = attention_long(att)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    sns.boxplot(long, x="scale", y="weight", hue="source", ax=axes[0], fliersize=1.5)
    sns.violinplot(long, x="scale", y="weight", hue="source", ax=axes[1], cut=0, density_norm="width",
                   inner=None, linewidth=0.5, legend=False)
    heat = long.pivot_table(index="source", columns="scale", values="weight", aggfunc="mean")
    sns.heatmap(heat, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, ax=axes[2], cbar_kws={"label": "mean weight"})
    n_scales = len(weight_columns(att))
    for ax in axes[:2]:
        ax.axhline(1.0 / n_scales, color="grey", ls="--", lw=0.8)  # uniform weight
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7, ncols=2, loc="upper right")
    axes[0].set_title("box plot (dashed: uniform 1/S)")
    axes[1].set_title("violin plot")
    axes[2].set_title("mean weight, sources x scales")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)
