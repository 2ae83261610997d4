"""A detector scored on images it never trained or chose anything on: a folder with both classes, or with one.

- Both classes: AUC and AP, accuracy at the run's validation threshold and at 0.5, EER; AUC, AP and accuracy get
  cluster-bootstrap intervals over groups (`lib.evaluation.compare.frame_intervals`).
- One class (a real-only set such as CIFAKE's transfer to real photographs, or a folder of one generator's fakes): the
  share of images called fake, i.e. the false-positive rate of a real-only set or the detection rate of a fake-only
  one, with a cluster-bootstrap interval over groups.
- Breakdowns: per generator (its fakes against the reals that come with it, ForenSynths' `<generator>_real`, else all
  reals) and per level of any column (a content class read from sub-folder names, say).
Every row says how many real and fake groups and images stand behind it.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from lib.evaluation.compare import MIN_GROUPS, N_BOOT, frame_intervals, group_counts, group_ids
from lib.evaluation.metrics import equal_error_rate
from lib.evaluation.stats import cluster_bootstrap_counts, percentile_interval, weighted_mean

RATE_NAMES = {0: "false_positive_rate", 1: "detection_rate"}
COLUMNS = ["metric", "threshold_name", "threshold", "estimate", "ci_low", "ci_high", "real_groups", "fake_groups",
           "real_images", "fake_images", "note"]


def rate_interval(frame: pd.DataFrame, threshold: float, n_boot: int = N_BOOT, seed: int = 0,
                  confidence: float = 0.95, min_groups: int = MIN_GROUPS) -> dict:
    """Share of the images of a one-class frame called fake (probability >= threshold), with its cluster-bootstrap
    interval over groups: the false-positive rate of real images, the detection rate of fakes."""
    labels = frame["label"].astype(int).unique()
    if len(labels) != 1:
        raise ValueError(f"rate_interval needs images of one class, got labels {sorted(labels.tolist())}")
    called_fake = (frame["probability"].to_numpy(dtype=float) >= threshold).astype(float)
    codes, names = pd.factorize(group_ids(frame))
    enough = len(names) >= min_groups
    low = high = math.nan
    if enough:
        counts = cluster_bootstrap_counts(np.zeros(len(names), dtype=int), n_boot, seed)
        low, high = percentile_interval(weighted_mean(codes, called_fake, counts), confidence)
    note = "" if enough else (f"interval undefined: {len(names)} group(s); the group bootstrap needs at least "
                              f"{min_groups}")
    return {"metric": RATE_NAMES[int(labels[0])], "estimate": float(called_fake.mean()) if len(frame) else math.nan,
            "ci_low": low, "ci_high": high, **group_counts(frame), "note": note}


def folder_metrics(predictions: pd.DataFrame, thresholds: Mapping[str, float], n_boot: int = N_BOOT,
                   seed: int = 0) -> pd.DataFrame:
    """The headline table of one detector on one folder (columns `COLUMNS`).

    `thresholds` names each decision threshold, e.g. {"validation": 0.37, "0.5": 0.5}: the run's threshold chosen on
    its validation data, and the neutral one. Both classes: AUC and AP (threshold-free), EER (no interval), then
    accuracy, the detection rate and the false-positive rate at each threshold. One class: the rate of that class at
    each threshold."""
    if predictions.empty:
        raise ValueError("no predictions to score: the folder held no usable image")
    present = set(predictions["label"].astype(int).unique())
    rows = []
    if present == {0, 1}:
        for row in frame_intervals(predictions, ("auc", "ap"), 0.5, n_boot, seed):
            rows.append({**row, "threshold_name": "", "threshold": math.nan})
        eer = equal_error_rate(predictions["label"], predictions["probability"])
        rows.append({"metric": "eer", "threshold_name": "", "threshold": math.nan, "estimate": eer,
                     "ci_low": math.nan, "ci_high": math.nan, **group_counts(predictions), "note": "no interval"})
    for name, threshold in thresholds.items():
        if present == {0, 1}:
            row = frame_intervals(predictions, ("accuracy",), float(threshold), n_boot, seed)[0]
            rows.append({**row, "threshold_name": name, "threshold": float(threshold)})
        for label in sorted(present):
            part = predictions[predictions["label"].astype(int) == label]
            rows.append({**rate_interval(part, float(threshold), n_boot, seed), "threshold_name": name,
                         "threshold": float(threshold)})
    return pd.DataFrame(rows)[COLUMNS]


def generator_frames(predictions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per fake source: its fakes with the reals that belong to it (source `<generator>_real`, as ForenSynths pairs
    each generator with its own photo collection), else with every real image; fakes alone when there is no real."""
    reals = predictions[predictions["label"].astype(int) == 0]
    fakes = predictions[predictions["label"].astype(int) == 1]
    frames = {}
    for generator, own in fakes.groupby("source", sort=True):
        matched = reals[reals["source"].astype(str) == f"{generator}_real"]
        frames[str(generator)] = pd.concat([matched if len(matched) else reals, own], ignore_index=True)
    return frames


def per_generator(predictions: pd.DataFrame, threshold: float, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per generator: AUC and AP against its reals (`generator_frames`) with intervals, and its detection rate
    at `threshold` with interval; `reals` says which reals it was compared with."""
    rows = []
    for generator, frame in generator_frames(predictions).items():
        matched = frame.loc[frame["label"].astype(int) == 0, "source"].astype(str).unique()
        reals = "none" if len(matched) == 0 else matched[0] if len(matched) == 1 else "all real images"
        metrics = frame_intervals(frame, ("auc", "ap"), threshold, n_boot, seed) if len(matched) else []
        fakes = frame[frame["label"].astype(int) == 1]
        for row in [*metrics, rate_interval(fakes, threshold, n_boot, seed)]:
            rows.append({"generator": generator, "reals": reals, **row})
    return pd.DataFrame(rows)


def per_level(predictions: pd.DataFrame, column: str, threshold: float, n_boot: int = N_BOOT,
              seed: int = 0) -> pd.DataFrame:
    """One row per (level of `column`, class): the share called fake at `threshold` with its interval (a content
    class's false-positive rate among reals, its detection rate among fakes)."""
    rows = []
    for (level, label), frame in predictions.groupby([column, "label"], sort=True):
        rows.append({column: level, **rate_interval(frame, threshold, n_boot, seed)})
    return pd.DataFrame(rows)
