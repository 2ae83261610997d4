"""Training techniques of issue 12: losses, Mixup/CutMix, RandAugment/erasing, lr options, attention, SRM model."""

import copy
import dataclasses
import pickle
from dataclasses import asdict, fields

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation

from lib.data.augment import AugmentPolicy, safe_policy
from lib.data.batch_mixing import BatchMixer
from lib.fileio import stable_hash
from lib.models import SimpleCNN, create_model, list_models
from lib.models.attention import CBAM, make_attention
from lib.models.srm import SRMNet, srm_kernels
from lib.training.fit import (TrainConfig, _make_optimizer, _make_scheduler, fit, normalization_stats,
                              predict_logits)
from lib.training.losses import make_loss, smooth_targets

NEW_TRAIN_FIELDS = {"loss", "focal_gamma", "focal_alpha", "label_smoothing", "mixup_alpha", "cutmix_alpha",
                    "mix_prob", "backbone_lr_scale"}
NEW_AUGMENT_FIELDS = {"randaugment_ops", "randaugment_magnitude", "erasing_p"}


def toy_data(n=16, size=16, seed=0):
    """Fakes are brighter; pixel values 1..255 (no zero, so erased pixels are recognisable)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(1, 150, (n, 3, size, size)) + labels[:, None, None, None] * 100
    return images.clip(1, 255).astype(np.uint8), labels


def cfg(**kw):
    base = dict(epochs=1, batch_size=8, lr=1e-2, seed=0, device="cpu", scheduler="none")
    return TrainConfig(**(base | kw))


# ----------------------------------------------------------------------------------------------- run keys

def test_new_fields_at_their_defaults_keep_every_run_key():
    # hashes computed with the code before these fields existed
    assert stable_hash(asdict(TrainConfig())) == "cd585f0177c89675"
    old = TrainConfig(augment=AugmentPolicy(), epochs=3, lr=3e-4, warmup_epochs=1, grad_clip=1.0)
    assert stable_hash(asdict(old)) == "3024458218e0a126"
    assert stable_hash(asdict(AugmentPolicy())) == "a4a5f142e09b3600"
    assert stable_hash(asdict(safe_policy(32, mask_patch=8))) == "7e43589766c588b1"
    assert not NEW_TRAIN_FIELDS & {f.name for f in fields(TrainConfig())}
    assert not NEW_AUGMENT_FIELDS & set(AugmentPolicy().to_dict())


@pytest.mark.parametrize("changed", [
    dict(loss="focal"), dict(label_smoothing=0.1), dict(mixup_alpha=0.2), dict(cutmix_alpha=1.0, mix_prob=0.5),
    dict(backbone_lr_scale=0.1), dict(normalization="cifake"),
    dict(augment=AugmentPolicy(randaugment_ops=2, randaugment_magnitude=7, erasing_p=0.25)),
])
def test_a_used_new_field_changes_the_key_and_round_trips(changed):
    config = TrainConfig(**changed)
    assert stable_hash(asdict(config)) != stable_hash(asdict(TrainConfig()))
    for name, value in changed.items():
        assert asdict(config)[name] == (asdict(value) if dataclasses.is_dataclass(value) else value)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert stable_hash(TrainConfig.from_dict(config.to_dict()).to_dict()) == stable_hash(config.to_dict())
    assert pickle.loads(pickle.dumps(config)) == config  # the processes executor pickles configs
    assert copy.deepcopy(config) == config
    assert dataclasses.replace(config, seed=1).seed == 1 and dataclasses.replace(config, seed=1) != config


def test_new_fields_are_validated():
    for bad in (dict(loss="hinge"), dict(label_smoothing=1.0), dict(mixup_alpha=-1), dict(mix_prob=1.5),
                dict(backbone_lr_scale=0), dict(focal_gamma=-1), dict(focal_alpha=2)):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    for bad in (dict(randaugment_ops=-1), dict(randaugment_magnitude=31), dict(erasing_p=1.5)):
        with pytest.raises(ValueError):
            AugmentPolicy(**bad)


# ----------------------------------------------------------------------------------------------- losses

def test_focal_with_gamma_0_and_no_alpha_is_bce_and_smoothing_0_is_bce():
    logits = torch.randn(32, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0.0, 1.0, 0.3, 0.75] * 8)  # soft targets too
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(make_loss(TrainConfig())(logits, targets), bce)
    focal0 = make_loss(TrainConfig(loss="focal", focal_gamma=0.0, focal_alpha=-1.0))
    assert torch.allclose(focal0(logits, targets), bce, atol=1e-6)
    # gamma > 0 down-weights the easy samples: a smaller loss than BCE
    assert make_loss(TrainConfig(loss="focal"))(logits, targets) < bce
    # alpha weights the fake class alpha, the real class 1 - alpha
    ones, zeros = torch.ones(32), torch.zeros(32)
    alpha = make_loss(TrainConfig(loss="focal", focal_alpha=0.25))
    assert torch.allclose(alpha(logits, ones), 0.25 * make_loss(TrainConfig(loss="focal"))(logits, ones))
    assert torch.allclose(alpha(logits, zeros), 0.75 * make_loss(TrainConfig(loss="focal"))(logits, zeros))


def test_label_smoothing_moves_targets_towards_one_half():
    assert smooth_targets(torch.tensor([0.0, 1.0, 0.5]), 0.1).tolist() == pytest.approx([0.05, 0.95, 0.5])
    logits = torch.tensor([-2.0, 0.5, 3.0])
    y = torch.tensor([0.0, 1.0, 1.0])
    smoothed = make_loss(TrainConfig(label_smoothing=0.2))(logits, y)
    assert torch.allclose(smoothed, F.binary_cross_entropy_with_logits(logits, torch.tensor([0.1, 0.9, 0.9])))
    focal = make_loss(TrainConfig(loss="focal", focal_gamma=0.0, label_smoothing=0.2))(logits, y)
    assert torch.allclose(focal, smoothed, atol=1e-6)


def test_soft_targets_give_the_cross_entropy_of_the_soft_label_and_a_gradient():
    logits = torch.tensor([0.3, -1.2], requires_grad=True)
    y = torch.tensor([0.3, 0.8])
    p = torch.sigmoid(logits)
    manual = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    loss = make_loss(TrainConfig())(logits, y)
    assert torch.allclose(loss, manual)
    focal = make_loss(TrainConfig(loss="focal", focal_alpha=0.5))(logits, y)
    focal.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- Mixup / CutMix

def basis_batch(b=8, h=6, w=6):
    """Sample i is 1 on channel i and 0 elsewhere: a mixed sample's channel means are its mixing weights."""
    x = torch.zeros(b, b, h, w)
    x[torch.arange(b), torch.arange(b)] = 1.0
    return x, (torch.arange(b) % 2).float()


