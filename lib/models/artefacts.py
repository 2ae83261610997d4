"""Artefact front-ends on one trunk: the same small ResNet sees a different artefact map of the image.

Detectors of generated images differ mostly in the map they feed a small trunk. Every model here is
`front-end -> ResNet-50 trunk cut after layer2 (NPR's, `lib.models.npr.ResNetTrunk`) -> Linear(512, 1)`, so a
comparison between them changes only the artefact map:

- `safe` (Li et al., KDD 2025): the finest diagonal detail band (HH) of a one-level discrete wavelet transform,
  bior1.3 with symmetric padding (PyWavelets' filters and boundary rule), resized back to the input size (bilinear).
- `fft_trunk`: the image minus its lowest spatial frequencies (a centred block of the shifted 2-D FFT, `1/scale` of
  each side on either side of DC, set to zero), rectified, as in the SAFE authors' FFT alternative.
- `dct_trunk`: only the highest DCT-II frequencies: coefficients with u/(H-1) + v/(W-1) <= `cutoff` are zeroed
  (`cutoff` 0.625 is the SAFE code's `diagonal=64` at 256 px, expressed relative to the image so it scales).
- `sobel_trunk`: Sobel gradient magnitude per channel (kernel normalised by 8, replicated border), as kornia computes.
- `rgb_trunk`: the identity, the control: the same trunk on the pixels themselves.
- `npr` (lib.models.npr) is the same trunk on `x - up(down(x))`.

Each front-end is checked against the library it follows (PyWavelets, numpy.fft, scipy.fft, scipy.ndimage) in
tests/models/test_artefacts.py. They have no parameters: a checkpoint holds only the trunk and the head.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from lib.models.npr import NPR_GAIN, ResNetTrunk, npr_map
from lib.models.registry import register_model

DWT_WAVELET = "bior1.3"
FFT_SCALE = 8
DCT_CUTOFF = 0.625


def _symmetric_index(n: int, pad: int) -> torch.Tensor:
    """Indices of a length-`n` axis padded by `pad` on both sides with half-sample symmetry (PyWavelets' and numpy's
    'symmetric': x1 x0 | x0 x1 ... xn-1 | xn-1 xn-2)."""
    return torch.from_numpy(np.pad(np.arange(n), pad, mode="symmetric"))


@lru_cache(maxsize=None)
def _wavelet_high_pass(wavelet: str) -> np.ndarray:
    import pywt  # PyWavelets holds the filter bank: no coefficients typed here

    return np.asarray(pywt.Wavelet(wavelet).dec_hi, dtype=np.float64)


def dwt_hh(x: torch.Tensor, wavelet: str = DWT_WAVELET) -> torch.Tensor:
    """The diagonal detail band (HH, PyWavelets' `cD` of `dwt2(..., mode="symmetric")`) of a (N, C, H, W) tensor:
    (N, C, floor((H + L - 1) / 2), floor((W + L - 1) / 2)) for a filter of length L."""
    hi = _wavelet_high_pass(wavelet)
    length = len(hi)
    n, c, h, w = x.shape
    x = x[..., _symmetric_index(h, length - 1), :][..., _symmetric_index(w, length - 1)]
    # PyWavelets convolves (flipped filter) and keeps every odd sample of the full convolution
    kernel = torch.from_numpy(np.outer(hi[::-1], hi[::-1]).copy()).to(x.dtype).to(x.device)
    kernel = kernel.expand(c, 1, length, length)
    return F.conv2d(x[..., 1:, 1:], kernel, stride=2, groups=c)


def safe_map(x: torch.Tensor, wavelet: str = DWT_WAVELET) -> torch.Tensor:
    """SAFE's artefact map: the HH band brought back to the input size (bilinear)."""
    return F.interpolate(dwt_hh(x, wavelet), size=x.shape[-2:], mode="bilinear", align_corners=False)


def fft_highpass(x: torch.Tensor, scale: int = FFT_SCALE) -> torch.Tensor:
    """Real part of the inverse FFT after zeroing the centred low-frequency block (`h//scale` rows and `w//scale`
    columns either side of DC in the shifted spectrum), rectified."""
    h, w = x.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
    keep = torch.ones(h, w, dtype=torch.bool, device=x.device)
    keep[h // 2 - h // scale: h // 2 + h // scale, w // 2 - w // scale: w // 2 + w // scale] = False
    spectrum = spectrum * keep
    return F.relu(torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1)), norm="ortho").real)


@lru_cache(maxsize=None)
def _dct_matrix(n: int) -> np.ndarray:
    import scipy.fft

    return scipy.fft.dct(np.eye(n), norm="ortho", axis=0)  # rows: orthonormal DCT-II basis


