"""FID and Inception Score as streaming, mergeable statistics over torch-fidelity's Inception-v3.

* :class:`InceptionExtractor` runs torch-fidelity's ``FeatureExtractorInceptionV3`` ("inception-v3-compat",
  the TF-compatible port used by the reference FID code) on ``uint8`` images and returns its ``2048`` pool
  features and ``logits_unbiased``.
* :class:`FeatureStats` keeps float64 sufficient statistics (count, sum, sum of outer products) so that
  statistics can be streamed batch by batch, merged across shards/processes exactly, saved and reloaded.
* :func:`frechet_distance` hands the mean/covariance to torch-fidelity's own ``fid_statistics_to_metric``,
  so the number is torch-fidelity's.
* :class:`InceptionScoreStats` is a streaming, single-split Inception Score equal to torch-fidelity's ISC
  with ``isc_splits=1``.

Numerical notes (measured against torch-fidelity 0.4.0 and torchmetrics 1.9.0, see tests/evals):

* The network runs in float32 by default, and every statistic is accumulated in float64 (features are
  widened before the sums of :class:`FeatureStats`). On full-rank statistics this gives the official
  evaluator's FID (float64 network, float64 sums, ``scipy.linalg.sqrtm``) within 1e-6 relative
  (tests/evals/test_recon_parity.py) at a third of the cost on CPUs. ``internal_dtype="float64"`` stays
  available.
* UniLIP's float64 network does not come from torch-fidelity: torch-fidelity 0.3.0 (the version UniLIP
  pins) has no precision option at all, and 0.4.0 maps ``feature_extractor_internal_dtype="float64"`` to
  ``torch.float32`` (``torch_fidelity.helpers.text_to_dtype``). UniLIP's evaluator has its own
  ``inception.py``, a subclass that sets the internal dtype to float64 and returns float64 features.
  :class:`InceptionExtractor` detects torch-fidelity's mismatch and moves the network to the dtype that
  was asked for.
* torch-fidelity's forward casts every returned feature to float32 whatever the internal dtype; we keep that
  and accumulate statistics in float64.
* The network is torch-fidelity's with each eval-mode batch norm folded into its convolution, run
  channels_last (about 1.7x faster on CPUs), so its features equal torch-fidelity's to float32 rounding
  (~7e-7 relative), not bit for bit; the logits for the Inception Score are computed one image at a time so
  that they do not depend on the batch (tests/evals/test_metrics_fid.py).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unilip.weights import check_weights_keys, load_weights_state_dict

from .weights import WeightsKeyError, file_sha256, resolve_weights

__all__ = [
    "INCEPTION_ENV_VAR",
    "INCEPTION_FILENAME",
    "InceptionExtractor",
    "FeatureStats",
    "InceptionScoreStats",
    "frechet_distance",
]

INCEPTION_ENV_VAR = "UNILIP_INCEPTION_WEIGHTS"
INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SOURCE = (
    "It is torch-fidelity's port of the TF Inception-v3 used for FID (2015-12-05 graph), released as "
    f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILENAME}."
)
INCEPTION_WHAT = "Inception-v3 weights for FID/IS (torch-fidelity 'inception-v3-compat')"
_FEATURE_NAMES = ("2048", "logits_unbiased")
_FEATURE_DIMS = {"2048": 2048, "logits_unbiased": 1008}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _checked_inception_class(path: Path):
    """torch-fidelity's ``FeatureExtractorInceptionV3`` whose strict load first names missing, unexpected
    and misshapen keys (``WeightsKeyError``) instead of raising torch's multi-line ``RuntimeError``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class CheckedInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
            check_weights_keys(self.state_dict(), state_dict, path, INCEPTION_WHAT, INCEPTION_SOURCE, WeightsKeyError)
            return super().load_state_dict(state_dict, strict=True, assign=assign)

    return CheckedInception


# Why: on CPUs the network's time is convolutions (oneDNN, fastest on channels_last tensors) plus a separate
# batch-norm pass after each of its 94 convolutions. Folding each eval-mode batch norm into its convolution's
# weights and running channels_last cut a 299 px float32 forward from about 140 ms to about 80 ms per image
# on this project's 2-core CPU (benchmarks/recon_metrics_vs_official.py). It moves pool3 features by about
# 7e-7 relative (float32 rounding; less than the float32-against-float64 network difference), does not make
# an image's features depend on its batch (tests/evals/test_metrics_fid.py), and is in the fingerprint.
_EXECUTION = "eval batch norms folded into their convolutions; channels_last"


