"""ImgEdit-Bench with a judge: ``imgedit@basic`` (737 single-turn edits, 9 types) and ``imgedit@uge``.

Basic: one edited image per edit via ``adapter.edit(image, instruction, seed)`` (up to ``--batch-size``
edits per call through ``edit_batch`` when the adapter has one, each as edited alone), saved as
``images/<key>.png``; the judge sees the type's prompt from the user's ``prompts.json`` (instruction
put in place of ``<edit_prompt>``), then the source image, then the edited one, and answers three
1-5 axes; the sample score is their mean, the type score the mean over its samples, the overall the
mean of the type scores (:mod:`evals.benchmarks.imgedit.scoring`). The default judge is the
GPT-4.1 snapshot the paper's leaderboard used (the official script's ``gpt-4o`` is one option away),
with no temperature or token limit sent, as the official script.

UGE: 47 edits, one overall 1-5 score each, with our judge prompt by default (``judge_template`` takes
another, such as the official one) and the official script's ``gpt-4o`` judge.

Images go to the judge as their exact bytes with their real MIME type (the official scripts label
every image ``image/png``).

Paths the data names stay inside their folders: a source image path that leads outside the images
folder (``../``, an absolute path) is refused for that edit, which fails with the reason and is never
read; an edit key that is not a safe file name never becomes a path (its output gets a hashed name).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evals.benchmark import (
    Item,
    ResolvedBenchmark,
    StageContext,
    StageResult,
    Strata,
    UnitValues,
    option,
    register_benchmark,
)
from evals.benchmarks.judged import IMAGES_DIR, JudgedBenchmark, JudgeOptions, Prepared, generated_image
from evals.benchmarks.kit import check_pinned, mean_se, not_computed, take_first, write_png
from evals.judges.request import JudgeImage, JudgeRequest
from evals.judges.states import MissingImage
from evals.judges.template import JudgeTemplate

from .data import (
    BASIC_EDITS,
    BASIC_PROMPTS,
    IMAGES_SOURCE,
    IMGEDIT_COMMIT,
    PINNED,
    PROMPT_PLACEHOLDER,
    UGE_EDITS,
    EditItem,
    SourceImage,
    locate_files,
    locate_sources,
    output_name,
    read_edits,
    read_judge_prompts,
    source_identity,
)
from .scoring import aggregate_types, parse_axis_scores

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
EXPECTED_TYPES = 9  # the paper's nine single-turn edit types


@dataclass(frozen=True)
class _Source:
    edit: EditItem
    image: SourceImage  # the source image, or why its path is refused
    output: str  # the edited image, relative to the benchmark directory


@dataclass(frozen=True)
class ImgEditProtocol:
    """An ImgEdit protocol: its judge and decoding (options override them)."""

    judge: dict[str, Any]


@dataclass(frozen=True)
class ImgEditOptions(JudgeOptions):
    """Options of ``imgedit@*`` (and the judge options)."""

    data: str | None = option(
        "local copy of github.com/PKU-YuanGroup/ImgEdit (the clone, its Benchmark folder, or "
        "the JSONs' folder); `--opt imgedit.data=PATH` for ImgEdit only",
        flag="--data",
    )
    imgedit_images: str | None = option(
        f"folder the edit list's image paths are relative to (from {IMAGES_SOURCE}); default: the data folder"
    )
    limit: int | None = option("only the first N edits (a smoke test: the overall then needs every edit type)")
    seed: int = option("run seed from which each edit's seed is derived (default: --seed)", default=0)


@register_benchmark
class ImgEditBenchmark(JudgedBenchmark):
    """ImgEdit-Bench with a judge; variants ``basic`` and ``uge`` (see the module docstring)."""

    version = "2"  # 2: Unicode decimal digits in answers count, as in the official step1 (README change log)
    capability = "edit"
    variants = {
        "basic": ImgEditProtocol({"model": "gpt-4.1-2025-04-14", "temperature": None, "max_tokens": None}),
        "uge": ImgEditProtocol({"model": "gpt-4o", "temperature": None, "max_tokens": None}),
    }
    Options = ImgEditOptions

    def prepare(self, variant: str, options: ImgEditOptions) -> Prepared:
        root = options.data
        if not root:
            raise ValueError(
                f"imgedit@{variant} needs data=PATH: a local clone of "
                f"https://github.com/PKU-YuanGroup/ImgEdit (commit {IMGEDIT_COMMIT[:12]}); its files "
                "are not redistributable, so none ship here"
            )
        wanted = [BASIC_EDITS, BASIC_PROMPTS] if variant == "basic" else [UGE_EDITS]
        found = locate_files(Path(str(root)), wanted)
        identity, warnings = check_pinned(found, {name: PINNED[name] for name in wanted}, "ImgEdit data")
        edits = read_edits(found[wanted[0]], typed=variant == "basic")
        edits, limit, limited = take_first(edits, options.limit, "edits")
        warnings += limited
        images_root = Path(str(options.imgedit_images or root)).expanduser()
        sources = locate_sources(images_root, edits)
        images, missing = source_identity(edits, sources)
        if len(missing) == len(edits):
            raise ValueError(
                f"imgedit: none of the {len(edits)} source images is under {images_root} (first: "
                f"{edits[0].image}); pass imgedit_images=PATH, the folder holding them ({IMAGES_SOURCE})"
            )
        refused = [source.refused for source in sources.values() if source.refused]
        if refused:
            warnings.append(
                f"{len(refused)} edits name a source image outside the images folder and fail (e.g. {refused[0]})"
            )
            logger.warning("imgedit@%s: %s", variant, warnings[-1])
        absent = [key for key in missing if not sources[key].refused]
        if absent:
            warnings.append(
                f"{len(absent)} source images are missing under {images_root} (e.g. edit "
                f"{absent[0]}); those edits end as missing_image"
            )
            logger.warning("imgedit@%s: %s", variant, warnings[-1])
        outputs = {edit.key: f"{IMAGES_DIR}/{output_name(edit.key)}.png" for edit in edits}
        if len(set(outputs.values())) != len(outputs):
            raise ValueError("imgedit: two edit keys map to one output file name; make the keys unique file names")
        renamed = [key for key, relative in outputs.items() if relative != f"{IMAGES_DIR}/{key}.png"]
        if renamed:
            warnings.append(
                f"{len(renamed)} edit keys are not safe file names (e.g. {renamed[0]!r}); their images "
                f"are saved under a hashed name instead (e.g. {outputs[renamed[0]]})"
            )
            logger.warning("imgedit@%s: %s", variant, warnings[-1])
        templates = self._templates(variant, options, edits, found, warnings)
        knobs = {
            "protocol": (
                "ImgEdit basic: per-type prompts, 3 axes 1-5, overall = mean of type means"
                if variant == "basic"
                else "ImgEdit UGE: one 1-5 score, mean over samples"
            ),
            "data": {**identity, "num_edits": len(edits), "source_images": images},
            "produce": {
                "data": {name: entry["sha256"] for name, entry in identity["files"].items()},
                "source_images": images["identity"],
                "limit": limit,
                "input": "source image as RGB PIL image",
            },
            "score": {"sample": "mean of 'Axis: n' values rounded to 2 decimals", "scale": [1, 5]},
        }
        items = [Item(id=edit.key, source=_Source(edit, sources[edit.key], outputs[edit.key])) for edit in edits]
        return Prepared(
            items=items, knobs=knobs, templates=templates, parser=parse_axis_scores, parse_attempts=1, warnings=warnings
        )

    def _templates(
        self, variant: str, options: ImgEditOptions, edits: list[EditItem], found: dict[str, Path], warnings: list[str]
    ) -> dict[str, JudgeTemplate]:
        if variant == "uge":
            if options.judge_template:
                return {"uge": JudgeTemplate.load(options.judge_template, (PROMPT_PLACEHOLDER,))}
            return {
                "uge": JudgeTemplate.load(
                    TEMPLATES / "uge.yaml", (PROMPT_PLACEHOLDER,), source="builtin:imgedit/uge.yaml"
                )
            }
        if options.judge_template:
            raise ValueError(
                "imgedit@basic takes its judge prompts from prompts.json (one per edit type); "
                "judge_template applies to imgedit@uge"
            )
        prompts = read_judge_prompts(found[BASIC_PROMPTS])
        types = sorted({edit.edit_type for edit in edits})
        absent = [t for t in types if t not in prompts]
        if absent:
            raise ValueError(
                f"ImgEdit prompts.json has no judge prompt for edit types {absent} "
                f"(it has: {', '.join(sorted(prompts))})"
            )
        if len(types) != EXPECTED_TYPES and options.limit is None:
            warnings.append(f"the data has {len(types)} edit types, not the benchmark's {EXPECTED_TYPES}")
            logger.warning("imgedit@basic: %s", warnings[-1])
        templates = {}
        for edit_type in types:
            template = JudgeTemplate(user=prompts[edit_type], source=f"prompts.json:{edit_type}")
            template.require((PROMPT_PLACEHOLDER,))
            templates[edit_type] = template
        return templates

    def produce_one(self, resolved: ResolvedBenchmark, item: Item, ctx: StageContext, seed: int) -> StageResult:
        return self.produce_batch(resolved, [item], ctx, [seed])[0]

    def produce_batch(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext, seeds: list[int]
    ) -> list[StageResult]:
        import hashlib

        from evals.adapter import edit_items

        results: list[StageResult | None] = [None] * len(items)
        todo: list[tuple[int, Any, bytes]] = []  # (position, source image, its bytes) of the edits to make
        for position, item in enumerate(items):
            loaded = self._read_source(item)
            if isinstance(loaded, StageResult):  # an unreadable source fails its item before any model call
                results[position] = loaded
            else:
                todo.append((position, *loaded))
        edited = edit_items(
            ctx.adapter,
            [image for _, image, _ in todo],
            [items[position].source.edit.instruction for position, _, _ in todo],
            [seeds[position] for position, _, _ in todo],
            [items[position].id for position, _, _ in todo],
        )
        for (position, _, data), image in zip(todo, edited, strict=True):
            source: _Source = items[position].source
            try:
                _, digest = write_png(ctx.bench_dir, source.output, image)  # the official layout: <key>.png
            except TypeError as error:
                results[position] = StageResult.failed(str(error))
                continue
            results[position] = StageResult(
                status="ok",
                payload={"image": source.output, "seed": seeds[position], "image_sha256": digest},
                outputs={source.output: digest},
                inputs={str(source.image.path): hashlib.sha256(data).hexdigest()},
            )
        return [result for result in results if result is not None]

    @staticmethod
    def _read_source(item: Item) -> tuple[Any, bytes] | StageResult:
        """The item's source image (RGB) and its bytes, or its ``missing_image`` failure."""
        import io

        from PIL import Image, UnidentifiedImageError

        source: _Source = item.source
        if source.image.path is None:
            return StageResult(
                status="failed", payload={"state": "missing_image"}, error=f"missing_image: {source.image.refused}"
            )
        try:
            data = source.image.path.read_bytes()
            with Image.open(io.BytesIO(data)) as opened:
                image = opened.convert("RGB")
        except FileNotFoundError:
            return StageResult(
                status="failed",
                payload={"state": "missing_image"},
                error=f"missing_image: source image {source.edit.image} is absent",
            )
        except (UnidentifiedImageError, OSError) as error:
            return StageResult(
                status="failed",
                payload={"state": "missing_image"},
                error=f"missing_image: source image {source.edit.image} is unreadable ({error})",
            )
        return image, data

    def build_request(self, resolved: ResolvedBenchmark, item: Item, bench_dir: Path) -> JudgeRequest:
        source: _Source = item.source
        templates = resolved.scorers.templates
        template = templates["uge"] if resolved.spec.variant == "uge" else templates[source.edit.edit_type]
        request = template.render({PROMPT_PLACEHOLDER: source.edit.instruction})
        path = source.image.path
        if path is None:  # produce refused it; never read it here either
            raise MissingImage(str(source.image.refused))
        if not path.is_file():
            raise MissingImage(
                f"source image {source.edit.image} is gone since the edit was made: put it back "
                "and run the same command again"
            )
        return replace(request, images=(JudgeImage.from_file(path), generated_image(bench_dir, source.output)))

    def describe_scores(self, resolved: ResolvedBenchmark, item: Item, scores: dict[str, Any]) -> dict[str, Any]:
        source: _Source = item.source
        return {"edit_type": source.edit.edit_type} if source.edit.edit_type else {}

    def metrics(self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if resolved.spec.variant == "uge":
            values = [float(record["scores"]["score"]) for record in records.values()]
            if not values:
                return {"overall": not_computed("no sample was judged")}
            return {"overall": {**mean_se(values), "value_rounded": round(sum(values) / len(values), 2)}}
        by_type: dict[str, list[float]] = {}
        types = sorted(resolved.scorers.templates)
        items = {item.id: item for item in resolved.items}
        for item_id, record in records.items():
            by_type.setdefault(items[item_id].source.edit.edit_type, []).append(float(record["scores"]["score"]))
        return aggregate_types(by_type, types)

    def unit_values(self, bench_dir: Path, manifest_ids: list[str]) -> UnitValues | None:
        """Per-edit values of ``overall`` (and, under ``basic``, each edit type), for paired tests.

        An edit's raw value is its sample score (the judge record's ``scores.score``, as the aggregate reads it).
        ``uge``: ``overall`` is the plain mean over edits, so the raw values are its unit values. ``basic``:
        ``overall`` is the unweighted mean of the type means over the edit types of the data (the judge templates
        the run's spec recorded, one per type), so each edit contributes with weight 1/T for its type
        (:func:`stratified_unit_values`) and the mean over edits is the results' ``overall``; it is left out when a
        type has no judged edit, as the aggregate then computes no overall. A type's own metric holds its edits'
        raw values. Only edits the aggregate counts are here: judge record ``ok``, no stage failed. None when no
        edit was judged ``ok``.

        Raises:
            ValueError: an ``ok`` basic judge record that does not name its edit type.
        """
        from evals.files import read_json
        from evals.runtime.runner import MANIFEST, counted_records_of, record_path

        spec = read_json(bench_dir / MANIFEST)["spec"]
        records = counted_records_of(bench_dir, self.stages, manifest_ids)
        if not records:
            return None
        raw = {item_id: float(record["scores"]["score"]) for item_id, record in records.items()}
        if spec["variant"] == "uge":
            return UnitValues(values={"overall": raw}, kinds={"overall": "continuous"}, unit="edit")
        untyped = [item_id for item_id, record in records.items() if not record.get("edit_type")]
        if untyped:
            raise ValueError(
                f"{record_path(bench_dir, self.stages[-1], untyped[0])}: an ok imgedit@basic judge record "
                f"without its edit_type ({len(untyped)} in all)"
            )
        edit_type = {item_id: str(record["edit_type"]) for item_id, record in records.items()}
        types = sorted(spec["knobs"]["judge"]["templates"])
        values: dict[str, dict[str, float]] = {}
        strata: dict[str, Strata] = {}
        if set(types) <= set(edit_type.values()):
            values["overall"] = raw
            strata["overall"] = Strata(edit_type, dict.fromkeys(types, 1.0 / len(types)))
        for name in types:
            members = {item_id: value for item_id, value in raw.items() if edit_type[item_id] == name}
            if members:
                values[name] = members
        return UnitValues(values=values, kinds=dict.fromkeys(values, "continuous"), unit="edit", strata=strata)
