"""`srm_cnn`: a fixed SRM high-pass front end, channel attention, then a small conv trunk (one logit).

The three 5x5 SRM kernels are those Zhou et al. ("Learning Rich Features for Image Manipulation Detection", CVPR
2018) took from the steganalysis rich models (Fridrich & Kodovsky 2012): a second-order 3x3 "KB" kernel, the 5x5
"KV" kernel and a horizontal second-order line, each normalised by its centre weight. They suppress image content
and keep the local noise residual, where generator up-sampling leaves its traces. Here each kernel is applied to
each colour channel on its own (a grouped conv: 3 colours x 3 kernels = 9 residual maps), so colour-specific
residuals are kept (Zhou et al. sum the colours instead). The bank is a buffer: never trained, never in
`parameters()`. Kernels sum to zero, so the per-channel shift of input normalisation drops out of the residuals
(away from the zero-padded border).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation

from lib.models.cnn import SimpleCNN
from lib.models.registry import register_model


def srm_kernels() -> torch.Tensor:
    """The three SRM kernels of Zhou et al., shape (3, 5, 5), float32."""
    kb = torch.tensor([[0, 0, 0, 0, 0],
                       [0, -1, 2, -1, 0],
                       [0, 2, -4, 2, 0],
                       [0, -1, 2, -1, 0],
                       [0, 0, 0, 0, 0]]) / 4.0
    kv = torch.tensor([[-1, 2, -2, 2, -1],
                       [2, -6, 8, -6, 2],
                       [-2, 8, -12, 8, -2],
                       [2, -6, 8, -6, 2],
                       [-1, 2, -2, 2, -1]]) / 12.0
    line = torch.tensor([[0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0],
                         [0, 1, -2, 1, 0],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]]) / 2.0
    return torch.stack([kb, kv, line]).float()


class SRMConv(nn.Module):
    """Fixed SRM filtering of each colour channel: (N, 3, H, W) -> (N, 9, H, W); maps 3c..3c+2 are colour c."""

    def __init__(self) -> None:
        super().__init__()
        k = srm_kernels()
        self.register_buffer("weight", k.repeat(3, 1, 1).unsqueeze(1))  # (9, 1, 5, 5): 3 kernels per colour

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), padding=2, groups=3)


class SRMNet(nn.Module):
    """SRM residuals -> SE over the 9 residual maps -> conv(3x3)-BN-ReLU-maxpool blocks -> global pool -> logit.

    Three 2x poolings: any input of at least 8 px runs (32x32 CIFAKE images give a 4x4 final map).
    """

    def __init__(self, num_classes: int = 1, widths: tuple[int, ...] = (32, 64, 128), dropout: float = 0.2):
        super().__init__()
        self.srm = SRMConv()
        self.attention = SqueezeExcitation(9, 4)
        self.trunk = SimpleCNN(num_classes, widths, dropout, in_channels=9)  # the small CNN on the 9 residual maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.trunk.min_size:
            raise ValueError(f"srm_cnn needs inputs of at least {self.trunk.min_size} px, got {tuple(x.shape[-2:])}")
        return self.trunk(self.attention(self.srm(x)))

    def head_parameters(self):
        return self.trunk.head_parameters()


@register_model("srm_cnn", family="srm", input_size=64, min_input_size=8,
                notes="fixed SRM high-pass bank (3 kernels x 3 colours) + SE + 3 conv blocks + global pooling",
                gradcam_layers=lambda m: [m.trunk.features[-1][2]])
def _srm_cnn(num_classes: int = 1, **kw: Any) -> nn.Module:
    return SRMNet(num_classes=num_classes, **kw)
