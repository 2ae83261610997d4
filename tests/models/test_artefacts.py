"""Each artefact front-end against the library it follows, computed directly on a random image."""

import numpy as np
import pytest
import pywt
import scipy.fft
import scipy.ndimage
import torch

from lib.models import create_model
from lib.models.artefacts import (ARTEFACT_MODELS, ArtefactNet, dct_highpass, dwt_hh, fft_highpass, safe_map,
                                  sobel_magnitude)
from lib.models.npr import NPRNet

RNG = np.random.default_rng(0)


def _image(h=23, w=30, c=3):
    return RNG.normal(size=(c, h, w))


@pytest.mark.parametrize("shape", [(23, 30), (32, 32), (7, 9)])
def test_dwt_hh_is_pywavelets_diagonal_detail(shape):
    img = _image(*shape)
    ours = dwt_hh(torch.from_numpy(img)[None]).numpy()[0]
    for ch in range(3):
        _, (_, _, cd) = pywt.dwt2(img[ch], "bior1.3", mode="symmetric")
        assert ours[ch].shape == cd.shape
        np.testing.assert_allclose(ours[ch], cd, atol=1e-10)


def test_safe_map_has_the_input_size_and_ignores_flat_images():
    x = torch.from_numpy(_image(28, 28))[None]
    assert safe_map(x).shape == x.shape
    flat = torch.full((1, 3, 28, 28), 0.7, dtype=torch.float64)
    assert safe_map(flat).abs().max() < 1e-10  # a high-pass band of a constant image is zero


def test_fft_highpass_is_numpy_fft_with_the_centre_block_zeroed():
    img = _image(24, 32)
    h, w = img.shape[-2:]
    spectrum = np.fft.fftshift(np.fft.fft2(img, norm="ortho"), axes=(-2, -1))
    spectrum[:, h // 2 - h // 8: h // 2 + h // 8, w // 2 - w // 8: w // 2 + w // 8] = 0
    expected = np.maximum(np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1)), norm="ortho").real, 0)
    np.testing.assert_allclose(fft_highpass(torch.from_numpy(img)[None]).numpy()[0], expected, atol=1e-10)


def test_dct_highpass_is_scipy_dctn_with_low_frequencies_zeroed():
    img = _image(20, 26)
    h, w = img.shape[-2:]
    coeffs = scipy.fft.dctn(img, norm="ortho", axes=(-2, -1))
    u, v = np.meshgrid(np.arange(h) / (h - 1), np.arange(w) / (w - 1), indexing="ij")
    coeffs[:, u + v <= 0.625] = 0
    expected = scipy.fft.idctn(coeffs, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(dct_highpass(torch.from_numpy(img)[None]).numpy()[0], expected, atol=1e-10)
    # cutoff 0 keeps every coefficient but DC: the image minus its mean
    no_dc = dct_highpass(torch.from_numpy(img)[None], cutoff=0.0).numpy()[0]
    np.testing.assert_allclose(no_dc, img - img.mean(axis=(1, 2), keepdims=True), atol=1e-10)


def test_sobel_magnitude_is_scipy_ndimage_sobel():
    img = _image(17, 21)
    ours = sobel_magnitude(torch.from_numpy(img)[None], eps=0.0).numpy()[0]
    for ch in range(3):
        gx = scipy.ndimage.sobel(img[ch], axis=1, mode="nearest") / 8
        gy = scipy.ndimage.sobel(img[ch], axis=0, mode="nearest") / 8
        np.testing.assert_allclose(ours[ch], np.hypot(gx, gy), atol=1e-10)


@pytest.mark.parametrize("name", sorted(ARTEFACT_MODELS))
def test_registered_models_share_npr_trunk_and_head(name):
    model = create_model(name, num_classes=1)
    assert isinstance(model, ArtefactNet) and model.front_end == ARTEFACT_MODELS[name]
    reference = NPRNet()
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()]  # front-ends carry no weights
    x = torch.rand(2, 3, 28, 36)
    assert model(x).shape == (2, 1)


def test_rgb_control_is_the_trunk_on_pixels():
    torch.manual_seed(0)
    model = create_model("rgb_trunk").eval()
    x = torch.rand(2, 3, 24, 24)
    assert torch.equal(model.artefact_map(x), x)
    assert torch.allclose(model(x), model.fc(model.trunk(x)))


def test_unknown_front_end_is_refused():
    with pytest.raises(ValueError, match="front-end"):
        ArtefactNet("wavelet_packets")
