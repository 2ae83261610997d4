"""Figures shared by the notebooks (matplotlib/seaborn); every function returns the figure and can save it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def save(fig, path: str | Path | None, dpi: int = 110):
    """Write `fig` to `path` (PNG). In a notebook the written file is what the cell shows: the inline backend would
    otherwise draw the figure a second time, which costs as much as saving it."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        if "inline" in matplotlib.get_backend():
            from IPython.display import Image, display

            display(Image(filename=str(path)))
            plt.close(fig)
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


def evaluation_dashboard(ensemble, thresholds, by: str = "model", n_bins: int = 10, title: str = "",
                         path: str | Path | None = None):
    """Six panels for the final models on one evaluation set: ROC, precision-recall, confusion matrix (first model,
    at its validation-chosen threshold), reliability diagram, confidence histogram, AUC per fake source.

    `ensemble`: one row per (model, image) with label, source and probability (e.g. the fold ensemble on the test
    hold-out); `thresholds`: the validation-chosen threshold per model.
    """
    import seaborn as sns
    from sklearn.metrics import confusion_matrix, roc_auc_score

    from lib.evaluation.metrics import calibration_table, pr_points, roc_points

    levels = list(dict.fromkeys(ensemble[by]))
    colours = dict(zip(levels, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (roc_ax, pr_ax, cm_ax), (rel_ax, hist_ax, src_ax) = axes
    rows = []
    for level in levels:
        g = ensemble[ensemble[by] == level]
        y, p = g["label"].to_numpy(), g["probability"].to_numpy()
        roc, pr = roc_points(y, p), pr_points(y, p)
        roc_ax.plot(roc["fpr"], roc["tpr"], color=colours[level], label=level)
        pr_ax.plot(pr["recall"], pr["precision"], color=colours[level], label=level)
        rel = calibration_table(y, p, n_bins)
        rel_ax.plot(rel["prob_pred"], rel["prob_true"], "o-", color=colours[level], label=level)
        hist_ax.hist(p, bins=20, range=(0, 1), histtype="step", color=colours[level], label=level)
        reals = g[g["label"] == 0]
        for source, fakes in g[g["label"] == 1].groupby("source"):
            both = pd.concat([reals, fakes])
            auc = roc_auc_score(both["label"], both["probability"]) if len(reals) else np.nan
            rows.append({by: level, "source": source, "auc": auc})
    roc_ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall")
    first = ensemble[ensemble[by] == levels[0]]
    cm = confusion_matrix(first["label"], first["probability"] >= thresholds[levels[0]], labels=[0, 1], normalize="true")
    sns.heatmap(cm, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", cbar=False, ax=cm_ax,
                xticklabels=["real", "fake"], yticklabels=["real", "fake"])
    cm_ax.set(title=f"{levels[0]} at t = {thresholds[levels[0]]:.2f} (chosen on validation)", xlabel="predicted",
              ylabel="true")
    rel_ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    rel_ax.set(xlabel="mean predicted P(fake)", ylabel="observed fake fraction", title="reliability", xlim=(0, 1),
               ylim=(0, 1))
    hist_ax.set(xlabel="predicted P(fake)", ylabel="images", title="confidence")
    per_source = pd.DataFrame(rows)
    if len(per_source):
        sns.barplot(per_source, x="source", y="auc", hue=by, ax=src_ax)
        src_ax.tick_params(axis="x", rotation=30)
        src_ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
    src_ax.axhline(0.5, color="k", lw=0.8, ls="--")
    src_ax.set(ylim=(0, 1), ylabel="AUC (this source's fakes vs all reals)", title="AUC per fake source")
    for ax in (roc_ax, pr_ax, rel_ax, hist_ax):
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)
