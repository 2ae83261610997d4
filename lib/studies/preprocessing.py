"""Analyses of notebook 02 (preprocessing): what each recipe and the augmentation do to real and fake images.

Demonstration grids of the square resize, letterbox and centre crop; MTCNN face crops on bundled face photographs
and on the dataset, with the centre-crop fallback when no face is found; detection rates per source and class;
before/after grids of the training-only augmentation; normalisation statistics of the real training images; and
the conclusion lines computed from those tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lib.data.augment import AugmentPolicy
from lib.data.cache import IMAGENET_MEAN, IMAGENET_STD
from lib.data.imageio import load_rgb
from lib.data.recipes import Recipe
from lib.report import plots

BOX = ["x0", "y0", "x1", "y1"]
GEOMETRY_MODES = ("resize", "letterbox", "center_crop")


def demo_rows(manifest: pd.DataFrame, per_class: int, seed: int) -> np.ndarray:
    """Up to `per_class` random real rows, then up to `per_class` random fake rows."""
    rng = np.random.default_rng(seed)
    labels = manifest["label"]
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())),
                                      replace=False) for c in (0, 1)])


# ----------------------------------------------------------------------------- recipes

def geometry_recipes(size: int) -> dict[str, Recipe]:
    """The three ways of making an image square: resize (squashes), letterbox (pads), centre crop (cuts)."""
    return {mode: Recipe(size=size, mode=mode) for mode in GEOMETRY_MODES}


def recipe_grid(manifest: pd.DataFrame, rows: Sequence[int],
                recipes: dict[str, Recipe]) -> tuple[list[np.ndarray], list[str]]:
    """Each image (titled with its source and original size) followed by its output under every recipe."""
    images, titles = [], []
    for r in rows:
        img = load_rgb(manifest.at[r, "path"])
        images.append(img)
        titles.append(f"{manifest.at[r, 'source']} {img.shape[1]}x{img.shape[0]}")
        for name, recipe in recipes.items():
            images.append(recipe.apply(img, int(manifest.at[r, "label"])))
            titles.append(name)
    return images, titles


# ----------------------------------------------------------------------------- face crops

def face_recipe(size: int, margin: float, min_confidence: float) -> Recipe:
    """The MTCNN face-crop recipe at the notebook's size, margin and confidence threshold."""
    return Recipe(size=size, mode="face", face_margin=margin, face_detector=f"mtcnn@{min_confidence}")


def bundled_face_photos() -> dict[str, np.ndarray]:
    """Face photographs shipped with scikit-image and matplotlib (and one without a face), as RGB uint8."""
    import matplotlib.cbook
    import matplotlib.pyplot as plt
    import skimage.data

    return {
        "astronaut": skimage.data.astronaut(),
        "grace_hopper": np.asarray(plt.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))),
        "camera": np.repeat(skimage.data.camera()[..., None], 3, axis=2),
    }


def bundled_face_boxes(photos: dict[str, np.ndarray], min_confidence: float) -> pd.DataFrame:
    """Most confident MTCNN box per photograph (NaN where none reaches `min_confidence`) and `found`."""
    from lib.data import faces

    boxes = faces.detect_boxes(photos.values(), min_confidence=min_confidence, progress=False)
    table = pd.DataFrame(boxes, columns=faces.BOX_COLUMNS, index=list(photos))
    return table.assign(found=lambda t: t["confidence"].notna())


def crop_face(recipe: Recipe, img: np.ndarray, label: int, box: np.ndarray) -> np.ndarray:
    """The face crop of `img`; a NaN box (no face found) makes the recipe fall back to a centre crop."""
    return recipe.apply(img, label, box=box if np.isfinite(box[0]) else None)


def bundled_crop_grid(photos: dict[str, np.ndarray], boxes: pd.DataFrame,
                      recipe: Recipe) -> tuple[list[np.ndarray], list[str]]:
    """The photographs, then their face crops titled by whether a face or the fallback made them."""
    crops = [crop_face(recipe, img, 0, boxes.loc[name, BOX].to_numpy()) for name, img in photos.items()]
    titles = list(photos) + [f"face crop ({'face' if found else 'fallback'})" for found in boxes["found"]]
    return list(photos.values()) + crops, titles


def dataset_face_grid(manifest: pd.DataFrame, boxes: pd.DataFrame, recipe: Recipe,
                      n_each: int) -> tuple[list[np.ndarray], list[str]]:
    """The first `n_each` images with a face and the first `n_each` without, each followed by its face crop."""
    found = boxes["found"].to_numpy()
    rows = np.concatenate([np.flatnonzero(found)[:n_each], np.flatnonzero(~found)[:n_each]]).astype(int)
    images, titles = [], []
    for r in rows:
        img = load_rgb(manifest.at[r, "path"])
        box = boxes.loc[r, BOX].to_numpy(float)
        images += [img, crop_face(recipe, img, int(manifest.at[r, "label"]), box)]
        titles += [manifest.at[r, "source"], "face" if np.isfinite(box[0]) else "fallback"]
    return images, titles


