"""Analyses of notebook 01 (exploratory data analysis), run before any model is trained.

What is in the dataset (counts, skipped files, geometry, file formats, colours, sample images), whether metadata
alone predict the label (shortcut probe), whether near-duplicates cross groups or split roles, how hard the task is
for a small CNN (difficulty probe), and the conclusion lines computed from those tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.data.imageio import load_rgb
from lib.report import plots

META_NUMERIC = ["width", "height", "aspect", "log_bytes", "jpeg_quality", "bytes_per_pixel"]
DIFFICULTY_COLUMNS = ["model", "fold", "epochs", "seconds", "val_auc", "test_auc", "test_accuracy", "test_n"]


# ----------------------------------------------------------------------------- dataset overview

def describe_dataset(dataset: Any) -> str:
    """One line naming the dataset, its layout, folder, size, skipped files and fingerprint."""
    return (f"dataset {dataset.name!r} ({dataset.layout}) at {dataset.root}: {len(dataset.manifest)} images, "
            f"{len(dataset.skipped)} skipped, fingerprint {dataset.fingerprint}")


def with_class_names(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest plus `cls` ("real"/"fake"), the hue of every table and figure of the notebook."""
    return manifest.assign(cls=np.where(manifest["label"] == 1, "fake", "real"))


def image_subset(n_images: int, max_images: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted random rows, at most `max_images`: decoding every image of a large dataset would take too long."""
    return np.sort(rng.choice(n_images, size=min(max_images, n_images), replace=False))


def class_source_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images and groups per class and source."""
    return manifest.groupby(["cls", "source"]).agg(images=("path", "size"), groups=("group", "nunique")).reset_index()


def skipped_by_reason(skipped: pd.DataFrame) -> pd.DataFrame:
    """Number of skipped files per reason (an empty table when nothing was skipped)."""
    if not len(skipped):
        return pd.DataFrame(columns=["reason", "files"])
    return skipped.groupby("reason").size().rename("files").reset_index()


# ----------------------------------------------------------------------------- geometry, format, colour

def geometry_by_class(manifest: pd.DataFrame) -> pd.DataFrame:
    """Median size, aspect ratio, share of square images and median file size per class."""
    geo = manifest.assign(aspect=manifest["width"] / manifest["height"])
    return geo.groupby("cls").agg(
        width_median=("width", "median"), height_median=("height", "median"),
        aspect_mean=("aspect", "mean"), aspect_std=("aspect", "std"),
        square_share=("aspect", lambda a: float(np.mean(np.isclose(a, 1.0)))),
        bytes_median=("bytes", "median"),
    ).reset_index()


def format_shares(manifest: pd.DataFrame) -> pd.DataFrame:
    """Share of each file format within each class."""
    return pd.crosstab(manifest["cls"], manifest["format"], normalize="index").round(3)


def jpeg_quality_by_class(manifest: pd.DataFrame) -> pd.DataFrame:
    """Distribution of the estimated JPEG quality per class (JPEG files only; empty without any)."""
    return manifest.dropna(subset=["jpeg_quality"]).groupby("cls")["jpeg_quality"].describe()


def plot_geometry(manifest: pd.DataFrame, path: str | Path | None = None):
    """Aspect-ratio histogram, width-height scatter and JPEG-quality histogram per class."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    geo = manifest.assign(aspect=manifest["width"] / manifest["height"])
    jpeg = manifest.dropna(subset=["jpeg_quality"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    sns.histplot(geo, x="aspect", hue="cls", bins=30, ax=axes[0], element="step")
    axes[0].set_title("aspect ratio (width / height)")
    sns.scatterplot(geo, x="width", y="height", hue="cls", alpha=0.4, s=15, ax=axes[1])
    axes[1].set_title("image size")
    if len(jpeg):
        sns.histplot(jpeg, x="jpeg_quality", hue="cls", bins=20, ax=axes[2], element="step")
        axes[2].set_title("estimated JPEG quality")
    else:
        axes[2].text(0.5, 0.5, "no JPEG files", ha="center")
        axes[2].axis("off")
    return plots.save(fig, path)


def colour_statistics(images) -> pd.DataFrame:
    """Per-image mean and std of R, G, B and mean saturation; `images` yields HxWx3 uint8 arrays."""
    rows = []
    for img in images:
        x = img.reshape(-1, 3).astype(np.float32) / 255.0
        mx, mn = x.max(axis=1), x.min(axis=1)
        sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
        rows.append([*x.mean(axis=0), *x.std(axis=0), sat.mean()])
    return pd.DataFrame(rows, columns=["mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "saturation"])


def colour_table(manifest: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """`colour_statistics` of the images at `rows` (decoded one by one), with their class."""
    colours = colour_statistics(load_rgb(p) for p in manifest["path"].to_numpy()[rows])
    colours["cls"] = manifest["cls"].to_numpy()[rows]
    return colours


def colour_summary(colours: pd.DataFrame) -> pd.DataFrame:
    """Mean of every colour statistic per class, one row per statistic."""
    return colours.groupby("cls").mean().T


def plot_colours(colours: pd.DataFrame, path: str | Path | None = None):
    """Saturation density and per-channel mean boxplots per class."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    sns.kdeplot(colours, x="saturation", hue="cls", common_norm=False, ax=axes[0])
    long = colours.melt(id_vars="cls", value_vars=["mean_r", "mean_g", "mean_b"], var_name="channel")
    sns.boxplot(long, x="channel", y="value", hue="cls", ax=axes[1])
    return plots.save(fig, path)


def source_samples(manifest: pd.DataFrame, per_source: int,
                   rng: np.random.Generator) -> tuple[list[np.ndarray], list[str]]:
    """Up to `per_source` random images of every source, titled with their source and original size."""
    images, titles = [], []
    for source, rows in manifest.groupby("source").groups.items():
        pick = rng.choice(np.asarray(rows), size=min(per_source, len(rows)), replace=False)
        for r in pick:
            images.append(load_rgb(manifest.at[r, "path"]))
            titles.append(f"{source} {manifest.at[r, 'width']}x{manifest.at[r, 'height']}")
    return images, titles


# ----------------------------------------------------------------------------- metadata shortcut probe

def metadata_features(manifest: pd.DataFrame) -> pd.DataFrame:
    """Features a detector should NOT need: geometry, file format, size on disk, JPEG quality."""
    out = pd.DataFrame(index=manifest.index)
    out["width"] = manifest["width"].astype(float)
    out["height"] = manifest["height"].astype(float)
    out["aspect"] = out["width"] / out["height"]
    out["log_bytes"] = np.log1p(manifest["bytes"].astype(float))
    out["bytes_per_pixel"] = manifest["bytes"] / (out["width"] * out["height"])
    # -1 marks "not a JPEG": the absence of a quality is itself information a shortcut could use.
    out["jpeg_quality"] = manifest["jpeg_quality"].astype(float).fillna(-1.0)
    formats = pd.get_dummies(manifest["format"].astype(str), prefix="format", dtype=float)
    return pd.concat([out, formats], axis=1)


def shortcut_probe(
    manifest: pd.DataFrame,
    n_folds: int = 5,
    seed: int = 42,
    features: list[str] | None = None,
) -> dict:
    """Group-aware cross-validated AUC of a classifier that sees only metadata.

    Returns per-fold AUCs, their mean with a 95 % t-interval, and `flagged` = the interval's lower bound is
    above 0.6 (metadata alone predicts the label clearly better than chance).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

    from lib.evaluation.stats import summarize

    X = metadata_features(manifest)
    if features is not None:
        X = X[features]
    y = manifest["label"].to_numpy()
    groups = manifest["group"].to_numpy()
    n_splits = int(min(n_folds, pd.Series(groups).nunique()))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    clf = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=-1)
    aucs = cross_val_score(clf, X, y, groups=groups, cv=cv, scoring="roc_auc")
    summary = summarize(aucs)
    clf.fit(X, y)
    importance = pd.Series(clf.feature_importances_, index=X.columns).sort_values(ascending=False)
    return {
        "fold_auc": aucs.tolist(),
        **{f"auc_{k}": v for k, v in summary.items()},
        "flagged": bool(summary["ci_low"] > 0.6) if np.isfinite(summary["ci_low"]) else bool(summary["mean"] > 0.6),
        "importance": importance,
    }


def probe_table(probe: dict) -> pd.DataFrame:
    """One row: the probe's AUC summary and its flag (per-fold AUCs and importances left out)."""
    return pd.DataFrame([{k: v for k, v in probe.items() if k not in ("importance", "fold_auc")}])


def probe_record(probe: dict) -> dict:
    """The probe as JSON-ready values (importance as a feature -> weight mapping)."""
    return {k: v for k, v in probe.items() if k != "importance"} | {"importance": probe["importance"].to_dict()}


# ----------------------------------------------------------------------------- near-duplicates

def perceptual_hashes(images, progress: bool = True) -> np.ndarray:
    """64-bit perceptual hash (imagehash.phash) of each image, as uint64."""
    import imagehash
    from PIL import Image

    out = []
    for img in tqdm(images, desc="perceptual hashes", disable=not progress, leave=False):
        bits = imagehash.phash(Image.fromarray(img)).hash.flatten()
        out.append(np.packbits(bits).view(">u8")[0])
    return np.asarray(out, dtype=np.uint64)


def _popcount64(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def near_duplicates(hashes: np.ndarray, max_distance: int = 4, chunk: int = 2048) -> pd.DataFrame:
    """All pairs (i < j) whose perceptual hashes differ in at most `max_distance` bits (chunked, vectorised)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start:start + chunk]
        dist = _popcount64(block[:, None] ^ hashes[None, :])
        i, j = np.nonzero(dist <= max_distance)
        i = i + start
        keep = i < j
        pairs.append(pd.DataFrame({"i": i[keep], "j": j[keep], "distance": dist[i[keep] - start, j[keep]]}))
    return pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(columns=["i", "j", "distance"])


def duplicate_report(manifest: pd.DataFrame, splits: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Near-duplicate pairs annotated with whether they cross groups and cross split roles/folds (leakage)."""
    if pairs.empty:
        return pairs.assign(cross_group=[], cross_split=[])
    gi, gj = manifest["group"].to_numpy()[pairs["i"]], manifest["group"].to_numpy()[pairs["j"]]
    role = (splits["split"].astype(str) + ":" + splits["fold"].astype(str)).to_numpy()
    out = pairs.copy()
    out["source_i"] = manifest["source"].to_numpy()[pairs["i"]]
    out["source_j"] = manifest["source"].to_numpy()[pairs["j"]]
    out["cross_group"] = gi != gj
    out["cross_split"] = role[pairs["i"]] != role[pairs["j"]]
    return out


def dataset_near_duplicates(manifest: pd.DataFrame, splits: pd.DataFrame, rows: np.ndarray,
                            max_distance: int = 4) -> pd.DataFrame:
    """`duplicate_report` of the near-duplicate pairs among the images at `rows` (pairs index manifest rows)."""
    hashes = perceptual_hashes(load_rgb(p) for p in manifest["path"].to_numpy()[rows])
    pairs = near_duplicates(hashes, max_distance=max_distance)
    if len(pairs):  # hashes are numbered within the subset: map them back to manifest rows
        pairs[["i", "j"]] = rows[pairs[["i", "j"]].to_numpy()]
    return duplicate_report(manifest, splits, pairs)


def duplicate_summary(duplicates: pd.DataFrame) -> pd.DataFrame:
    """One row: number of pairs, pairs across groups, pairs across groups and split roles (the leaks)."""
    found = len(duplicates) > 0
    return pd.DataFrame([{
        "pairs": len(duplicates),
        "cross_group": int(duplicates["cross_group"].sum()) if found else 0,
        "cross_group_and_split": int((duplicates["cross_group"] & duplicates["cross_split"]).sum()) if found else 0,
    }])


# ----------------------------------------------------------------------------- difficulty, card, conclusions

def difficulty_probe(dataset: Any, splits: pd.DataFrame, model: str, size: int, epochs: int, seed: int) -> pd.DataFrame:
    """Fold 0 of `model` trained briefly on centre crops (no geometry shortcut), scored on the test hold-out."""
    from lib.data.recipes import Recipe
    from lib.training.fit import TrainConfig
    from lib.training.runstore import run_cv

    config = TrainConfig(epochs=epochs, batch_size=32, lr=1e-3, t_max=epochs, seed=seed)
    return run_cv(dataset, splits, Recipe(size=size, mode="center_crop"), model, config, folds=[0])


def planted_shortcuts(card: dict | None) -> dict:
    """The shortcuts the embedded dataset's card says were planted (empty for other datasets)."""
    if not card:
        return {}
    return {k: card.get("params", {}).get(k) for k in ("geometry_shortcut", "compression", "difficulty")}


def difficulty_band(auc: float) -> str:
    """Where a test AUC sits for a benchmark: near chance, between chance and perfection, or near perfect."""
    if 0.6 <= auc <= 0.97:
        return "between chance and perfection"
    return "near chance" if auc < 0.6 else "near perfect"


def conclusions(manifest: pd.DataFrame, skipped: pd.DataFrame, geometry: pd.DataFrame, probe: dict, planted: dict,
                difficulty: pd.DataFrame, duplicates: pd.DataFrame, max_distance: int) -> list[str]:
    """The notebook's conclusion lines, computed from its tables (`duplicates` is the `duplicate_summary` row)."""
    n_real, n_fake = int((manifest["label"] == 0).sum()), int((manifest["label"] == 1).sum())
    lines = [f"{len(manifest)} images ({n_real} real, {n_fake} fake) from {manifest['source'].nunique()} sources "
             f"and {manifest['group'].nunique()} groups; {len(skipped)} file(s) skipped as unreadable or unusable."]
    square = geometry.set_index("cls")["square_share"]
    lines.append(f"Square images: {square.get('real', float('nan')):.0%} of real vs "
                 f"{square.get('fake', float('nan')):.0%} of fake.")
    verdict = ("FLAGGED: metadata alone separate the classes" if probe["flagged"]
               else "not flagged: metadata carry little label information")
    lines.append(f"Metadata-only probe AUC {probe['auc_mean']:.3f} (95 % CI {probe['auc_ci_low']:.3f}-"
                 f"{probe['auc_ci_high']:.3f}, {len(probe['fold_auc'])} group-aware folds): {verdict}; "
                 f"top feature: {probe['importance'].index[0]}.")
    if planted:
        found = probe["flagged"]
        expected = bool(planted.get("geometry_shortcut")) or bool(planted.get("compression"))
        lines.append(f"Planted shortcut in the card: geometry={planted.get('geometry_shortcut')}, "
                     f"compression={planted.get('compression')}; the probe "
                     f"{'found' if found else 'did not find'} a metadata shortcut, "
                     f"{'as expected' if found == expected else 'CONTRARY to the card'}.")
    auc = float(difficulty.at[0, "test_auc"])
    lines.append(f"Difficulty probe: {difficulty.at[0, 'model']} trained {int(difficulty.at[0, 'epochs'])} epochs on "
                 f"centre crops reaches test AUC {auc:.3f} on {int(difficulty.at[0, 'test_n'])} held-out images "
                 f"({difficulty_band(auc)}).")
    lines.append(f"Near-duplicates: {int(duplicates.at[0, 'pairs'])} pairs within {max_distance} bits, "
                 f"{int(duplicates.at[0, 'cross_group'])} across groups, "
                 f"{int(duplicates.at[0, 'cross_group_and_split'])} across groups and split roles.")
    return lines