def test_mixing_off_is_the_identity():
    x, y = basis_batch()
    for mixer in (BatchMixer(), BatchMixer(0.0, 0.0, 1.0, seed=3), BatchMixer(0.4, 1.0, mix_prob=0.0)):
        assert not mixer.active
        out_x, out_y = mixer(x, y)
        assert torch.equal(out_x, x) and torch.equal(out_y, y)


def test_mixup_labels_are_the_same_convex_combination_as_the_images():
    x, y = basis_batch()
    before = torch.get_rng_state()
    for step in range(5):
        out_x, out_y = BatchMixer(mixup_alpha=0.4, seed=step)(x, y)
        weights = out_x.mean(dim=(2, 3))  # (B, B): row i = how much of each input sample is in output i
        assert torch.all(weights >= 0) and torch.allclose(weights.sum(1), torch.ones(8))
        assert ((weights > 0).sum(1) <= 2).all()  # a pair of samples
        assert torch.allclose(out_y, weights @ y, atol=1e-6)
        assert ((out_y >= 0) & (out_y <= 1)).all()
    assert torch.equal(torch.get_rng_state(), before), "the global RNG stream must be left alone"


def test_cutmix_label_is_the_pasted_area_share():
    x, y = basis_batch(b=8, h=16, w=16)
    mixed_any = False
    for step in range(5):
        out_x, out_y = BatchMixer(cutmix_alpha=1.0, seed=step)(x, y)
        assert torch.equal(out_x.sum(1), torch.ones(8, 16, 16))  # every pixel comes whole from one sample
        share = out_x.mean(dim=(2, 3))  # area share of each source sample
        assert torch.allclose(out_y, share @ y, atol=1e-6)
        for i in range(8):
            sources = torch.nonzero(share[i]).flatten().tolist()
            assert len(sources) <= 2
            if len(sources) == 2:  # the pasted part is one rectangle
                mixed_any = True
                minor = min(sources, key=lambda s: share[i, s])
                rows, cols = torch.nonzero(out_x[i, minor], as_tuple=True)
                box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                assert int(box) == rows.numel()
    assert mixed_any


