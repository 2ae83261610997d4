"""The one place images are decoded: any file -> (H, W, 3) uint8 RGB, or a clear ``ImageError``.

Conversion rules (chosen once, so every model sees the same pixels):
- EXIF orientation is applied, so width/height are those of the image as a viewer shows it.
- Greyscale ``L``/``1`` and other colour spaces (``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) use PIL's conversion to RGB.
  PIL reads Adobe (inverted) CMYK JPEGs correctly; ICC profiles are not applied.
- 16-bit greyscale (``I;16*``) is scaled to 8 bits (65535 -> 255), never clipped. ``I`` (32-bit int) is treated as
  16-bit when its values fit 0..65535 (PIL's older reading of 16-bit PNGs), otherwise min-max scaled; ``F`` likewise
  (0..1 floats scaled by 255).
- Transparency (``RGBA``, ``LA``, ``PA``, palettes with a transparent index, RGB/L colour keys) is composited on WHITE:
  that is how browsers and viewers show such files, and a fixed colour avoids a background that depends on the
  (undefined) colour hidden under alpha = 0.
- Animated files: the first frame.

Every failure raises ``ImageError(path, reason)``: not an image, truncated/corrupt (the whole file is decoded and
``ImageFile.LOAD_TRUNCATED_IMAGES`` is kept False, so a cut file is never silently padded), too small, or too large
(the header's width*height is checked against ``max_pixels`` BEFORE decoding; PIL's decompression-bomb warning and
error become ``ImageError`` too).
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MIN_SIDE = 8                   # smaller images carry no usable signal for a detector
MAX_PIXELS = 64_000_000        # about 8000 x 8000; far above any detection benchmark, far below a bomb

_EXIF_ORIENTATION = 0x0112
# Image.open reads only the header, but PIL's bomb check inside it reports through the process-wide warnings
# filters; the lock keeps concurrent loader threads from undoing each other's temporary filter.
_OPEN_LOCK = threading.Lock()


class ImageError(ValueError):
    """A file that cannot be used as an image, with the reason in plain words."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class DecodedImage:
    """A fully decoded image plus what the manifest records about its file."""

    pixels: np.ndarray          # (H, W, 3) uint8, orientation applied
    format: str                 # PIL format name, e.g. "PNG", "JPEG"
    mode: str                   # original PIL mode, before conversion
    jpeg_quality: float         # estimated from the quantisation tables; NaN if not JPEG
    bytes: int
    sha256: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


# --- JPEG quality -------------------------------------------------------------------------------------------

# IJG (libjpeg) standard tables, natural (row-major) order, Annex K of ITU-T T.81.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
_IJG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99], dtype=np.float64)


def _ijg_tables(base: np.ndarray) -> np.ndarray:
    """(100, 64) tables libjpeg writes for quality 1..100 (jpeg_quality_scaling + baseline clipping)."""
    q = np.arange(1, 101, dtype=np.float64)[:, None]
    scale = np.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    return np.clip(np.floor((base[None, :] * scale + 50.0) / 100.0), 1, 255)


_LUMA_TABLES = _ijg_tables(_IJG_LUMA)
_CHROMA_TABLES = _ijg_tables(_IJG_CHROMA)


def estimate_jpeg_quality(image: Image.Image) -> float:
    """IJG quality (1..100) whose scaled standard tables best match the file's quantisation tables; NaN if none.

    Files written by other encoders (Photoshop, cameras) get the closest IJG-equivalent quality.
    """
    tables = getattr(image, "quantization", None)
    if not tables:
        return float("nan")
    ordered = [np.asarray(tables[k], dtype=np.float64) for k in sorted(tables)]
    if ordered[0].size != 64:
        return float("nan")
    error = np.abs(_LUMA_TABLES - ordered[0][None, :]).sum(axis=1)
    if len(ordered) > 1 and ordered[1].size == 64:   # chroma table breaks ties at high qualities
        error = error + np.abs(_CHROMA_TABLES - ordered[1][None, :]).sum(axis=1)
    return float(np.argmin(error) + 1)