def dct_highpass(x: torch.Tensor, cutoff: float = DCT_CUTOFF) -> torch.Tensor:
    """Inverse orthonormal 2-D DCT-II after zeroing the coefficients (u, v) with u/(H-1) + v/(W-1) <= cutoff."""
    h, w = x.shape[-2:]
    rows = torch.from_numpy(_dct_matrix(h)).to(x.dtype).to(x.device)
    cols = torch.from_numpy(_dct_matrix(w)).to(x.dtype).to(x.device)
    coeffs = rows @ x @ cols.T
    u = torch.arange(h, device=x.device).view(-1, 1) / max(h - 1, 1)
    v = torch.arange(w, device=x.device).view(1, -1) / max(w - 1, 1)
    coeffs = coeffs * (u + v > cutoff)
    return rows.T @ coeffs @ cols


def sobel_magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-channel Sobel gradient magnitude sqrt(gx^2 + gy^2 + eps), kernels normalised by 8, replicated border."""
    c = x.shape[1]
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    gx = torch.outer(smooth, diff) / 8
    kernels = torch.stack([gx, gx.T]).unsqueeze(1).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3): gx, gy per channel
    grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels, groups=c)
    gx_all, gy_all = grads[:, 0::2], grads[:, 1::2]
    return torch.sqrt(gx_all.square() + gy_all.square() + eps)


FRONT_ENDS = {
    "rgb": lambda x: x,
    "npr": lambda x: npr_map(x, 0.5) * NPR_GAIN,
    "safe_dwt": safe_map,
    "fft_highpass": fft_highpass,
    "dct_highpass": dct_highpass,
    "sobel": sobel_magnitude,
}


class ArtefactNet(nn.Module):
    """`front_end` (a name of FRONT_ENDS) -> NPR's ResNet-50 trunk cut after layer2 -> Linear(512, num_classes)."""

    def __init__(self, front_end: str, num_classes: int = 1):
        super().__init__()
        if front_end not in FRONT_ENDS:
            raise ValueError(f"unknown front-end {front_end!r}; choose one of {', '.join(FRONT_ENDS)}")
        self.front_end = front_end
        self.trunk = ResNetTrunk(Bottleneck, (3, 4))
        self.fc = nn.Linear(128 * Bottleneck.expansion, num_classes)

    def artefact_map(self, x: torch.Tensor) -> torch.Tensor:
        return FRONT_ENDS[self.front_end](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(self.artefact_map(x)))

    def extra_repr(self) -> str:
        return f"front_end={self.front_end!r}"


# Registered name -> front-end. `npr` keeps its own class (lib.models.npr) with the same trunk and head.
ARTEFACT_MODELS = {"safe": "safe_dwt", "fft_trunk": "fft_highpass", "dct_trunk": "dct_highpass",
                   "sobel_trunk": "sobel", "rgb_trunk": "rgb"}
_NOTES = {
    "safe": "Li et al. KDD 2025 (SAFE): DWT bior1.3 HH band, resized back -> NPR's ResNet-50 trunk -> fc 512",
    "fft_trunk": "FFT high-pass (centred 1/8 block zeroed, ReLU) -> NPR's ResNet-50 trunk -> fc 512",
    "dct_trunk": "DCT-II high-pass (u/H + v/W <= 0.625 zeroed) -> NPR's ResNet-50 trunk -> fc 512",
    "sobel_trunk": "Sobel gradient magnitude -> NPR's ResNet-50 trunk -> fc 512",
    "rgb_trunk": "the control: pixels -> NPR's ResNet-50 trunk -> fc 512",
}


def _register(name: str, front_end: str) -> None:
    @register_model(name, family="artefact", input_size=256, min_input_size=16, notes=_NOTES[name],
                    gradcam_layers=lambda m: [m.trunk.layer2[-1]])
    def _build(num_classes: int = 1, **kw: Any) -> nn.Module:
        return ArtefactNet(front_end, num_classes=num_classes, **kw)


for _name, _front in ARTEFACT_MODELS.items():
    _register(_name, _front)


def front_end_map(front_end: str, x: torch.Tensor) -> torch.Tensor:
    """The artefact map of a (N, C, H, W) batch under `front_end`, without a model (for figures)."""
    with torch.no_grad():
        return FRONT_ENDS[front_end](x)


__all__ = ["ARTEFACT_MODELS", "ArtefactNet", "FRONT_ENDS", "dct_highpass", "dwt_hh", "fft_highpass",
           "front_end_map", "safe_map", "sobel_magnitude"]
