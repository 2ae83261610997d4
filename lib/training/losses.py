"""Training losses for one-logit binary detectors: BCE or focal loss, with optional label smoothing.

Every loss takes SOFT targets in [0, 1] (Mixup/CutMix give convex combinations of the labels) and returns the
batch mean. Label smoothing moves a target y to y * (1 - eps) + eps / 2, i.e. towards 0.5, before the loss.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

LOSSES = ("bce", "focal")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def smooth_targets(targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Binary label smoothing: y * (1 - eps) + eps / 2 (0 -> eps/2, 1 -> 1 - eps/2)."""
    return targets if eps == 0 else targets * (1.0 - eps) + eps / 2


def make_loss(cfg: Any) -> LossFn:
    """The training loss of a TrainConfig-like object (fields loss, focal_gamma, focal_alpha, label_smoothing).

    focal uses torchvision's sigmoid_focal_loss (Lin et al. 2017); focal_alpha < 0 turns the class weighting off,
    otherwise the positive (fake) class gets weight alpha and the real class 1 - alpha.
    """
    kind, eps = cfg.loss, float(cfg.label_smoothing)
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; valid: {', '.join(LOSSES)}")
    if kind == "bce":
        def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(logits, smooth_targets(targets.to(logits.dtype), eps))
        return bce

    gamma, alpha = float(cfg.focal_gamma), float(cfg.focal_alpha)

    def focal(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, smooth_targets(targets.to(logits.dtype), eps), alpha=alpha, gamma=gamma,
                                  reduction="mean")
    return focal
