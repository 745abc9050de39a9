"""FID / Inception Score: parity with torch-fidelity and torchmetrics, streaming statistics, missing weights.

No real Inception weights are available offline, so the tests save *random* weights of torch-fidelity's
exact architecture to a temporary file and load them through the same code path as the released file.
Random weights are drawn with a scale-preserving (Kaiming) init so that activations stay O(1) through the
~90 layers (PyTorch's default init shrinks them to ~1e-8 and would make every FID ~0).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from evals.metrics import (
    INCEPTION_ENV_VAR,
    INCEPTION_FILENAME,
    FeatureStats,
    InceptionExtractor,
    InceptionScoreStats,
    MetricUnavailable,
    WeightsNotFoundError,
    frechet_distance,
)
from evals.metrics.testing import random_inception_state_dict

N_IMAGES = 10  # per set; float32 Inception costs ~0.11 s per image on 2 CPU cores
SIZE = 64


def _photo_crops(n: int, size: int, seed: int) -> np.ndarray:
    """``n`` random square crops of scikit-image's sample photos, resized to ``size``: (n, size, size, 3) uint8."""
    import skimage.data
    from PIL import Image

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(96, min(h, w)))
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BICUBIC)
        crops.append(np.asarray(crop))
    return np.stack(crops)


def _to_tensor(images_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_hwc).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILENAME
    torch.save(random_inception_state_dict(seed=1234), path)
    return path


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory) -> dict[str, object]:
    """Real photo crops and noisy "fakes", as uint8 arrays and as folders of PNGs for torch-fidelity."""
    from PIL import Image

    real = _photo_crops(N_IMAGES, SIZE, seed=0)
    rng = np.random.default_rng(1)
    fake = np.clip(real.astype(np.float64) + rng.normal(0.0, 25.0, real.shape), 0, 255).round().astype(np.uint8)
    root = tmp_path_factory.mktemp("images")
    dirs = {}
    for name, images in (("real", real), ("fake", fake)):
        folder = root / name
        folder.mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i:03d}.png")
        dirs[name] = folder
    return {"real": real, "fake": fake, "real_dir": dirs["real"], "fake_dir": dirs["fake"]}


@pytest.fixture(scope="module")
def extractor32(inception_weights) -> InceptionExtractor:
    return InceptionExtractor(inception_weights, internal_dtype="float32", batch_size=4)


@pytest.fixture(scope="module")
def features32(extractor32, image_sets) -> dict[str, dict[str, torch.Tensor]]:
    return {name: extractor32.features(_to_tensor(image_sets[name])) for name in ("real", "fake")}


