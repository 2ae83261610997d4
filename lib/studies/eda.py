"""Exploratory checks that run before any model: metadata shortcuts, colour statistics, near-duplicates."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

META_NUMERIC = ["width", "height", "aspect", "log_bytes", "jpeg_quality", "bytes_per_pixel"]


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


def colour_statistics(images) -> pd.DataFrame:
    """Per-image mean and std of R, G, B and mean saturation; `images` yields HxWx3 uint8 arrays."""
    rows = []
    for img in images:
        x = img.reshape(-1, 3).astype(np.float32) / 255.0
        mx, mn = x.max(axis=1), x.min(axis=1)
        sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
        rows.append([*x.mean(axis=0), *x.std(axis=0), sat.mean()])
    return pd.DataFrame(rows, columns=["mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "saturation"])


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