def test_mixing_is_reproducible_and_picks_both_methods_and_respects_mix_prob():
    x, y = basis_batch(h=16, w=16)
    runs = []
    for _ in range(2):
        mixer = BatchMixer(mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=0.7, seed=11)
        runs.append([mixer(x, y) for _ in range(30)])
    for (xa, ya), (xb, yb) in zip(*runs):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    kinds = []
    for out_x, _ in runs[0]:
        if torch.equal(out_x, x):
            kinds.append("none")
        elif torch.equal(out_x.sum(1), torch.ones_like(out_x.sum(1))) and set(out_x.unique().tolist()) <= {0.0, 1.0}:
            kinds.append("cutmix")
        else:
            kinds.append("mixup")
    assert {"none", "cutmix", "mixup"} <= set(kinds)
    other = BatchMixer(mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=0.7, seed=12)
    assert any(not torch.equal(other(x, y)[0], xa) for xa, _ in runs[0])


# ----------------------------------------------------------------------------------------------- RandAugment / erasing

def test_randaugment_and_erasing_are_per_sample_reproducible_and_leave_the_global_rng():
    images, _ = toy_data(n=6, size=32)
    x = torch.from_numpy(images)
    policy = AugmentPolicy(hflip_p=0.0, randaugment_ops=2, randaugment_magnitude=9, erasing_p=1.0)
    before = torch.get_rng_state()
    a = policy(x, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), before)
    b = policy(x, torch.Generator().manual_seed(5))
    c = policy(x, torch.Generator().manual_seed(6))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    erased = (a == 0).all(dim=1)  # the inputs have no black pixel: black = erased (or a RandAugment border)
    assert all(erased[i].any() for i in range(6))
    only_erase = AugmentPolicy(hflip_p=0.0, erasing_p=1.0)(x, torch.Generator().manual_seed(0))
    for i in range(6):  # Cutout alone: one black rectangle, everything else untouched
        rows, cols = torch.nonzero((only_erase[i] == 0).all(0), as_tuple=True)
        assert rows.numel() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        keep = ~(only_erase[i] == 0).all(0)
        assert torch.equal(only_erase[i][:, keep], x[i][:, keep])
    assert torch.equal(AugmentPolicy(hflip_p=0.0, erasing_p=0.0, randaugment_ops=0)(x), x)


