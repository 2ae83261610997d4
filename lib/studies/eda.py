"""Analyses of notebook 01 (exploratory data analysis), run before any model is trained.

What is in the dataset (counts, skipped files, geometry, file formats, colours, sample images), whether metadata
alone predict the label (shortcut probe, overall and per shortcut Phase 2 can neutralise), which groups were merged
as near-duplicates and whether near-duplicates still cross groups or split roles, how hard the task is for a small
CNN (difficulty probe), and the conclusion lines computed from those tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.data.duplicates import BYTES, from_hex, near_pairs
from lib.data.imageio import load_rgb
from lib.report import plots

META_NUMERIC = ["width", "height", "aspect", "log_bytes", "jpeg_quality", "bytes_per_pixel"]
DIFFICULTY_COLUMNS = ["model", "fold", "epochs", "seconds", "val_auc", "test_auc", "test_accuracy", "test_n",
                      "test_real_groups", "test_fake_groups"]


@dataclass(frozen=True)
class ShortcutFamily:
    """A shortcut the metadata probe can flag: the features that carry it and the Phase 2 condition (notebook 04)
    that neutralises it."""

    name: str
    features: tuple[str, ...]   # `metadata_features` columns; "format_*" = every file-format column
    condition: str              # the Phase 2 condition's name
    remedy: str                 # what that condition does
    recipe: str                 # how it is built
    what: str = ""              # what it is, for sentences


# The file size (log_bytes) grows with the pixel count, so it belongs to no family alone: the crop equalises what the
# pixels carry of it, the re-encoding the rest. Phase 2 (lib.studies.phase2.SHORTCUTS) trains these conditions.
SHORTCUT_FAMILIES = (
    ShortcutFamily("geometry", ("width", "height", "aspect"), "center_crop",
                   "the largest centred square, the same isotropic scaling for both classes",
                   'Recipe(mode="center_crop")', "image geometry (width, height, aspect ratio)"),
    ShortcutFamily("compression", ("bytes_per_pixel", "jpeg_quality", "format_*"), "jpeg",
                   "every image of both classes re-encoded at one JPEG quality", "Recipe(jpeg_quality=q)",
                   "compression (JPEG quality, bytes per pixel, file format)"),
)


# ----------------------------------------------------------------------------- dataset overview

def describe_dataset(dataset: Any) -> str:
    """One line naming the dataset, its layout, folder, size, skipped files and fingerprint."""
    return (f"dataset {dataset.name!r} ({dataset.layout}) at {dataset.root}: {len(dataset.manifest)} images, "
            f"{len(dataset.skipped)} skipped, fingerprint {dataset.fingerprint}")


def with_class_names(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest plus `cls` ("real"/"fake"), the hue of every table and figure of the notebook."""
    return manifest.assign(cls=np.where(manifest["label"] == 1, "fake", "real"))


def group_counts(manifest: pd.DataFrame) -> tuple[int, int]:
    """(real groups, fake groups): groups holding a real / a fake image (a group holding both counts for both)."""
    labels, groups = manifest["label"].to_numpy(), manifest["group"].to_numpy()
    return len(set(groups[labels == 0])), len(set(groups[labels == 1]))


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
    importance: bool = True,
) -> dict:
    """Group-aware cross-validated AUC of a classifier that sees only metadata.

    Returns per-fold AUCs, their mean with a 95 % t-interval, `flagged` = the interval's lower bound is above 0.6
    (metadata alone predict the label clearly better than chance) and, with `importance`, the feature importances
    of a forest fitted on every image.
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
    out = {
        "fold_auc": aucs.tolist(),
        **{f"auc_{k}": v for k, v in summary.items()},
        "flagged": bool(summary["ci_low"] > 0.6) if np.isfinite(summary["ci_low"]) else bool(summary["mean"] > 0.6),
    }
    if importance:
        clf.fit(X, y)
        out["importance"] = pd.Series(clf.feature_importances_, index=X.columns).sort_values(ascending=False)
    return out


def family_features(manifest: pd.DataFrame, family: ShortcutFamily) -> list[str]:
    """The metadata columns of `family` present for this manifest ("format_*" expands to every format column)."""
    columns = list(metadata_features(manifest).columns)
    out = []
    for feature in family.features:
        out += [c for c in columns if c.startswith(feature[:-1])] if feature.endswith("*") else [feature]
    return out


def shortcut_families(manifest: pd.DataFrame, n_folds: int = 5, seed: int = 42) -> pd.DataFrame:
    """The probe restricted to each shortcut family Phase 2 can neutralise (`SHORTCUT_FAMILIES`): one row per family
    with its features, AUC, flag and neutralising condition. Features with a single value carry no label information
    and are left out; a family without any other feature is not probed (AUC NaN, not flagged)."""
    values = metadata_features(manifest)
    rows = []
    for family in SHORTCUT_FAMILIES:
        varying = [c for c in family_features(manifest, family) if values[c].nunique() > 1]
        row = {"shortcut": family.name, "features": ", ".join(varying), "auc_mean": np.nan, "auc_ci_low": np.nan,
               "auc_ci_high": np.nan, "flagged": False}
        if varying:
            probe = shortcut_probe(manifest, n_folds=n_folds, seed=seed, features=varying, importance=False)
            row |= {k: probe[k] for k in ("auc_mean", "auc_ci_low", "auc_ci_high", "flagged")}
        rows.append(row | {"neutraliser": family.condition, "neutraliser_text": family.remedy,
                           "recipe": family.recipe})
    return pd.DataFrame(rows)


def probe_table(probe: dict) -> pd.DataFrame:
    """One row: the probe's AUC summary and its flag (per-fold AUCs and importances left out)."""
    return pd.DataFrame([{k: v for k, v in probe.items() if k not in ("importance", "fold_auc")}])


