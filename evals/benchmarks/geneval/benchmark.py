"""The GenEval benchmark (object-focused text-to-image alignment) and its two scoring runtimes.

Items are the 553 official prompts (``limit`` keeps the first N). Stage ``produce`` asks the model for
``n_samples`` images per prompt and writes them in the official layout, which the official scorer reads
as is::

    <bench_dir>/images/<prompt index, 00000..00552>/metadata.jsonl   the prompt record, one JSON line
    <bench_dir>/images/<index>/samples/<k, 00000..>.png              image k of the prompt

Each prompt's seed is derived from the run seed and the prompt's index only, so images do not depend on
batching, sharding or resuming. Stage ``score`` judges every image with the official rules:

* ``geneval@hf-mask2former``: in process, transformers Mask2Former + CLIP ViT-L/14 from local directories
  (options ``detector`` and ``clip``). **Not the official mmdetection stack**: see :mod:`.detector` and
  :mod:`.color` for every known difference; the results carry this note in their spec.
* ``geneval@official``: the official ``evaluate_images.py`` in the user's GenEval environment
  (options ``official_scorer``, ``official_repo``, ``detector``), see :mod:`.official`.

The aggregate is that of ``summary_scores.py``: per-task means over images, overall = mean of the task
means; ``scored_images.jsonl`` beside ``results.json`` holds one official-format row per scored image.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals.benchmark import (
    Benchmark,
    BenchmarkSpec,
    Item,
    ResolvedBenchmark,
    StageContext,
    StageResult,
    Strata,
    UnitValues,
    model_identity,
    option,
    register_benchmark,
)
from evals.benchmarks.kit import png_bytes
from evals.files import atomic_write_bytes, canonical_hash, write_output

from .aggregate import ImageOutcome, summarize
from .protocol import ScoringRules, load_color_protocol, load_object_names, load_prompts, prompts_identity

logger = logging.getLogger(__name__)

IMAGES_DIR = "images"
SCORED_IMAGES = "scored_images.jsonl"
LAYOUT = "official: images/<index:05d>/metadata.jsonl + samples/<k:05d>.png"
HF_NOTE = (
    "transformers Mask2Former (detectron2-trained Swin-S COCO-instance weights) + transformers CLIP "
    "ViT-L/14: NOT the official mmdetection 2.x / open_clip scorer; expect scores to differ from "
    "published GenEval numbers (see evals/benchmarks/geneval/detector.py for the differences)"
)
OFFICIAL_NOTE = (
    "the official GenEval scorer (evaluation/evaluate_images.py: mmdetection 2.x Mask2Former + "
    "open_clip CLIP ViT-L/14) run in the user's environment"
)


def sample_name(k: int) -> str:
    """File name of image k of a prompt (the official scorer reads files matching ``\\d+.png``)."""
    return f"{k:05d}.png"


def _at_least(value: int | None, name: str, minimum: int) -> int | None:
    if value is not None and value < minimum:
        raise ValueError(f"geneval: option {name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class GenEvalProtocol:
    """Which scorer runs the official rules, and what it is (said in every spec)."""

    runtime: str  # "transformers" (in process) or "official" (the user's GenEval environment)
    stack: str


@dataclass(frozen=True)
class GenEvalOptions:
    """Options of ``geneval@*``."""

    limit: int | None = option("score only the first N of the 553 prompts (default: all)")
    n_samples: int = option("images per prompt (default 4, as the official protocol)", default=4)
    seed: int = option(
        "run seed; each prompt's seed is derived from it and the prompt index (default: --seed)", default=0
    )
    detector: str | None = option(
        "@hf-mask2former: local transformers Mask2Former Swin-S COCO-instance directory "
        "(facebook/mask2former-swin-small-coco-instance); @official: the folder holding "
        "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth (the official --model-path)"
    )
    clip: str | None = option(
        "@hf-mask2former: local transformers CLIP ViT-L/14 directory (openai/clip-vit-large-patch14)"
    )
    scorer_device: str | None = option(
        "@hf-mask2former: torch device of the detector and CLIP (default cuda if available)"
    )
    official_scorer: str | None = option("@official: the Python interpreter of your GenEval environment")
    official_repo: str | None = option("@official: your djghosh13/geneval checkout")


@dataclass(frozen=True)
class GenEvalScorers:
    """The scorer of a resolved GenEval run: the in-process detector and CLIP (loaded on first use, at the
    score step, never before the model) or the official scorer."""

    detector: Path | None = None
    clip: Path | None = None
    device: str | None = None
    official: Any = None  # an OfficialScorer
    _loaded: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def in_process(self) -> dict[str, Any]:
        """The detector and the CLIP colour classifier, loaded once."""
        if not self._loaded:
            from .color import CLIPColorClassifier
            from .detector import Mask2FormerDetector

            device = _local_device(self.device)
            logger.info(
                "geneval: loading the detector from %s and CLIP from %s on %s", self.detector, self.clip, device
            )
            self._loaded.update(
                detector=Mask2FormerDetector(self.detector, load_object_names(), device),
                clip=CLIPColorClassifier(self.clip, load_color_protocol(), device),
                device=device,
            )
        return self._loaded


@register_benchmark
class GenEvalBenchmark(Benchmark):
    version = "2"  # 2: float32 thresholds, the official tie order, the official reason texts (README change log)
    capability = "generate"
    Options = GenEvalOptions
    variants = {
        "hf-mask2former": GenEvalProtocol(runtime="transformers", stack=HF_NOTE),
        "official": GenEvalProtocol(runtime="official", stack=OFFICIAL_NOTE),
    }

    # ------------------------------------------------------------------ resolution
    def build(self, variant: str, options: GenEvalOptions, model: Any) -> ResolvedBenchmark:
        limit = _at_least(options.limit, "limit", 1)
        n_samples = _at_least(options.n_samples, "n_samples", 1)
        seed = _at_least(options.seed, "seed", 0)
        protocol: GenEvalProtocol = self.variants[variant]
        runtime = protocol.runtime
        given = asdict(options)
        knobs: dict[str, Any] = {
            **asdict(protocol),
            "prompts": prompts_identity(limit),
            "n_samples": n_samples,
            "seed": seed,
            "seed_derivation": "per prompt: int(canonical_hash({seed, item: index}), 16) % 2**31",
            "layout": LAYOUT,
            "rules": ScoringRules().to_dict(),
            "color": load_color_protocol().to_dict(),
            "aggregation": "task = mean over images; overall = unweighted mean of the task means (summary_scores.py)",
        }
        if runtime == "transformers":
            from .color import CLIP_SOURCE
            from .detector import DETECTOR_SOURCE, detector_knobs
            from .weights import directory_fingerprint, require_dir

            ignored = sorted(name for name in ("official_scorer", "official_repo") if given[name])
            self._check_paths({name: given[name] for name in ignored})
            detector_dir = require_dir(options.detector, "detector", "Mask2Former weights", DETECTOR_SOURCE)
            clip_dir = require_dir(options.clip, "clip", "CLIP ViT-L/14 weights", CLIP_SOURCE)
            knobs["detector"] = {**directory_fingerprint(detector_dir), **detector_knobs()}
            knobs["clip"] = {
                **directory_fingerprint(clip_dir),
                "dtype": "float32",
                "preprocess": "open_clip eval transform (torchvision on PIL), sizes and mean/std "
                "from the directory's preprocessor_config.json",
            }
            import torch

            device = options.scorer_device or ("cuda" if torch.cuda.is_available() else "cpu")
            scorers = GenEvalScorers(detector=detector_dir, clip=clip_dir, device=str(device))
        else:
            from .official import OfficialScorer

            ignored = sorted(name for name in ("clip", "scorer_device") if given[name])
            self._check_paths({name: given[name] for name in ignored if name == "clip"})
            scorer = OfficialScorer.from_options(options.official_scorer, options.official_repo, options.detector)
            knobs["official"] = scorer.fingerprint()
            scorers = GenEvalScorers(official=scorer)
        if ignored:
            logger.info("geneval@%s does not use the options %s", variant, ", ".join(ignored))
        spec = BenchmarkSpec(self.name, variant, self.version, knobs)
        prompts = load_prompts()[:limit] if limit else load_prompts()
        items = tuple(Item(id=f"{index:05d}", source=record) for index, record in enumerate(prompts))
        return ResolvedBenchmark(self, spec, items, options, protocol, scorers)

    @staticmethod
    def _check_paths(paths: dict[str, Any]) -> None:
        """Refuse, in one line, a path option that was given but names nothing (a typo costs no model load).

        The paths a variant uses are checked where they are read, with where to get them; this also
        covers those it ignores, which a user who gave them most likely meant to be used.
        """
        from .weights import ScorerWeightsMissing

        for name, value in paths.items():
            if value is not None and str(value).strip() and not Path(str(value)).expanduser().exists():
                raise ScorerWeightsMissing(f"geneval: --opt {name}={value}: no such file or folder")

    def preflight(self, resolved: ResolvedBenchmark) -> None:
        """Check, before the model loads, that the scorer files the spec was made with are still there."""
        scorers: GenEvalScorers = resolved.scorers
        if scorers.official is not None:
            scorer = scorers.official
            self._check_paths(
                {"official_scorer": scorer.python, "official_repo": scorer.repo, "detector": scorer.model_path}
            )
        else:
            self._check_paths({"detector": scorers.detector, "clip": scorers.clip})

    def produce_fingerprint(self, resolved: ResolvedBenchmark, model: dict[str, Any]) -> str:
        knobs = resolved.spec.knobs
        return canonical_hash(
            {
                "model": model_identity(model),
                "n_samples": knobs["n_samples"],
                "seed": knobs["seed"],
                "seed_derivation": knobs["seed_derivation"],
                "layout": LAYOUT,
                "prompts": knobs["prompts"]["sha256"],
            }
        )

    # ------------------------------------------------------------------ steps
    def score(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        if resolved.protocol.runtime == "transformers":
            return self._score_in_process(resolved, items, ctx)
        return self._score_official(resolved, items, ctx)

    def outputs_per_item(self, resolved: ResolvedBenchmark) -> int:
        return int(resolved.spec.knobs["n_samples"])

    def produce(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        from tqdm.auto import tqdm

        from evals.adapter import generate_items
        from evals.runtime.records import item_seed

        spec = resolved.spec
        n = spec.knobs["n_samples"]
        # Up to --batch-size prompts per model call, each with its own seed: an adapter that batches
        # (generate_batch) returns each prompt's images as if alone, so the batch size moves no image.
        bar = tqdm(total=len(items), desc=f"{spec.name} produce", unit="prompt", disable=not ctx.progress)
        for start in range(0, len(items), max(1, ctx.batch_size)):
            batch = items[start : start + max(1, ctx.batch_size)]
            seeds = [item_seed(spec.knobs["seed"], item.id) for item in batch]
            answers = generate_items(
                ctx.adapter, [item.source["prompt"] for item in batch], n, seeds, [item.id for item in batch]
            )
            for item, seed, images in zip(batch, seeds, answers, strict=True):
                bar.update(1)
                yield item, self._save_samples(item, seed, images, n, ctx)
        bar.close()

    @staticmethod
    def _save_samples(item: Item, seed: int, images: Any, n: int, ctx: StageContext) -> StageResult:
        """Write one prompt's samples (and its metadata) in GenEval's layout; a malformed answer fails it."""
        problem = _check_generated(images, n)
        if problem:
            return StageResult.failed(f"the model's generate() {problem}")
        folder = f"{IMAGES_DIR}/{item.id}"
        # Every file is listed in the record's outputs: one deleted later makes the runner redo the prompt.
        outputs = dict(
            [write_output(ctx.bench_dir, f"{folder}/metadata.jsonl", (json.dumps(item.source) + "\n").encode())]
        )
        samples = []
        for k, image in enumerate(images[0]):
            relative, digest = write_output(
                ctx.bench_dir, f"{folder}/samples/{sample_name(k)}", png_bytes(image.convert("RGB"))
            )
            outputs[relative] = digest
            samples.append(relative)
        return StageResult(
            status="ok",
            payload={"seed": seed, "samples": samples, "sizes": [list(image.size) for image in images[0]]},
            outputs=outputs,
        )

    def _load_samples(self, spec: BenchmarkSpec, item: Item, bench_dir: Path) -> tuple[list[str], str | None]:
        """The item's expected sample files, and a reason when one is missing."""
        folder = Path(IMAGES_DIR) / item.id / "samples"
        files = [(folder / sample_name(k)).as_posix() for k in range(spec.knobs["n_samples"])]
        missing = [f for f in files if not (bench_dir / f).is_file()]
        return files, (f"missing image(s): {', '.join(missing)}" if missing else None)

    def _score_in_process(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        from PIL import Image, ImageOps
        from tqdm.auto import tqdm

        from .rules import score_image

        spec = resolved.spec
        scorer = resolved.scorers.in_process()
        detector, colors = scorer["detector"], scorer["clip"]
        rules = ScoringRules(**spec.knobs["rules"])
        for item in tqdm(items, desc=f"{spec.name} score", unit="prompt", disable=not ctx.progress):
            files, problem = self._load_samples(spec, item, ctx.bench_dir)
            if problem:
                yield item, StageResult.failed(problem)
                continue
            rows = []
            try:
                for file in files:
                    with Image.open(ctx.bench_dir / file) as handle:
                        image = ImageOps.exif_transpose(handle).convert("RGB")
                    detections = detector.detect(image)
                    verdict = score_image(
                        item.source,
                        detections,
                        lambda name, found, image=image: colors.classify(image, name, found),
                        rules,
                    )
                    rows.append({"file": file, **verdict})
            except Exception as error:  # a scorer failure is this item's failed record, never a wrong image score
                logger.exception("geneval: scoring %s failed", item.id)
                yield item, StageResult.failed(f"scoring failed: {type(error).__name__}: {error}")
                continue
            yield item, StageResult(status="ok", payload=_score_payload(item, rows, device=scorer["device"]))

    def _score_official(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        from .official import OfficialScorerError

        spec = resolved.spec
        scorer = resolved.scorers.official
        ready: list[tuple[Item, list[str]]] = []
        for item in items:
            files, problem = self._load_samples(spec, item, ctx.bench_dir)
            if problem:
                yield item, StageResult.failed(problem)
            else:
                ready.append((item, files))
        if not ready:
            return
        try:
            rows_by_folder = scorer.score(
                ctx.bench_dir / IMAGES_DIR, [item.id for item, _ in ready], ctx.bench_dir / "official"
            )
        except (OfficialScorerError, OSError, ValueError) as error:
            for item, _ in ready:
                yield item, StageResult.failed(f"official scorer: {error}")
            return
        for item, files in ready:
            yield item, _official_record(item, files, rows_by_folder[item.id])

    # ------------------------------------------------------------------ aggregate
    def aggregate(
        self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]], bench_dir: Path
    ) -> dict[str, Any]:
        if not records:
            return {"overall": {"status": "not_computed", "reason": "no prompt was scored"}}
        outcomes, rows = [], []
        for item_id, record in records.items():
            for image in record["images"]:
                outcomes.append(ImageOutcome(tag=record["tag"], prompt_key=item_id, correct=image["correct"]))
                rows.append(
                    {
                        "filename": image["file"],
                        "tag": record["tag"],
                        "prompt": record["prompt"],
                        "correct": image["correct"],
                        "reason": image["reason"],
                        "metadata": json.dumps(record["metadata"]),
                        "details": json.dumps(image["details"]),
                    }
                )
        atomic_write_bytes(bench_dir / SCORED_IMAGES, "".join(json.dumps(row) + "\n" for row in rows).encode())
        return summarize(outcomes)

    # ------------------------------------------------------------------ paired values
    def unit_values(self, bench_dir: Path, manifest_ids: list[str]) -> UnitValues | None:
        """Per-prompt values of ``overall``, each task, ``correct_images`` and ``correct_prompts``, for paired tests.

        The unit is the prompt, not the image: a score record holds a prompt's ``n_samples`` images, which share
        the prompt (the aggregate's standard errors are clustered by prompt for that reason), so resampling images
        as if they were independent would overstate the evidence. A prompt's raw value is its correct images
        divided by the mean image count of its task's prompts (its fraction of correct images, since every scored
        prompt has ``n_samples`` images), so that a task's mean over prompts is the aggregate's mean over images.
        ``overall`` weighs each of the T tasks present 1/T (:func:`stratified_unit_values`): the mean of its
        contributions is the results' ``overall``. A task's own metric holds only its prompts. ``correct_prompts``
        is binary (1 when a prompt has a correct image). Only prompts the aggregate counts are here: score record
        ``ok``, no stage failed, at least one image. None when there is none.
        """
        from evals.runtime.runner import counted_records_of

        # A prompt without images adds no outcome to the aggregate, so none here either (the score step never
        # writes one: every one of the n_samples images must be there).
        records = {
            item_id: record
            for item_id, record in counted_records_of(bench_dir, self.stages, manifest_ids).items()
            if record["images"]
        }
        if not records:
            return None
        tag = {item_id: str(record["tag"]) for item_id, record in records.items()}
        correct = {
            item_id: float(sum(bool(image["correct"]) for image in record["images"]))
            for item_id, record in records.items()
        }
        images: dict[str, int] = {}
        prompts: dict[str, int] = {}
        for item_id, record in records.items():
            images[tag[item_id]] = images.get(tag[item_id], 0) + len(record["images"])
            prompts[tag[item_id]] = prompts.get(tag[item_id], 0) + 1
        # correct / (images of the task / prompts of the task): a prompt's share of its task's mean over images.
        raw = {item_id: correct[item_id] * prompts[tag[item_id]] / images[tag[item_id]] for item_id in records}
        values: dict[str, dict[str, float]] = {"overall": raw}
        strata = {"overall": Strata(tag, dict.fromkeys(images, 1.0 / len(images)))}
        for name in images:
            values[name] = {item_id: value for item_id, value in raw.items() if tag[item_id] == name}
        total_images, total_prompts = sum(images.values()), len(records)
        values["correct_images"] = {item_id: correct[item_id] * total_prompts / total_images for item_id in records}
        values["correct_prompts"] = {item_id: float(correct[item_id] > 0) for item_id in records}
        kinds = {name: "continuous" for name in values}
        kinds["correct_prompts"] = "binary"
        return UnitValues(values=values, kinds=kinds, unit="prompt", strata=strata)


