"""Inference-time techniques on a trained model, without retraining: test-time augmentation (TTA) and Monte-Carlo
dropout.

Both go through `predict_logits` (the same `BatchLoader` batches, normalisation, device and mixed precision as the
run's own predictions), so with nothing switched on they reproduce the saved probabilities exactly.
Views are cut from the uint8 images before normalisation; flips and crops commute with the per-channel
normalisation, so this equals transforming the normalised tensor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from torch import nn

from lib.data.cache import IMAGENET_MEAN, IMAGENET_STD
from lib.training.fit import predict_logits, select_device
from lib.training.runstore import torch_threads

if TYPE_CHECKING:
    from lib.training.runstore import RunResult

TRANSFORMS = ("identity", "hflip")


def _windows(height: int, width: int, crop: int | None) -> list[tuple[slice, slice]]:
    """The whole image, or the 4 corner and the centre crop x crop windows (each distinct window once)."""
    if crop is None:
        return [(slice(None), slice(None))]
    if not 0 < crop <= min(height, width):
        raise ValueError(f"crop must be in 1..{min(height, width)} for {height}x{width} images, got {crop}")
    top, left = (height - crop) // 2, (width - crop) // 2
    corners = [(0, 0), (0, width - crop), (height - crop, 0), (height - crop, width - crop), (top, left)]
    return [(slice(r, r + crop), slice(c, c + crop)) for r, c in dict.fromkeys(corners)]


def predict_tta(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray | Sequence[int],
    transforms: Sequence[str] = TRANSFORMS,
    crop: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    amp: str = "off",
) -> np.ndarray:
    """Probability of "fake" for ``images[indices]``, averaged over every (transform, window) view.

    transforms: "identity" and/or "hflip". crop: None for the whole image, or a size for the 5-crop (4 corners and
    the centre) taken at native resolution, never resampled: the pixel statistics a detector looks at survive, but
    the model must accept a smaller input (fully convolutional with global pooling, like the simple CNN and NPR);
    a model that needs a fixed input size raises a ValueError.
    """
    unknown = set(transforms) - set(TRANSFORMS)
    if not transforms or unknown:
        raise ValueError(f"transforms must be a non-empty subset of {TRANSFORMS}, got {tuple(transforms)}")
    indices = np.asarray(indices, dtype=np.int64)
    windows = _windows(images.shape[2], images.shape[3], crop)
    views = []  # one probability vector per view, in the order of `indices`
    for name in transforms:
        for rows, cols in windows:
            chunks = []
            # one batch per chunk, so the batches are those of plain `predict` (identical numbers for "identity")
            for lo in range(0, indices.size, batch_size):
                block = images[indices[lo:lo + batch_size]][:, :, rows, cols]
                if name == "hflip":
                    block = block[..., ::-1]
                try:
                    chunks.append(predict_logits(model, block, np.arange(len(block)), batch_size=batch_size,
                                                 mean=mean, std=std, device=device, amp=amp))
                except RuntimeError as exc:
                    if crop is None:
                        raise
                    raise ValueError(f"the model cannot score {crop}x{crop} crops (it needs a fixed input size?): "
                                     f"use crop=None") from exc
            views.append(expit(np.concatenate(chunks)) if chunks else np.zeros(0))
    return np.mean(views, axis=0)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The model's dropout layers (nn.Dropout, Dropout2d, AlphaDropout, ...)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def predict_mc_dropout(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray | Sequence[int],
    passes: int = 20,
    seed: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    amp: str = "off",
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over `passes` stochastic passes of the probability of "fake" for ``images[indices]``.

    Only the dropout layers are stochastic; everything else (BatchNorm above all: its running statistics must not
    move) stays in eval mode. Dropout inside attention (nn.MultiheadAttention's own argument) is not a module and
    stays off. The draws come from `seed` in a forked RNG, so the caller's random state is untouched.
    """
    dropouts = dropout_modules(model)
    if not dropouts:
        raise ValueError(f"{type(model).__name__} has no dropout layer: MC dropout needs one (use predict instead)")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    indices = np.asarray(indices, dtype=np.int64)
    dev = select_device(device)
    modes = {m: m.training for m in model.modules()}

    def stochastic(module: nn.Module, _inputs: Any) -> None:
        module.train()  # predict_logits puts the whole model in eval mode: switch dropout back on for this call

    def restore(module: nn.Module, _inputs: Any, _output: Any) -> None:
        module.eval()

    hooks = [h for m in dropouts for h in (m.register_forward_pre_hook(stochastic), m.register_forward_hook(restore))]
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            draws = np.stack([expit(predict_logits(model, images, indices, batch_size=batch_size, mean=mean, std=std,
                                                   device=dev, amp=amp)) for _ in range(passes)])
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():  # per module: m.train() would also reset its children
            m.training = training
    return draws.mean(axis=0), draws.std(axis=0)


def run_normalization(run: "RunResult") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a saved run normalised its inputs with (from its metrics.json)."""
    norm = run.metrics["normalization"]
    return tuple(norm["mean"]), tuple(norm["std"])


def rescore_run(
    run: "RunResult",
    images: np.ndarray,
    transforms: Sequence[str] = TRANSFORMS,
    crop: int | None = None,
    mc_passes: int = 0,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """A saved run's predictions with `tta_probability` (and, with ``mc_passes``, `mc_probability` and `mc_std`)
    added; `images` is the run's tensor cache (`build_cache(manifest, run.spec.recipe)`), rows as in `row`.

    Batch size, device, mixed precision and CPU threads are the run's own, so the identity view reproduces
    `probability`.
    """
    cfg = run.spec.train
    mean, std = run_normalization(run)
    kw = dict(mean=mean, std=std, batch_size=cfg.eval_batch_size, device=cfg.device if device is None else device,
              amp=cfg.amp)
    model = run.get_model()
    out = run.predictions.copy()
    out["tta_probability"] = np.nan
    if mc_passes:
        out["mc_probability"] = np.nan
        out["mc_std"] = np.nan
    with torch_threads(cfg.threads):  # float reductions depend on the thread count (see TrainConfig.threads)
        for _, part in out.groupby("split", sort=False):  # each split in its saved order: the run's own batches
            rows = part["row"].to_numpy()
            out.loc[part.index, "tta_probability"] = predict_tta(model, images, rows, transforms, crop, **kw)
            if mc_passes:
                mc_mean, mc_std = predict_mc_dropout(model, images, rows, mc_passes, seed, **kw)
                out.loc[part.index, "mc_probability"] = mc_mean
                out.loc[part.index, "mc_std"] = mc_std
    return out