def probe_record(probe: dict) -> dict:
    """The probe as JSON-ready values (importance as a feature -> weight mapping)."""
    record = {k: v for k, v in probe.items() if k != "importance"}
    return record | ({"importance": probe["importance"].to_dict()} if "importance" in probe else {})


# ----------------------------------------------------------------------------- near-duplicates

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


def dataset_near_duplicates(manifest: pd.DataFrame, splits: pd.DataFrame, max_distance: int = 4) -> pd.DataFrame:
    """`duplicate_report` of every pair of images whose perceptual hashes (the manifest's `phash`) differ in at most
    `max_distance` bits; `i`, `j` are manifest rows."""
    return duplicate_report(manifest, splits, near_pairs(from_hex(manifest["phash"]), max_distance))


def merge_summary(merges: pd.DataFrame) -> pd.DataFrame:
    """Group merges made before splitting, per kind of link: merges and the groups they produced."""
    if merges.empty:
        return pd.DataFrame(columns=["kind", "merges", "merged_groups"])
    return merges.groupby("kind").agg(merges=("new_group", "size"), merged_groups=("new_group", "nunique")).reset_index()


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
    """Fold 0 of `model` trained briefly on centre crops (no geometry shortcut), scored on the test hold-out; with the
    real and fake groups of the test hold-out that stand behind its number."""
    from lib.data.recipes import Recipe
    from lib.training.fit import TrainConfig
    from lib.training.runstore import run_cv

    config = TrainConfig(epochs=epochs, batch_size=32, lr=1e-3, t_max=epochs, seed=seed)
    table = run_cv(dataset, splits, Recipe(size=size, mode="center_crop"), model, config, folds=[0])
    real_groups, fake_groups = group_counts(dataset.manifest[(splits["split"] == "test").to_numpy()])
    return table.assign(test_real_groups=real_groups, test_fake_groups=fake_groups)


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


def _short_side(manifest: pd.DataFrame, label: int) -> float:
    part = manifest[manifest["label"] == label]
    return float(np.minimum(part["width"], part["height"]).median())


def shortcut_caveats(manifest: pd.DataFrame, probe: dict, families: pd.DataFrame) -> list[str]:
    """What a flagged metadata shortcut means for the CNN difficulty probe, and the Phase 2 condition that
    neutralises it (empty when the probe flagged nothing)."""
    flagged = families[families["flagged"]]
    if not probe["flagged"] and flagged.empty:
        return []
    if flagged.empty:   # only the features together separate the classes: every neutraliser applies
        flagged = families[families["features"] != ""]
    lines = []
    for row in flagged.itertuples():
        condition = f"Phase 2 condition `{row.neutraliser}` ({row.neutraliser_text}; {row.recipe})"
        real_side, fake_side = _short_side(manifest, 0), _short_side(manifest, 1)
        if row.shortcut == "geometry" and real_side == fake_side:
            lines.append(f"Geometry shortcut flagged; the CNN probe already trains and scores on centre crops, "
                         f"{condition}, which give both classes the same size and scale here (median short side "
                         f"{real_side:.0f} px), so its AUC does not rest on geometry.")
            continue
        extra = (f" (the probe's centre crops remove the aspect ratio, not the difference in resolution: median short "
                 f"side {real_side:.0f} px real vs {fake_side:.0f} px fake)" if row.shortcut == "geometry" else "")
        lines.append(f"{row.shortcut.capitalize()} shortcut flagged{extra}: the CNN probe's AUC may be that shortcut "
                     f"and is not evidence that the content is detectable; read detectors after the neutralising "
                     f"{condition}.")
    return lines


