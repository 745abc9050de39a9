"""UniLIP's official reconstruction evaluator, re-expressed: the reference our metrics are measured against.

UniLIP's ``tokenizer/scripts/evaluation.py`` scores with TiTok's ``evaluator/evaluator.py`` and its own
``inception.py``. This module follows that code path step by step (our code, not theirs) so that parity
tests and ``benchmarks/recon_metrics_vs_official.py`` compare against what the official evaluator
computes, not against another library's formula:

* :func:`official_inception_features`: the official ``inception.py`` forward. torch-fidelity's network
  with every parameter in float64, the ``uint8`` input cast to float64, TF1-compatible bilinear resize to
  299, ``(x - 128) / 128``, and float64 pool3 features and ``logits_unbiased`` (the official subclass
  returns them without torch-fidelity's cast to float32).
* :class:`OfficialEvaluator`: the official running sums, one sample at a time (a float64 sum and a float64
  sum of ``torch.outer`` products per feature vector), the covariance ``(S - t t^T / n) / (n - 1)``, and
  FID with a torch product of the covariances and ``scipy.linalg.sqrtm`` (imaginary parts up to 1e-3 on
  the diagonal dropped, a larger one an error, the eps fallback when the root is not finite); Inception
  Score from float64 sums of softmax probabilities with its 1e-16 epsilon.
* :func:`official_psnr_ssim`: a per-image scikit-image loop on float32 ``H x W x 3`` arrays,
  ``peak_signal_noise_ratio(fake, real)`` and ``structural_similarity(fake, real, channel_axis=-1,
  data_range=2.0)``.

It is slow on purpose (per-sample outer products, float64 network): it is the yardstick, never the
harness's path.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["OfficialEvaluator", "official_inception_features", "official_psnr_ssim", "official_inception_net"]

_IS_EPS = 1e-16
_FID_EPS = 1e-6
_LAYERS = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "MaxPool_1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "MaxPool_2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
    "AvgPool",
)


def official_inception_net(weights_path: str) -> torch.nn.Module:
    """torch-fidelity's ``inception-v3-compat`` on ``weights_path`` with all parameters in float64, as the
    official ``inception.py`` builds it (the file is loaded by torch-fidelity, strictly)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=weights_path
    )
    return net.to(torch.float64).eval().requires_grad_(False)


