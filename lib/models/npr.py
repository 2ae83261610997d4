"""Neighbouring Pixel Relationships (NPR, Tan et al., CVPR 2024) and a multi-scale, attention-weighted variant.

Generators up-sample: neighbouring pixels of a generated image are correlated in a way real camera pixels are not.
NPR keeps only that local residue, `x - up(down(x))` with nearest-neighbour interpolation both ways, and a small CNN
classifies it.

`npr_map(x, factor)` semantics (all factors):
- `factor = p/q` in lowest terms (0.5 = 1/2, 0.25 = 1/4, 0.75 = 3/4). H and W are first cropped (bottom/right) to
  multiples of q, so the down-sampled size H*p/q is an exact integer and the pattern is periodic with period q.
- down: nearest to (H*p/q, W*p/q); up: nearest back to exactly (H, W). Along one axis, pixel i is replaced by
  source pixel d(u(i)) with u(i) = floor(i*p/q), d(j) = floor(j*q/p) (torch's "nearest" rule).
- 1/k (0.5, 0.25): x minus the top-left pixel of its k x k block; 0 on every block's top-left pixel.
- 3/4: within each 4-pixel period the reference pixels are [0, 0, 1, 2]: NPR is 0 at period offset 0 and the
  difference to the previous pixel at offsets 1..3 (period offset 3 of the input is never used as a reference).
The output therefore has the cropped size; different factors can give different sizes for the same input.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from lib.models.registry import register_model

NPR_GAIN = 2.0 / 3.0  # the reference implementation scales the NPR map by 2/3 before the first convolution


def _as_fraction(factor: float) -> Fraction:
    if not 0.0 < factor < 1.0:
        raise ValueError(f"NPR down-sampling factor must be in (0, 1), got {factor}")
    frac = Fraction(factor).limit_denominator(16)
    if abs(float(frac) - factor) > 1e-6:
        raise ValueError(f"NPR factor {factor} is not a simple fraction p/q with q <= 16")
    return frac


def npr_crop_size(height: int, width: int, factor: float = 0.5) -> tuple[int, int]:
    """(H, W) after cropping to multiples of the factor's denominator (the size npr_map returns)."""
    q = _as_fraction(factor).denominator
    return height - height % q, width - width % q