def conclusions(manifest: pd.DataFrame, skipped: pd.DataFrame, geometry: pd.DataFrame, probe: dict,
                families: pd.DataFrame, planted: dict, difficulty: pd.DataFrame, duplicates: pd.DataFrame,
                merges: pd.DataFrame, max_distance: int) -> list[str]:
    """The notebook's conclusion lines, computed from its tables (`duplicates` is the `duplicate_summary` row,
    `merges` the dataset's group merges, `families` the `shortcut_families` table)."""
    n_real, n_fake = int((manifest["label"] == 0).sum()), int((manifest["label"] == 1).sum())
    real_groups, fake_groups = group_counts(manifest)
    lines = [f"{len(manifest)} images ({n_real} real, {n_fake} fake) from {manifest['source'].nunique()} sources "
             f"and {manifest['group'].nunique()} groups ({real_groups} holding real, {fake_groups} holding fake "
             f"images); {len(skipped)} file(s) skipped as unreadable or unusable."]
    square = geometry.set_index("cls")["square_share"]
    lines.append(f"Square images: {square.get('real', float('nan')):.0%} of real vs "
                 f"{square.get('fake', float('nan')):.0%} of fake.")
    verdict = ("FLAGGED: metadata alone separate the classes" if probe["flagged"]
               else "not flagged: metadata carry little label information")
    per_shortcut = "; ".join(
        f"{r.shortcut} {'not probed (constant features)' if not r.features else f'AUC {r.auc_mean:.3f}'}"
        f"{' FLAGGED' if r.flagged else ''}" for r in families.itertuples())
    lines.append(f"Metadata-only probe AUC {probe['auc_mean']:.3f} (95 % CI {probe['auc_ci_low']:.3f}-"
                 f"{probe['auc_ci_high']:.3f}, {len(probe['fold_auc'])} group-aware folds over {real_groups} real "
                 f"and {fake_groups} fake groups): {verdict}; top feature: {probe['importance'].index[0]}; "
                 f"per shortcut: {per_shortcut}.")
    if planted:
        found = probe["flagged"]
        expected = bool(planted.get("geometry_shortcut")) or bool(planted.get("compression"))
        lines.append(f"Planted shortcut in the card: geometry={planted.get('geometry_shortcut')}, "
                     f"compression={planted.get('compression')}; the probe "
                     f"{'found' if found else 'did not find'} a metadata shortcut, "
                     f"{'as expected' if found == expected else 'CONTRARY to the card'}.")
    auc = float(difficulty.at[0, "test_auc"])
    test_real, test_fake = int(difficulty.at[0, "test_real_groups"]), int(difficulty.at[0, "test_fake_groups"])
    few = (" Too few groups for this number to speak beyond them." if min(test_real, test_fake) < 2 else "")
    lines.append(f"Difficulty probe: {difficulty.at[0, 'model']} trained {int(difficulty.at[0, 'epochs'])} epochs on "
                 f"centre crops reaches test AUC {auc:.3f} on {int(difficulty.at[0, 'test_n'])} held-out images from "
                 f"{test_real} real and {test_fake} fake groups ({difficulty_band(auc)}).{few}")
    lines += shortcut_caveats(manifest, probe, families)
    kinds = merges["kind"].value_counts() if len(merges) else pd.Series(dtype=int)
    n_bytes = int(kinds.get(BYTES, 0))
    cross = int(duplicates.at[0, "cross_group"])
    lines.append(f"Near-duplicates: {len(merges)} group merge(s) before splitting ({n_bytes} by identical bytes, "
                 f"{len(merges) - n_bytes} by perceptual hash); after merging, {int(duplicates.at[0, 'pairs'])} pairs "
                 f"within {max_distance} bits, {cross} across groups, "
                 f"{int(duplicates.at[0, 'cross_group_and_split'])} across groups and split roles"
                 + (" (merge them before trusting a split: open_study(merge_near_duplicates=True) with this distance)."
                    if cross else "."))
    return lines
