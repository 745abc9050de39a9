"""PSNR / SSIM: the vectorised torch versions equal a per-image scikit-image loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evals.metrics import psnr_per_image, ssim_per_image

H, W = 48, 64  # not square, so a swapped H/W would show


def _photos01() -> np.ndarray:
    """Crops of scikit-image's sample photos in [0, 1], float64, shape (4, H, W, 3)."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    crops = [photo[40 : 40 + 3 * H : 3, 60 : 60 + 3 * W : 3] for photo in photos]
    return np.stack(crops).astype(np.float64) / 255.0


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    """Targets (real photos) and predictions (noisy, blurred-ish, clipped to [0, 1]) as H x W x 3 arrays."""
    target = _photos01()
    rng = np.random.default_rng(0)
    noise_levels = np.array([0.02, 0.05, 0.1, 0.2]).reshape(4, 1, 1, 1)
    preds = np.clip(0.9 * target + 0.05 + rng.normal(0.0, 1.0, target.shape) * noise_levels, 0.0, 1.0)
    return preds, target


def _nchw(images_hwc: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(images_hwc).permute(0, 3, 1, 2).to(dtype)


def _reference(preds: np.ndarray, target: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    psnr = [peak_signal_noise_ratio(t, p, data_range=data_range) for p, t in zip(preds, target, strict=True)]
    ssim = [
        structural_similarity(p, t, channel_axis=-1, data_range=data_range, win_size=7)
        for p, t in zip(preds, target, strict=True)
    ]
    return np.array(psnr), np.array(ssim)


@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_psnr_ssim_equal_skimage_loop(pairs, data_range):
    preds, target = pairs
    psnr_ref, ssim_ref = _reference(preds, target, data_range)
    psnr = psnr_per_image(_nchw(preds, torch.float64), _nchw(target, torch.float64), data_range=data_range)
    ssim = ssim_per_image(_nchw(preds, torch.float64), _nchw(target, torch.float64), data_range=data_range)
    assert psnr.dtype == ssim.dtype == torch.float64 and psnr.shape == ssim.shape == (4,)
    np.testing.assert_allclose(psnr.numpy(), psnr_ref, rtol=1e-6, atol=0)
    np.testing.assert_allclose(ssim.numpy(), ssim_ref, rtol=0, atol=1e-6)
    assert len(set(np.round(ssim_ref, 3))) == 4  # the four noise levels give distinct, non-trivial scores


@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_float32_inputs(pairs, data_range):
    """float32 tensors are widened to float64, so they match scikit-image on the same values in float64.

    scikit-image itself computes SSIM in float32 when handed float32 arrays, which loses a little precision in
    the variance terms (E[x^2] - E[x]^2): against that native-float32 loop the SSIM difference measured here
    is 4.6e-7, still within 1e-6.
    """
    preds32, target32 = (a.astype(np.float32) for a in pairs)
    psnr_ref, ssim_ref = _reference(preds32.astype(np.float64), target32.astype(np.float64), data_range)
    psnr = psnr_per_image(_nchw(preds32, torch.float32), _nchw(target32, torch.float32), data_range)
    ssim = ssim_per_image(_nchw(preds32, torch.float32), _nchw(target32, torch.float32), data_range)
    assert psnr.dtype == ssim.dtype == torch.float64
    np.testing.assert_allclose(psnr.numpy(), psnr_ref, rtol=1e-6, atol=0)
    np.testing.assert_allclose(ssim.numpy(), ssim_ref, rtol=0, atol=1e-6)

    psnr_native, ssim_native = _reference(preds32, target32, data_range)
    np.testing.assert_allclose(psnr.numpy(), psnr_native, rtol=1e-6, atol=0)
    np.testing.assert_allclose(ssim.numpy(), ssim_native, rtol=0, atol=1e-6)


def test_identical_images():
    x = _nchw(_photos01()[:2], torch.float64)
    psnr = psnr_per_image(x, x.clone(), data_range=1.0)
    assert torch.isinf(psnr).all() and (psnr > 0).all()
    torch.testing.assert_close(ssim_per_image(x, x.clone(), data_range=1.0), torch.ones(2, dtype=torch.float64))


def test_other_window_sizes(pairs):
    preds, target = pairs
    for win_size in (3, 11):
        expected = [
            structural_similarity(p, t, channel_axis=-1, data_range=1.0, win_size=win_size)
            for p, t in zip(preds, target, strict=True)
        ]
        got = ssim_per_image(_nchw(preds, torch.float64), _nchw(target, torch.float64), 1.0, win_size=win_size)
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


def test_input_contract():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(TypeError):
        psnr_per_image(x, x)  # data_range is required
    with pytest.raises(TypeError):
        ssim_per_image(x, x)
    with pytest.raises(ValueError, match="floating"):
        psnr_per_image((x * 255).to(torch.uint8), x, 1.0)
    with pytest.raises(ValueError, match="shape"):
        ssim_per_image(x, x[:, :, :8], 1.0)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        psnr_per_image(x[:, :1], x[:, :1], 1.0)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        psnr_per_image(x[0], x[0], 1.0)
    with pytest.raises(ValueError, match="data_range"):
        psnr_per_image(x, x, 0.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim_per_image(x, x, math.nan)
    with pytest.raises(ValueError, match="odd"):
        ssim_per_image(x, x, 1.0, win_size=6)
    with pytest.raises(ValueError, match="exceeds"):
        ssim_per_image(x, x, 1.0, win_size=17)


def test_the_cpu_and_device_ssim_paths_agree(pairs):
    """CPU inputs take SciPy's per-image running-sum filter; other devices the batched avg_pool path: the
    same SSIM up to float64 rounding, whichever runs (the device path is run here on CPU tensors)."""
    from evals.metrics.pixel import _ssim_cpu, _ssim_torch

    preds, target = (_nchw(a, torch.float32) for a in pairs)
    for data_range, win_size in ((1.0, 7), (2.0, 7), (1.0, 11)):
        cpu = _ssim_cpu(preds, target, data_range, win_size)
        batched = _ssim_torch(preds, target, data_range, win_size)
        assert cpu.dtype == batched.dtype == torch.float64
        torch.testing.assert_close(cpu, batched, rtol=0, atol=1e-11)  # running sums vs pooled windows
    torch.testing.assert_close(ssim_per_image(preds, target, 2.0), _ssim_cpu(preds, target, 2.0, 7), rtol=0, atol=0)


def test_cpu_ssim_and_psnr_do_not_depend_on_threads_or_batch(pairs):
    """The CPU SSIM spreads images over torch's threads and PSNR works a few images at a time: each image's
    value is computed alone, so neither the thread count nor the batch changes it by a bit."""
    preds, target = (_nchw(a, torch.float32) for a in pairs)
    preds, target = preds.repeat(3, 1, 1, 1), target.repeat(3, 1, 1, 1)  # 12 images: chunks of 8 and 4
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ssim_one, psnr_one = ssim_per_image(preds, target, 1.0), psnr_per_image(preds, target, 1.0)
        torch.set_num_threads(3)
        ssim_three, psnr_three = ssim_per_image(preds, target, 1.0), psnr_per_image(preds, target, 1.0)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(ssim_one, ssim_three) and torch.equal(psnr_one, psnr_three)
    alone = [
        (
            ssim_per_image(preds[i : i + 1], target[i : i + 1], 1.0),
            psnr_per_image(preds[i : i + 1], target[i : i + 1], 1.0),
        )
        for i in range(12)
    ]
    assert torch.equal(ssim_one, torch.cat([a[0] for a in alone]))
    assert torch.equal(psnr_one, torch.cat([a[1] for a in alone]))