@pytest.fixture(scope="module")
def plain_features32(inception_weights, image_sets) -> dict[str, dict[str, torch.Tensor]]:
    """torch-fidelity's own float32 network as it builds it (batch norms unfolded, contiguous), widened."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(inception_weights)
    ).eval()
    out = {}
    with torch.no_grad():
        for name in ("real", "fake"):
            feats = net.convert_features_tuple_to_dict(net(_to_tensor(image_sets[name])))
            out[name] = {key: value.double() for key, value in feats.items()}
    return out


# Our extractor folds each batch norm into its convolution and runs channels_last (fid.py): its features
# are torch-fidelity's to float32 rounding, measured at ~7e-7 of the largest value on the real network.
FOLDING_REL = 4e-6


def test_folded_features_equal_torch_fidelity_network_to_float32_rounding(features32, plain_features32):
    for name in ("real", "fake"):
        for key in ("2048", "logits_unbiased"):
            ours, plain = features32[name][key], plain_features32[name][key]
            error = float((ours - plain).abs().max() / plain.abs().max())
            assert error < FOLDING_REL, (name, key, error)


def test_an_images_features_do_not_depend_on_its_batch(extractor32, image_sets):
    """Batches of 4 and 2 against batches of 1: the pool3 features and the logits (a matrix product, which
    rounds by its row count, so it is computed one row at a time) are bit-identical."""
    images = _to_tensor(image_sets["real"][:6])
    together = extractor32.features(images)
    alone = [extractor32.features(images[i : i + 1]) for i in range(6)]
    for key in ("2048", "logits_unbiased"):
        assert torch.equal(together[key], torch.cat([a[key] for a in alone])), key


def test_folding_refuses_an_inception_it_does_not_know():
    from evals.metrics.fid import _fold_batch_norms

    class BasicConv2d(torch.nn.Module):  # torch-fidelity's block name, another layout
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            self.norm = torch.nn.GroupNorm(2, 4)

    with pytest.raises(RuntimeError, match="not conv -> batch norm"):
        _fold_batch_norms(torch.nn.Sequential(BasicConv2d()))
    with pytest.raises(RuntimeError, match="no conv -> batch norm block"):
        _fold_batch_norms(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)))


def _stats(features: torch.Tensor, chunk: int) -> FeatureStats:
    """Stream features into FeatureStats in chunks, as an evaluation loop would."""
    stats = FeatureStats(features.shape[1])
    for start in range(0, features.shape[0], chunk):
        stats.update(features[start : start + chunk])
    return stats


@pytest.fixture(scope="module")
def our_fid(features32) -> float:
    """Our FID of the two sets, streamed in uneven chunks."""
    return frechet_distance(_stats(features32["real"]["2048"], 3), _stats(features32["fake"]["2048"], 4))


def test_fid_and_inception_score_equal_torch_fidelity(
    inception_weights, image_sets, features32, plain_features32, our_fid
):
    import torch_fidelity

    reference = torch_fidelity.calculate_metrics(
        input1=str(image_sets["real_dir"]),
        input2=str(image_sets["fake_dir"]),
        fid=True,
        isc=True,
        isc_splits=1,
        cuda=False,
        batch_size=4,
        feature_extractor_weights_path=str(inception_weights),
        # torch-fidelity 0.4.0 runs float32 whatever it is asked for (see fid.py); compare like with like.
        feature_extractor_internal_dtype="float32",
        cache=False,
        verbose=False,
        save_cpu_ram=True,
    )
    expected_fid = reference["frechet_inception_distance"]
    assert expected_fid > 1.0  # a non-degenerate comparison
    assert our_fid == pytest.approx(expected_fid, rel=1e-6, abs=0)

    # The formula, exactly: torch-fidelity's own logits give its score to float64 rounding.
    isc = InceptionScoreStats()
    for start in range(0, N_IMAGES, 3):
        isc.update(plain_features32["real"]["logits_unbiased"][start : start + 3])
    assert isc.score() > 1.0 + 1e-3
    assert isc.score() == pytest.approx(reference["inception_score_mean"], rel=1e-12, abs=0)
    # Our folded network's logits move it by float32 rounding only.
    ours = InceptionScoreStats().update(features32["real"]["logits_unbiased"])
    assert ours.score() == pytest.approx(reference["inception_score_mean"], rel=1e-7, abs=0)


def _exact_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID of two small feature sets without any eigensolver round-off.

    With centred features A (n_a x d) and B (n_b x d), sigma_a sigma_b = A^T (A B^T) B / ((n_a-1)(n_b-1)) has
    the same non-zero eigenvalues as K K^T with K = A B^T / sqrt((n_a-1)(n_b-1)), so tr sqrt(sigma_a sigma_b)
    is the nuclear norm of the small matrix K: no 2048 x 2048 eigenproblem, hence no spurious eigenvalues.
    """
    a_c, b_c = a - a.mean(dim=0), b - b.mean(dim=0)
    na, nb = a.shape[0], b.shape[0]
    k = (a_c @ b_c.T) / ((na - 1) * (nb - 1)) ** 0.5
    trace_sqrt = torch.linalg.svdvals(k).sum()
    mean_term = (a.mean(dim=0) - b.mean(dim=0)).square().sum()
    traces = a_c.square().sum() / (na - 1) + b_c.square().sum() / (nb - 1)
    return float(mean_term + traces - 2 * trace_sqrt)


# FID takes sqrt(lambda).real of *all* 2048 eigenvalues of sigma_a @ sigma_b. With n samples the product has
# rank <= n - 1; the other ~2040 eigenvalues are round-off (~1e-14 here), each of which can add ~1e-7, and
# different eigensolvers (numpy's geev in torch-fidelity, so ours; torch.linalg.eigvals in torchmetrics)
# produce different round-off. Measured with these inputs: ours vs torchmetrics 4.9e-6 relative, ours vs the
# exact value 6.0e-6, torchmetrics vs exact 1.1e-5 (ours vs torch-fidelity: 9e-8, same solver; what remains
# is torch-fidelity's float32 mean). With real evaluation sizes (n >> 2048) the covariances are full rank
# and the effect disappears. 5e-5 leaves ~4x margin for other LAPACK builds.
EIGENSOLVER_NOISE_REL = 5e-5


