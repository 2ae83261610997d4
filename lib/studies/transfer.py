"""Transfer and robustness (notebook 10): the saved final models of notebook 06 and NPR arms of notebook 08, scored
where they were never trained or tuned.

- `detectors`: every fold model of those notebooks' fold tables, checked against this study's dataset (a run made
  from other data raises `ArtefactMismatch`), with the split it was trained on and what it was trained on.
- `unseen_generator_table`: each detector on the generator notebook 08's H3 held out of training (its fakes' detection
  rate at the detector's validation threshold, AUC against the test hold-out's reals), marking whether the detector
  saw that generator in training (its out-of-fold validation rows hold the generator's fakes).
- `score_external`: each detector (mean of its fold models) on a folder of any layout, one class being enough, with the
  evaluate command's tables (`lib.evaluation.transfer`).
- `robustness_predictions` / `robustness_table` / `robustness_family`: test-time perturbations of the test hold-out
  (JPEG, blur, down-then-up resize, noise: `lib.data.perturbations`), applied to both classes identically at native
  resolution before each model's own preprocessing and cached per severity; AUC/AP per severity with group-bootstrap
  intervals, and the one comparison rule on "clean beats the strongest severity".
Thresholds are the detectors' validation thresholds (pooled out-of-fold predictions); the test hold-out only scores.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from lib.data.dataset import load_dataset
from lib.data.layouts import content_classes
from lib.data.perturbations import DESCENDING, IDENTITY, Perturbation, grid_from_params
from lib.data.splits import test_indices
from lib.evaluation import compare
from lib.evaluation.compare import N_BOOT
from lib.evaluation.transfer import folder_metrics, per_generator, rate_interval
from lib.fileio import ArtefactMismatch, read_json, read_table
from lib.paths import CACHE_DIR, RUNS_DIR
from lib.progress import tqdm
from lib.report.plots import save
from lib.training.runstore import collect_predictions
from lib.training.scoring import load_detector, score_dataset, score_images

CLEAN = "clean"
# The fold tables the detectors come from: (notebook, file, column naming the detector, what it was trained on).
SOURCES = (("06 final", "phase4_final_folds.csv", "model", "all sources"),
           ("08 H2", "npr_h2_folds.csv", "condition", "all sources"),
           ("08 H3", "npr_h3_folds.csv", "condition", "seen sources"))


# ----------------------------------------------------------------------------------------------- detectors

def detectors(tables: str | Path, stamp: Mapping[str, str], runs_dir: str | Path = RUNS_DIR) -> tuple[pd.DataFrame, list[str]]:
    """(one row per fold model: detector, origin, trained_on, fold, run_key, same_split; notes on missing tables).

    A detector of H3 is named '<condition> (seen sources)'. Every run must come from this study's dataset
    (`ArtefactMismatch` otherwise); `same_split` says whether it was trained on this study's split table (H3's runs
    hold a generator out and use a split of their own)."""
    rows, notes = [], []
    for origin, name, column, trained_on in SOURCES:
        path = Path(tables) / name
        if not path.is_file():
            notes.append(f"{name} not found: run the notebook that writes it ({origin.split()[0]}) first")
            continue
        table = read_table(path)
        if "role" in table.columns:   # notebook 06 names the role of each model
            table = table.assign(origin=origin + ": " + table["role"].astype(str))
        for row in table.itertuples(index=False):
            label = getattr(row, column) + (" (seen sources)" if trained_on == "seen sources" else "")
            rows.append({"detector": label, "origin": getattr(row, "origin", origin), "trained_on": trained_on,
                         "fold": int(row.fold), "run_key": row.run_key})
    frame = pd.DataFrame(rows, columns=["detector", "origin", "trained_on", "fold", "run_key"])
    frame = frame.drop_duplicates(["detector", "run_key"]).reset_index(drop=True)
    same = []
    for key in frame["run_key"]:
        spec = read_json(Path(runs_dir) / key / "config.json")["spec"]
        if spec["dataset"] != stamp["dataset"]:
            raise ArtefactMismatch(f"run {key} was trained on dataset {spec['dataset']}, this study uses "
                                   f"{stamp['dataset']}: re-run notebooks 06 and 08 on this dataset")
        same.append(spec["split_key"] == stamp["split_key"])
    return frame.assign(same_split=same), notes


def stored_predictions(models: pd.DataFrame, runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """The run store's predictions of every fold model, with its detector, origin and trained_on."""
    pred = collect_predictions(models["run_key"].unique(), runs_dir)
    return pred.merge(models[["run_key", "detector", "origin", "trained_on"]], on="run_key")


def thresholds(predictions: pd.DataFrame) -> pd.Series:
    """Each detector's decision threshold, chosen on its pooled out-of-fold validation predictions."""
    return compare.validation_thresholds(predictions, "detector")