# --- decoding -----------------------------------------------------------------------------------------------

def _open(source: str | Path | BinaryIO, path: str | Path, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and enforce the size limit before any pixel is decoded."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(path, f"too large to decode safely (PIL decompression-bomb check: {exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image (PIL cannot identify the file format)") from None
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(path, f"unreadable image header ({type(exc).__name__}: {exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(path, f"too large: {width}x{height} = {width * height} pixels > limit {max_pixels}")
    return image


def _to_uint8_grey(array: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth single channel -> uint8 by scaling (never clipping)."""
    if mode.startswith("I;16"):
        return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    values = array.astype(np.float64)
    if mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
        return np.round(values / 257.0).astype(np.uint8)
    if mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
        return np.round(values * 255.0).astype(np.uint8)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) uint8: alpha blend over white with integer rounding."""
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        grey = _to_uint8_grey(np.asarray(image), mode)
        return np.repeat(grey[..., None], 3, axis=2)
    # Covers alpha modes, palettes with a transparent index or an RGBA palette, and RGB/L with a tRNS colour key.
    if image.has_transparency_data:
        return _composite_on_white(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header without decoding."""
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not hide the image; decoding will report real damage
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _decode(source: str | Path | BinaryIO, path: str | Path, max_pixels: int,
            min_side: int) -> tuple[np.ndarray, str, str, float]:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Something switched PIL to padding cut files with grey; truncated files must be reported instead.
        warnings.warn("PIL ImageFile.LOAD_TRUNCATED_IMAGES was True; resetting it to False so truncated "
                      "images are detected", RuntimeWarning, stacklevel=3)
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    image = _open(source, path, max_pixels)
    with image:
        fmt, mode = image.format or "", image.mode
        width, height = image.size
        if min(width, height) < min_side:
            raise ImageError(path, f"too small: {width}x{height}, minimum side is {min_side}")
        quality = estimate_jpeg_quality(image) if fmt == "JPEG" else float("nan")
        try:
            image.load()  # full decode: truncation and corrupt data surface here
        except Image.DecompressionBombError as exc:
            raise ImageError(path, f"too large to decode safely ({exc})") from None
        except Exception as exc:  # decoders of damaged files raise many types (OSError, SyntaxError, struct.error...)
            raise ImageError(path, f"corrupt or truncated image data ({type(exc).__name__}: {exc})") from None
        try:
            pixels = _to_rgb_array(ImageOps.exif_transpose(image))
        except Exception as exc:
            raise ImageError(path, f"cannot convert mode {mode!r} to RGB ({type(exc).__name__}: {exc})") from None
    return np.ascontiguousarray(pixels), fmt, mode, quality


def load_rgb(path: str | Path, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode ``path`` completely into an (H, W, 3) uint8 RGB array (conversion rules in the module docstring)."""
    return _decode(path, path, max_pixels, min_side)[0]


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> DecodedImage:
    """Read the file once: hash its bytes and decode them fully (what the manifest needs per file)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc})") from None
    pixels, fmt, mode, quality = _decode(io.BytesIO(data), path, max_pixels, min_side)
    return DecodedImage(pixels=pixels, format=fmt, mode=mode, jpeg_quality=quality,
                        bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def probe(path: str | Path, max_pixels: int = MAX_PIXELS) -> dict:
    """Header facts without decoding pixels: width, height (after EXIF orientation), format, mode, jpeg_quality."""
    image = _open(path, path, max_pixels)
    with image:
        width, height = _oriented_size(image)
        fmt = image.format or ""
        quality = estimate_jpeg_quality(image) if fmt == "JPEG" else float("nan")
        return {"width": width, "height": height, "format": fmt, "mode": image.mode, "jpeg_quality": quality}
