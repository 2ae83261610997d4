"""Training-time augmentation on whole uint8 batches, with per-sample random parameters.

Only the training path calls an ``AugmentPolicy``; evaluation loaders take none, so validation and
test pixels are exactly the cached ones. Order: native crop (a window of the cached pixels, never resampled),
resized crop + flip (one affine resampling), rotation (nearest, zero fill: pixels move, none is interpolated),
colour jitter, Gaussian blur, Gaussian noise, JPEG re-compression (a real publishing pipeline compresses after
every other edit), then the patch mask (SAFE's RandomMask: square patches on a grid set to zero).

``safe_policy`` is SAFE's training policy (Li et al., KDD 2025): native random crop, flip, rotation up to 180
degrees, brightness/contrast/saturation 0.5, and with probability 0.5 a patch mask over 0-75 % of the area.

``randaugment_ops`` / ``erasing_p`` (off by default) add torchvision's RandAugment (Cubuk et al. 2020) and
RandomErasing (Cutout; Zhong et al. 2020) after the other value steps: each sample gets its own draw (one call per
sample).

``crop`` (off by default) is for detectors of pixel-level traces such as NPR: with it, the policy takes a
random ``crop x crop`` window of each sample (its own offsets) and, with ``hflip_p``, mirrors it; both only
move pixels, so every output pixel is an input pixel, bit for bit. The batch then has ``crop x crop`` pixels,
while evaluation sees the whole cached image (a fully convolutional model with global pooling takes both).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.functional import InterpolationMode, rgb_to_grayscale, rotate

from lib.fileio import hide_later_defaults, reduce_by_fields


@dataclass(frozen=True)
class AugmentPolicy:
    """Per-sample augmentation parameters (all off except horizontal flips by default).

    crop_scale: area fraction range of RandomResizedCrop ((1, 1) = off), crop_ratio its aspect range.
    brightness/contrast/saturation: factor drawn in [1 - v, 1 + v] per sample (0 = off).
    jpeg_p: probability of re-compressing a sample at a quality drawn in jpeg_quality (inclusive).
    blur_p: probability of a Gaussian blur with sigma drawn in blur_sigma (pixels).
    noise_std: additive Gaussian noise, std drawn per sample in [0, noise_std] (pixel scale 0..1).
    crop: side of a random window of native pixels taken from each sample (its own offsets, no resampling),
      before everything else; 0 = off. It replaces the resized crop (setting both raises) and needs images of
      at least crop x crop.
    rotation: each sample is rotated by an angle drawn in [-rotation, rotation] degrees (torchvision's rotate,
      nearest, zero fill, as RandomRotation); 0 = off.
    mask_p: probability of SAFE's patch mask: a share of the area drawn in mask_ratio is covered by distinct
      mask_patch x mask_patch cells of the patch grid, set to zero.
    randaugment_ops: number of RandAugment operations per sample (torchvision's v2.RandAugment, 0 = off) at
      randaugment_magnitude (0..30; torchvision's default 9); after the JPEG step, before the patch mask.
    erasing_p: probability of torchvision's v2.RandomErasing per sample (default area 2-33 %, aspect 0.3-3.3),
      the erased rectangle set to 0 (black) in uint8 space; the very last step.
      Both draw from torch's global CPU generator: they run inside ``fork_rng`` with it seeded from ``generator``,
      so a seeded loader repeats them exactly and the global stream is left as it was.

    Run keys: a policy enters a run's key through `dataclasses.asdict` of the run spec. A field added after runs
    were stored (``crop``) is left out of ``fields()`` of an instance where it has its default, so policies that
    do not use it keep the keys (and runs) they always had; an instance that uses it lists it.
    """

    hflip_p: float = 0.5
    crop_scale: tuple[float, float] = (1.0, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    jpeg_p: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 95)
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    noise_std: float = 0.0
    crop: int = 0
    rotation: float = 0.0
    mask_p: float = 0.0
    mask_ratio: tuple[float, float] = (0.0, 0.75)
    mask_patch: int = 16
    randaugment_ops: int = 0
    randaugment_magnitude: int = 9
    erasing_p: float = 0.0

    def __post_init__(self) -> None:
        # Tuples may arrive as lists (from YAML/JSON): normalise so equal policies hash equal.
        for name in ("crop_scale", "crop_ratio", "jpeg_quality", "blur_sigma", "mask_ratio"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or value[0] > value[1]:
                raise ValueError(f"AugmentPolicy.{name} must be a (low, high) pair with low <= high, got {value}")
            object.__setattr__(self, name, value)
        for name in ("hflip_p", "jpeg_p", "blur_p", "mask_p", "erasing_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentPolicy.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ValueError(f"AugmentPolicy.crop_scale must lie in (0, 1], got {self.crop_scale}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"AugmentPolicy.jpeg_quality must lie in 1..100, got {self.jpeg_quality}")
        if self.blur_sigma[0] <= 0:
            raise ValueError(f"AugmentPolicy.blur_sigma must be > 0, got {self.blur_sigma}")
        for name in ("brightness", "contrast", "saturation", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentPolicy.{name} must be >= 0, got {getattr(self, name)}")
        if isinstance(self.crop, bool) or not isinstance(self.crop, (int, np.integer)) or self.crop < 0:
            raise ValueError(f"AugmentPolicy.crop must be an int >= 0 (0 = off), got {self.crop!r}")
        object.__setattr__(self, "crop", int(self.crop))
        if not 0.0 <= self.rotation <= 180.0:
            raise ValueError(f"AugmentPolicy.rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0.0 <= self.mask_ratio[0] <= self.mask_ratio[1] <= 1.0:
            raise ValueError(f"AugmentPolicy.mask_ratio must lie in [0, 1], got {self.mask_ratio}")
        if isinstance(self.mask_patch, bool) or int(self.mask_patch) != self.mask_patch or self.mask_patch < 1:
            raise ValueError(f"AugmentPolicy.mask_patch must be an int >= 1, got {self.mask_patch!r}")
        object.__setattr__(self, "mask_patch", int(self.mask_patch))
        for name, high in (("randaugment_ops", 14), ("randaugment_magnitude", 30)):  # 14 ops in torchvision's space
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or not 0 <= value <= high:
                raise ValueError(f"AugmentPolicy.{name} must be an int in 0..{high}, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.crop and self.crop_scale != (1.0, 1.0):
            raise ValueError("AugmentPolicy.crop (a window of native pixels) replaces the resized crop: leave "
                             f"crop_scale at (1, 1), got {self.crop_scale}")
        hide_later_defaults(self, _LATER_FIELDS)  # fields added later stay out of older run keys

    __reduce__ = reduce_by_fields

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "AugmentPolicy | None":
        return None if d is None else cls(**d)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a uint8 (B, 3, H, W) batch; returns a new uint8 batch, of the same shape unless `crop` is set
        (then (B, 3, crop, crop))."""
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"AugmentPolicy expects a uint8 (B, 3, H, W) batch, got {x.dtype} {tuple(x.shape)}")
        b = x.shape[0]
        if self.crop and (x.shape[2] < self.crop or x.shape[3] < self.crop):
            raise ValueError(f"AugmentPolicy.crop {self.crop} needs images of at least {self.crop}x{self.crop}, "
                             f"got {x.shape[2]}x{x.shape[3]}")
        if b == 0:
            return x[..., :self.crop, :self.crop].clone() if self.crop else x.clone()
        g = generator

        def uniform(low: float, high: float, n: int = b) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=g)

        flip = torch.rand(b, generator=g) < self.hflip_p
        if self.crop:
            x = self._native_crop(x, g)
            if not self._changes_values():  # a window and a mirror only move pixels: no float round trip
                return torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        y = x.float().div_(255.0)

        if self.crop_scale != (1.0, 1.0):
            y = self._resized_crop(y, flip, uniform)
        elif bool(flip.any()):
            y = torch.where(flip.view(b, 1, 1, 1), y.flip(-1), y)

        if self.rotation > 0:
            angles = uniform(-self.rotation, self.rotation).tolist()
            y = torch.stack([rotate(y[i], angle, InterpolationMode.NEAREST, fill=0.0) for i, angle in enumerate(angles)])
        if self.brightness > 0:
            f = uniform(1 - self.brightness, 1 + self.brightness).view(b, 1, 1, 1)
            y = (y * f).clamp_(0, 1)
        if self.contrast > 0:
            f = uniform(1 - self.contrast, 1 + self.contrast).view(b, 1, 1, 1)
            m = rgb_to_grayscale(y).mean(dim=(1, 2, 3), keepdim=True)
            y = ((y - m) * f + m).clamp_(0, 1)
        if self.saturation > 0:
            f = uniform(1 - self.saturation, 1 + self.saturation).view(b, 1, 1, 1)
            gray = rgb_to_grayscale(y)
            y = ((y - gray) * f + gray).clamp_(0, 1)

        if self.blur_p > 0:
            sel = torch.rand(b, generator=g) < self.blur_p
            sigma = uniform(*self.blur_sigma)
            if bool(sel.any()):
                y = y.clone()
                y[sel] = _gaussian_blur(y[sel], sigma[sel])

        if self.noise_std > 0:
            std = uniform(0.0, self.noise_std).view(b, 1, 1, 1)
            y = (y + std * torch.randn(y.shape, generator=g)).clamp_(0, 1)

        out = y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)

        if self.jpeg_p > 0:
            sel = torch.rand(b, generator=g) < self.jpeg_p
            low, high = self.jpeg_quality
            quality = torch.randint(low, high + 1, (b,), generator=g)
            for i in torch.nonzero(sel).flatten().tolist():  # per sample: each has its own quality
                out[i] = _jpeg_roundtrip(out[i], int(quality[i]))
        if self.randaugment_ops > 0:
            out = _per_sample_seeded(v2.RandAugment(self.randaugment_ops, self.randaugment_magnitude), out, g)
        if self.mask_p > 0:
            out = self._patch_mask(out, g, uniform)
        if self.erasing_p > 0:
            out = _per_sample_seeded(v2.RandomErasing(p=self.erasing_p, value=0), out, g)
        return out

    def _patch_mask(self, out: torch.Tensor, g: torch.Generator | None, uniform) -> torch.Tensor:
        """SAFE's RandomMask: for each selected sample, int(H*W*ratio / patch^2) distinct cells of the patch grid
        (at most all of them) are set to zero."""
        b, _, h, w = out.shape
        p = self.mask_patch
        rows, cols = h // p, w // p
        sel = torch.rand(b, generator=g) < self.mask_p
        ratio = uniform(*self.mask_ratio)
        keep = torch.ones(b, 1, h, w, dtype=torch.bool)
        for i in torch.nonzero(sel).flatten().tolist():
            n_cells = min(int(h * w * float(ratio[i]) / p ** 2), rows * cols)
            for cell in torch.randperm(rows * cols, generator=g)[:n_cells].tolist():
                top, left = (cell // cols) * p, (cell % cols) * p
                keep[i, :, top:top + p, left:left + p] = False
        return out * keep

    def _changes_values(self) -> bool:
        """Does any step besides the crop and the flip touch pixel values?"""
        return (self.crop_scale != (1.0, 1.0) or self.brightness > 0 or self.contrast > 0 or self.saturation > 0
                or self.blur_p > 0 or self.noise_std > 0 or self.jpeg_p > 0 or self.rotation > 0 or self.mask_p > 0
                or self.randaugment_ops > 0 or self.erasing_p > 0)

    def _native_crop(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """A random crop x crop window of each sample (own offsets, every position equally likely), pixels as they are."""
        b, _, h, w = x.shape
        c = self.crop
        top = torch.randint(0, h - c + 1, (b,), generator=g).tolist()
        left = torch.randint(0, w - c + 1, (b,), generator=g).tolist()
        return torch.stack([x[i, :, t:t + c, l:l + c] for i, (t, l) in enumerate(zip(top, left))])

    def _resized_crop(self, y: torch.Tensor, flip: torch.Tensor, uniform) -> torch.Tensor:
        """RandomResizedCrop for the whole batch as one affine_grid + grid_sample (flip folded in)."""
        b = y.shape[0]
        area = uniform(*self.crop_scale)
        log_ratio = uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]))
        ratio = torch.exp(log_ratio)
        # Crop width/height as fractions of the side; clamp keeps the crop inside the image.
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = uniform(-1.0, 1.0) * (1 - w)  # centre in normalised [-1, 1] coordinates
        cy = uniform(-1.0, 1.0) * (1 - h)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = torch.where(flip, -w, w)
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, list(y.shape), align_corners=False)
        return F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False)


