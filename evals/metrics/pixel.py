"""Per-image PSNR and SSIM, vectorised in torch float64, equal to scikit-image's per-image functions.

The reference is a per-image loop over ``skimage.metrics.peak_signal_noise_ratio`` and
``skimage.metrics.structural_similarity(..., channel_axis=-1, win_size=7)`` on ``H x W x 3`` arrays with
scikit-image's defaults (uniform window, sample covariance, K1=0.01, K2=0.03, per-channel SSIM averaged over
channels, a ``(win_size-1)//2`` border cropped before averaging). These functions compute the same numbers
for a whole batch at once (tests/evals/test_metrics_pixel.py checks them against that loop).

``data_range`` is required: it enters both metrics (PSNR directly, SSIM through its constants C1 and C2),
so a default would silently pick the scale. Images in [0, 1] have ``data_range=1.0``; some upstream
evaluation code passes ``2.0`` for such images, which gives different (higher PSNR, different SSIM)
numbers, so whichever value is used must be recorded with the results.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["psnr_per_image", "ssim_per_image"]


def _check_pair(preds: torch.Tensor, target: torch.Tensor, data_range: float) -> float:
    """Validate the shared input contract and return ``data_range`` as a float."""
    for name, value in (("preds", preds), ("target", target)):
        if not torch.is_tensor(value):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {value.dtype}")
        if value.dim() != 4 or value.shape[1] != 3:
            raise ValueError(f"{name} must have shape B x 3 x H x W, got {tuple(value.shape)}")
    if preds.shape != target.shape:
        raise ValueError(f"preds and target shapes differ: {tuple(preds.shape)} vs {tuple(target.shape)}")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range}")
    return data_range


def psnr_per_image(preds: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image pair, ``10 log10(data_range^2 / MSE)``.

    Equals ``skimage.metrics.peak_signal_noise_ratio(target_hwc, preds_hwc, data_range=data_range)`` per image.
    Identical images have MSE 0 and PSNR ``+inf`` (as in scikit-image); callers averaging PSNR over a set must
    decide how to treat them.

    Args:
        preds: Float tensor ``B x 3 x H x W``.
        target: Float tensor of the same shape.
        data_range: Value range of the images (e.g. 1.0 for [0, 1]); required.

    Returns:
        float64 tensor of shape ``(B,)`` on the input device.

    Raises:
        ValueError: On non-float inputs, mismatched or non ``B x 3 x H x W`` shapes, or a bad data_range.
    """
    data_range = _check_pair(preds, target, data_range)
    # float64 throughout: differences of float32 values are exact in float64, like scikit-image's float64 mean.
    # A few images at a time: the float64 copies of a whole batch do not stay in cache (about 3x slower on CPUs);
    # each image's mean is the same reduction either way.
    mse = torch.cat(
        [
            (preds[start : start + 8].to(torch.float64) - target[start : start + 8].to(torch.float64))
            .square()
            .mean(dim=(1, 2, 3))
            for start in range(0, preds.shape[0], 8)
        ]
    )
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim_per_image(preds: torch.Tensor, target: torch.Tensor, data_range: float, win_size: int = 7) -> torch.Tensor:
    """Mean structural similarity of each image pair, scikit-image's definition.

    Equals ``skimage.metrics.structural_similarity(preds_hwc, target_hwc, channel_axis=-1,
    data_range=data_range, win_size=win_size)`` per image: uniform ``win_size x win_size`` window, sample
    (n-1) covariances, K1=0.01, K2=0.03, mean over the map with a ``(win_size-1)//2`` border cropped, then mean
    over channels. The border crop removes exactly the pixels whose window reaches scikit-image's reflect
    padding, so a padding-free ("valid") box filter gives the same map without padding.

    Args:
        preds: Float tensor ``B x 3 x H x W``.
        target: Float tensor of the same shape.
        data_range: Value range of the images (e.g. 1.0 for [0, 1]); required.
        win_size: Odd side of the uniform window, at most ``min(H, W)``.

    Returns:
        float64 tensor of shape ``(B,)`` on the input device.

    Raises:
        ValueError: On non-float inputs, mismatched or non ``B x 3 x H x W`` shapes, a bad data_range, or a
            window that is even or larger than the images.
    """
    data_range = _check_pair(preds, target, data_range)
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size!r}")
    if win_size > min(preds.shape[2], preds.shape[3]):
        raise ValueError(f"win_size {win_size} exceeds the image size {tuple(preds.shape[2:])}")
    if win_size == 1:
        raise ValueError("win_size 1 makes the sample covariance undefined (division by n - 1 = 0)")

    if preds.device.type == "cpu":
        return _ssim_cpu(preds, target, data_range, win_size)
    return _ssim_torch(preds, target, data_range, win_size)


