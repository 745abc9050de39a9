"""The score step of the reconstruction benchmark: quantisation per protocol, pixel metrics, LPIPS,
Inception features with the real-image feature cache, and the aggregate of rFID / IS.

Imported only when a run scores (it needs torch and the metric weights); the benchmark's definition,
options and resolution stay light (:mod:`evals.benchmarks.recon.benchmark`).
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evals.benchmark import StageResult
from evals.files import canonical_hash
from evals.metrics import (
    FeatureStats,
    InceptionExtractor,
    InceptionScoreStats,
    LPIPSMetric,
    frechet_distance,
    psnr_per_image,
    ssim_per_image,
)
from evals.runtime.records import atomic_write_npz
from unilip.pixels import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconScorers:
    """The metric objects a resolved recon benchmark scores with (their weights hashed into its spec),
    why a metric is missing (messages name local paths, so they stay out of the fingerprint), and
    notes about the data for the results."""

    extractor: InceptionExtractor | None
    lpips: dict[str, LPIPSMetric]
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def reason(self, metric: str) -> str:
        """Why ``metric`` was not computed."""
        return self.unavailable.get(metric, "its weights were not available when the run was specified")


def _cached_features(path: Path) -> np.ndarray | None:
    """A cached real-image feature row, or None when absent or unreadable (then it is computed again).

    The cache is shared by runs and machines; one damaged entry (a truncated file) must cost one
    recomputation, not the run.
    """
    try:
        with np.load(path) as data:
            row = data["pool3"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        logger.warning(
            "real-feature cache entry %s is unreadable (%s: %s); computing it again", path, type(error).__name__, error
        )
        return None
    if row.shape != (2048,):
        logger.warning("real-feature cache entry %s has shape %s, not (2048,); computing it again", path, row.shape)
        return None
    return row


class BatchScorer:
    """The score stage: the resolved metric objects applied to batches, with the real-feature cache."""

    def __init__(self, protocol: Any, knobs: dict[str, Any], scorers: ReconScorers, cache_dir: Path) -> None:
        self.protocol = protocol
        self.knobs = knobs
        fid = knobs["fid"]
        self.extractor = extractor = scorers.extractor
        self.lpips = scorers.lpips
        if extractor is not None:
            real_key = canonical_hash(
                {
                    "resolution": knobs["resolution"],
                    "quantisation": protocol.quantisation,
                    "preprocessing": knobs["preprocessing"],
                    "inception": fid["inception"],
                    "internal_dtype": fid["internal_dtype"],
                }
            )
            self.real_cache = cache_dir / "recon-real-features" / real_key

    def _quantise(self, real: torch.Tensor, fake_u8: torch.Tensor):
        """(pixel-metric real, pixel-metric fake, Inception real uint8, Inception fake uint8) per the protocol."""
        if self.protocol.quantisation == "upstream":
            # The official evaluator's float32 arithmetic, including its truncating uint8 casts.
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            real_f = ((real - mean) / std) * std + mean
            fake_f = ((fake_u8.float() - 127.5) / 127.5 + 1) / 2
            return real_f, fake_f, (real_f * 255).to(torch.uint8), (fake_f * 255).to(torch.uint8)
        real_u8 = (real * 255).round().clamp(0, 255).to(torch.uint8)
        return real_u8.double() / 255, fake_u8.double() / 255, real_u8, fake_u8

    def _real_features(self, real_u8: torch.Tensor, raws: list[bytes]) -> np.ndarray:
        keys = [hashlib.sha256(raw).hexdigest()[:32] for raw in raws]
        paths = [self.real_cache / f"{key}.npz" for key in keys]
        rows: list[np.ndarray | None] = [_cached_features(path) for path in paths]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            features = self.extractor.features(real_u8[missing])["2048"].cpu().numpy()
            for index, row in zip(missing, features, strict=True):
                atomic_write_npz(paths[index], {"pool3": row})
                rows[index] = row
        return np.stack(rows)

    def score(self, real: torch.Tensor, fake_u8: torch.Tensor, raws: list[bytes]) -> list[StageResult]:
        real_px, fake_px, real_u8, fake_inception_u8 = self._quantise(real, fake_u8)
        psnr = psnr_per_image(fake_px, real_px, data_range=self.protocol.psnr_data_range)
        ssim = ssim_per_image(fake_px, real_px, data_range=self.protocol.ssim_data_range)
        lpips = {net: metric(fake_px.float(), real_px.float()) for net, metric in self.lpips.items()}
        arrays: list[dict[str, np.ndarray]] = [{} for _ in raws]
        if self.extractor is not None:
            fake_features = self.extractor.features(fake_inception_u8)
            real_features = self._real_features(real_u8, raws)
            for i, entry in enumerate(arrays):
                entry["fake_pool3"] = fake_features["2048"][i].cpu().numpy()
                entry["real_pool3"] = real_features[i]
                if self.knobs["fid"]["inception_score"]:
                    entry["fake_logits"] = fake_features["logits_unbiased"][i].cpu().numpy()
        results = []
        for i in range(len(raws)):
            payload = {
                "psnr": float(psnr[i]),
                "ssim": float(ssim[i]),
                **{f"lpips_{net}": float(values[i]) for net, values in lpips.items()},
            }
            results.append(StageResult(status="ok", payload=payload, arrays=arrays[i]))
        return results


def inception_metrics(ids: list[str], bench_dir: Path, stage: str, inception_score: bool) -> dict[str, Any]:
    """rFID (and IS) from the score records' arrays, in fixed-size chunks in manifest order: the float64
    sums do not depend on sharding or batching."""
    from evals.benchmarks.kit import not_computed
    from evals.runtime.runner import load_arrays

    metrics: dict[str, Any] = {}
    real, fake = FeatureStats(2048), FeatureStats(2048)
    score = InceptionScoreStats() if inception_score else None
    for start in range(0, len(ids), 256):
        chunk = [load_arrays(bench_dir, stage, item_id) for item_id in ids[start : start + 256]]
        real.update(torch.from_numpy(np.stack([a["real_pool3"] for a in chunk])))
        fake.update(torch.from_numpy(np.stack([a["fake_pool3"] for a in chunk])))
        if score is not None:
            score.update(torch.from_numpy(np.stack([a["fake_logits"] for a in chunk])))
    if real.count < 2:
        metrics["rfid"] = not_computed("rFID needs at least 2 scored images")
    else:
        metrics["rfid"] = {"value": frechet_distance(real, fake), "se": None, "n": real.count}
    if score is not None:
        metrics["is"] = {"value": score.score(), "se": None, "n": score.count}
    return metrics
