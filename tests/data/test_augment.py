import numpy as np
import pytest
import torch

from lib.data.augment import AugmentPolicy
from lib.data.cache import BatchLoader

FULL = AugmentPolicy(hflip_p=0.5, crop_scale=(0.5, 1.0), brightness=0.3, contrast=0.3, saturation=0.3,
                     jpeg_p=0.5, jpeg_quality=(50, 90), blur_p=0.5, blur_sigma=(0.5, 1.5), noise_std=0.05)


def _batch(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_output_is_uint8_same_shape_and_input_untouched():
    x = _batch()
    before = x.clone()
    out = FULL(x, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(x, before)


def test_same_generator_seed_same_output_and_parameters_differ_per_sample():
    x = _batch()
    a = FULL(x, torch.Generator().manual_seed(3))
    b = FULL(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    same = _batch(1).repeat(8, 1, 1, 1)  # eight copies of one image
    out = FULL(same, torch.Generator().manual_seed(4))
    assert len({out[i].numpy().tobytes() for i in range(8)}) == 8


def test_flip_only_flips_exactly_the_selected_samples():
    x = _batch()
    out = AugmentPolicy(hflip_p=0.5)(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(8)]
    kept = [torch.equal(out[i], x[i]) for i in range(8)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_all_off_is_identity_and_full_crop_with_flip_is_an_exact_flip():
    x = _batch()
    assert torch.equal(AugmentPolicy(hflip_p=0.0)(x), x)
    # crop with scale 1 and ratio 1 samples pixel centres exactly, through the grid_sample path
    crop = AugmentPolicy(hflip_p=1.0, crop_scale=(0.999999, 1.0), crop_ratio=(1.0, 1.0))
    assert torch.equal(crop(x, torch.Generator().manual_seed(0)), x.flip(-1))


def test_brightness_and_blur_and_jpeg_move_pixels_as_expected():
    flat = torch.full((4, 3, 16, 16), 100, dtype=torch.uint8)
    bright = AugmentPolicy(hflip_p=0, brightness=0.5)(flat, torch.Generator().manual_seed(0))
    per_sample = bright.float().mean(dim=(1, 2, 3))
    assert (bright.float().std(dim=(1, 2, 3)) == 0).all() and per_sample.unique().numel() == 4
    assert ((per_sample >= 50) & (per_sample <= 150)).all()

    x = _batch()
    blurred = AugmentPolicy(hflip_p=0, blur_p=1.0, blur_sigma=(1.0, 1.0))(x)
    # blurring random noise lowers its variance and keeps the mean
    assert blurred.float().std() < 0.6 * x.float().std()
    assert abs(blurred.float().mean() - x.float().mean()) < 3

    jpeg = AugmentPolicy(hflip_p=0, jpeg_p=1.0, jpeg_quality=(30, 30))(x)
    assert not torch.equal(jpeg, x) and (jpeg.float() - x.float()).abs().mean() > 5


def test_invalid_policies_are_rejected():
    with pytest.raises(ValueError, match="probability"):
        AugmentPolicy(hflip_p=1.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        AugmentPolicy(jpeg_quality=(0, 50))
    with pytest.raises(ValueError, match="uint8"):
        AugmentPolicy()(torch.zeros(2, 3, 4, 4))
    assert AugmentPolicy(crop_scale=[0.5, 1.0]) == AugmentPolicy(crop_scale=(0.5, 1.0))  # lists from YAML


def test_evaluation_batches_are_the_cache_and_only_training_augments():
    images = _batch(10).numpy()
    idx = np.arange(10)
    identity = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)  # x_float == uint8 value

    def pixels(loader):
        return torch.cat([x for x, _ in loader])

    evaluation = BatchLoader(images, None, idx, batch_size=4, shuffle=False, **identity)
    first, second = pixels(evaluation), pixels(evaluation)
    assert torch.equal(first, second)
    assert torch.equal(first, torch.from_numpy(images).float())

    training = BatchLoader(images, None, idx, batch_size=10, shuffle=True, seed=0, augment=FULL, **identity)
    augmented = pixels(training)  # one batch of 10, sorted rows -> same order as the cache
    assert not torch.equal(augmented, first)
    assert not torch.equal(augmented, pixels(training))  # fresh random parameters each pass


# ----------------------------------------------------------------------------- native crop (NPR's input)

def _windows(x, c):
    """Every c x c window of every sample of x, and of its mirror image, as bytes."""
    out = []
    for img in (x, x.flip(-1)):
        h, w = img.shape[-2:]
        out.append({img[..., t:t + c, l:l + c].numpy().tobytes() for t in range(h - c + 1) for l in range(w - c + 1)})
    return out[0] | out[1]


@pytest.mark.parametrize("hflip_p", [0.0, 0.5])
def test_native_crop_never_resamples_each_output_is_a_window_of_its_input(hflip_p):
    x = torch.randint(0, 256, (16, 3, 12, 15), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    out = AugmentPolicy(hflip_p=hflip_p, crop=8)(x, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == (16, 3, 8, 8)
    assert torch.equal(x, before)
    for i in range(16):  # bit-identical: a window of the sample's own pixels (mirrored when flipped)
        own = _windows(x[i], 8) if hflip_p else {x[i, :, t:t + 8, l:l + 8].numpy().tobytes()
                                                 for t in range(5) for l in range(8)}
        assert out[i].numpy().tobytes() in own
    # per-sample offsets: eight copies of one image get different windows
    same = x[:1].repeat(8, 1, 1, 1)
    crops = AugmentPolicy(hflip_p=0.0, crop=8)(same, torch.Generator().manual_seed(2))
    assert len({crops[i].numpy().tobytes() for i in range(8)}) > 1


def test_native_crop_reaches_every_offset_and_a_full_size_crop_is_the_image():
    # pixel value = its column: the crop's first column is its left offset
    cols = torch.arange(10, dtype=torch.uint8).view(1, 1, 1, 10).expand(64, 3, 4, 10).contiguous()
    out = AugmentPolicy(hflip_p=0.0, crop=4)(cols, torch.Generator().manual_seed(0))
    assert set(out[:, 0, 0, 0].tolist()) == set(range(7))
    x = _batch()
    assert torch.equal(AugmentPolicy(hflip_p=0.0, crop=16)(x, torch.Generator().manual_seed(0)), x)


def test_native_crop_with_value_steps_still_crops_first():
    x = _batch()
    out = AugmentPolicy(hflip_p=0.0, crop=8, brightness=0.2, noise_std=0.01)(x, torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 8, 8)


def test_native_crop_is_checked():
    with pytest.raises(ValueError, match="replaces the resized crop"):
        AugmentPolicy(crop=8, crop_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match="int >= 0"):
        AugmentPolicy(crop=-1)
    with pytest.raises(ValueError, match="at least 32x32"):
        AugmentPolicy(crop=32)(_batch())


def test_crop_left_at_its_default_keeps_every_run_key():
    from dataclasses import fields, replace
    import pickle

    from lib.fileio import stable_hash
    from lib.training.fit import TrainConfig

    # keys computed before the field existed (a run's key hashes dataclasses.asdict of its spec)
    assert stable_hash(TrainConfig(augment=AugmentPolicy(crop_scale=(0.5, 1.0), jpeg_p=0.3))) == "fb7c3f7e3110b8ea"
    assert stable_hash(TrainConfig(augment=AugmentPolicy())) == "ffb371744f0f8656"
    assert "crop" not in AugmentPolicy().to_dict() and "crop" not in {f.name for f in fields(AugmentPolicy())}
    cropped = AugmentPolicy(crop=8)
    assert cropped.to_dict()["crop"] == 8 and cropped != AugmentPolicy()
    assert stable_hash(TrainConfig(augment=cropped)) != stable_hash(TrainConfig(augment=AugmentPolicy()))
    for policy in (cropped, AugmentPolicy()):
        assert pickle.loads(pickle.dumps(policy)) == policy  # the processes executor pickles configs
        cfg = TrainConfig(augment=policy)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # stored runs load back
    assert replace(AugmentPolicy(), crop=4).crop == 4 and replace(cropped, hflip_p=0.0).crop == 8


def test_training_batches_are_crops_and_evaluation_batches_the_whole_cached_window():
    from lib.training.fit import predict_logits

    images = _batch(10).numpy()
    identity = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)
    training = BatchLoader(images, None, np.arange(10), batch_size=10, shuffle=True, seed=0,
                           augment=AugmentPolicy(crop=8), **identity)
    (x, _), = list(training)
    assert x.shape == (10, 3, 8, 8)
    for i in range(10):
        assert x[i].to(torch.uint8).numpy().tobytes() in _windows(torch.from_numpy(images[i]), 8)

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, batch):
            seen.append(batch.clone())
            return batch.mean(dim=(1, 2, 3))

    predict_logits(Probe(), images, np.arange(10), batch_size=4, device="cpu", **identity)
    assert torch.equal(torch.cat(seen), torch.from_numpy(images).float())  # whole window, never augmented


def test_rotation_and_patch_mask_leave_earlier_keys_and_draws_alone():
    from lib.fileio import stable_hash
    from lib.training.fit import TrainConfig

    # the same pinned keys as before the SAFE fields existed
    assert stable_hash(TrainConfig(augment=AugmentPolicy(crop_scale=(0.5, 1.0), jpeg_p=0.3))) == "fb7c3f7e3110b8ea"
    assert {"rotation", "mask_p", "mask_ratio", "mask_patch"}.isdisjoint(AugmentPolicy(crop=8).to_dict())
    x = _batch()
    # a policy without them draws the same random numbers: identical output to the same policy built before
    a = FULL(x, torch.Generator().manual_seed(3))
    b = AugmentPolicy(**FULL.to_dict())(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_rotation_moves_pixels_without_interpolating_them():
    x = _batch(n=6, size=16)
    y = AugmentPolicy(hflip_p=0.0, rotation=180.0)(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    for i in range(len(x)):  # every output value is one of the input's values or the zero fill
        allowed = set(x[i].flatten().tolist()) | {0}
        assert set(y[i].flatten().tolist()) <= allowed
    # a quarter turn of a whole sample is torchvision's rot90 (nearest, no fill inside a square)
    from lib.data.augment import InterpolationMode, rotate

    assert torch.equal(rotate(x[0].float(), 90.0, InterpolationMode.NEAREST), torch.rot90(x[0].float(), 1, (1, 2)))


def test_patch_mask_zeroes_whole_grid_cells_within_the_ratio():
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    y = AugmentPolicy(hflip_p=0.0, mask_p=0.5, mask_ratio=(0.0, 0.75), mask_patch=8)(x, torch.Generator().manual_seed(1))
    zero = (y == 0).all(dim=1).float()  # (B, H, W)
    cells = zero.view(64, 4, 8, 4, 8).mean(dim=(2, 4))
    assert set(cells.unique().tolist()) <= {0.0, 1.0}  # whole cells, aligned on the patch grid
    share = zero.mean(dim=(1, 2))
    assert share.max() <= 0.75 and 10 < int((share == 0).sum()) < 54  # about half the samples are masked
    assert bool((y[zero.bool().unsqueeze(1).expand_as(y) == 0] == 200).all())  # the rest untouched
    full = AugmentPolicy(hflip_p=0.0, mask_p=1.0, mask_ratio=(1.0, 1.0), mask_patch=8)(x)
    assert int(full.sum()) == 0


def test_safe_policy_is_the_papers_recipe_and_checks_its_fields():
    from lib.data.augment import safe_policy

    policy = safe_policy(24, mask_patch=4)
    assert (policy.crop, policy.rotation, policy.brightness, policy.mask_p, policy.mask_ratio, policy.mask_patch) == (
        24, 180.0, 0.5, 0.5, (0.0, 0.75), 4)
    out = policy(_batch(n=4, size=32), torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 24, 24) and out.dtype == torch.uint8
    for bad in ({"rotation": 200.0}, {"mask_p": 1.5}, {"mask_ratio": (0.5, 0.2)}, {"mask_patch": 0}):
        with pytest.raises(ValueError):
            AugmentPolicy(**bad)