# fields added after runs were stored, with the default that leaves them out of keys
_LATER_FIELDS = {"crop": 0, "rotation": 0.0, "mask_p": 0.0, "mask_ratio": (0.0, 0.75), "mask_patch": 16,
                 "randaugment_ops": 0, "randaugment_magnitude": 9, "erasing_p": 0.0}


def safe_policy(crop: int, mask_patch: int = 16, mask_p: float = 0.5) -> AugmentPolicy:
    """SAFE's training augmentation (Li et al., KDD 2025) on a native `crop` window: flip 0.5, rotation up to 180
    degrees, brightness/contrast/saturation 0.5, patch mask with probability `mask_p` over 0-75 % of the area.
    SAFE masks 16 px patches of 256 px crops; smaller crops want a smaller `mask_patch`."""
    return AugmentPolicy(crop=crop, hflip_p=0.5, rotation=180.0, brightness=0.5, contrast=0.5, saturation=0.5,
                         mask_p=mask_p, mask_ratio=(0.0, 0.75), mask_patch=mask_patch)


def _per_sample_seeded(transform: Any, out: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """Apply a torchvision transform to each sample on its own (its own draws). torchvision draws from the global
    CPU generator: seed it from `g` inside fork_rng, so the result repeats with `g` and the global stream is kept."""
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return torch.stack([transform(img) for img in out])


def _gaussian_blur(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each sample with its own sigma: separable grouped convolution, one kernel per sample."""
    n, c, h, w = y.shape
    radius = int(math.ceil(3 * float(sigma.max())))
    radius = max(1, min(radius, (min(h, w) - 1)))  # reflect padding needs radius < side
    t = torch.arange(-radius, radius + 1, dtype=y.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, K)
    z = y.reshape(1, n * c, h, w)
    z = F.pad(z, (radius, radius, radius, radius), mode="reflect")
    z = F.conv2d(z, k.view(n * c, 1, 1, -1), groups=n * c)
    z = F.conv2d(z, k.view(n * c, 1, -1, 1), groups=n * c)
    return z.reshape(n, c, h, w)


def _jpeg_roundtrip(img: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode/decode one (3, H, W) uint8 image as JPEG with PIL.

    PIL rather than torchvision.io: torchvision 0.29 deprecates its JPEG codec (to be removed).
    """
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return torch.from_numpy(np.asarray(decoded.convert("RGB")).copy()).permute(2, 0, 1)