# ------------------------------------------------------------------------------------ the unseen generator

def unseen_generators(predictions: pd.DataFrame) -> list[str]:
    """The fake sources some detector never trained on: those of the source hold-out (split "holdout")."""
    held = predictions[(predictions["split"] == "holdout") & (predictions["label"] == 1)]
    return sorted(held["source"].astype(str).unique())


def _evaluation_frame(predictions: pd.DataFrame, detector: str) -> pd.DataFrame:
    """The detector's fold-mean predictions on the images none of its fold models trained on (test and holdout)."""
    own = predictions[predictions["detector"] == detector]
    parts = [compare.fold_ensemble(own, "detector", split=s) for s in ("test", "holdout")]
    return pd.concat([p for p in parts if len(p)], ignore_index=True).drop_duplicates("path")


def unseen_generator_table(predictions: pd.DataFrame, generators: Sequence[str], n_boot: int = N_BOOT) -> pd.DataFrame:
    """Per detector and held-out generator: whether it saw the generator in training, the detection rate of the
    generator's fakes at the validation threshold and the AUC against the test hold-out's reals, with intervals."""
    cut = thresholds(predictions)
    rows = []
    for detector, own in predictions.groupby("detector", sort=False):
        seen = set(own.loc[(own["split"] == "val") & (own["label"] == 1), "source"].astype(str))
        frame = _evaluation_frame(predictions, detector)
        reals = frame[(frame["label"] == 0) & frame["path"].isin(own.loc[own["split"] == "test", "path"])]
        for generator in generators:
            fakes = frame[(frame["label"] == 1) & (frame["source"] == generator)]
            if fakes.empty:
                continue
            base = {"detector": detector, "generator": generator, "seen_in_training": generator in seen,
                    "threshold": float(cut.get(detector, 0.5))}
            rate = rate_interval(fakes, base["threshold"], n_boot)
            rows.append({**base, **rate})
            if len(reals):
                auc = compare.frame_intervals(pd.concat([reals, fakes]), ("auc",), base["threshold"], n_boot)[0]
                rows.append({**base, **auc})
    return pd.DataFrame(rows)


def unseen_view(unseen: pd.DataFrame, metric: str = "detection_rate") -> pd.DataFrame:
    """Detector x generator: `metric` with its interval, never-seen generators marked with '(unseen)'."""
    if unseen.empty:
        return unseen
    part = unseen[unseen["metric"] == metric].copy()
    part["value"] = [_ci(r) for r in part.to_dict("records")]
    part["generator"] = part["generator"] + np.where(part["seen_in_training"], "", " (unseen)")
    return part.pivot_table(index="detector", columns="generator", values="value", aggfunc="first", sort=False)


# ----------------------------------------------------------------------------------------- external folders

def _fold_mean(frames: list[pd.DataFrame]) -> pd.DataFrame:
    joined = pd.concat(frames, ignore_index=True)
    keep = [c for c in joined.columns if c not in ("probability", "row", "fold")]
    return joined.groupby(keep, sort=False, dropna=False)["probability"].mean().reset_index()


def score_external(models: pd.DataFrame, cut: pd.Series, root: str, layout: str = "auto", n_boot: int = N_BOOT,
                   runs_dir: str | Path = RUNS_DIR, cache_dir: str | Path = CACHE_DIR,
                   progress: bool = True) -> dict[str, pd.DataFrame]:
    """Every detector (the mean of its fold models) on the folder `root` (any layout, one class is enough): predictions,
    `folder_metrics` and `per_generator` tables, each with a detector column, and the skipped files."""
    dataset = load_dataset(root, layout, progress=progress, allow_one_class=True)
    preds = []
    for detector, runs in tqdm(list(models.groupby("detector", sort=False)), desc="external", disable=not progress):
        frames = []
        for key in runs["run_key"]:
            scored, skipped = score_dataset(load_detector(key, runs_dir), dataset, cache_dir, progress=False)
            frames.append(scored)
        preds.append(_fold_mean(frames).assign(detector=detector))
    predictions = pd.concat(preds, ignore_index=True)
    predictions["content"] = content_classes(predictions["path"], dataset.root)
    metrics, generators = [], []
    for detector, frame in predictions.groupby("detector", sort=False):
        named = {"validation": float(cut.get(detector, 0.5)), "0.5": 0.5}
        metrics.append(folder_metrics(frame, named, n_boot).assign(detector=detector))
        generators.append(per_generator(frame, named["validation"], n_boot).assign(detector=detector))
    return {"predictions": predictions.assign(root=str(dataset.root)),
            "metrics": pd.concat(metrics, ignore_index=True).assign(root=str(dataset.root)),
            "per_generator": pd.concat(generators, ignore_index=True),
            "skipped": skipped}   # the same for every fold model: the dataset's and its recipe's


