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
(TF-FID weights from a local file, float32 inside by default, float64 statistics: within 1e-6
relative of the official float64 network's FID on full-rank statistics; float64 inside on request),
LPIPS (alex, vgg) from the lpips package with local backbone weights. A metric whose weights are
absent is reported as not computed, with the reason.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals.benchmark import (
    Benchmark,
    BenchmarkSpec,
    Item,
    ResolvedBenchmark,
    StageContext,
    StageResult,
    UnitValues,
    option,
    register_benchmark,
)
from evals.benchmarks.kit import mean_se, not_computed, write_png
from evals.files import canonical_hash

logger = logging.getLogger(__name__)

LPIPS_NETS = ("alex", "vgg")


@dataclass(frozen=True)
class ReconProtocol:
    """How reconstructions and real images are quantised and compared (the variants differ only here)."""

    quantisation: str  # "round-both" (both rounded to uint8 alike) or "upstream" (the official evaluator's casts)
    psnr_data_range: float
    ssim_data_range: float


@dataclass(frozen=True)
class ReconOptions:
    """Options of ``recon@*``; the flagged ones are also ``unilip eval run`` flags."""

    data_kind: str | None = option(
        "dataset kind: folder, tar, imagenet-val, builtin or digits (default: folder when "
        "--data is given, else builtin); builtin and digits (the 360 held-out digits of "
        "the tiny studies) ship with the dependencies",
        flag="--dataset",
    )
    data: str | None = option(
        "dataset path (image folder, tar shard(s), ImageNet val folder), or 'builtin' for the "
        "photos scikit-image ships",
        flag="--data",
    )
    num_images: int | None = option(
        "evaluate the first N images (default: all; imagenet-val: 50,000)", flag="--num-images"
    )
    resolution: int | None = option("resolution (default: the model's native size)", flag="--size")
    inception_weights: str | None = option(
        "torch-fidelity FID Inception weights (.pth; must exist); else "
        "$UNILIP_INCEPTION_WEIGHTS (must exist when set) or "
        "$TORCH_HOME/hub/checkpoints",
        flag="--inception-weights",
    )
    inception_dtype: str = option(
        "Inception internal dtype: float32 (default; float64 statistics, FID within 1e-6 relative of "
        "the official evaluator's) or float64 (the official evaluator's network, about 3x slower on CPUs)",
        flag="--inception-dtype",
        default="float32",
    )
    inception_score: bool = option("also compute the Inception Score (default true)", default=True)
    lpips_nets: list[str] | None = option("LPIPS backbones (default: alex, vgg)")
    lpips_alex_weights: str | None = option(
        "torchvision alexnet-owt-7be5be79.pth for LPIPS(alex) (must exist; else "
        "$UNILIP_LPIPS_ALEX_WEIGHTS or the torch hub cache)",
        flag="--lpips-alex-weights",
    )
    lpips_vgg_weights: str | None = option(
        "torchvision vgg16-397923af.pth for LPIPS(vgg) (must exist; else "
        "$UNILIP_LPIPS_VGG_WEIGHTS or the torch hub cache)",
        flag="--lpips-vgg-weights",
    )

    def dataset(self) -> tuple[str, str | None]:
        """(kind, path): ``--data builtin`` means the built-in photos unless a folder of that name exists."""
        if self.data == "builtin" and self.data_kind in (None, "builtin") and not Path("builtin").exists():
            return "builtin", None
        return self.data_kind or ("folder" if self.data else "builtin"), self.data


@register_benchmark
class ReconstructionBenchmark(Benchmark):
    # 2: inputs decoded by the unilip.data contract (16-bit scaled, alpha over white, EXIF applied,
    #    extensions in any case); a stage-1 record keeps the size of its output and source.
    # 3: Inception runs float32 by default (float64 statistics as before); --inception-dtype float64 is the
    #    official evaluator's network.
    version = "3"
    capability = "reconstruct"
    listing_knob = "dataset"
    Options = ReconOptions
    lower_is_better = frozenset({"rfid", *(f"lpips_{net}" for net in LPIPS_NETS)})  # distances; psnr, ssim, is: higher
    variants = {
        "standard": ReconProtocol(quantisation="round-both", psnr_data_range=1.0, ssim_data_range=1.0),
        "upstream": ReconProtocol(quantisation="upstream", psnr_data_range=1.0, ssim_data_range=2.0),
    }

    # ------------------------------------------------------------------ resolution
    def build(self, variant: str, options: ReconOptions, model: Any) -> ResolvedBenchmark:
        """``model``: what the model is (``evals.adapter.ModelInfo`` or an adapter); its ``native_size`` is the
        default resolution."""
        from evals.metrics import InceptionExtractor, LPIPSMetric, MetricUnavailable
        from unilip.data import printable

        from .data import list_images
        from .scoring import ReconScorers

        protocol: ReconProtocol = self.variants[variant]
        kind, path = options.dataset()
        listing = list_images(kind, path, options.num_images)
        items, identity = listing.items, listing.identity
        notes = []
        if listing.skipped:
            shown = "; ".join(f"{printable(s.id)} ({s.reason})" for s in listing.skipped[:20])
            notes.append(
                f"{len(listing.skipped)} file(s) of the dataset were skipped, not read as images: {shown}"
                + (" ..." if len(listing.skipped) > 20 else "")
            )
        name = getattr(model, "model", None) or getattr(model, "model_ref", "the model")
        if options.resolution is None and getattr(model, "native_size", None) is None:
            raise ValueError(f"{self.name}: {name} declares no native resolution; pass --size")
        resolution = int(options.resolution or model.native_size)
        multiple = int(getattr(model, "size_multiple", 1) or 1)
        if resolution % multiple:
            raise ValueError(
                f"{self.name}: --size {resolution} is not a multiple of {name}'s spatial compression "
                f"{multiple}; the nearest below is {resolution // multiple * multiple or multiple}"
            )
        knobs: dict[str, Any] = {
            **asdict(protocol),
            "resolution": resolution,
            "preprocessing": "shorter-side bicubic antialias resize, centre crop (torchvision)",
            # The dataset is identified by its item ids and byte sizes, not its path: a copy elsewhere matches.
            "dataset": {"kind": kind, "num_images": len(items), "identity": canonical_hash(identity)},
            "ssim_window": "7x7 uniform (scikit-image default)",
        }
        unavailable: dict[str, str] = {}
        extractor = None
        dtype = options.inception_dtype
        try:
            extractor = InceptionExtractor(options.inception_weights, internal_dtype=dtype)
            knobs["fid"] = {
                "inception": extractor.fingerprint,
                "internal_dtype": dtype,
                "statistics": "float64",
                "inception_score": options.inception_score,
            }
        except MetricUnavailable as error:
            knobs["fid"] = {"available": False}
            unavailable["fid"] = str(error)
        knobs["lpips"] = {}
        lpips: dict[str, LPIPSMetric] = {}
        for net in options.lpips_nets or LPIPS_NETS:
            if net not in LPIPS_NETS:
                raise ValueError(f"recon: unknown LPIPS net {net!r}; choose from {LPIPS_NETS}")
            try:
                lpips[net] = LPIPSMetric(net, getattr(options, f"lpips_{net}_weights"))
                knobs["lpips"][net] = lpips[net].fingerprint
            except MetricUnavailable as error:
                knobs["lpips"][net] = {"available": False}
                unavailable[f"lpips_{net}"] = str(error)
        spec = BenchmarkSpec(self.name, variant, self.version, knobs)
        scorers = ReconScorers(extractor, lpips, unavailable, tuple(notes))
        return ResolvedBenchmark(self, spec, tuple(items), options, protocol, scorers, tuple(notes))

    def output_size(self, resolved: ResolvedBenchmark) -> int | None:
        return int(resolved.spec.knobs["resolution"])

    def produce_fingerprint(self, resolved: ResolvedBenchmark, model: dict[str, Any]) -> str:
        knobs = resolved.spec.knobs
        return canonical_hash(
            {
                "model": model["weights_sha256"],
                "resolution": knobs["resolution"],
                "dataset": knobs["dataset"],
                "preprocessing": knobs["preprocessing"],
            }
        )

    # ------------------------------------------------------------------ steps
    def produce(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        return self._batches(resolved, items, ctx, "produce", self._produce_batch, None)

    def score(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        from .scoring import BatchScorer

        scorer = BatchScorer(resolved.protocol, resolved.spec.knobs, resolved.scorers, ctx.cache_dir)
        return self._batches(resolved, items, ctx, resolved.stages[1], self._score_batch, scorer)

    @staticmethod
    def _batches(
        resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext, stage: str, work: Any, scorer: Any
    ) -> Iterator[tuple[Item, StageResult]]:
        from tqdm.auto import tqdm

        from .data import ImageLoader

        loader = ImageLoader()
        bar = tqdm(total=len(items), desc=f"{resolved.name} {stage}", unit="img", disable=not ctx.progress)
        try:
            for start in range(0, len(items), ctx.batch_size):
                batch = items[start : start + ctx.batch_size]
                yield from work(resolved, batch, ctx, loader, scorer)
                bar.update(len(batch))
        finally:
            bar.close()
            loader.close()

    @staticmethod
    def _produce_batch(resolved, batch, ctx, loader, _scorer) -> Iterator[tuple[Item, StageResult]]:
        import torch
        from PIL import Image

        from evals.adapter import keyed
        from evals.runtime.records import safe_item_name
        from unilip.data import ImageReadError, eval_transform, upscale_factor

        resolution = resolved.spec.knobs["resolution"]
        ready: list[tuple[Item, torch.Tensor, bytes, float]] = []
        for item in batch:
            try:
                loaded = loader.load(item.source)
            except ImageReadError as error:
                yield item, StageResult.failed(str(error))
                continue
            ready.append(
                (
                    item,
                    eval_transform(loaded.image, resolution),
                    loaded.raw,
                    upscale_factor(*loaded.image.size, resolution),
                )
            )
        if not ready:
            return
        recon = ctx.adapter.reconstruct(
            torch.stack([pixels for _, pixels, _, _ in ready]), **keyed(ctx.adapter, [item.id for item, *_ in ready])
        )
        quantised = (recon.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for (item, _, raw, upscale), image in zip(ready, quantised, strict=True):
            relative, digest = write_png(
                ctx.bench_dir, f"outputs/{safe_item_name(item.id)}.png", Image.fromarray(image)
            )
            yield (
                item,
                StageResult(
                    status="ok",
                    payload={"output": relative, "upscale": round(upscale, 4)},
                    outputs={relative: digest},
                    inputs=_source_inputs(item, raw),
                ),
            )

    @staticmethod
    def _score_batch(resolved, batch, ctx, loader, scorer) -> Iterator[tuple[Item, StageResult]]:
        import numpy as np
        import torch
        from PIL import Image

        from evals.runtime.runner import load_record
        from unilip.data import ImageReadError, eval_transform

        resolution = resolved.spec.knobs["resolution"]
        produce = resolved.stages[0]
        reals, fakes, raws, ready, upscales = [], [], [], [], []
        for item in batch:
            try:
                loaded = loader.load(item.source)
                real, raw = eval_transform(loaded.image, resolution), loaded.raw
            except ImageReadError as error:
                yield item, StageResult.failed(str(error))
                continue
            produced = load_record(ctx.bench_dir, produce, item.id)
            fakes.append(
                torch.from_numpy(np.array(Image.open(ctx.bench_dir / produced["output"]).convert("RGB"))).permute(
                    2, 0, 1
                )
            )
            reals.append(real)
            raws.append(raw)
            ready.append(item)
            upscales.append(produced.get("upscale", 1.0))
        if ready:
            results = scorer.score(torch.stack(reals), torch.stack(fakes), raws)
            for item, result, upscale in zip(ready, results, upscales, strict=True):
                result.payload["upscale"] = upscale  # carried to the final record, which the aggregate reads
                yield item, result

    # ------------------------------------------------------------------ aggregate
    def aggregate(
        self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]], bench_dir: Path
    ) -> dict[str, Any]:
        from unilip.data import MAX_UPSCALE, printable

        spec = resolved.spec
        metrics: dict[str, Any] = {}
        if not records:
            return {"psnr": not_computed("no item was scored")}
        for key in ("psnr", "ssim"):
            metrics[key] = mean_se([r[key] for r in records.values()])
        warnings = list(resolved.warnings)
        upscaled = [item_id for item_id, record in records.items() if record.get("upscale", 1.0) > MAX_UPSCALE]
        if upscaled:
            warnings.append(
                f"{len(upscaled)} image(s) are smaller than half the resolution "
                f"{spec.knobs['resolution']} and were enlarged more than {MAX_UPSCALE:g}x (e.g. "
                f"{printable(upscaled[0])}): their scores say little about the tokenizer"
            )
            logger.warning("%s: %s", spec.name, warnings[-1])
        if warnings:
            metrics["psnr"]["warnings"] = warnings  # on the headline, so a table row cannot lose them
        for net, fingerprint in spec.knobs["lpips"].items():
            name = f"lpips_{net}"
            metrics[name] = (
                mean_se([r[name] for r in records.values()])
                if fingerprint.get("available", True)
                else not_computed(resolved.scorers.reason(name))
            )
        fid_knobs = spec.knobs["fid"]
        if not fid_knobs.get("available", True):
            metrics["rfid"] = not_computed(resolved.scorers.reason("fid"))
            metrics["is"] = not_computed(resolved.scorers.reason("fid"))
            return metrics
        from .scoring import inception_metrics

        metrics.update(inception_metrics(list(records), bench_dir, resolved.stages[1], fid_knobs["inception_score"]))
        return metrics

    # ------------------------------------------------------------------ paired values
    def unit_values(self, bench_dir: Path, manifest_ids: list[str]) -> UnitValues | None:
        """Per-image PSNR, SSIM and LPIPS from the score records (rFID and IS are set-level: no paired values)."""
        from evals.runtime.runner import counted_records_of

        values: dict[str, dict[str, float]] = {}
        for item_id, record in counted_records_of(bench_dir, self.stages, manifest_ids).items():
            for name in ("psnr", "ssim", *(f"lpips_{net}" for net in LPIPS_NETS)):
                if isinstance(record.get(name), (int, float)):
                    values.setdefault(name, {})[item_id] = float(record[name])
        return UnitValues(values=values, kinds=dict.fromkeys(values, "continuous"), unit="image")


def _source_inputs(item: Item, raw: bytes) -> dict[str, str]:
    """The source file an item was read from, so that a resume notices it was edited in place: an image
    file with the sha256 of its bytes; a tar shard with no digest (a shard rewritten since, by its size
    and mtime, redoes its items: hashing a whole shard per item would cost too much). Built-in photos and
    digits are constant."""
    source = item.source
    if isinstance(source, tuple) and source and source[0] in ("file", "tar"):
        return {str(Path(source[1]).resolve()): hashlib.sha256(raw).hexdigest() if source[0] == "file" else ""}
    return {}
