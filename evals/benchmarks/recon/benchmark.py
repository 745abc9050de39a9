"""The reconstruction benchmark and its two protocol variants.

``recon@upstream`` reproduces UniLIP's official evaluator (``tokenizer/scripts/evaluation.py``):
reconstructions clamped and rounded to 8 bits, then mapped back to [-1, 1] and truncated to uint8 for
the Inception pass; real images de-normalised from ImageNet statistics and truncated to uint8 for the
Inception pass, left as floats for PSNR/SSIM; PSNR with data range 1; SSIM with scikit-image's 7 x 7
uniform window and ``data_range=2.0`` (the upstream setting on [0, 1] images, which inflates SSIM).

``recon@standard`` corrects this: both images rounded to uint8 the same way, PSNR and SSIM with data
range 1.0, same window.

Both: shorter-side bicubic resize with antialias, centre crop to the resolution (the model's native
size unless set), rFID against the same centre-cropped real images with torch-fidelity's Inception
(TF-FID weights from a local file, float64 inside, float64 statistics), LPIPS (alex, vgg) from the
lpips package with local backbone weights. A metric whose weights are absent is reported as not
computed, with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from evals.benchmark import (Benchmark, BenchmarkSpec, Item, StageContext, StageResult,
                             produce_then_score_fingerprint, register_benchmark)
from evals.benchmarks.recon.data import ImageLoader, list_images
from evals.metrics import (FeatureStats, InceptionExtractor, InceptionScoreStats, LPIPSMetric, MetricUnavailable,
                           frechet_distance, psnr_per_image, ssim_per_image)
from evals.runtime.records import atomic_write_npz, canonical_hash, safe_item_name, write_output
from unilip.data import MAX_UPSCALE, ImageReadError, eval_transform, printable, upscale_factor
from unilip.tokenizer import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

LPIPS_NETS = ("alex", "vgg")


def _mean_se(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    se = float(array.std(ddof=1) / np.sqrt(len(array))) if len(array) > 1 else None
    return {"value": float(array.mean()), "se": se, "n": int(len(array))}


def not_computed(reason: str) -> dict[str, Any]:
    return {"status": "not_computed", "reason": reason}


@register_benchmark
class ReconstructionBenchmark(Benchmark):
    name = "recon"
    # 2: inputs decoded by the unilip.data contract (16-bit scaled, alpha over white, EXIF applied,
    #    extensions in any case); a stage-1 record keeps the size of its output and source.
    version = "2"
    capability = "reconstruct"
    stages = ("produce", "score")
    listing_knob = "dataset"
    options = {
        "data_kind": "dataset kind: folder, tar, imagenet-val or builtin",
        "data": "dataset path",
        "num_images": "evaluate the first N images",
        "resolution": "evaluation resolution (default: the model's native size)",
        "inception_weights": "torch-fidelity FID Inception weights (.pth)",
        "inception_dtype": "Inception internal dtype: float64 (official) or float32",
        "inception_score": "also compute the Inception Score (default true)",
        "lpips_nets": "LPIPS backbones (alex, vgg)",
        "lpips_alex_weights": "torchvision alexnet weights for LPIPS(alex)",
        "lpips_vgg_weights": "torchvision vgg16 weights for LPIPS(vgg)",
    }
    variants = {
        "standard": {"quantisation": "round-both", "psnr_data_range": 1.0, "ssim_data_range": 1.0},
        "upstream": {"quantisation": "upstream", "psnr_data_range": 1.0, "ssim_data_range": 2.0},
    }

    # ------------------------------------------------------------------ spec
    def make_spec(self, variant: str, options: dict[str, Any], model: Any) -> BenchmarkSpec:
        """``model``: what the model is (``evals.adapter.ModelInfo`` or an adapter); its ``native_size`` is the
        default resolution."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"recon: unknown options {unknown}; known: {sorted(self.options)}")
        kind = options.get("data_kind") or "folder"
        listing = list_images(kind, options.get("data"), options.get("num_images"))
        items, identity = listing.items, listing.identity
        notes = []
        if listing.skipped:
            shown = "; ".join(f"{printable(s.id)} ({s.reason})" for s in listing.skipped[:20])
            notes.append(f"{len(listing.skipped)} file(s) of the dataset were skipped, not read as images: {shown}"
                         + (" ..." if len(listing.skipped) > 20 else ""))
        resolution = int(options.get("resolution") or model.native_size)
        knobs: dict[str, Any] = {
            **self.variants[variant],
            "resolution": resolution,
            "preprocessing": "shorter-side bicubic antialias resize, centre crop (torchvision)",
            # The dataset is identified by its item ids and byte sizes, not its path: a copy elsewhere matches.
            "dataset": {"kind": kind, "num_images": len(items), "identity": canonical_hash(identity)},
            "ssim_window": "7x7 uniform (scikit-image default)",
        }
        # Why a metric is missing (messages name local paths, so they stay out of the fingerprint).
        self._unavailable: dict[str, str] = {}
        # The metric objects built here (their weights hashed into the spec) are the ones the score stage uses.
        self._extractor: InceptionExtractor | None = None
        self._lpips: dict[str, LPIPSMetric] = {}
        dtype = options.get("inception_dtype") or "float64"
        try:
            extractor = self._extractor = InceptionExtractor(options.get("inception_weights"), internal_dtype=dtype)
            knobs["fid"] = {"inception": extractor.fingerprint, "internal_dtype": dtype, "statistics": "float64",
                            "inception_score": bool(options.get("inception_score", True))}
        except MetricUnavailable as error:
            knobs["fid"] = {"available": False}
            self._unavailable["fid"] = str(error)
        knobs["lpips"] = {}
        for net in options.get("lpips_nets") or LPIPS_NETS:
            if net not in LPIPS_NETS:
                raise ValueError(f"recon: unknown LPIPS net {net!r}; choose from {LPIPS_NETS}")
            try:
                self._lpips[net] = LPIPSMetric(net, options.get(f"lpips_{net}_weights"))
                knobs["lpips"][net] = self._lpips[net].fingerprint
            except MetricUnavailable as error:
                knobs["lpips"][net] = {"available": False}
                self._unavailable[f"lpips_{net}"] = str(error)
        spec = BenchmarkSpec(self.name, variant, self.version, knobs)
        self._items = {spec.fingerprint: items}
        self._notes = {spec.fingerprint: notes}
        return spec

    def list_items(self, spec: BenchmarkSpec) -> list[Item]:
        return self._items[spec.fingerprint]

    def stage_fingerprint(self, stage: str, spec: BenchmarkSpec, model: dict[str, Any]) -> str:
        produce = canonical_hash({"model": model["weights_sha256"], "resolution": spec.knobs["resolution"],
                                  "dataset": spec.knobs["dataset"], "preprocessing": spec.knobs["preprocessing"]})
        return produce_then_score_fingerprint(stage, produce, spec)

    # ------------------------------------------------------------------ stages
    def run_stage(self, stage: str, spec: BenchmarkSpec, items: list[Item],
                  ctx: StageContext) -> Iterator[tuple[Item, StageResult]]:
        if not items:
            return
        from tqdm.auto import tqdm

        work = self._produce if stage == "produce" else self._score_batch
        loader = ImageLoader()
        scorer = _Scorer(spec, self._extractor, self._lpips, ctx.cache_dir) if stage == "score" else None
        bar = tqdm(total=len(items), desc=f"{spec.name} {stage}", unit="img", disable=not ctx.progress)
        try:
            for start in range(0, len(items), ctx.batch_size):
                batch = items[start:start + ctx.batch_size]
                yield from work(spec, batch, ctx, loader, scorer)
                bar.update(len(batch))
        finally:
            bar.close()
            loader.close()

    def _load_real(self, item: Item, loader: ImageLoader, resolution: int) -> tuple[torch.Tensor, bytes]:
        image, raw = loader.load(item.source)
        return eval_transform(image, resolution), raw


    def _produce(self, spec, batch, ctx, loader, _scorer) -> Iterator[tuple[Item, StageResult]]:
        resolution = spec.knobs["resolution"]
        ready: list[tuple[Item, torch.Tensor, bytes, float]] = []
        for item in batch:
            try:
                loaded = loader.load(item.source)
            except ImageReadError as error:
                yield item, StageResult.failed(str(error))
                continue
            ready.append((item, eval_transform(loaded.image, resolution), loaded.raw,
                          upscale_factor(*loaded.image.size, resolution)))
        if not ready:
            return
        recon = ctx.adapter.reconstruct(torch.stack([pixels for _, pixels, _, _ in ready]))
        quantised = (recon.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for (item, _, raw, upscale), image in zip(ready, quantised):
            relative, digest = write_output(ctx.bench_dir, f"outputs/{safe_item_name(item.id)}.png", _png_bytes(image))
            yield item, StageResult(status="ok", payload={"output": relative, "upscale": round(upscale, 4)},
                                    outputs={relative: digest}, inputs=_source_inputs(item, raw))

    def _score_batch(self, spec, batch, ctx, loader, scorer) -> Iterator[tuple[Item, StageResult]]:
        from evals.runtime.runner import load_record

        resolution = spec.knobs["resolution"]
        reals, fakes, raws, ready, upscales = [], [], [], [], []
        for item in batch:
            try:
                real, raw = self._load_real(item, loader, resolution)
            except ImageReadError as error:
                yield item, StageResult.failed(str(error))
                continue
            produced = load_record(ctx.bench_dir, "produce", item.id)
            fakes.append(torch.from_numpy(np.array(Image.open(ctx.bench_dir / produced["output"]).convert("RGB")))
                         .permute(2, 0, 1))
            reals.append(real)
            raws.append(raw)
            ready.append(item)
            upscales.append(produced.get("upscale", 1.0))
        if ready:
            for item, result, upscale in zip(ready, scorer.score(torch.stack(reals), torch.stack(fakes), raws), upscales):
                result.payload["upscale"] = upscale  # carried to the final record, which the aggregate reads
                yield item, result

    # ------------------------------------------------------------------ aggregate
    def _reason(self, metric: str) -> str:
        return getattr(self, "_unavailable", {}).get(metric, "its weights were not available when the run was specified")

    def aggregate(self, spec: BenchmarkSpec, records: dict[str, dict[str, Any]], bench_dir: Path) -> dict[str, Any]:
        from evals.runtime.runner import load_arrays

        metrics: dict[str, Any] = {}
        if not records:
            return {"psnr": not_computed("no item was scored")}
        for key in ("psnr", "ssim"):
            metrics[key] = _mean_se([r[key] for r in records.values()])
        warnings = list(getattr(self, "_notes", {}).get(spec.fingerprint, []))
        upscaled = [item_id for item_id, record in records.items() if record.get("upscale", 1.0) > MAX_UPSCALE]
        if upscaled:
            warnings.append(f"{len(upscaled)} image(s) are smaller than half the resolution "
                            f"{spec.knobs['resolution']} and were enlarged more than {MAX_UPSCALE:g}x (e.g. "
                            f"{printable(upscaled[0])}): their scores say little about the tokenizer")
            logger.warning("%s: %s", spec.name, warnings[-1])
        if warnings:
            metrics["psnr"]["warnings"] = warnings  # on the headline, so a table row cannot lose them
        for net, fingerprint in spec.knobs["lpips"].items():
            name = f"lpips_{net}"
            metrics[name] = (_mean_se([r[name] for r in records.values()]) if fingerprint.get("available", True)
                             else not_computed(self._reason(name)))
        fid_knobs = spec.knobs["fid"]
        if not fid_knobs.get("available", True):
            metrics["rfid"] = not_computed(self._reason("fid"))
            metrics["is"] = not_computed(self._reason("fid"))
            return metrics
        real, fake = FeatureStats(2048), FeatureStats(2048)
        score = InceptionScoreStats() if fid_knobs["inception_score"] else None
        # Fixed-size chunks in manifest order: the float64 sums do not depend on sharding or batching.
        ids = list(records)
        for start in range(0, len(ids), 256):
            chunk = [load_arrays(bench_dir, "score", item_id) for item_id in ids[start:start + 256]]
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


def _source_inputs(item: Item, raw: bytes) -> dict[str, str]:
    """The source file an item was read from, so that a resume notices it was edited in place: an image
    file with the sha256 of its bytes; a tar shard with no digest (a shard rewritten since, by its size
    and mtime, redoes its items: hashing a whole shard per item would cost too much). Built-in photos and
    digits are constant."""
    source = item.source
    if isinstance(source, tuple) and source and source[0] in ("file", "tar"):
        return {str(Path(source[1]).resolve()): hashlib.sha256(raw).hexdigest() if source[0] == "file" else ""}
    return {}


def _png_bytes(image: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


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
        logger.warning("real-feature cache entry %s is unreadable (%s: %s); computing it again", path,
                       type(error).__name__, error)
        return None
    if row.shape != (2048,):
        logger.warning("real-feature cache entry %s has shape %s, not (2048,); computing it again", path, row.shape)
        return None
    return row


class _Scorer:
    """The score stage: the spec's metric objects applied to batches, with the real-feature cache."""

    def __init__(self, spec: BenchmarkSpec, extractor: InceptionExtractor | None, lpips: dict[str, LPIPSMetric],
                 cache_dir: Path) -> None:
        self.knobs = spec.knobs
        fid = spec.knobs["fid"]
        self.extractor = extractor
        self.lpips = lpips
        if extractor is not None:
            real_key = canonical_hash({"resolution": spec.knobs["resolution"], "quantisation": spec.knobs["quantisation"],
                                       "preprocessing": spec.knobs["preprocessing"], "inception": fid["inception"],
                                       "internal_dtype": fid["internal_dtype"]})
            self.real_cache = cache_dir / "recon-real-features" / real_key

    def _quantise(self, real: torch.Tensor, fake_u8: torch.Tensor):
        """(pixel-metric real, pixel-metric fake, Inception real uint8, Inception fake uint8) per the protocol."""
        if self.knobs["quantisation"] == "upstream":
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
            for index, row in zip(missing, features):
                atomic_write_npz(paths[index], {"pool3": row})
                rows[index] = row
        return np.stack(rows)

    def score(self, real: torch.Tensor, fake_u8: torch.Tensor, raws: list[bytes]) -> list[StageResult]:
        real_px, fake_px, real_u8, fake_inception_u8 = self._quantise(real, fake_u8)
        psnr = psnr_per_image(fake_px, real_px, data_range=self.knobs["psnr_data_range"])
        ssim = ssim_per_image(fake_px, real_px, data_range=self.knobs["ssim_data_range"])
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
            payload = {"psnr": float(psnr[i]), "ssim": float(ssim[i]),
                       **{f"lpips_{net}": float(values[i]) for net, values in lpips.items()}}
            results.append(StageResult(status="ok", payload=payload, arrays=arrays[i]))
        return results
