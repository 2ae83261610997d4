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
