"""Preprocessing recipes: how one decoded image becomes a fixed-size square, named by a stable key.

A recipe is a small frozen dataclass; its ``key`` (a hash of every field) names the tensor cache built
with it, so two runs share decoded pixels exactly when they share the recipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from lib.data.perturbations import Perturbation, jpeg_reencode
from lib.fileio import stable_hash

MODES = ("resize", "center_crop", "letterbox", "face", "native_crop")
LETTERBOX_TARGETS = ("all", "real")

# Bilinear with PIL's built-in antialiasing (its filter support widens when shrinking): the same
# filter torchvision's Resize uses on PIL images, so our cache matches what users' pipelines see.
_RESAMPLE = Image.Resampling.BILINEAR


@dataclass(frozen=True)
class Recipe:
    """One preprocessing recipe.

    mode:
      - ``resize``: squash to ``size x size`` (the standard square resize; changes the aspect ratio).
      - ``center_crop``: largest centred square, then resize (shorter side to ``size``).
      - ``letterbox``: longer side to ``size``, pad to a square with ``pad_value``. With
        ``letterbox_apply_to="real"`` only real images are padded (fakes are squashed), which plants a
        geometry shortcut on purpose, to test whether a model learns it.
      - ``face``: crop to a face box (given by the caller) enlarged by ``face_margin`` on each side,
        made square, then resize; centre crop when the image has no box.
      - ``native_crop``: the centred ``size x size`` window of the native pixels, never resampled (what NPR
        needs: resampling erases the up-sampling residue it measures). An image smaller than ``size`` raises.
    ``face_detector`` names the source of the boxes, so caches built from different detectors differ.
    ``jpeg_quality`` (1..100, 0 = off) re-encodes every image of both classes at that JPEG quality before the
    geometric step: the neutraliser of a compression shortcut (real JPEG q75 vs fake PNG, say).
    ``perturbation`` (a ``lib.data.perturbations.Perturbation`` spec such as ``"jpeg:50"`` or ``"blur:1"``; "" = none)
    is a test-time perturbation (robustness sweep): never used for training (the run store refuses it). It is applied
    FIRST, to the decoded image at its native resolution (before ``jpeg_quality`` and the geometric step), to both
    classes alike. A ``Perturbation`` may be passed; it is stored as its canonical spec, so equal perturbations give
    equal keys.
    """

    size: int = 64
    mode: str = "resize"
    letterbox_apply_to: str = "all"
    pad_value: int = 0
    face_margin: float = 0.2
    face_detector: str = ""
    jpeg_quality: int = 0
    perturbation: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise ValueError(f"Recipe.size must be a positive int, got {self.size!r}")
        if self.mode not in MODES:
            raise ValueError(f"unknown Recipe.mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if self.letterbox_apply_to not in LETTERBOX_TARGETS:
            raise ValueError(
                f"Recipe.letterbox_apply_to must be one of {LETTERBOX_TARGETS}, got {self.letterbox_apply_to!r}"
            )
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"Recipe.pad_value must be in 0..255, got {self.pad_value}")
        if self.face_margin < 0:
            raise ValueError(f"Recipe.face_margin must be >= 0, got {self.face_margin}")
        if not isinstance(self.jpeg_quality, (int, np.integer)) or not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"Recipe.jpeg_quality must be an int in 1..100 (0 = off), got {self.jpeg_quality!r}")
        if self.perturbation:  # validate, and store the canonical spec ("jpeg:50.0" -> "jpeg:50")
            try:
                spec = Perturbation.parse(self.perturbation).spec
            except ValueError as exc:
                raise ValueError(f"Recipe.perturbation: {exc}") from None
            object.__setattr__(self, "perturbation", spec)
        elif not isinstance(self.perturbation, str):
            raise ValueError(f"Recipe.perturbation must be a spec string ('' = none), got {self.perturbation!r}")

    @property
    def key(self) -> str:
        return stable_hash(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        # jpeg_quality off and no perturbation are left out, so recipes that predate them keep their key (and their
        # caches and runs)
        d = asdict(self)
        if not d["jpeg_quality"]:
            del d["jpeg_quality"]
        if not d["perturbation"]:
            del d["perturbation"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        return cls(**d)

    @property
    def needs_boxes(self) -> bool:
        return self.mode == "face"

    def apply(self, img: np.ndarray, label: int | None = None, box: Sequence[float] | None = None) -> np.ndarray:
        """Turn an HxWx3 uint8 image into a ``(size, size, 3)`` uint8 image.

        ``label`` is needed only by ``letterbox`` with ``letterbox_apply_to="real"``; ``box`` is
        ``(x0, y0, x1, y1)`` in pixels for ``face`` (None or NaN means no face found).
        """
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"Recipe.apply expects an HxWx3 uint8 image, got shape {img.shape} dtype {img.dtype}")
        if self.perturbation:  # first: the test-time perturbation acts on the native decoded image
            img = Perturbation.parse(self.perturbation).apply(img)
        pil = Image.fromarray(img)
        if self.jpeg_quality:
            pil = jpeg_reencode(pil, self.jpeg_quality)
        s = self.size
        if self.mode == "native_crop":
            if pil.width < s or pil.height < s:
                raise ValueError(f"native_crop of {s} px needs an image at least {s}x{s}, got {pil.width}x{pil.height}")
            left, top = (pil.width - s) // 2, (pil.height - s) // 2
            out = pil.crop((left, top, left + s, top + s))
        elif self.mode == "resize":
            out = pil.resize((s, s), _RESAMPLE)
        elif self.mode == "center_crop":
            out = _center_square(pil).resize((s, s), _RESAMPLE)
        elif self.mode == "letterbox":
            if self.letterbox_apply_to == "real" and label is None:
                raise ValueError("letterbox_apply_to='real' needs the image label")
            if self.letterbox_apply_to == "real" and int(label) == 1:
                out = pil.resize((s, s), _RESAMPLE)
            else:
                out = self._letterbox(pil)
        else:  # face
            if box is None or not np.all(np.isfinite(np.asarray(box, dtype=float))):
                out = _center_square(pil).resize((s, s), _RESAMPLE)
            else:
                out = pil.resize((s, s), _RESAMPLE, box=self._face_square(box, pil.width, pil.height))
        return np.asarray(out, dtype=np.uint8)

    def _letterbox(self, pil: Image.Image) -> Image.Image:
        s = self.size
        scale = s / max(pil.width, pil.height)
        w, h = max(1, round(pil.width * scale)), max(1, round(pil.height * scale))
        canvas = Image.new("RGB", (s, s), (self.pad_value,) * 3)
        canvas.paste(pil.resize((w, h), _RESAMPLE), ((s - w) // 2, (s - h) // 2))
        return canvas

    def _face_square(self, box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
        """Square around the box centre, side = longer box side * (1 + 2 * margin), kept inside the image."""
        x0, y0, x1, y1 = (float(v) for v in box)
        side = max(x1 - x0, y1 - y0) * (1 + 2 * self.face_margin)
        side = max(1.0, min(side, width, height))  # a square that fits: shift rather than squash
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = min(max(cx - side / 2, 0.0), width - side)
        top = min(max(cy - side / 2, 0.0), height - side)
        return (left, top, left + side, top + side)


def _center_square(pil: Image.Image) -> Image.Image:
    side = min(pil.width, pil.height)
    left, top = (pil.width - side) // 2, (pil.height - side) // 2
    return pil.crop((left, top, left + side, top + side))