def _local_device(device: str) -> str:
    """A bare ``cuda`` means this process's GPU under torchrun (``LOCAL_RANK``), not every process on GPU 0."""
    local_rank = os.environ.get("LOCAL_RANK")
    if device != "cuda" or local_rank is None:
        return device
    import torch

    return f"cuda:{int(local_rank) % max(torch.cuda.device_count(), 1)}"


def _check_generated(images: Any, n: int) -> str | None:
    """Why a ``generate([prompt], n, seed)`` answer is unusable, or None."""
    from PIL import Image

    if not isinstance(images, (list, tuple)) or len(images) != 1:
        return (
            f"returned {type(images).__name__} of length {len(images) if hasattr(images, '__len__') else '?'} "
            "for 1 prompt"
        )
    if not isinstance(images[0], (list, tuple)) or len(images[0]) != n:
        return f"returned {len(images[0]) if hasattr(images[0], '__len__') else '?'} images, {n} were asked"
    wrong = [type(image).__name__ for image in images[0] if not isinstance(image, Image.Image)]
    return f"returned non-PIL images ({', '.join(wrong)})" if wrong else None


def _score_payload(item: Item, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "tag": item.source["tag"],
        "prompt": item.source["prompt"],
        "metadata": item.source,
        "images": rows,
        "correct": sum(bool(row["correct"]) for row in rows),
        "n": len(rows),
        **extra,
    }