def _fold_batch_norms(net: torch.nn.Module) -> torch.nn.Module:
    """Fold each eval-mode ``BasicConv2d``'s batch norm into its convolution (in place); returns ``net``.

    Raises:
        RuntimeError: If the network has no such block, or a block's layout is not ``conv -> bn`` (a
            torch-fidelity whose Inception is built otherwise must not be run half-folded).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for module in net.modules():
        if type(module).__name__ != "BasicConv2d":
            continue
        conv, norm = getattr(module, "conv", None), getattr(module, "bn", None)
        if not isinstance(conv, torch.nn.Conv2d) or not isinstance(norm, torch.nn.BatchNorm2d):
            raise RuntimeError(
                f"torch-fidelity {_torch_fidelity_version()}: an Inception block is not conv -> batch norm; "
                "this version is not supported"
            )
        module.conv = fuse_conv_bn_eval(conv, norm)
        module.bn = torch.nn.Identity()
        folded += 1
    if not folded:
        raise RuntimeError(f"torch-fidelity {_torch_fidelity_version()}: no conv -> batch norm block to fold")
    return net


def _torch_fidelity_version() -> str:
    import torch_fidelity

    return str(getattr(torch_fidelity, "__version__", "unknown"))


class InceptionExtractor:
    """torch-fidelity's Inception-v3 ("inception-v3-compat") on local weights, returning float64 features.

    Input contract: ``uint8`` tensors ``B x 3 x H x W`` with values 0..255 (any H, W: the network resizes to
    299 x 299 with torch-fidelity's TF1-compatible bilinear resize, exactly as the reference FID does).
    """

    def __init__(
        self,
        weights_path: str | os.PathLike[str] | None = None,
        internal_dtype: str = "float32",
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        """Build the network from a local weights file; nothing is downloaded.

        Args:
            weights_path: Path to ``weights-inception-2015-12-05-6726825d.pth``. When ``None`` the file is looked
                up via ``$UNILIP_INCEPTION_WEIGHTS``, then ``$TORCH_HOME/hub/checkpoints``.
            internal_dtype: ``"float32"`` (default: what torch-fidelity 0.4.0 runs whatever it is asked for;
                with the float64 statistics it moves FID by less than 1e-6 relative from the official
                float64 network) or ``"float64"`` (as UniLIP's own ``inception.py``; about 3x slower on CPUs).
            device: Device to run the network on.
            batch_size: Images per forward pass; :meth:`features` chunks larger inputs.

        Raises:
            WeightsNotFoundError: ``weights_path`` (or ``$UNILIP_INCEPTION_WEIGHTS``) names no file.
            MetricUnavailable: Nothing named, and the torch hub cache lacks the file.
            CheckpointError: The file is not a readable flat state dict of tensors (pickled objects, a
                damaged or foreign file).
            WeightsKeyError: Its keys or shapes do not fill torch-fidelity's Inception-v3 exactly (named).
            ValueError: For an unknown dtype or a non-positive batch size.
        """
        if internal_dtype not in _DTYPES:
            raise ValueError(f"internal_dtype must be one of {sorted(_DTYPES)}, got {internal_dtype!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.weights_path = resolve_weights(
            weights_path, INCEPTION_ENV_VAR, (INCEPTION_FILENAME,), INCEPTION_WHAT, INCEPTION_SOURCE
        )
        self.internal_dtype = internal_dtype
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

        # Read here, safely (weights_only=True, either torch.save format, one-line errors naming the file);
        # torch-fidelity itself would unpickle the user's file with weights_only=False.
        state = load_weights_state_dict(
            self.weights_path, f"{INCEPTION_WHAT}, file {INCEPTION_FILENAME}", INCEPTION_SOURCE
        )
        # torch-fidelity's constructor reads a path or file object and loads it strictly; it gets these
        # tensors, re-serialised in memory, and the keys are checked (and named) before its own load.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        del state
        net = _checked_inception_class(self.weights_path)(
            "inception-v3-compat",
            ["2048"],  # logits_unbiased are computed in features(), one image at a time (see there)
            feature_extractor_weights_path=buffer,
            feature_extractor_internal_dtype=internal_dtype,
        )
        dtype = _DTYPES[internal_dtype]
        if not hasattr(net, "feature_extractor_internal_dtype") and dtype != torch.float32:
            # A torch-fidelity whose forward does not cast to this attribute cannot run another dtype.
            raise RuntimeError(
                f"torch-fidelity {_torch_fidelity_version()} has no internal-dtype support; use "
                "internal_dtype='float32' or torch-fidelity >= 0.4"
            )
        # torch-fidelity 0.4.0's text_to_dtype maps "float64" to torch.float32, so the network would silently
        # run in float32. Its forward casts the input to `feature_extractor_internal_dtype`, so setting that
        # attribute and moving the parameters is all it takes to run the dtype that was asked for.
        if getattr(net, "feature_extractor_internal_dtype", None) != dtype:
            net.feature_extractor_internal_dtype = dtype
        net.to(device=self.device, dtype=dtype)
        net.requires_grad_(False)
        net.eval()
        self.net = _fold_batch_norms(net).to(memory_format=torch.channels_last)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What determines the features: weights hash, dtype, torch-fidelity version, layers, resize."""
        return {
            "network": "torch-fidelity inception-v3-compat",
            "weights_file": self.weights_path.name,
            "weights_sha256": file_sha256(self.weights_path),
            "internal_dtype": self.internal_dtype,
            "torch_fidelity_version": _torch_fidelity_version(),
            "features": list(_FEATURE_NAMES),
            "resize": "tf1-compatible bilinear to 299x299",
            "execution": _EXECUTION,
        }

    def features(self, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inception features of a batch of images.

        Args:
            images_uint8: ``uint8`` tensor of shape ``B x 3 x H x W`` (values 0..255), on any device.

        Returns:
            ``{"2048": (B, 2048), "logits_unbiased": (B, 1008)}``, float64 CPU tensors: float32 values (torch-fidelity
            casts its outputs to float32) widened losslessly. An image's values do not depend on its batch.

        Raises:
            ValueError: If the input is not a ``uint8`` ``B x 3 x H x W`` tensor.
        """
        if not torch.is_tensor(images_uint8):
            raise ValueError(f"expected a torch.Tensor of uint8 images, got {type(images_uint8).__name__}")
        if images_uint8.dtype != torch.uint8:
            raise ValueError(
                f"expected dtype torch.uint8 (values 0..255), got {images_uint8.dtype}; convert floats in [0,1] "
                "with (x * 255).round().clamp(0, 255).to(torch.uint8) so the quantisation is explicit"
            )
        if images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
            raise ValueError(f"expected shape B x 3 x H x W, got {tuple(images_uint8.shape)}")
        out: dict[str, list[torch.Tensor]] = {name: [] for name in _FEATURE_NAMES}
        # torch-fidelity computes logits_unbiased as pool3 (in the internal dtype) @ fc.weight.T over the whole
        # batch, and a matrix product's rows round differently by its row count (on this CPU, fewer than 16
        # rows against more), so an image's logits would depend on its batch. The same product, one row at a
        # time, from the internal-dtype pool3 its AvgPool returns, is torch-fidelity's value for a batch of one
        # at every batch size.
        pooled: list[torch.Tensor] = []
        hook = self.net.AvgPool.register_forward_hook(lambda _module, _inputs, output: pooled.append(output))
        weight_t = self.net.fc.weight.T
        try:
            with torch.inference_mode():
                for start in range(0, images_uint8.shape[0], self.batch_size):
                    chunk = images_uint8[start : start + self.batch_size].to(self.device)
                    pool3 = self.net(chunk)[0]
                    rows = torch.flatten(pooled.pop(), 1).split(1)
                    logits = torch.cat([row.mm(weight_t) for row in rows]).to(torch.float32)
                    out["2048"].append(pool3.to(device="cpu", dtype=torch.float64))
                    out["logits_unbiased"].append(logits.to(device="cpu", dtype=torch.float64))
        finally:
            hook.remove()
        return {
            name: (torch.cat(parts, dim=0) if parts else torch.zeros((0, _FEATURE_DIMS[name]), dtype=torch.float64))
            for name, parts in out.items()
        }


def _as_float64_matrix(features: torch.Tensor | np.ndarray, dim: int) -> torch.Tensor:
    """Validate an ``(N, dim)`` feature matrix and return it as a float64 CPU tensor."""
    x = torch.as_tensor(features)
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"expected features of shape (N, {dim}), got {tuple(x.shape)}")
    if not (x.is_floating_point()):
        raise ValueError(f"expected floating-point features, got {x.dtype}")
    return x.detach().to(device="cpu", dtype=torch.float64)


class _NpzState:
    """``save``/``load`` of a streaming statistic through its ``state_dict``, as an ``.npz`` file."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` as ``.npz`` (written as given; exactly reloadable by :meth:`load`)."""
        with Path(path).open("wb") as handle:
            np.savez(handle, **self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]):
        """Read a state written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            return cls.from_state_dict({key: data[key] for key in data.files})


class FeatureStats(_NpzState):
    """Streaming float64 sufficient statistics (count, sum, sum of outer products) of feature vectors.

    Sums add, so :meth:`merge` is exact and the split of the data into updates changes the result only by
    float64 rounding. The covariance is the unbiased one, ``(S_xx - n mu mu^T) / (n - 1)``, the same
    formula torchmetrics uses; features are O(1) Inception activations, so the cancellation in it costs a few
    bits of float64, far below float32 feature precision.
    """

    def __init__(self, dim: int) -> None:
        """Empty statistics.

        Args:
            dim: Feature dimension (2048 for FID).
        """
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self._count = 0
        self._sum = torch.zeros(self.dim, dtype=torch.float64)
        self._sum_outer = torch.zeros((self.dim, self.dim), dtype=torch.float64)

    @property
    def count(self) -> int:
        """Number of feature vectors seen."""
        return self._count

    def update(self, features: torch.Tensor | np.ndarray) -> FeatureStats:
        """Add a batch of feature vectors.

        Args:
            features: ``(N, dim)`` floating-point tensor or array (widened to float64).

        Returns:
            ``self``, for chaining.
        """
        x = _as_float64_matrix(features, self.dim)
        self._count += int(x.shape[0])
        self._sum += x.sum(dim=0)
        self._sum_outer += x.T @ x
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add another set of statistics into this one (exact: the sums add).

        Args:
            other: Statistics of the same dimension.

        Returns:
            ``self``, for chaining.
        """
        if not isinstance(other, FeatureStats) or other.dim != self.dim:
            raise ValueError(f"can only merge FeatureStats of dim {self.dim}")
        self._count += other._count
        self._sum += other._sum
        self._sum_outer += other._sum_outer
        return self

    def mean(self) -> np.ndarray:
        """Mean feature vector.

        Returns:
            float64 array of shape ``(dim,)``.
        """
        if self._count < 1:
            raise ValueError("mean of empty FeatureStats")
        return (self._sum / self._count).numpy()

    def covariance(self) -> np.ndarray:
        """Unbiased covariance ``(S_xx - n mu mu^T) / (n - 1)``.

        Returns:
            float64 array of shape ``(dim, dim)``.
        """
        if self._count < 2:
            raise ValueError(f"covariance needs at least 2 samples, have {self._count}")
        n = self._count
        mu = self._sum / n
        return ((self._sum_outer - n * torch.outer(mu, mu)) / (n - 1)).numpy()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain numpy state (for ``.npz`` files or inter-process transfer).

        Returns:
            ``{"count": int64 scalar, "sum": float64 (dim,), "sum_outer": float64 (dim, dim)}`` (copies).
        """
        return {
            "count": np.asarray(self._count, dtype=np.int64),
            "sum": self._sum.numpy().copy(),
            "sum_outer": self._sum_outer.numpy().copy(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> FeatureStats:
        """Rebuild statistics from :meth:`state_dict` output.

        Args:
            state: Mapping with ``count``, ``sum`` and ``sum_outer``.

        Returns:
            The statistics, bit-identical to the saved ones.
        """
        missing = {"count", "sum", "sum_outer"} - set(state)
        if missing:
            raise ValueError(f"FeatureStats state lacks {sorted(missing)}")
        total = np.asarray(state["sum"], dtype=np.float64)
        outer = np.asarray(state["sum_outer"], dtype=np.float64)
        count = int(np.asarray(state["count"]))
        if total.ndim != 1 or outer.shape != (total.shape[0], total.shape[0]) or count < 0:
            raise ValueError(f"inconsistent FeatureStats state: sum {total.shape}, sum_outer {outer.shape}")
        stats = cls(total.shape[0])
        stats._count = count
        stats._sum = torch.from_numpy(total.copy())
        stats._sum_outer = torch.from_numpy(outer.copy())
        return stats


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (FID on 2048-d Inception features).

    The arithmetic is torch-fidelity's ``fid_statistics_to_metric`` (trace of the matrix square root from
    the eigenvalues of ``sigma_a @ sigma_b``), fed our float64 mean and covariance.

    Args:
        a: Statistics of the first set (at least 2 samples).
        b: Statistics of the second set, same dimension.

    Returns:
        The distance.
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    if not isinstance(a, FeatureStats) or not isinstance(b, FeatureStats):
        raise ValueError("frechet_distance takes two FeatureStats")
    if a.dim != b.dim:
        raise ValueError(f"feature dimensions differ: {a.dim} vs {b.dim}")
    stat_a = {"mu": a.mean(), "sigma": a.covariance()}
    stat_b = {"mu": b.mean(), "sigma": b.covariance()}
    return float(fid_statistics_to_metric(stat_a, stat_b, verbose=False)[KEY_METRIC_FID])


class InceptionScoreStats(_NpzState):
    """Streaming single-split Inception Score from Inception ``logits_unbiased``.

    Keeps ``sum_i p_i`` (float64 vector) and ``sum_i sum_y p_iy log p_iy`` (float64 scalar), with ``p_i`` the
    float64 softmax of the logits as torch-fidelity computes it. Then
    ``IS = exp(mean_i KL(p_i || p_bar)) = exp((sum_i sum_y p_iy log p_iy - sum_y (sum_i p_iy) log p_bar_y) / n)``,
    which equals torch-fidelity's ISC with ``isc_splits=1`` (no dependence on sample order or batching).
    """

    def __init__(self, num_classes: int = 1008) -> None:
        """Empty statistics.

        Args:
            num_classes: Logit dimension (1008 for the TF Inception graph).
        """
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self._count = 0
        self._sum_p = torch.zeros(self.num_classes, dtype=torch.float64)
        self._sum_p_log_p = torch.zeros((), dtype=torch.float64)

    @property
    def count(self) -> int:
        """Number of samples seen."""
        return self._count

    def update(self, logits: torch.Tensor | np.ndarray) -> InceptionScoreStats:
        """Add a batch of logits.

        Args:
            logits: ``(N, num_classes)`` floating-point logits (``logits_unbiased``), widened to float64 before
                the softmax, as torch-fidelity does.

        Returns:
            ``self``, for chaining.
        """
        x = _as_float64_matrix(logits, self.num_classes)
        log_p = torch.log_softmax(x, dim=1)
        p = torch.softmax(x, dim=1)
        self._count += int(x.shape[0])
        self._sum_p += p.sum(dim=0)
        self._sum_p_log_p += (p * log_p).sum()
        return self

    def merge(self, other: InceptionScoreStats) -> InceptionScoreStats:
        """Add another set of statistics into this one (the sums add).

        Args:
            other: Statistics with the same number of classes.

        Returns:
            ``self``, for chaining.
        """
        if not isinstance(other, InceptionScoreStats) or other.num_classes != self.num_classes:
            raise ValueError(f"can only merge InceptionScoreStats with {self.num_classes} classes")
        self._count += other._count
        self._sum_p += other._sum_p
        self._sum_p_log_p += other._sum_p_log_p
        return self

    def score(self) -> float:
        """The Inception Score over everything seen (one split).

        Returns:
            ``exp(mean_i KL(p_i || p_bar))``.
        """
        if self._count < 1:
            raise ValueError("Inception Score of empty InceptionScoreStats")
        n = self._count
        p_bar = self._sum_p / n
        # A class no sample gives any mass contributes 0 (lim x log x); torch-fidelity would produce NaN there.
        cross = torch.where(self._sum_p > 0, self._sum_p * torch.log(p_bar), torch.zeros_like(p_bar)).sum()
        return float(torch.exp((self._sum_p_log_p - cross) / n))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain numpy state.

        Returns:
            ``{"count": int64, "sum_p": float64 (num_classes,), "sum_p_log_p": float64 scalar}`` (copies).
        """
        return {
            "count": np.asarray(self._count, dtype=np.int64),
            "sum_p": self._sum_p.numpy().copy(),
            "sum_p_log_p": np.asarray(self._sum_p_log_p.item(), dtype=np.float64),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> InceptionScoreStats:
        """Rebuild statistics from :meth:`state_dict` output.

        Args:
            state: Mapping with ``count``, ``sum_p`` and ``sum_p_log_p``.

        Returns:
            The statistics, bit-identical to the saved ones.
        """
        missing = {"count", "sum_p", "sum_p_log_p"} - set(state)
        if missing:
            raise ValueError(f"InceptionScoreStats state lacks {sorted(missing)}")
        sum_p = np.asarray(state["sum_p"], dtype=np.float64)
        if sum_p.ndim != 1:
            raise ValueError(f"inconsistent InceptionScoreStats state: sum_p {sum_p.shape}")
        stats = cls(sum_p.shape[0])
        stats._count = int(np.asarray(state["count"]))
        stats._sum_p = torch.from_numpy(sum_p.copy())
        stats._sum_p_log_p = torch.tensor(float(np.asarray(state["sum_p_log_p"])), dtype=torch.float64)
        return stats