# ------------------------------------------------------------------------------------------------ robustness

def perturbation_grid(severities: Mapping[str, Sequence[float]]) -> list[Perturbation]:
    """The sweep's perturbations, validated (`lib.data.perturbations.grid_from_params`)."""
    return grid_from_params(dict(severities))


def robustness_predictions(study: Any, models: pd.DataFrame, grid: Sequence[Perturbation],
                           runs_dir: str | Path = RUNS_DIR, cache_dir: str | Path = CACHE_DIR,
                           progress: bool = True) -> pd.DataFrame:
    """Fold-mean predictions of every detector on the test hold-out, clean and under each perturbation.

    Only the test hold-out's images are read (never a training image); each (recipe, perturbation) is decoded once
    into the tensor cache. Columns: detector, condition ("clean" or the perturbation's spec), kind, severity, path,
    label, source, group, probability; split "test" and fold 0 so that `lib.evaluation.compare` reads it as one set."""
    if models.empty:
        raise ValueError("no detector was trained on this study's split table: nothing to re-score (run notebooks 06 "
                         "and 08 with this notebook's dataset and split parameters)")
    test = study.manifest.iloc[test_indices(study.splits)].reset_index(drop=True)
    conditions = [(CLEAN, "", math.nan)] + [(p.spec, p.kind, float(p.severity)) for p in grid]
    frames = []
    jobs = [(d, key) for d, runs in models.groupby("detector", sort=False) for key in runs["run_key"]]
    for detector, key in tqdm(jobs, desc="robustness", disable=not progress):
        base = load_detector(key, runs_dir)
        for condition, kind, severity in conditions:
            scored = score_images(base if condition == CLEAN else base.perturbed(condition), test, cache_dir,
                                  progress=False)
            frames.append(scored.assign(detector=detector, condition=condition, kind=kind, severity=severity))
    out = _fold_mean(frames)
    return out.assign(split="test", fold=0)


def clean_check(robust: pd.DataFrame, stored: pd.DataFrame) -> float:
    """Largest difference between the sweep's clean probabilities and the run store's own test predictions (fold
    means): 0 up to float noise when re-scoring reproduces the saved runs."""
    saved = compare.fold_ensemble(stored[stored["detector"].isin(robust["detector"].unique())], "detector")
    clean = robust[robust["condition"] == CLEAN].merge(saved, on=["detector", "path"], suffixes=("", "_saved"))
    return float((clean["probability"] - clean["probability_saved"]).abs().max()) if len(clean) else math.nan


def robustness_table(robust: pd.DataFrame, cut: pd.Series, n_boot: int = N_BOOT) -> pd.DataFrame:
    """Per detector and condition: AUC, AP and accuracy (at the validation threshold) with group-bootstrap intervals
    and the group counts. The clean condition appears once per kind, at that kind's identity severity."""
    rows = []
    for (detector, condition), frame in robust.groupby(["detector", "condition"], sort=False):
        head = frame.iloc[0]
        for row in compare.frame_intervals(frame, ("auc", "ap", "accuracy"), float(cut.get(detector, 0.5)), n_boot):
            kinds = IDENTITY.items() if condition == CLEAN else [(head["kind"], head["severity"])]
            for kind, severity in kinds:
                rows.append({"detector": detector, "condition": condition, "kind": kind, "severity": severity, **row})
    return pd.DataFrame(rows)


def robustness_pairs(robust: pd.DataFrame) -> list[tuple[str, str]]:
    """Per detector and kind: (clean, the strongest severity of that kind): the pre-registered claim "the perturbation
    lowers the AUC"."""
    perturbed = robust[robust["condition"] != CLEAN].drop_duplicates(["detector", "condition"])
    pairs = []
    for (detector, kind), frame in perturbed.groupby(["detector", "kind"], sort=False):
        strongest = frame.loc[frame["condition"].map(lambda c: Perturbation.parse(c).strength).idxmax()]
        pairs.append((f"{detector} | {CLEAN}", f"{detector} | {strongest['condition']}"))
    return pairs


def robustness_family(robust: pd.DataFrame, n_boot: int = N_BOOT) -> pd.DataFrame:
    """The one comparison rule (`compare_family`, one Holm family) on "clean AUC > AUC at the strongest severity", for
    every detector and kind: paired on the same test images and resampled groups."""
    arms = robust.assign(arm=robust["detector"] + " | " + robust["condition"])
    return compare.compare_family(arms, "arm", robustness_pairs(robust), sets=("test",), n_boot=n_boot)