def test_fid_equals_torchmetrics_up_to_eigensolver_noise(
    inception_weights, image_sets, features32, plain_features32, our_fid
):
    """torchmetrics agrees bit for bit up to the covariances; its FID differs only through eigenvalue noise."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    # antialias=False selects torch-fidelity's TF1-compatible resize; torchmetrics' default (True) resizes
    # differently and is not the reference FID.
    metric = FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(inception_weights), antialias=False
    )
    metric.update(_to_tensor(image_sets["real"]), real=True)
    metric.update(_to_tensor(image_sets["fake"]), real=False)

    # Same float32 network and input path: the float64 sufficient statistics are bit-identical.
    real = FeatureStats(2048).update(plain_features32["real"]["2048"]).state_dict()
    fake = FeatureStats(2048).update(plain_features32["fake"]["2048"]).state_dict()
    assert torch.equal(metric.real_features_sum, torch.from_numpy(real["sum"]))
    assert torch.equal(metric.real_features_cov_sum, torch.from_numpy(real["sum_outer"]))
    assert torch.equal(metric.fake_features_sum, torch.from_numpy(fake["sum"]))
    assert torch.equal(metric.fake_features_cov_sum, torch.from_numpy(fake["sum_outer"]))

    theirs = float(metric.compute())  # torchmetrics returns float32: ~6e-8 relative rounding on top
    exact = _exact_fid(features32["real"]["2048"], features32["fake"]["2048"])
    assert theirs == pytest.approx(our_fid, rel=EIGENSOLVER_NOISE_REL, abs=0)
    assert our_fid == pytest.approx(exact, rel=EIGENSOLVER_NOISE_REL, abs=0)
    assert theirs == pytest.approx(exact, rel=EIGENSOLVER_NOISE_REL, abs=0)


def test_float64_extractor_really_runs_float64(inception_weights, image_sets, features32):
    """torch-fidelity 0.4.0 maps "float64" to float32; our extractor must run float64 anyway.

    The independent reference is torchmetrics' Inception forward moved to float64 with set_dtype, which
    returns float64 features. torch-fidelity's forward (ours) rounds its outputs to float32, so our float64
    features must equal those to float32 rounding (2**-24 relative) and be clearly closer than a float32 pass.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    images = _to_tensor(image_sets["real"][:3])
    extractor64 = InceptionExtractor(inception_weights, internal_dtype="float64", batch_size=4)
    assert all(p.dtype == torch.float64 for p in extractor64.net.parameters())
    ours64 = extractor64.features(images)["2048"]

    metric = FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(inception_weights), antialias=False
    )
    metric.set_dtype(torch.float64)
    with torch.no_grad():
        reference64 = metric.inception(images)
    assert reference64.dtype == torch.float64
    torch.testing.assert_close(ours64, reference64, rtol=2.0**-24, atol=0.0)
    error64 = (ours64 - reference64).abs().max()
    error32 = (features32["real"]["2048"][:3] - reference64).abs().max()
    assert error32 > 4 * error64
    assert extractor64.fingerprint["internal_dtype"] == "float64"


