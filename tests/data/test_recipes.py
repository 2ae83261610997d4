import numpy as np
import pytest

from lib.data.recipes import Recipe


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 128)], -1).astype(np.uint8)


def test_key_is_stable_and_changes_with_every_field():
    assert Recipe().key == Recipe().key
    keys = {Recipe().key, Recipe(size=32).key, Recipe(mode="center_crop").key, Recipe(pad_value=255).key,
            Recipe(face_margin=0.3).key, Recipe(face_detector="mtcnn").key, Recipe(letterbox_apply_to="real").key}
    assert len(keys) == 7


def test_bad_values_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="valid modes"):
        Recipe(mode="squash")
    with pytest.raises(ValueError, match="size"):
        Recipe(size=0)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        Recipe().apply(np.zeros((8, 8), np.uint8), 0)


@pytest.mark.parametrize("mode", ["resize", "center_crop", "letterbox", "face"])
def test_every_mode_gives_a_square_uint8(mode):
    out = Recipe(size=16, mode=mode).apply(_gradient(20, 40), 0, box=None)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_resize_squashes_and_center_crop_keeps_the_middle():
    img = _gradient(20, 40)
    squashed = Recipe(size=10, mode="resize").apply(img, 0)
    cropped = Recipe(size=10, mode="center_crop").apply(img, 0)
    # the red channel is a horizontal ramp: squash spans the whole ramp, crop only the middle half
    assert squashed[:, 0, 0].mean() < 30 and squashed[:, -1, 0].mean() > 225
    assert 50 < cropped[:, 0, 0].mean() < 90 and 165 < cropped[:, -1, 0].mean() < 205


def test_letterbox_pads_with_the_pad_value_and_only_real_images_when_asked():
    img = np.full((10, 20, 3), 200, np.uint8)
    boxed = Recipe(size=20, mode="letterbox", pad_value=7).apply(img, 1)
    assert (boxed[:5] == 7).all() and (boxed[-5:] == 7).all() and (boxed[5:15] == 200).all()
    only_real = Recipe(size=20, mode="letterbox", letterbox_apply_to="real", pad_value=7)
    assert (only_real.apply(img, 0)[:5] == 7).all()
    assert (only_real.apply(img, 1) == 200).all()  # fake: squashed, no padding
    with pytest.raises(ValueError, match="label"):
        only_real.apply(img, None)


def test_face_crops_around_the_box_and_falls_back_to_center_crop():
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:20, 25:35] = 255  # the "face"
    face = Recipe(size=8, mode="face", face_margin=0.0).apply(img, 0, box=(25, 10, 35, 20))
    # the crop is the box: white inside; the antialias filter only blends the outermost ring
    assert face[1:-1, 1:-1].min() == 255 and face.mean() > 230
    with_margin = Recipe(size=8, mode="face", face_margin=0.5).apply(img, 0, box=(25, 10, 35, 20))
    assert 0 < with_margin.mean() < 255
    fallback = Recipe(size=8, mode="face").apply(img, 0, box=np.full(4, np.nan))
    np.testing.assert_array_equal(fallback, Recipe(size=8, mode="center_crop").apply(img, 0))