def class_detection_rates(rates: pd.DataFrame, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    """Images, detected faces and detection rate per class, from the per-source `detection_rates` table; with the
    ``manifest`` it was computed on, also the number of groups (independent photographs or identities) per class."""
    out = rates.groupby("class")[["n", "faces"]].sum().assign(rate=lambda t: t["faces"] / t["n"])
    if manifest is not None:
        classes = np.where(manifest["label"].to_numpy() == 1, "fake", "real")
        groups = manifest["group"].groupby(classes).nunique()
        out["groups"] = groups.reindex(out.index).fillna(0).astype(int)
    return out


def plot_detection_rates(rates: pd.DataFrame, path: str | Path | None = None):
    """Bar chart of the MTCNN detection rate per source and class."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(rates, x="source", y="rate", hue="class", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_title("MTCNN detection rate per source")
    plt.xticks(rotation=30)
    return plots.save(fig, path)


# ----------------------------------------------------------------------------- augmentation and normalisation

def augmentation_grid(images: np.ndarray, rows: np.ndarray, policy: AugmentPolicy,
                      seed: int) -> tuple[list[np.ndarray], list[str]]:
    """The cached images at `rows` (sorted) before, then after, one seeded pass of the augmentation policy."""
    import torch

    batch = torch.from_numpy(np.ascontiguousarray(images[np.sort(rows)]))
    augmented = policy(batch, torch.Generator().manual_seed(seed))
    before, after = list(batch.permute(0, 2, 3, 1).numpy()), list(augmented.permute(0, 2, 3, 1).numpy())
    return before + after, ["before"] * len(before) + ["after"] * len(after)


def policy_table(policy: AugmentPolicy) -> pd.DataFrame:
    """The augmentation policy's parameters, one row each."""
    return pd.Series(policy.to_dict(), name="augmentation policy").to_frame()


def real_training_rows(manifest: pd.DataFrame, splits: pd.DataFrame) -> np.ndarray:
    """Rows of real images in the train+validation part of the split table (the test hold-out never counts)."""
    return np.flatnonzero((splits["split"].to_numpy() == "trainval") & (manifest["label"].to_numpy() == 0))


def normalization_table(real_mean: Sequence[float], real_std: Sequence[float]) -> pd.DataFrame:
    """ImageNet statistics next to those of the real training images, one row per channel."""
    return pd.DataFrame({"imagenet_mean": IMAGENET_MEAN, "imagenet_std": IMAGENET_STD,
                         "real_train_mean": real_mean, "real_train_std": real_std}, index=["R", "G", "B"])


def normalization_record(real_mean: Sequence[float], real_std: Sequence[float], n_images: int,
                         recipe: Recipe, n_groups: int | None = None) -> dict:
    """The normalisation statistics later notebooks read (normalization.json), with the images and groups they come
    from."""
    real = {"mean": list(map(float, real_mean)), "std": list(map(float, real_std)), "n_images": int(n_images),
            "recipe": recipe.key}
    if n_groups is not None:
        real["n_groups"] = int(n_groups)
    return {"imagenet": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, "real_train": real}


# ----------------------------------------------------------------------------- conclusions

def real_training_groups(manifest: pd.DataFrame, rows: np.ndarray) -> int:
    """Number of groups (photographs) among the given manifest rows."""
    return int(manifest["group"].iloc[np.asarray(rows, dtype=int)].nunique())


def _class_counts(class_rates: pd.DataFrame, cls: str) -> str:
    if cls not in class_rates.index or "n" not in class_rates:
        return ""
    groups = f", {int(class_rates.at[cls, 'groups'])} groups" if "groups" in class_rates else ""
    return f" ({int(class_rates.at[cls, 'n'])} images{groups})"


def conclusions(summary: pd.DataFrame, class_rates: pd.DataFrame, bundled_boxes: pd.DataFrame,
                real_mean: Sequence[float], n_folds: int, real_images: int | None = None,
                real_groups: int | None = None) -> list[str]:
    """The notebook's conclusion lines: split soundness, face detection rates, normalisation statistics, each with
    the images and groups behind it when known. Descriptive only: this notebook trains nothing and chooses nothing
    (Phase 2 decides whether a face-rate gap rules the face crop out, on the train+validation images)."""
    overlap = int(summary["shared_groups"].fillna(0).sum())  # "unused" rows are never read: NA
    lines = [f"Split table: {n_folds} folds + test hold-out; groups shared between roles: {overlap} "
             f"({'sound' if overlap == 0 else 'LEAK'})."]
    rate = class_rates["rate"].to_dict()
    gap = abs(rate.get("real", 0) - rate.get("fake", 0))
    gap_note = "a difference this large is itself a shortcut for face-crop models" if gap > 0.1 else "rates are similar"
    lines.append(f"MTCNN finds a face in {rate.get('real', float('nan')):.0%} of real"
                 f"{_class_counts(class_rates, 'real')} and {rate.get('fake', float('nan')):.0%} of fake images"
                 f"{_class_counts(class_rates, 'fake')}; {gap_note}; "
                 f"{int(bundled_boxes['found'].sum())}/{len(bundled_boxes)} bundled face photographs detected.")
    source = ""
    if real_images is not None:
        source = f" over {int(real_images)} real train+validation images" + (
            f" ({int(real_groups)} groups)" if real_groups is not None else "")
    lines.append(f"Real-only training statistics (R, G, B){source} mean " + ", ".join(f"{m:.3f}" for m in real_mean)
                 + " vs ImageNet " + ", ".join(f"{m:.3f}" for m in IMAGENET_MEAN) + ".")
    return lines
