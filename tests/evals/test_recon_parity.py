"""Our default rFID path against the official evaluator's code path (``evals.metrics.official``).

The default runs the Inception network in float32 and sums float64 statistics; the official evaluator runs
it in float64 and takes FID through a torch covariance product and ``scipy.linalg.sqrtm``. Two steps are
checked: the float32 network's features against the official float64 forward on a few images (random
weights of the real architecture: no weights are available offline), and FID on full-rank statistics
(more samples than feature dimensions) from features carrying a float32-network-sized error, against the
official FID of the exact float64 features: within 1e-6 relative.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evals.benchmarks.recon.benchmark import ReconOptions
from evals.metrics import INCEPTION_FILENAME, FeatureStats, InceptionExtractor, frechet_distance
from evals.metrics.official import OfficialEvaluator, official_inception_features, official_inception_net
from evals.metrics.testing import random_inception_state_dict

# Largest deviation of the float32 network's features from the official float64 forward, relative to the
# largest feature (measured 6.7e-7 on these images); the FID tests put an error of this size on features.
FLOAT32_FEATURE_ERROR = 2e-6


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILENAME
    torch.save(random_inception_state_dict(seed=1234), path)
    return path


def test_the_default_is_the_float32_network_with_float64_statistics(inception_weights):
    assert ReconOptions().inception_dtype == "float32"
    extractor = InceptionExtractor(inception_weights)
    assert extractor.internal_dtype == "float32"
    assert next(extractor.net.parameters()).dtype == torch.float32
    features = extractor.features((torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).byte())
    assert features["2048"].dtype == torch.float64  # widened before any sum


def test_default_features_match_the_official_float64_forward(inception_weights):
    images = (torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    official = official_inception_features(official_inception_net(str(inception_weights)), images)
    ours = InceptionExtractor(inception_weights, batch_size=4).features(images)
    ours64 = InceptionExtractor(inception_weights, internal_dtype="float64", batch_size=4).features(images)
    for name in ("2048", "logits_unbiased"):
        assert official[name].dtype == torch.float64
        scale = official[name].abs().max()
        error32 = float((ours[name] - official[name]).abs().max() / scale)
        error64 = float((ours64[name] - official[name]).abs().max() / scale)
        assert 0 < error32 < FLOAT32_FEATURE_ERROR, (name, error32)
        # The float64 variant differs only by torch-fidelity's cast of its outputs to float32.
        assert error64 < 1e-7, (name, error64)
        assert error64 < error32


def _feature_sets(samples: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated, non-negative, O(1) features (like pool3 activations) for a real and a shifted fake set."""
    generator = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / dim**0.5

    def draw(shift: float, gain: float) -> torch.Tensor:
        z = torch.randn(samples, dim, generator=generator, dtype=torch.float64)
        return torch.relu(z @ mix + shift) * gain

    return draw(0.0, 1.0), draw(0.05, 1.02)


def _fid_parity(samples: int, dim: int) -> float:
    """Relative difference of our FID (float32-network-sized error on the features, float32 features,
    float64 statistics) from the official FID of the exact float64 features, on full-rank statistics."""
    real, fake = _feature_sets(samples, dim, seed=0)
    official = OfficialEvaluator(dim=dim)
    official.update(real, fake, per_sample=False)
    assert int(torch.linalg.matrix_rank(official._covariance(official.real_outer, official.real_total))) == dim
    expected = official.fid()

    generator = torch.Generator().manual_seed(1)
    ours_real, ours_fake = FeatureStats(dim), FeatureStats(dim)
    for stats, exact in ((ours_real, real), (ours_fake, fake)):
        error = torch.randn(exact.shape, generator=generator, dtype=torch.float64) * FLOAT32_FEATURE_ERROR
        stats.update((exact + error * exact.abs().max()).to(torch.float32))
    return abs(frechet_distance(ours_real, ours_fake) - expected) / expected


def test_fid_matches_the_official_path_on_full_rank_statistics_small():
    assert _fid_parity(samples=600, dim=256) < 1e-6


@pytest.mark.slow
def test_fid_matches_the_official_path_on_full_rank_2048_dim_statistics():
    """The real feature size: 2,500 samples of 2048 dims (measured 3e-8 relative)."""
    assert _fid_parity(samples=2500, dim=2048) < 1e-6


def test_the_official_per_sample_sums_equal_the_matrix_product():
    real, fake = _feature_sets(40, 16, seed=2)
    loop, product = OfficialEvaluator(dim=16, num_classes=16), OfficialEvaluator(dim=16, num_classes=16)
    loop.update(real, fake, fake_logits=fake)
    product.update(real, fake, fake_logits=fake, per_sample=False)
    torch.testing.assert_close(loop.real_outer, product.real_outer, rtol=1e-13, atol=1e-13)
    assert loop.fid() == pytest.approx(product.fid(), rel=1e-10)
    # Our FID formula on the same float64 features is the official one up to float64 rounding.
    ours_real, ours_fake = FeatureStats(16).update(real), FeatureStats(16).update(fake)
    assert frechet_distance(ours_real, ours_fake) == pytest.approx(loop.fid(), rel=1e-9)
