"""Small CNNs trained from scratch: `simple_cnn` and the CIFAKE paper's `cifake_cnn`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lib.models.attention import make_attention
from lib.models.registry import register_model

# ----------------------------------------------------------------------------------------------- small CNNs

class SimpleCNN(nn.Module):
    """Four conv(3x3)-BN-ReLU-maxpool blocks (32-64-128-256 ch), global average pooling, dropout, linear: ~390k params.

    Global pooling makes it accept any input of at least 16 px (four 2x poolings).
    attention: "se" or "cbam" appends that block (lib.models.attention) to every conv block, after its pooling
    (a quarter of the pixels, and the block indices Grad-CAM uses stay where they are); "none" adds no module, so
    the parameters and state dict are those of the plain network.
    """

    def __init__(self, num_classes: int = 1, widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.2,
                 attention: str = "none", in_channels: int = 3):
        super().__init__()
        self.min_size = 2 ** len(widths)  # one 2x pooling per block
        blocks, in_ch = [], in_channels
        for out_ch in widths:
            layers = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(),
                      nn.MaxPool2d(2)]
            block = make_attention(attention, out_ch)
            blocks.append(nn.Sequential(*layers, *([block] if block is not None else [])))
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"simple_cnn needs inputs of at least {self.min_size} px, got {tuple(x.shape[-2:])}")
        return self.head(self.pool(self.features(x)))

    def head_parameters(self):
        """The classifier's parameters (fit's backbone_lr_scale gives the rest a smaller learning rate)."""
        return self.head.parameters()


class CifakeCNN(nn.Module):
    """CIFAKE baseline (Bird & Lotfi 2023): two conv(32, 3x3, valid)+ReLU+maxpool blocks, flatten, dense 64, output.

    At 32x32 the feature map is 32x6x6 and the network is the paper's. To accept other sizes an adaptive average pool
    to 6x6 sits before the flatten: an identity at 32 px, a resampling elsewhere (so weights transfer across sizes).
    """

    def __init__(self, num_classes: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


@register_model("simple_cnn", family="small_cnn", input_size=64, min_input_size=16,
                notes="4 conv-BN-ReLU-pool blocks + global average pooling, ~390k parameters, any input >= 16 px",
                gradcam_layers=lambda m: [m.features[-1][2]])
def _simple_cnn(num_classes: int = 1, **kw: Any) -> nn.Module:
    return SimpleCNN(num_classes=num_classes, **kw)


@register_model("cifake_cnn", family="small_cnn", input_size=32, min_input_size=10,
                notes="Bird & Lotfi 2023 CIFAKE CNN (exact at 32x32; adaptive 6x6 pool lets other sizes run)",
                gradcam_layers=lambda m: [m.features[4]])
def _cifake_cnn(num_classes: int = 1, **kw: Any) -> nn.Module:
    return CifakeCNN(num_classes=num_classes, **kw)