def test_features_contract_and_fingerprint(extractor32, inception_weights):
    with pytest.raises(ValueError, match="uint8"):
        extractor32.features(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        extractor32.features(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        extractor32.features(torch.zeros(3, 32, 32, dtype=torch.uint8))
    empty = extractor32.features(torch.zeros(0, 3, 32, 32, dtype=torch.uint8))
    assert empty["2048"].shape == (0, 2048) and empty["logits_unbiased"].shape == (0, 1008)

    out = extractor32.features(torch.randint(0, 256, (5, 3, 40, 48), dtype=torch.uint8))
    assert out["2048"].shape == (5, 2048) and out["logits_unbiased"].shape == (5, 1008)
    assert out["2048"].dtype == out["logits_unbiased"].dtype == torch.float64

    fingerprint = extractor32.fingerprint
    assert fingerprint["weights_sha256"] == hashlib.sha256(inception_weights.read_bytes()).hexdigest()
    assert fingerprint["internal_dtype"] == "float32"
    assert fingerprint["torch_fidelity_version"]


def test_feature_stats_merge_is_exact_and_roundtrips(tmp_path):
    generator = torch.Generator().manual_seed(3)
    features = torch.rand(41, 2048, generator=generator, dtype=torch.float64) * 2.0  # Inception-like, >= 0
    whole = FeatureStats(2048).update(features)
    merged = _stats(features[:17], 5).merge(_stats(features[17:], 7))
    assert merged.count == whole.count == 41
    np.testing.assert_allclose(merged.mean(), whole.mean(), rtol=1e-12, atol=0)
    scale = np.abs(whole.covariance()).max()
    np.testing.assert_allclose(merged.covariance(), whole.covariance(), rtol=0, atol=1e-12 * scale)
    # Against numpy's two-pass estimator: the sufficient-statistics formula loses only a few bits.
    np.testing.assert_allclose(whole.covariance(), np.cov(features.numpy(), rowvar=False), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(whole.mean(), features.numpy().mean(axis=0), rtol=1e-13, atol=0)

    path = tmp_path / "stats.npz"
    whole.save(path)
    loaded = FeatureStats.load(path)
    for key, value in whole.state_dict().items():
        assert np.array_equal(loaded.state_dict()[key], value)
    assert np.array_equal(loaded.covariance(), whole.covariance())

    with pytest.raises(ValueError, match="2048"):
        whole.update(torch.zeros(3, 100))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats(4).update(torch.zeros(1, 4)).covariance()


def test_inception_score_stats_match_torch_fidelity_formula_and_merge(tmp_path):
    from torch_fidelity.metric_isc import isc_features_to_metric

    generator = torch.Generator().manual_seed(5)
    logits = (torch.randn(37, 1008, generator=generator) * 3.0).to(torch.float32)
    expected = isc_features_to_metric(logits, splits=1, shuffle=True, rng_seed=2020)["inception_score_mean"]
    whole = InceptionScoreStats().update(logits)
    assert whole.score() == pytest.approx(expected, rel=1e-12, abs=0)
    merged = InceptionScoreStats().update(logits[:20]).merge(InceptionScoreStats().update(logits[20:]))
    assert merged.score() == pytest.approx(whole.score(), rel=1e-13, abs=0)

    path = tmp_path / "isc.npz"
    whole.save(path)
    loaded = InceptionScoreStats.load(path)
    assert loaded.count == 37 and loaded.score() == whole.score()


def test_missing_inception_weights_raise_metric_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(INCEPTION_ENV_VAR, raising=False)
    with pytest.raises(MetricUnavailable) as excinfo:
        InceptionExtractor()
    message = str(excinfo.value)
    assert INCEPTION_FILENAME in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / INCEPTION_FILENAME) in message
    assert INCEPTION_ENV_VAR in message and "torch-fidelity" in message

    # A path that was named (the variable, or explicitly) must exist: an error, not "not computed".
    monkeypatch.setenv(INCEPTION_ENV_VAR, str(tmp_path / "nowhere.pth"))
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth") as excinfo:
        InceptionExtractor()
    assert isinstance(excinfo.value, FileNotFoundError) and not isinstance(excinfo.value, MetricUnavailable)

    with pytest.raises(WeightsNotFoundError, match="explicit.pth"):
        InceptionExtractor(tmp_path / "explicit.pth")


def _weights_in_torch_home(tmp_path, monkeypatch, inception_weights):
    """The Inception file in a torch hub cache at ``tmp_path``, and no environment variable set."""
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / INCEPTION_FILENAME).symlink_to(inception_weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(INCEPTION_ENV_VAR, raising=False)
    return checkpoints


def test_weights_found_in_torch_home(tmp_path, monkeypatch, inception_weights):
    checkpoints = _weights_in_torch_home(tmp_path, monkeypatch, inception_weights)
    from evals.metrics import resolve_weights

    found = resolve_weights(None, INCEPTION_ENV_VAR, (INCEPTION_FILENAME,), "Inception", "source")
    assert found == checkpoints / INCEPTION_FILENAME


def test_explicit_path_typo_is_an_error_even_when_the_cache_has_the_file(tmp_path, monkeypatch, inception_weights):
    _weights_in_torch_home(tmp_path, monkeypatch, inception_weights)
    with pytest.raises(WeightsNotFoundError) as excinfo:  # not "not computed", not the cache's file
        InceptionExtractor(tmp_path / "weights-inceptoin.pth")
    assert "weights-inceptoin.pth" in str(excinfo.value) and INCEPTION_FILENAME in str(excinfo.value)


def test_legacy_format_inception_weights_load(inception_weights, tmp_path):
    state = torch.load(inception_weights, map_location="cpu", weights_only=True)
    legacy = tmp_path / "legacy-inception.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    from_legacy = InceptionExtractor(legacy, internal_dtype="float32").features(images)
    from_current = InceptionExtractor(inception_weights, internal_dtype="float32").features(images)
    assert all(torch.equal(from_legacy[k], from_current[k]) for k in from_current)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unusable_inception_files_are_one_line_errors(inception_weights, tmp_path):
    from unilip.checkpoints import CheckpointError

    evil = tmp_path / "evil.pth"
    torch.save({"payload": _Payload()}, evil)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(__import__("pickle").dumps(_Payload()))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(inception_weights.read_bytes()[:100_000])
    for path in (evil, plain, garbage, truncated):
        with pytest.raises(CheckpointError) as excinfo:
            InceptionExtractor(path, internal_dtype="float32")
        message = str(excinfo.value)
        assert str(path) in message and INCEPTION_FILENAME in message and "torch-fidelity" in message
        assert "\n" not in message

    state = torch.load(inception_weights, map_location="cpu", weights_only=True)
    del state["Mixed_7c.branch_pool.conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    from evals.metrics import WeightsKeyError

    with pytest.raises(WeightsKeyError) as excinfo:
        InceptionExtractor(wrong, internal_dtype="float32")
    assert isinstance(excinfo.value, CheckpointError)  # the command line's one-line error, exit 2
    assert "Mixed_7c.branch_pool.conv.weight" in str(excinfo.value) and "extra.weight" in str(excinfo.value)