def _ssim_map_mean(ux, uy, xx, yy, xy, data_range: float, win_size: int):
    """Mean SSIM over channels and pixels from the five box-filtered maps (arrays or tensors, ``(C, h, w)`` or
    ``(B, C, h, w)``): the formula shared by both implementations."""
    n_pixels = win_size * win_size
    cov_norm = n_pixels / (n_pixels - 1)  # sample covariance, scikit-image's default
    vx = cov_norm * (xx - ux * ux)
    vy = cov_norm * (yy - uy * uy)
    vxy = cov_norm * (xy - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def _ssim_cpu(preds: torch.Tensor, target: torch.Tensor, data_range: float, win_size: int) -> torch.Tensor:
    """CPU: one image at a time through SciPy's running-sum box filter, in float64, on torch's threads.

    A whole batch of float64 maps (5 per image) is hundreds of MB and makes every pass memory-bound; one
    image's maps stay in cache, and ``uniform_filter``'s running sum costs O(1) per pixel where a pooled
    7 x 7 window costs 49 reads. SciPy and NumPy release the GIL for this work, so the images are spread over
    as many threads as torch uses (each image's value is computed alone, so the result does not depend on
    the thread count). scikit-image's per-image loop computes float32 inputs in float32 on one thread; here
    every sum stays float64 (``benchmarks/pixel_metrics_vs_official.py`` times the two).
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from scipy.ndimage import uniform_filter

    border = (win_size - 1) // 2

    def one(index: int) -> float:
        # Widened per image (any float dtype, bfloat16 included), so no float64 copy of the batch is made.
        x = preds[index].detach().to(torch.float64).numpy()
        y = target[index].detach().to(torch.float64).numpy()
        # Reflect padding only touches the border pixels, which are cropped (as scikit-image does).
        filtered = uniform_filter(np.stack((x, y, x * x, y * y, x * y)), size=(1, 1, win_size, win_size))
        interior = filtered[..., border : filtered.shape[-2] - border, border : filtered.shape[-1] - border]
        ssim_map = _ssim_map_mean(*interior, data_range, win_size)
        # Every channel has the same number of pixels: the mean over all is the mean of per-channel means.
        return float(ssim_map.mean(axis=(1, 2)).mean())

    count = preds.shape[0]
    workers = max(1, min(torch.get_num_threads(), count))
    if workers == 1:
        return torch.tensor([one(index) for index in range(count)], dtype=torch.float64)
    with ThreadPoolExecutor(workers, thread_name_prefix="ssim") as pool:
        return torch.tensor(list(pool.map(one, range(count))), dtype=torch.float64)


def _ssim_torch(preds: torch.Tensor, target: torch.Tensor, data_range: float, win_size: int) -> torch.Tensor:
    """Other devices: the whole batch at once with a padding-free ("valid") box filter, in float64."""
    x = preds.to(torch.float64)
    y = target.to(torch.float64)

    def box(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, kernel_size=win_size, stride=1)

    ssim_map = _ssim_map_mean(box(x), box(y), box(x * x), box(y * y), box(x * y), data_range, win_size)
    # Per-channel mean, then mean over channels: every channel has the same number of pixels, so this is
    # the per-channel-then-channel mean scikit-image takes.
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)