def robustness_figure(table: pd.DataFrame, metric: str = "auc", path: str | Path | None = None):
    """`metric` against severity, one panel per kind, one line per detector with its 95 % group-bootstrap band."""
    import matplotlib.pyplot as plt

    kinds = [k for k in IDENTITY if k in set(table["kind"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.2), squeeze=False, sharey=True)
    part = table[table["metric"] == metric]
    for ax, kind in zip(axes[0], kinds):
        for detector, frame in part[part["kind"] == kind].groupby("detector", sort=False):
            frame = frame.sort_values("severity")
            ax.plot(frame["severity"], frame["estimate"], marker="o", label=detector)
            ax.fill_between(frame["severity"], frame["ci_low"], frame["ci_high"], alpha=0.08)
        ax.set_title({"jpeg": "JPEG quality", "blur": "Gaussian blur sigma (px)", "resize": "down-up resize factor",
                      "noise": "Gaussian noise sigma (0-255)"}[kind])
        if kind in DESCENDING:
            ax.invert_xaxis()   # stronger to the right in every panel
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("severity (stronger to the right)")
    axes[0][0].set_ylabel(metric.upper())
    handles, labels = axes[0][0].get_legend_handles_labels()
    rows = math.ceil(len(labels) / 4)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"Test hold-out {metric.upper()} under test-time perturbations (bands: 95 % intervals over groups)")
    fig.tight_layout(rect=(0, 0.06 * rows + 0.02, 1, 1))
    return save(fig, path)


# ----------------------------------------------------------------------------------------------- conclusions

def _ci(row: Mapping[str, Any]) -> str:
    if isinstance(row.get("ci_low"), float) and math.isnan(row["ci_low"]):
        return f"{row['estimate']:.3f} (no interval: {row.get('note', '')})"
    return f"{row['estimate']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def conclusions(unseen: pd.DataFrame, family: pd.DataFrame, external: Sequence[pd.DataFrame], clean_gap: float,
                n_models: int) -> list[str]:
    """The notebook's conclusion lines, computed from its tables."""
    lines = []
    rates = unseen[unseen["metric"] == "detection_rate"] if len(unseen) else unseen
    for generator, frame in rates.groupby("generator", sort=True) if len(rates) else ():
        never = frame[~frame["seen_in_training"]]
        seen = frame[frame["seen_in_training"]]
        for row in never.to_dict("records"):
            lines.append(f"{row['detector']} never saw {generator} in training: it detects its fakes at a rate of "
                         f"{_ci(row)} at its validation threshold ({row['fake_groups']} fake groups).")
        if len(seen) and len(never):
            lines.append(f"The {len(seen)} detectors trained on {generator} detect its fakes that none of their fold "
                         f"models trained on at a median rate of {seen['estimate'].median():.3f} (range "
                         f"{seen['estimate'].min():.3f} to {seen['estimate'].max():.3f}).")
    if len(family):
        verdicts = family["verdict"].value_counts().to_dict()
        lines.append(f"Robustness: of {len(family)} pre-registered claims 'AUC drops from clean to the strongest "
                     f"severity' (one Holm family), {verdicts.get('supported', 0)} supported, "
                     f"{verdicts.get('inconclusive', 0)} inconclusive, {verdicts.get('contradicted', 0)} contradicted.")
        worst = family.dropna(subset=["diff"]).sort_values("diff", ascending=False).head(1)
        for row in worst.to_dict("records"):
            lines.append(f"Largest AUC drop: {row['a'].split(' | ')[0]} under {row['b'].split(' | ')[1]}: "
                         f"{row['diff']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] ({row['verdict']}, "
                         f"{row['real_groups']} real and {row['fake_groups']} fake groups).")
    if not math.isnan(clean_gap):
        lines.append(f"Re-scoring reproduces the saved test predictions of the {n_models} detectors (largest "
                     f"difference {clean_gap:.1e}).")
    for metrics in external:
        head = metrics[metrics["metric"].isin(["auc", "false_positive_rate", "detection_rate"])
                       & metrics["threshold_name"].isin(["", "validation"])]
        for row in head.to_dict("records"):
            lines.append(f"{row['detector']} on {Path(row['root']).name}: {row['metric']} {_ci(row)}.")
    return lines


def headline(table: pd.DataFrame, grid: Sequence[Perturbation]) -> pd.DataFrame:
    """AUC per detector: clean and at the strongest severity of each kind, with intervals."""
    auc = table[table["metric"] == "auc"]
    strongest: dict[str, Perturbation] = {}
    for p in grid:
        if p.kind not in strongest or p.strength > strongest[p.kind].strength:
            strongest[p.kind] = p
    columns = {CLEAN: "clean"} | {p.spec: p.spec for p in strongest.values()}
    rows = []
    for detector, frame in auc.groupby("detector", sort=False):
        row = {"detector": detector}
        for condition, name in columns.items():
            match = frame[frame["condition"] == condition]
            row[f"AUC {name}"] = _ci(match.iloc[0]) if len(match) else ""
        rows.append(row)
    return pd.DataFrame(rows)