def test_evaluation_is_never_augmented_or_mixed_and_val_loss_is_plain_bce():
    images, labels = toy_data()
    train, val = np.arange(0, 12), np.arange(12, 16)
    config = cfg(augment=AugmentPolicy(randaugment_ops=2, erasing_p=0.5), mixup_alpha=0.4, cutmix_alpha=1.0,
                 loss="focal", label_smoothing=0.1, normalization="cifake")
    torch.manual_seed(0)
    model, history = fit(SimpleCNN(widths=(4, 8, 8, 8)), images, labels, train, val, config, progress=False)
    mean, std = normalization_stats(config, images, train)
    assert (mean, std) == ((0.5,) * 3, (0.5,) * 3)
    logits = predict_logits(model, images, val, mean=mean, std=std, device="cpu")
    x = (torch.from_numpy(images[val]).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        manual = model.eval()(x)[:, 0].double().numpy()
    np.testing.assert_allclose(logits, manual, rtol=1e-5, atol=1e-6)
    plain = F.binary_cross_entropy_with_logits(torch.from_numpy(logits), torch.from_numpy(labels[val]).double())
    assert history["val_loss"].iloc[-1] == pytest.approx(float(plain))


def test_same_seed_same_history_with_every_technique_on():
    images, labels = toy_data()
    config = cfg(epochs=2, augment=AugmentPolicy(randaugment_ops=1, erasing_p=0.5), mixup_alpha=0.4,
                 cutmix_alpha=1.0, mix_prob=0.8, loss="focal")
    histories = []
    for config in (config, config, dataclasses.replace(config, mixup_alpha=0.0, cutmix_alpha=0.0)):
        torch.manual_seed(0)
        _, history = fit(SimpleCNN(widths=(4, 8, 8, 8)), images, labels, np.arange(12), np.arange(12, 16), config,
                         progress=False)
        histories.append(history[["train_loss", "val_loss"]].to_numpy())
    np.testing.assert_array_equal(histories[0], histories[1])
    assert not np.array_equal(histories[0][:, 0], histories[2][:, 0])  # the mixing did take part in training


# ----------------------------------------------------------------------------------------------- optimisation

def test_backbone_lr_scale_groups_head_and_backbone():
    torch.manual_seed(0)
    model = create_model("resnet18")
    opt = _make_optimizer(model, TrainConfig(lr=1e-3, backbone_lr_scale=0.1))
    head, body = opt.param_groups
    assert head["lr"] == 1e-3 and body["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in head["params"]} == {id(p) for p in model.fc.parameters()}
    assert len(head["params"]) + len(body["params"]) == len(list(model.parameters()))
    # a schedule keeps the ratio (OneCycle gets one max_lr per group)
    onecycle = TrainConfig(lr=1e-3, backbone_lr_scale=0.1, scheduler="onecycle", epochs=2)
    opt = _make_optimizer(model, onecycle)
    _make_scheduler(opt, onecycle, 4)
    assert opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert len(_make_optimizer(model, TrainConfig()).param_groups) == 1  # scale 1: as before
    cbam = create_model("resnet18", head_attention="cbam")  # a fresh attention block trains with the head
    head = _make_optimizer(cbam, TrainConfig(backbone_lr_scale=0.1)).param_groups[0]["params"]
    assert {id(p) for p in head} == {id(p) for m in (cbam.fc, cbam.avgpool[0]) for p in m.parameters()}
    with pytest.raises(ValueError, match="head"):
        _make_optimizer(nn.Sequential(nn.Flatten(), nn.Linear(3, 1)), TrainConfig(backbone_lr_scale=0.1))


def test_a_tiny_backbone_lr_scale_freezes_the_backbone_but_not_the_head():
    images, labels = toy_data()
    torch.manual_seed(0)
    model = SimpleCNN(widths=(4, 8, 8, 8), dropout=0.0)
    start = copy.deepcopy(model.state_dict())
    config = cfg(optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.5, backbone_lr_scale=1e-12)
    fit(model, images, labels, np.arange(16), None, config, progress=False)
    params = dict(model.named_parameters())
    moved = {name: float((params[name].detach() - start[name]).abs().max()) for name in params}
    assert all(v < 1e-9 for name, v in moved.items() if not name.startswith("head"))
    assert max(v for name, v in moved.items() if name.startswith("head")) > 1e-4


def test_warmup_ramps_the_lr_up_then_cosine_brings_it_down():
    images, labels = toy_data()
    config = cfg(epochs=4, warmup_epochs=2, scheduler="cosine", lr=1e-2)
    torch.manual_seed(0)
    _, history = fit(SimpleCNN(widths=(4, 8, 8, 8)), images, labels, np.arange(16), None, config, progress=False)
    lr = history["lr"].tolist()  # at the start of each epoch
    assert lr[0] == pytest.approx(1e-3)  # LinearLR's start factor 0.1
    assert lr[0] < lr[1] < lr[2] and lr[2] == pytest.approx(1e-2) and lr[3] < lr[2]


def test_grad_clip_bounds_the_step():
    images, labels = toy_data()
    torch.manual_seed(0)
    model = SimpleCNN(widths=(4, 8, 8, 8), dropout=0.0)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = cfg(batch_size=16, optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=1.0, grad_clip=1e-3)
    fit(model, images, labels, np.arange(16), None, config, progress=False)  # one batch: one step
    step = torch.sqrt(sum(((p.detach() - start[n]) ** 2).sum() for n, p in model.named_parameters()))
    assert float(step) == pytest.approx(1e-3, rel=1e-3)  # lr * clipped norm


# ----------------------------------------------------------------------------------------------- attention

def state_fingerprint(model):
    sd = model.state_dict()
    return (stable_hash([(k, list(v.shape)) for k, v in sd.items()]),
            sum(float(v.double().sum()) for v in sd.values() if v.is_floating_point()))


def test_attention_off_leaves_the_models_as_they_were():
    # fingerprints of the models before the attention options existed
    for name, kw, (keys, total) in [("simple_cnn", {}, ("b8a4f208d1ff0423", 972.0747092949687)),
                                    ("simple_cnn", {"attention": "none"}, ("b8a4f208d1ff0423", 972.0747092949687)),
                                    ("resnet18", {}, ("ff1f1ef4fb81c7c7", 9550.828152370168)),
                                    ("resnet18", {"head_attention": "none"}, ("ff1f1ef4fb81c7c7", 9550.828152370168))]:
        torch.manual_seed(0)
        got_keys, got_total = state_fingerprint(create_model(name, **kw))
        assert got_keys == keys and got_total == pytest.approx(total, rel=1e-9), (name, kw)


@pytest.mark.parametrize("kind", ["se", "cbam"])
def test_attention_blocks_in_the_small_cnn_and_before_resnet_pooling(kind):
    x = torch.randn(2, 3, 32, 32)
    block = make_attention(kind, 16)
    assert isinstance(block, SqueezeExcitation if kind == "se" else CBAM)
    assert block(torch.randn(2, 16, 8, 8)).shape == (2, 16, 8, 8)
    plain, cnn = SimpleCNN(), SimpleCNN(attention=kind)
    assert cnn(x).shape == (2, 1)
    assert sum(p.numel() for p in cnn.parameters()) > sum(p.numel() for p in plain.parameters())
    assert all(type(b[4]) is type(block) for b in cnn.features)
    resnet = create_model("resnet18", head_attention=kind)
    assert resnet(x).shape == (2, 1) and type(resnet.avgpool[0]) is type(block)
    plain_keys = set(create_model("resnet18").state_dict())
    assert plain_keys < set(resnet.state_dict())  # every pretrained key is where it was
    resnet(x).sum().backward()
    assert all(p.grad is not None for p in resnet.avgpool[0].parameters())


def test_head_attention_is_refused_where_it_is_not_supported():
    with pytest.raises(ValueError, match="not supported for mobilenet_v2"):
        create_model("mobilenet_v2", head_attention="se")
    with pytest.raises(ValueError, match="unknown"):
        create_model("resnet18", head_attention="transformer")
    with pytest.raises(ValueError, match="unknown"):
        SimpleCNN(attention="eca")


# ----------------------------------------------------------------------------------------------- SRM model

def test_srm_kernels_are_the_three_high_pass_filters():
    k = srm_kernels()
    assert k.shape == (3, 5, 5)
    assert torch.allclose(k.sum(dim=(1, 2)), torch.zeros(3), atol=1e-6)  # high-pass: a flat image gives no residual
    assert k[0, 2, 2] == -1 and k[1, 2, 2] == -1 and k[2, 2, 2] == -1  # each normalised by its centre weight
    model = SRMNet()
    flat = torch.full((1, 3, 16, 16), 0.7)
    assert torch.allclose(model.srm(flat)[..., 2:-2, 2:-2], torch.zeros(1, 9, 12, 12), atol=1e-6)


def test_srm_cnn_is_registered_and_its_filters_never_train():
    assert "srm_cnn" in list_models()
    torch.manual_seed(0)
    model = create_model("srm_cnn")
    bank = model.srm.weight
    assert not bank.requires_grad and all(p is not bank for p in model.parameters())
    assert "srm.weight" in model.state_dict()  # saved with the checkpoint
    before = bank.clone()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0.0, 1.0, 0.0, 1.0])
    out = model(x)
    assert out.shape == (4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    F.binary_cross_entropy_with_logits(out[:, 0], y).backward()
    opt.step()
    assert torch.equal(model.srm.weight, before)
    assert torch.equal(model.srm.weight[:3, 0], srm_kernels())
