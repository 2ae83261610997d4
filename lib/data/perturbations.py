"""Test-time perturbations for a robustness sweep: how a trained detector degrades under common image processing.

Reviewers ask how a detector holds up when its test images are JPEG re-compressed, blurred, resized or made noisy,
the post-processing images meet on the web (Wang et al. 2020, "CNN-generated images are surprisingly easy to spot...
for now", CNNDetection: blur + JPEG; AIGCDetectBenchmark and UniversalFakeDetect report the same kind of sweep).
These perturbations are for TEST TIME ONLY: a saved model is re-scored on perturbed copies of its test images. They
are applied to both classes identically, to the decoded image at its native resolution, before the model's
preprocessing recipe (``Recipe(perturbation=spec)``), so each (recipe, perturbation) pair is decoded once into its own
tensor cache. Training on them is refused by the run store (augmentation is ``lib.data.augment``'s job).

A perturbation is named by a stable string, its ``spec``: ``"jpeg:50"``, ``"blur:1"``, ``"resize:0.5"``,
``"noise:5"`` (kind, colon, severity formatted with ``:g``).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image, ImageFilter

KINDS = ("jpeg", "blur", "resize", "noise")
# jpeg: quality (1..100, lower = stronger); blur: Gaussian sigma in pixels; resize: down-then-up factor in (0, 1)
# (lower = stronger); noise: Gaussian sigma in 0..255 pixel units. Each tuple runs from mild to strong.
DEFAULT_SEVERITIES: dict[str, tuple[float, ...]] = {
    "jpeg": (95, 75, 50, 30),
    "blur": (0.5, 1.0, 2.0, 3.0),
    "resize": (0.75, 0.5, 0.25),
    "noise": (2.0, 5.0, 10.0, 20.0),
}

# The severity at which each kind changes nothing (the clean point of a sweep's curve), and the kinds whose severity
# number falls as they grow stronger.
IDENTITY: dict[str, float] = {"jpeg": 100.0, "blur": 0.0, "resize": 1.0, "noise": 0.0}
DESCENDING = ("jpeg", "resize")

_RESAMPLE = Image.Resampling.BILINEAR  # the resampling filter the recipes use, antialiased when shrinking


def jpeg_reencode(pil: Image.Image, quality: int) -> Image.Image:
    """The image saved as JPEG at ``quality`` (PIL's default 4:2:0 chroma subsampling) and decoded again, as RGB."""
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return decoded.convert("RGB")


@dataclass(frozen=True)
class Perturbation:
    """One test-time perturbation: ``kind`` (one of ``KINDS``) at ``severity``.

    The severity is kept to the 6 significant digits of its spec (``:g``), so a perturbation and its ``spec`` string
    always name the same pixels.
    """

    kind: str
    severity: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown perturbation kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        if isinstance(self.severity, bool) or not isinstance(self.severity, (int, float, np.integer, np.floating)):
            raise ValueError(f"perturbation {self.kind}: severity must be a number, got {self.severity!r}")
        s = float(self.severity)
        if not np.isfinite(s):
            raise ValueError(f"perturbation {self.kind}: severity must be finite, got {self.severity!r}")
        s = float(f"{s:g}")
        if self.kind == "jpeg" and (s != int(s) or not 1 <= s <= 100):
            raise ValueError(f"perturbation jpeg: quality must be an int in 1..100, got {self.severity!r}")
        if self.kind == "blur" and not s > 0:
            raise ValueError(f"perturbation blur: sigma must be > 0 pixels, got {self.severity!r}")
        if self.kind == "resize" and not 0 < s < 1:
            raise ValueError(f"perturbation resize: factor must be in (0, 1) (down, then up), got {self.severity!r}")
        if self.kind == "noise" and not s > 0:
            raise ValueError(f"perturbation noise: sigma must be > 0 (0..255 units), got {self.severity!r}")
        object.__setattr__(self, "severity", s)

    @property
    def spec(self) -> str:
        """Stable string form, e.g. ``"jpeg:50"``, ``"blur:1"``, ``"resize:0.5"``, ``"noise:5"``."""
        return f"{self.kind}:{self.severity:g}"

    def __str__(self) -> str:
        return self.spec

    @property
    def strength(self) -> float:
        """How far the severity is from the kind's identity (`IDENTITY`): larger is stronger, for every kind."""
        return abs(self.severity - IDENTITY[self.kind])

    @classmethod
    def parse(cls, text: str) -> "Perturbation":
        """The perturbation named by ``text`` (``"kind:severity"``, the form ``spec`` writes)."""
        if isinstance(text, Perturbation):
            return text
        if not isinstance(text, str) or text.count(":") != 1:
            raise ValueError(f"a perturbation spec is 'kind:severity' (e.g. 'jpeg:50'), got {text!r}")
        kind, _, value = (part.strip() for part in text.partition(":"))
        if kind not in KINDS:
            raise ValueError(f"unknown perturbation kind {kind!r} in {text!r}; valid kinds: {', '.join(KINDS)}")
        try:
            severity = float(value)
        except ValueError:
            raise ValueError(f"perturbation spec {text!r}: severity {value!r} is not a number") from None
        return cls(kind, severity)

    def apply(self, img: np.ndarray) -> np.ndarray:
        """Perturb an HxWx3 uint8 image; returns a new HxWx3 uint8 image of the same size."""
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            shape, dtype = getattr(img, "shape", None), getattr(img, "dtype", type(img).__name__)
            raise ValueError(f"Perturbation.apply expects an HxWx3 uint8 image, got shape {shape} dtype {dtype}")
        if self.kind == "noise":
            return self._noise(img)
        pil = Image.fromarray(img)
        if self.kind == "jpeg":
            out = jpeg_reencode(pil, int(self.severity))
        elif self.kind == "blur":
            # PIL's GaussianBlur ``radius`` IS the Gaussian's standard deviation (Pillow docs; its extended box blur
            # approximates that Gaussian: an impulse blurred at radius 0.5/1/2/3 measures a std of 0.49/0.97/2.03/2.91).
            out = pil.filter(ImageFilter.GaussianBlur(radius=self.severity))
        else:  # resize: down by the factor, then back up to the native size
            w, h = pil.size
            small = pil.resize((max(1, round(w * self.severity)), max(1, round(h * self.severity))), _RESAMPLE)
            out = small.resize((w, h), _RESAMPLE)
        return np.asarray(out, dtype=np.uint8)

    def _noise(self, img: np.ndarray) -> np.ndarray:
        # Seeded by the image's own bytes (and size) and the spec: the same image always gets the same noise, whatever
        # its row in the manifest, the thread or process that decodes it, or the order of the calls.
        seed = [zlib.crc32(np.ascontiguousarray(img).tobytes()), zlib.crc32(self.spec.encode()), *img.shape]
        rng = np.random.default_rng(seed)
        noisy = img.astype(np.float32) + rng.normal(0.0, self.severity, img.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def parse(text: str) -> Perturbation:
    """``Perturbation.parse``: ``"jpeg:50"`` -> ``Perturbation("jpeg", 50.0)``."""
    return Perturbation.parse(text)


def grid_from_params(d: Mapping[str, Any]) -> list[Perturbation]:
    """Every (kind, severity) of ``{kind: [severities]}``, in the dict's order (a lone number counts as a list of one;
    repeats are dropped). An unknown kind or an invalid severity raises ValueError."""
    if not isinstance(d, Mapping):
        raise ValueError(f"perturbation grid must be a dict {{kind: [severities]}}, got {type(d).__name__}")
    unknown = [k for k in d if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown perturbation kind(s) {unknown} in the grid; valid kinds: {', '.join(KINDS)}")
    out: list[Perturbation] = []
    for kind, values in d.items():
        values = values if isinstance(values, Iterable) and not isinstance(values, str) else [values]
        for value in values:
            p = Perturbation(kind, value)
            if p not in out:
                out.append(p)
    return out


def sweep(severities: Mapping[str, Any] | None = None) -> list[Perturbation]:
    """The perturbation grid of ``severities`` (default ``DEFAULT_SEVERITIES``), kind by kind, mild to strong."""
    return grid_from_params(DEFAULT_SEVERITIES if severities is None else severities)
