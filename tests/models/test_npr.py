"""NPR maths (Tan et al. 2024) and the NPR / multi-scale NPR detectors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lib.models import create_model
from lib.models.npr import MultiScaleNPR, NPRNet, npr_crop_size, npr_map


def _reference_npr(x: torch.Tensor, p: int, q: int) -> torch.Tensor:
    """x minus its nearest round-trip source pixel, with exact integer index maths (the documented semantics)."""
    height, width = x.shape[-2] - x.shape[-2] % q, x.shape[-1] - x.shape[-1] % q
    x = x[..., :height, :width]

    def source(size: int) -> np.ndarray:
        small = size * p // q
        up = np.arange(size) * small // size          # up-sampling: output i reads small pixel floor(i*small/size)
        return up * size // small                     # down-sampling: small j reads pixel floor(j*size/small)

    return x - x[..., source(height), :][..., :, source(width)]


@pytest.mark.parametrize("size", [(2, 2), (8, 8), (16, 10), (32, 64), (30, 18)])
def test_half_scale_is_x_minus_top_left_of_each_block(size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    top_left = x[..., ::2, ::2].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    out = npr_map(x, 0.5)
    assert torch.allclose(out, x - top_left)
    assert torch.all(out[..., ::2, ::2] == 0)                      # every block's top-left pixel is zero
    assert out[..., 1::2, 1::2].abs().min() > 0                    # and random data is not zero elsewhere


def test_odd_sizes_are_cropped_to_even():
    x = torch.randn(1, 3, 17, 23)
    out = npr_map(x, 0.5)
    assert out.shape[-2:] == (16, 22) == npr_crop_size(17, 23, 0.5)
    assert torch.equal(out, npr_map(x[..., :16, :22], 0.5))


def test_input_is_not_modified():
    x = torch.randn(1, 3, 8, 8)
    before = x.clone()
    npr_map(x, 0.5)
    assert torch.equal(x, before)


@pytest.mark.parametrize("factor,p,q", [(0.5, 1, 2), (0.25, 1, 4), (0.75, 3, 4)])
@pytest.mark.parametrize("size", [(8, 8), (12, 20), (17, 31), (64, 64)])
def test_all_factors_match_the_documented_index_rule(factor, p, q, size):
    torch.manual_seed(1)
    x = torch.randn(1, 2, *size)
    out = npr_map(x, factor)
    ref = _reference_npr(x, p, q)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref)


def test_three_quarter_scale_pattern():
    # along one axis, period 4: reference pixels [0, 0, 1, 2] -> NPR = [0, x1-x0, x2-x1, x3-x2]
    row = torch.tensor([0.0, 1.0, 3.0, 7.0, 10.0, 20.0, 40.0, 80.0]).view(1, 1, 1, 8).expand(1, 1, 4, 8)
    out = npr_map(row.contiguous(), 0.75)
    assert torch.equal(out[0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 4.0, 0.0, 10.0, 20.0, 40.0]))


def test_bad_factors_and_tiny_inputs_are_refused():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        npr_map(torch.zeros(1, 1, 4, 4), 1.0)
    with pytest.raises(ValueError, match="smaller than one NPR period"):
        npr_map(torch.zeros(1, 1, 3, 3), 0.25)


def test_npr_model_applies_npr_first():
    torch.manual_seed(0)
    model = create_model("npr").eval()
    assert isinstance(model, NPRNet) and model.fc.in_features == 512
    x = torch.randn(2, 3, 32, 32)
    # adding a constant to each 2x2 block leaves the NPR map, hence the output, unchanged
    blocky = torch.randn(2, 3, 16, 16).repeat_interleave(2, -2).repeat_interleave(2, -1)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x + blocky), atol=1e-5)
        assert model(torch.randn(1, 3, 33, 35)).shape == (1, 1)


def test_multiscale_attention_sums_to_one_and_trains():
    torch.manual_seed(0)
    model = create_model("npr_multiscale", entropy_weight=0.5)
    assert isinstance(model, MultiScaleNPR) and model.scales == (0.25, 0.5, 0.75)
    x = torch.randn(3, 3, 33, 40)
    logits, attn = model(x, return_attention=True)
    assert logits.shape == (3, 1) and attn.shape == (3, 3)
    assert torch.allclose(attn.sum(dim=1), torch.ones(3))
    assert torch.allclose(model.attention_weights(x), attn.detach(), atol=1e-6)
    # the regulariser uses the last forward's attention and reaches the attention MLP's parameters
    loss = logits.sum() + model.regularization_loss()
    loss.backward()
    assert model.attention_mlp[0].weight.grad is not None
    copy.deepcopy(model)  # the cached attention (part of a graph) must not break deepcopy


def test_entropy_regulariser_sign_and_zero_at_uniform():
    model = create_model("npr_multiscale", entropy_weight=2.0)
    uniform = torch.full((4, 3), 1 / 3)
    peaked = torch.tensor([[0.98, 0.01, 0.01]] * 4)
    assert torch.allclose(MultiScaleNPR.attention_entropy(uniform), torch.full((4,), np.log(3), dtype=torch.float32))
    assert model.regularization_loss(uniform).abs() < 1e-6
    assert model.regularization_loss(peaked) > 0       # positive weight penalises low entropy
    assert create_model("npr_multiscale").regularization_loss(peaked) == 0   # default weight 0: off


def test_uniform_attention_is_fixed_equal_weights():
    model = create_model("npr_multiscale", attention="uniform", scales=[0.5, 0.25])
    weights = model.attention_weights(torch.randn(2, 3, 32, 32))
    assert torch.equal(weights, torch.full((2, 2), 0.5))


def test_scales_are_configurable_and_recorded():
    model = create_model("npr_multiscale", scales=[0.5])
    assert model.scales == (0.5,) and len(model.branches) == 1
    assert model.config["scales"] == [0.5]
    state = model.state_dict()
    assert torch.equal(state["scale_factors"], torch.tensor([0.5]))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1)
    other = create_model("npr_multiscale", scales=[0.25])
    with pytest.raises(ValueError, match="scales"):
        other.load_state_dict(state)


def test_multiscale_rejects_bad_configuration():
    with pytest.raises(ValueError, match="attention"):
        create_model("npr_multiscale", attention="max")
    with pytest.raises(ValueError):
        create_model("npr_multiscale", scales=[])


def test_safetensors_checkpoint_round_trip_keeps_scales(tmp_path):
    from safetensors.torch import load_model, save_model

    torch.manual_seed(0)
    model = create_model("npr_multiscale", scales=[0.25, 0.75]).eval()
    save_model(model, str(tmp_path / "m.safetensors"))
    same = create_model("npr_multiscale", scales=[0.25, 0.75]).eval()
    load_model(same, str(tmp_path / "m.safetensors"), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(same(x), model(x))
    with pytest.raises(ValueError, match="scales"):
        load_model(create_model("npr_multiscale", scales=[0.25, 0.5]), str(tmp_path / "m.safetensors"), strict=True)


def test_trunk_builds_only_the_layers_it_keeps():
    from torchvision.models.resnet import Bottleneck, ResNet

    from lib.models.npr import ResNetTrunk

    trunk = ResNetTrunk(Bottleneck, (3, 4))
    assert not any(hasattr(trunk, name) for name in ("layer3", "layer4", "fc"))
    reference = ResNet(Bottleneck, [3, 4, 1, 1])  # torchvision's ResNet-50 head part, cut by hand
    reference.conv1 = torch.nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
    kept = {k: v.shape for k, v in reference.state_dict().items() if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")}
    assert {k: v.shape for k, v in trunk.state_dict().items()} == kept  # checkpoints of the old trunk still load
    assert trunk(torch.rand(2, 3, 32, 32)).shape == (2, 512)
