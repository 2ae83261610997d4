from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageFile

from lib.data.imageio import (IMAGE_EXTENSIONS, MIN_SIDE, ImageError, estimate_jpeg_quality, load_rgb, probe,
                         read_image)
from conftest import noise_pixels, patch_png_size, write_image


def test_rgb_roundtrip_is_exact(image_factory):
    path = image_factory("a.png", (20, 12))
    pixels = load_rgb(path)
    assert pixels.shape == (12, 20, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, noise_pixels(path.as_posix(), (20, 12)))


def test_cmyk_white_becomes_white(odd_files):
    pixels = load_rgb(odd_files["cmyk_white"])
    assert pixels.shape == (16, 16, 3)
    assert pixels.min() >= 250   # JPEG rounding aside, CMYK (0,0,0,0) is paper white


def test_16bit_grey_is_scaled_not_clipped(odd_files):
    pixels = load_rgb(odd_files["grey16"])
    assert (pixels[1:, 8:] == 255).all()          # 65535 -> 255
    assert (pixels[:, :8][1:] == 0).all()
    assert tuple(pixels[0, 0]) == (128, 128, 128)  # 257 * 128 -> 128: a clip would give 255


def test_palette_transparency_composited_on_white(odd_files):
    pixels = load_rgb(odd_files["palette_transparent"])
    assert (pixels[:, :8] == (0, 0, 255)).all()     # opaque blue stays blue
    assert (pixels[:, 8:] == 255).all()             # transparent red -> white, not red


def test_rgba_composited_on_white(odd_files):
    pixels = load_rgb(odd_files["rgba"])
    assert (pixels[:, :8] == (200, 0, 0)).all()
    assert (pixels[:, 8:] == 255).all()


def test_rgb_colour_key_transparency(tmp_path):
    array = np.zeros((8, 8, 3), dtype=np.uint8)
    array[:4] = (10, 20, 30)                              # the colour key: transparent
    array[4:] = (40, 50, 60)
    Image.fromarray(array).save(tmp_path / "key.png", transparency=(10, 20, 30))
    pixels = load_rgb(tmp_path / "key.png")
    assert (pixels[:4] == 255).all() and (pixels[4:] == (40, 50, 60)).all()


def test_cmyk_black_becomes_black(tmp_path):
    Image.new("CMYK", (16, 16), (0, 0, 0, 255)).save(tmp_path / "k.jpg", quality=95)
    assert load_rgb(tmp_path / "k.jpg").max() <= 5


def test_half_alpha_blend(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    assert (load_rgb(tmp_path / "half.png") == round(255 * 127 / 255)).all()


def test_greyscale_and_bilevel_to_rgb(odd_files, tmp_path):
    assert (load_rgb(odd_files["grey"]) == 77).all()
    bilevel = Image.new("1", (10, 10), 1)
    bilevel.save(tmp_path / "bw.png")
    assert (load_rgb(tmp_path / "bw.png") == 255).all()


def test_exif_orientation_applied(tmp_path):
    array = noise_pixels("exif", (20, 10))              # 10 rows x 20 columns
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6                                    # "rotate 90 CW to display"
    image.save(tmp_path / "rot.png", exif=exif)
    pixels = load_rgb(tmp_path / "rot.png")
    assert pixels.shape == (20, 10, 3)
    np.testing.assert_array_equal(pixels, np.rot90(array, k=-1))
    info = probe(tmp_path / "rot.png")
    assert (info["width"], info["height"]) == (10, 20)


@pytest.mark.parametrize("name, words", [
    ("not_an_image", "not an image"),
    ("truncated_jpeg", "truncated"),
    ("tiny", "too small"),
    ("huge_header", "too large"),
])
def test_bad_files_raise_clear_image_error(odd_files, name, words):
    with pytest.raises(ImageError, match=words) as info:
        load_rgb(odd_files[name])
    assert isinstance(info.value, ValueError)
    assert info.value.path == str(odd_files[name])


def test_size_limit_checked_before_decoding(tmp_path):
    # 4000 x 4000 claimed by the header, 16 x 16 of data: decoding would fail, so a "too large" error proves
    # the check ran on the header first.
    path = patch_png_size(write_image(tmp_path / "big.png"), 4000, 4000)
    with pytest.raises(ImageError, match="too large"):
        load_rgb(path, max_pixels=1_000_000)
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_rgb(path)                       # within the default limit: the data really is too short


def test_pil_bomb_warning_becomes_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)   # 16*16 = 256 > 100 -> PIL warns (not errors)
    with pytest.raises(ImageError, match="decompression-bomb"):
        load_rgb(write_image(tmp_path / "w.png"))


def test_truncated_flag_is_forced_off(odd_files, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.warns(RuntimeWarning, match="LOAD_TRUNCATED_IMAGES"):
        with pytest.raises(ImageError, match="truncated"):
            load_rgb(odd_files["truncated_jpeg"])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_min_side_parameter(image_factory):
    path = image_factory("small.png", (MIN_SIDE, MIN_SIDE))
    assert load_rgb(path).shape == (MIN_SIDE, MIN_SIDE, 3)
    with pytest.raises(ImageError, match="too small"):
        load_rgb(path, min_side=MIN_SIDE + 1)


@pytest.mark.parametrize("quality", [50, 75, 95, 20, 100])
def test_jpeg_quality_estimate(quality):
    buffer = io.BytesIO()
    Image.fromarray(noise_pixels("q", (32, 32))).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    assert abs(estimate_jpeg_quality(Image.open(buffer)) - quality) <= 3


def test_jpeg_quality_nan_for_png(image_factory):
    path = image_factory("p.png")
    assert math.isnan(estimate_jpeg_quality(Image.open(path)))
    assert math.isnan(probe(path)["jpeg_quality"])


def test_probe_and_read_image(image_factory):
    path = image_factory("x.jpg", (24, 16), quality=75)
    info = probe(path)
    assert info == {"width": 24, "height": 16, "format": "JPEG", "mode": "RGB", "jpeg_quality": pytest.approx(75, abs=3)}
    decoded = read_image(path)
    assert (decoded.width, decoded.height, decoded.format) == (24, 16, "JPEG")
    assert decoded.bytes == path.stat().st_size and len(decoded.sha256) == 64
    np.testing.assert_array_equal(decoded.pixels, load_rgb(path))


def test_extensions_are_lowercase_with_dot():
    assert ".jpg" in IMAGE_EXTENSIONS and ".png" in IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "missing.png")