def npr_map(x: torch.Tensor, factor: float = 0.5) -> torch.Tensor:
    """NPR residual `x - up(down(x, factor))`, nearest both ways, of a (N, C, H, W) tensor (see module docstring)."""
    frac = _as_fraction(factor)
    height, width = npr_crop_size(x.shape[-2], x.shape[-1], factor)
    if height == 0 or width == 0:
        raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than one NPR period ({frac.denominator} px)")
    x = x[..., :height, :width]
    small = (height * frac.numerator // frac.denominator, width * frac.numerator // frac.denominator)
    down = F.interpolate(x, size=small, mode="nearest")
    return x - F.interpolate(down, size=(height, width), mode="nearest")


class ResNetTrunk(nn.Module):
    """The NPR network's trunk: a ResNet stem with a 3x3 stride-2 conv, maxpool, layer1 and layer2 (torchvision's
    blocks), global average pooling. Only the kept layers are built; initialised as torchvision initialises a ResNet."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int], width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1, planes = _make_layer(block, width, 64, layers[0], stride=1)
        self.layer2, _ = _make_layer(block, planes, 128, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return torch.flatten(self.avgpool(self.layer2(self.layer1(x))), 1)


def _make_layer(block: type[BasicBlock | Bottleneck], inplanes: int, planes: int, blocks: int,
                stride: int) -> tuple[nn.Sequential, int]:
    """torchvision's ResNet._make_layer for a plain ResNet (no groups, no dilation); returns the layer and its width."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(conv1x1(inplanes, planes * block.expansion, stride),
                                   nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample)]
    inplanes = planes * block.expansion
    layers += [block(inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes


class NPRNet(nn.Module):
    """Tan et al. 2024: NPR map * 2/3 -> ResNet-50 bottleneck trunk cut after layer2 (512 ch) -> linear."""

    def __init__(self, num_classes: int = 1, factor: float = 0.5):
        super().__init__()
        self.factor = factor
        self.trunk = ResNetTrunk(Bottleneck, (3, 4))
        self.fc = nn.Linear(128 * Bottleneck.expansion, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = npr_map(x, self.factor) * NPR_GAIN  # the detector's idea: classify only the up-sampling residue
        return self.fc(self.trunk(x))


class MultiScaleNPR(nn.Module):
    """NPR at several scales, one small residual branch per scale, attention over scales, linear classifier.

    Each branch: NPR_s map * 2/3 -> 3x3 stride-2 stem, BN, ReLU, maxpool -> BasicBlock layers [2, 2] (64, 128 ch) ->
    global average pool -> 128-d feature. Attention: MLP over the concatenated branch features -> softmax over
    scales -> weighted sum of branch features -> Linear(128, num_classes).

    `attention="uniform"` fixes the weights at 1/S: the control for "does learned attention matter".
    `entropy_weight` (default 0, off): `regularization_loss()` = entropy_weight * mean(log S - H(attention)).
    A POSITIVE weight penalises LOW entropy, i.e. discourages collapsing onto one scale; a negative weight
    rewards peaked (selective) attention. The loss is 0 at uniform attention.
    """

    def __init__(self, num_classes: int = 1, scales: tuple[float, ...] | list[float] = (0.25, 0.5, 0.75),
                 attention: str = "learned", entropy_weight: float = 0.0, hidden: int = 64):
        super().__init__()
        if attention not in ("learned", "uniform"):
            raise ValueError(f"attention must be 'learned' or 'uniform', got {attention!r}")
        if len(scales) == 0:
            raise ValueError("npr_multiscale needs at least one scale")
        for s in scales:
            _as_fraction(float(s))
        self.scales = tuple(float(s) for s in scales)
        self.attention = attention
        self.entropy_weight = float(entropy_weight)
        self.config = {"scales": list(self.scales), "attention": attention, "entropy_weight": self.entropy_weight}
        # recorded in the state dict too, so a checkpoint cannot silently be loaded into other scales
        self.register_buffer("scale_factors", torch.tensor(self.scales, dtype=torch.float32))
        self.register_load_state_dict_post_hook(_check_scales)
        self.branches = nn.ModuleList(ResNetTrunk(BasicBlock, (2, 2)) for _ in self.scales)
        feature_dim = 128 * BasicBlock.expansion
        self.attention_mlp = nn.Sequential(
            nn.Linear(feature_dim * len(self.scales), hidden), nn.ReLU(), nn.Linear(hidden, len(self.scales)))
        self.fc = nn.Linear(feature_dim, num_classes)
        self.last_attention: torch.Tensor | None = None

    def _branch_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, S, 128): one pooled feature vector per scale."""
        return torch.stack([branch(npr_map(x, s) * NPR_GAIN)
                            for s, branch in zip(self.scales, self.branches)], dim=1)

    def _attend(self, feats: torch.Tensor) -> torch.Tensor:
        if self.attention == "uniform":
            return feats.new_full(feats.shape[:2], 1.0 / feats.shape[1])
        return torch.softmax(self.attention_mlp(feats.flatten(1)), dim=1)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        feats = self._branch_features(x)
        attn = self._attend(feats)
        # kept so a generic trainer can call regularization_loss() without model-specific code
        self.last_attention = attn if torch.is_grad_enabled() else None
        logits = self.fc((attn.unsqueeze(-1) * feats).sum(dim=1))
        return (logits, attn) if return_attention else logits

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(N, S) attention over `self.scales` (rows sum to 1)."""
        return self._attend(self._branch_features(x))

    @staticmethod
    def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
        """Per-sample entropy (nats) of (N, S) attention weights; max log S at uniform weights."""
        return -(attn * torch.log(attn.clamp_min(1e-12))).sum(dim=1)

    def regularization_loss(self, attn: torch.Tensor | None = None) -> torch.Tensor:
        """entropy_weight * mean(log S - entropy) of `attn` (default: the last forward's attention)."""
        attn = self.last_attention if attn is None else attn
        if attn is None or self.entropy_weight == 0.0 or self.attention == "uniform":
            return torch.zeros((), device=self.fc.weight.device)
        deficit = math.log(attn.shape[1]) - self.attention_entropy(attn)
        return self.entropy_weight * deficit.mean()

    def __getstate__(self) -> dict[str, Any]:
        # the cached attention is part of an autograd graph: deepcopy/pickle would fail on it, and it is transient
        state = super().__getstate__()
        return {**state, "last_attention": None}

    def extra_repr(self) -> str:
        return f"scales={self.scales}, attention={self.attention!r}, entropy_weight={self.entropy_weight}"


def _check_scales(module: MultiScaleNPR, incompatible_keys: Any) -> None:
    if not torch.allclose(module.scale_factors, torch.tensor(module.scales, dtype=torch.float32)):
        raise ValueError(f"checkpoint was trained with scales {module.scale_factors.tolist()}, "
                         f"model was built with {list(module.scales)}")


# revision 1: the trunk builds only the layers it keeps (ResNetTrunk), which changes the random initialisation
@register_model("npr", family="npr", input_size=224, min_input_size=16, revision=1,
                notes="Tan et al. CVPR 2024: NPR map (factor 0.5) * 2/3 -> ResNet-50 trunk cut after layer2 -> fc 512",
                gradcam_layers=lambda m: [m.trunk.layer2[-1]])
def _npr(num_classes: int = 1, **kw: Any) -> nn.Module:
    return NPRNet(num_classes=num_classes, **kw)


@register_model("npr_multiscale", family="npr", input_size=224, min_input_size=16, revision=1,
                notes="NPR at scales (0.25, 0.5, 0.75), BasicBlock branch per scale, softmax attention over scales",
                gradcam_layers=lambda m: [branch.layer2[-1] for branch in m.branches])
def _npr_multiscale(num_classes: int = 1, **kw: Any) -> nn.Module:
    return MultiScaleNPR(num_classes=num_classes, **kw)
