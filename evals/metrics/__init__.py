"""Image metrics as streaming, tested objects: FID / Inception Score, PSNR / SSIM and LPIPS.

Every metric that needs a network reads its weights from local disk (see :mod:`evals.metrics.weights`):
a path that was named but does not exist raises :class:`WeightsNotFoundError` (an error), weights that were
not named and are not in the torch hub cache raise :class:`MetricUnavailable` (not computed); nothing is
downloaded at run time. The numbers
are those of the reference libraries (torch-fidelity, scikit-image, lpips); tests/evals checks each
against them.
"""

from .fid import (
    INCEPTION_ENV_VAR,
    INCEPTION_FILENAME,
    FeatureStats,
    InceptionExtractor,
    InceptionScoreStats,
    frechet_distance,
)
from .lpips_metric import LPIPS_BACKBONES, LPIPSMetric
from .pixel import psnr_per_image, ssim_per_image
from .weights import MetricUnavailable, WeightsKeyError, WeightsNotFoundError, file_sha256, resolve_weights, torch_home

__all__ = [
    "INCEPTION_ENV_VAR",
    "INCEPTION_FILENAME",
    "LPIPS_BACKBONES",
    "FeatureStats",
    "InceptionExtractor",
    "InceptionScoreStats",
    "LPIPSMetric",
    "MetricUnavailable",
    "WeightsKeyError",
    "WeightsNotFoundError",
    "file_sha256",
    "frechet_distance",
    "psnr_per_image",
    "resolve_weights",
    "ssim_per_image",
    "torch_home",
]
