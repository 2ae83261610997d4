"""Figures shared by the notebooks (matplotlib/seaborn); every function returns the figure and can save it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np


def save(fig, path: str | Path | None, dpi: int = 110):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] = (), ncols: int = 8, size: float = 1.6,
               suptitle: str = "", path: str | Path | None = None):
    """A grid of HxWx3 uint8 images (or HxW maps, shown with a diverging colormap)."""
    n = max(len(images), 1)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, img in enumerate(images):
        ax = axes.flat[k]
        if img.ndim == 2:
            lim = float(np.abs(img).max()) or 1.0
            ax.imshow(img, cmap="coolwarm", vmin=-lim, vmax=lim)
        else:
            ax.imshow(img)
        if k < len(titles):
            ax.set_title(titles[k], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return save(fig, path)


def training_curves(history, by: str = "model", path: str | Path | None = None):
    """Train/val loss and validation AUC per epoch, one thin line per fold, one colour per level of `by`."""
    import seaborn as sns

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, (col, title) in zip(axes, [("train_loss", "training loss"), ("val_loss", "validation loss"), ("val_auc", "validation AUC")]):
        sns.lineplot(history, x="epoch", y=col, hue=by, units="fold", estimator=None, alpha=0.6, ax=ax)
        ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


def roc_pr_curves(predictions, by: str = "model", split: str = "test", path: str | Path | None = None):
    """ROC and precision-recall curves of every fold model on `split`, one colour per level of `by`."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    part = predictions[predictions["split"] == split]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = dict(zip(dict.fromkeys(part[by]), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    for (level, fold), group in part.groupby([by, "fold"], sort=False):
        y, p = group["label"].to_numpy(), group["probability"].to_numpy()
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        prec, rec, _ = precision_recall_curve(y, p)
        label = level if fold == part[part[by] == level]["fold"].min() else None
        axes[0].plot(fpr, tpr, color=colours[level], alpha=0.6, label=label)
        axes[1].plot(rec, prec, color=colours[level], alpha=0.6, label=label)
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({split}, one line per fold)")
    axes[1].set(xlabel="recall", ylabel="precision", title=f"precision-recall ({split})")
    for ax in axes:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def confusion_matrices(predictions, thresholds, by: str = "model", split: str = "test", path: str | Path | None = None):
    """Row-normalised confusion matrix per level of `by`, pooled over fold models, at validation-chosen thresholds."""
    import seaborn as sns
    from sklearn.metrics import confusion_matrix

    part = predictions[predictions["split"] == split]
    levels = list(dict.fromkeys(part[by]))
    fig, axes = plt.subplots(1, len(levels), figsize=(3.6 * len(levels), 3.3), squeeze=False)
    for ax, level in zip(axes[0], levels):
        group = part[part[by] == level]
        cm = confusion_matrix(group["label"], group["probability"] >= thresholds[level], labels=[0, 1], normalize="true")
        sns.heatmap(cm, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", cbar=False, ax=ax,
                    xticklabels=["real", "fake"], yticklabels=["real", "fake"])
        ax.set(title=f"{level} (t = {thresholds[level]:.2f})", xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return save(fig, path)
