"""Attention blocks for convolutional feature maps: Squeeze-and-Excitation and CBAM.

SE (Hu et al. 2018) is torchvision's ``SqueezeExcitation``; CBAM (Woo et al. 2018) is channel attention (a shared
MLP over average- and max-pooled descriptors) followed by spatial attention (a 7x7 conv over the channel mean and
max). Both map (N, C, H, W) to the same shape, so they drop in anywhere between conv stages.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

ATTENTIONS = ("none", "se", "cbam")


def _squeeze(channels: int, reduction: int) -> int:
    # a floor of 4 hidden units keeps the bottleneck meaningful on the narrow early stages of small CNNs
    return max(4, channels // reduction)


class ChannelAttention(nn.Module):
    """CBAM's channel gate: sigmoid(MLP(avgpool) + MLP(maxpool)) per channel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = _squeeze(channels, reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM's spatial gate: sigmoid(conv7x7([mean over channels, max over channels])) per position."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


def make_attention(kind: str, channels: int, reduction: int = 16) -> nn.Module | None:
    """The attention block `kind` for `channels` channels; None for "none" (callers then add no module at all, so
    models without attention keep their parameters and state-dict keys)."""
    if kind not in ATTENTIONS:
        raise ValueError(f"unknown attention {kind!r}; valid: {', '.join(ATTENTIONS)}")
    if kind == "none":
        return None
    if kind == "se":
        return SqueezeExcitation(channels, _squeeze(channels, reduction))
    return CBAM(channels, reduction)