def official_inception_features(net: torch.nn.Module, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
    """The official float64 forward of one batch.

    Args:
        net: A network from :func:`official_inception_net` (float64 parameters).
        images_uint8: ``uint8`` tensor ``B x 3 x H x W``.

    Returns:
        ``{"2048": (B, 2048), "logits_unbiased": (B, 1008)}``, float64 (never rounded to float32).
    """
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"expected uint8 B x 3 x H x W, got {images_uint8.dtype} {tuple(images_uint8.shape)}")
    with torch.no_grad():
        x = images_uint8.to(torch.float64)
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
        x = (x - 128) / 128
        for name in _LAYERS:
            x = getattr(net, name)(x)
        pool = torch.flatten(x, 1)
        return {"2048": pool, "logits_unbiased": pool.mm(net.fc.weight.T)}


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm(matrix, disp=False)[0]``; SciPy >= 1.16 deprecates ``disp`` (same result)."""
    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        result = linalg.sqrtm(matrix, disp=False)
    return result[0] if isinstance(result, tuple) else result


class OfficialEvaluator:
    """The official evaluator's float64 running sums and its FID / IS, fed one batch at a time."""

    def __init__(self, dim: int = 2048, num_classes: int = 1008) -> None:
        """Empty sums for ``dim``-d features and ``num_classes`` logits."""
        self.count = 0
        self.real_total = torch.zeros(dim, dtype=torch.float64)
        self.fake_total = torch.zeros(dim, dtype=torch.float64)
        self.real_outer = torch.zeros((dim, dim), dtype=torch.float64)
        self.fake_outer = torch.zeros((dim, dim), dtype=torch.float64)
        self.prob_total = torch.zeros(num_classes, dtype=torch.float64)
        self.p_log_p_total = torch.zeros(num_classes, dtype=torch.float64)

    def update(
        self, real_features: torch.Tensor, fake_features: torch.Tensor, fake_logits: Any = None, per_sample: bool = True
    ) -> None:
        """Add one batch: pool3 features of reals and fakes (and the fakes' ``logits_unbiased`` for IS).

        Args:
            real_features: ``(B, dim)`` pool3 features of the real images (widened to float64).
            fake_features: The same for the reconstructions.
            fake_logits: ``(B, num_classes)`` logits of the reconstructions, or ``None`` to skip IS.
            per_sample: ``True`` sums the outer products one sample at a time, as the official loop does
                (and costs what it costs); ``False`` sums the same products as one matrix product, equal up
                to float64 rounding, for tests with thousands of samples.
        """
        if real_features.shape != fake_features.shape:
            raise ValueError(f"real and fake features differ in shape: {real_features.shape} {fake_features.shape}")
        real_features, fake_features = real_features.to(torch.float64), fake_features.to(torch.float64)
        self.count += int(real_features.shape[0])
        if per_sample:
            for real, fake in zip(real_features, fake_features, strict=True):
                self.real_total += real
                self.fake_total += fake
                self.real_outer += torch.outer(real, real)
                self.fake_outer += torch.outer(fake, fake)
        else:
            self.real_total += real_features.sum(0)
            self.fake_total += fake_features.sum(0)
            self.real_outer += real_features.T @ real_features
            self.fake_outer += fake_features.T @ fake_features
        if fake_logits is not None:
            probs = F.softmax(fake_logits, dim=-1)
            self.prob_total += probs.sum(0, dtype=torch.float64)
            self.p_log_p_total += (probs * torch.log(probs + _IS_EPS)).sum(0, dtype=torch.float64)

    def _covariance(self, outer: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        return (outer - torch.outer(total, total) / self.count) / (self.count - 1)

    def fid(self) -> float:
        """FID: ``|mu_r - mu_f|^2 + tr S_r + tr S_f - 2 tr sqrtm(S_r S_f)`` with the official safeguards."""
        if self.count < 2:
            raise ValueError(f"FID needs at least 2 samples, have {self.count}")
        mu_real, mu_fake = self.real_total / self.count, self.fake_total / self.count
        sigma_real = self._covariance(self.real_outer, self.real_total)
        sigma_fake = self._covariance(self.fake_outer, self.fake_total)
        diff = mu_real - mu_fake
        covmean = _sqrtm(sigma_real.mm(sigma_fake).numpy())
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
        if not np.isfinite(covmean).all():
            diag_real, diag_fake = np.diag(sigma_real.numpy()), np.diag(sigma_fake.numpy())
            tr_covmean = float(np.sum(np.sqrt((diag_real * _FID_EPS) * (diag_fake * _FID_EPS) / (_FID_EPS * _FID_EPS))))
        return float(diff.dot(diff).item() + torch.trace(sigma_real) + torch.trace(sigma_fake) - 2 * tr_covmean)

    def inception_score(self) -> float:
        """Single-split Inception Score from the float64 probability sums."""
        if self.count < 1:
            raise ValueError("Inception Score of no samples")
        mean_probs = self.prob_total / self.count
        excess = self.prob_total * torch.log(mean_probs + _IS_EPS)
        return float(torch.exp(torch.sum(self.p_log_p_total - excess) / self.count))


def official_psnr_ssim(fake: torch.Tensor, real: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-image PSNR and SSIM, the official scikit-image loop on float32 ``H x W x 3`` arrays.

    Args:
        fake: Reconstructions ``B x 3 x H x W`` in [0, 1].
        real: Real images, same shape.

    Returns:
        (PSNR per image, SSIM per image with the official ``data_range=2.0``).
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnrs, ssims = [], []
    fake_hwc = fake.to(torch.float32).permute(0, 2, 3, 1).numpy()
    real_hwc = real.to(torch.float32).permute(0, 2, 3, 1).numpy()
    for f, r in zip(fake_hwc, real_hwc, strict=True):
        psnrs.append(float(peak_signal_noise_ratio(f, r)))
        ssims.append(float(structural_similarity(f, r, channel_axis=-1, data_range=2.0)))
    return psnrs, ssims
