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