def _official_record(item: Item, files: list[str], rows: list[dict[str, Any]]) -> StageResult:
    """One item's official rows -> its record; a missing or mismatched image is a failure, never a 0."""
    # The scorer's file names are "<index>/samples/<k>.png"; ours carry the images/ prefix. Rows for files
    # beyond n_samples (left in the folder by something else) are ignored: only the expected files count.
    by_file = {row["filename"]: row for row in rows}
    missing = [file for file in files if file.split("/", 1)[1] not in by_file]
    if missing:
        return StageResult.failed(f"the official scorer returned no result for {', '.join(missing)}")
    scored = []
    for file in files:
        row = by_file[file.split("/", 1)[1]]
        if row.get("tag") != item.source["tag"] or row.get("prompt") != item.source["prompt"]:
            return StageResult.failed(
                f"the official scorer's row for {file} is for another prompt "
                f"({row.get('tag')!r}, {row.get('prompt')!r})"
            )
        if not isinstance(row.get("correct"), bool):
            return StageResult.failed(f"the official scorer's row for {file} has no boolean 'correct'")
        details = row.get("details", "{}")
        scored.append(
            {
                "file": file,
                "correct": row["correct"],
                "reason": row.get("reason", ""),
                "details": json.loads(details) if isinstance(details, str) else details,
            }
        )
    return StageResult(status="ok", payload=_score_payload(item, scored))
