"""WISE (world-knowledge text-to-image) with a judge: ``wise@legacy``, ``wise@verified``, ``wise@legacy-missing-zero``.

``wise@legacy`` is the protocol of the published 2025 numbers and UniLIP's own evaluation: the 1000
prompts of the three legacy files, one image per prompt, a GPT-4o-2024-05-13 judge (temperature 0,
max_tokens 2000) giving consistency, realism and aesthetic quality 0-2, WiScore and the weighted
overall (see :mod:`evals.benchmarks.wise.scoring`). ``wise@verified`` is the 2026 revision: the
verified prompt file, a binary judgement (Qwen3.5-35B-A3B served locally by default). Their numbers
are not comparable, hence two variants. ``wise@legacy-missing-zero`` is ``wise@legacy`` scored as the
mid-2025 official script did (a score missing from the answer counts as 0, one answer per item): only
for reproducing numbers made with that script, and its results say so.

The judge prompt is ours by default (``templates/``); ``judge_template=FILE`` uses another (such as the
official wording), and its sha256 is part of the spec either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
from evals.benchmarks.kit import check_pinned, mean_se, take_first, write_png
from evals.judges.request import JudgeRequest
from evals.judges.template import JudgeTemplate

from .data import LEGACY_FILES, VERIFIED_FILES, WISE_COMMIT, WisePrompt, locate_files, read_prompts
from .scoring import (
    LEGACY_RANGES,
    LEGACY_WEIGHTS,
    MISSING_SCORED_ZERO,
    VERIFIED_RANGES,
    VERIFIED_WEIGHTS,
    WISCORE_WEIGHTS,
    aggregate_wise,
    category_of,
    parse_legacy,
    parse_legacy_missing_zero,
    parse_verified,
    wiscore,
)

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
PLACEHOLDERS = ("{prompt}", "{explanation}")


@dataclass(frozen=True)
class WiseProtocol:
    """A WISE protocol: prompt files (with their pinned sha256), categories, scoring, judge defaults."""

    files: dict[str, str]
    ranges: tuple[tuple[str, int, int], ...]
    weights: dict[str, float]
    parser: Callable[[str], dict[str, Any]]
    parse_attempts: int
    template: str
    description: str
    three_axes: bool  # consistency/realism/aesthetic -> WiScore (else one binary score)
    judge: dict[str, Any]  # the protocol's judge and decoding (options override them)


LEGACY_JUDGE = {"model": "gpt-4o-2024-05-13", "temperature": 0.0, "max_tokens": 2000}


MISSING_ZERO_WARNING = (
    "wise@legacy-missing-zero counts every score missing from a judge answer as 0, as the "
    "mid-2025 official script did: unparsed answers score 0 instead of being counted as "
    "failures. Use it only to reproduce numbers made with that script; it is not "
    "comparable with wise@legacy"
)

PROTOCOLS = {
    "legacy": WiseProtocol(
        LEGACY_FILES,
        LEGACY_RANGES,
        LEGACY_WEIGHTS,
        parse_legacy,
        3,
        "legacy.yaml",
        "WISE legacy: consistency/realism/aesthetic 0-2, WiScore (0.7C+0.2R+0.1A)/2",
        True,
        LEGACY_JUDGE,
    ),
    # WISE_Verified's vllm_eval.py asks up to 3 times per item.
    "verified": WiseProtocol(
        VERIFIED_FILES,
        VERIFIED_RANGES,
        VERIFIED_WEIGHTS,
        parse_verified,
        3,
        "verified.yaml",
        "WISE verified: binary score 0/1",
        False,
        {
            "model": "Qwen/Qwen3.5-35B-A3B",
            "base_url": "http://127.0.0.1:8000/v1",
            "temperature": 0.0,
            "max_tokens": 500,
        },
    ),
    # The mid-2025 gpt_eval.py asked once per item and had no line fallback.
    "legacy-missing-zero": WiseProtocol(
        LEGACY_FILES,
        LEGACY_RANGES,
        LEGACY_WEIGHTS,
        parse_legacy_missing_zero,
        1,
        "legacy.yaml",
        "WISE legacy scored as the mid-2025 official script: a score missing from the answer counts as 0 "
        "(NOT the pinned protocol; for reproducing historical numbers only); WiScore (0.7C+0.2R+0.1A)/2",
        True,
        LEGACY_JUDGE,
    ),
}


@dataclass(frozen=True)
class WiseOptions(JudgeOptions):
    """Options of ``wise@*`` (and the judge options)."""

    data: str | None = option(
        "local copy of github.com/PKU-YuanGroup/WISE (the clone, or the folder holding the "
        "JSON files); `--opt wise.data=PATH` for WISE only",
        flag="--data",
    )
    limit: int | None = option("only the first N prompts (a smoke test: the overall then needs every category)")
    seed: int = option("run seed from which each prompt's seed is derived (default: --seed)", default=0)


@register_benchmark
class WiseBenchmark(JudgedBenchmark):
    """WISE with a judge; variants ``legacy`` and ``verified`` (see the module docstring)."""

    version = "2"  # 2: ASCII colon only, lines split at \n, verified asks 3 times (README change log)
    capability = "generate"
    variants = PROTOCOLS
    Options = WiseOptions

    def prepare(self, variant: str, options: WiseOptions) -> Prepared:
        protocol = PROTOCOLS[variant]
        root = options.data
        if not root:
            raise ValueError(
                f"wise@{variant} needs data=PATH: a local clone of https://github.com/PKU-YuanGroup/WISE "
                f"(commit {WISE_COMMIT[:12]}); its prompts are not redistributable, so none ship here"
            )
        found = locate_files(Path(str(root)), list(protocol.files))
        identity, warnings = check_pinned(found, protocol.files, "WISE data")
        prompts = read_prompts(found)
        for prompt in prompts:
            category_of(prompt.prompt_id, protocol.ranges)  # fail now on an id the protocol cannot place
        prompts, limit, limited = take_first(prompts, options.limit, "prompts")
        warnings += limited
        if variant == "legacy-missing-zero":
            warnings.append(MISSING_ZERO_WARNING)
            logger.warning("%s", MISSING_ZERO_WARNING)
        if options.judge_template:
            template = JudgeTemplate.load(options.judge_template, PLACEHOLDERS)
        else:
            template = JudgeTemplate.load(
                TEMPLATES / protocol.template, PLACEHOLDERS, source=f"builtin:wise/{protocol.template}"
            )
        data_knobs = {name: entry["sha256"] for name, entry in identity["files"].items()}
        knobs = {
            "protocol": protocol.description,
            "data": {**identity, "num_prompts": len(prompts)},
            "produce": {"data": data_knobs, "limit": limit, "images_per_prompt": 1},
            "score": {
                "category_ranges": [list(r) for r in protocol.ranges],
                "category_weights": protocol.weights,
                **({"wiscore_weights": WISCORE_WEIGHTS} if protocol.three_axes else {}),
                **({"missing_scores": "counted as 0"} if variant == "legacy-missing-zero" else {}),
            },
        }
        items = [Item(id=str(prompt.prompt_id), source=prompt) for prompt in prompts]
        return Prepared(
            items=items,
            knobs=knobs,
            templates={"judge": template},
            parser=protocol.parser,
            parse_attempts=protocol.parse_attempts,
            warnings=warnings,
        )

    def produce_one(self, resolved: ResolvedBenchmark, item: Item, ctx: StageContext, seed: int) -> StageResult:
        return self.produce_batch(resolved, [item], ctx, [seed])[0]

    def produce_batch(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext, seeds: list[int]
    ) -> list[StageResult]:
        # The raw prompts: any model-specific prompt convention is the adapter's business.
        from evals.adapter import generate_items

        prompts: list[WisePrompt] = [item.source for item in items]
        answers = generate_items(
            ctx.adapter, [prompt.prompt for prompt in prompts], 1, seeds, [item.id for item in items]
        )
        return [self._save(item, seed, images, ctx) for item, seed, images in zip(items, seeds, answers, strict=True)]

    @staticmethod
    def _save(item: Item, seed: int, images: Any, ctx: StageContext) -> StageResult:
        if not (isinstance(images, list) and len(images) == 1 and isinstance(images[0], list) and len(images[0]) == 1):
            return StageResult.failed(
                f"adapter.generate returned {type(images).__name__} of unexpected shape; "
                "want [[image]] for one prompt and n=1"
            )
        relative = f"{IMAGES_DIR}/{item.id}.png"  # the official layout: <prompt_id>.png
        try:
            relative, digest = write_png(ctx.bench_dir, relative, images[0][0])
        except TypeError as error:
            return StageResult.failed(str(error))
        return StageResult(
            status="ok", payload={"image": relative, "seed": seed, "image_sha256": digest}, outputs={relative: digest}
        )

    def build_request(self, resolved: ResolvedBenchmark, item: Item, bench_dir: Path) -> JudgeRequest:
        prompt: WisePrompt = item.source
        template = resolved.scorers.templates["judge"]
        request = template.render({"{prompt}": prompt.prompt, "{explanation}": prompt.explanation})
        return replace(request, images=(generated_image(bench_dir, f"{IMAGES_DIR}/{item.id}.png"),))

    @staticmethod
    def _item_score(protocol: WiseProtocol, scores: dict[str, Any]) -> float:
        if protocol.three_axes:
            return wiscore(scores["consistency"], scores["realism"], scores["aesthetic_quality"])
        return float(scores["score"])

    def describe_scores(self, resolved: ResolvedBenchmark, item: Item, scores: dict[str, Any]) -> dict[str, Any]:
        protocol: WiseProtocol = resolved.protocol
        return {"wiscore": self._item_score(protocol, scores), "category": category_of(int(item.id), protocol.ranges)}

    def metrics(self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        protocol: WiseProtocol = resolved.protocol
        item_scores = {
            int(item_id): self._item_score(protocol, record["scores"]) for item_id, record in records.items()
        }
        metrics = aggregate_wise(item_scores, protocol.ranges, protocol.weights)
        if protocol.three_axes and records:
            for axis in WISCORE_WEIGHTS:  # the raw 0-2 means, for comparison with papers that list them
                metrics[axis] = mean_se([float(record["scores"][axis]) for record in records.values()])
        if resolved.spec.variant == "legacy-missing-zero":
            zeroed = sum(bool(record["scores"][MISSING_SCORED_ZERO]) for record in records.values())
            metrics["overall"]["missing_scores_counted_as_zero"] = {
                "answers": zeroed,
                "of": len(records),
                "note": "answers lacking a score were scored 0 for it, not counted as parse failures",
            }
        return metrics

    def unit_values(self, bench_dir: Path, manifest_ids: list[str]) -> UnitValues | None:
        """Per-prompt values of ``overall``, each category and (legacy) each raw axis, for paired tests.

        A prompt's raw value is its WiScore (legacy) or its binary score (verified), read from its judge record's
        scores as the aggregate reads them, with the category ranges and weights the run's spec recorded.
        ``overall`` gives each prompt its contribution to the weighted sum of category means
        (:func:`stratified_unit_values`), so the mean over prompts is the results' ``overall``; it is left out when
        a category has no judged prompt, as the aggregate then computes no overall. A category's own metric holds
        its prompts' raw values. Only prompts the aggregate counts are here: judge record ``ok``, no stage failed.
        Under ``wise@legacy-missing-zero`` an answer lacking a score was recorded ``ok`` with that score 0, and the
        aggregate counted it so: these values do the same (unparsed answers are 0 here too); under the other
        variants such an answer is a failed record and is left out of both. None when no prompt was judged ``ok``.
        """
        from evals.files import read_json
        from evals.runtime.runner import MANIFEST, counted_records_of

        spec = read_json(bench_dir / MANIFEST)["spec"]
        protocol: WiseProtocol = PROTOCOLS[spec["variant"]]
        ranges = tuple(
            (str(name), int(first), int(last)) for name, first, last in spec["knobs"]["score"]["category_ranges"]
        )
        weights = {str(name): float(weight) for name, weight in spec["knobs"]["score"]["category_weights"].items()}
        records = counted_records_of(bench_dir, self.stages, manifest_ids)
        if not records:
            return None
        raw = {item_id: self._item_score(protocol, record["scores"]) for item_id, record in records.items()}
        category = {item_id: category_of(int(item_id), ranges) for item_id in records}
        values: dict[str, dict[str, float]] = {}
        strata: dict[str, Strata] = {}
        if {name for name, _, _ in ranges} <= set(category.values()):
            values["overall"] = raw
            strata["overall"] = Strata(category, weights)
        for name, _, _ in ranges:
            members = {item_id: value for item_id, value in raw.items() if category[item_id] == name}
            if members:
                values[name] = members
        if protocol.three_axes:
            for axis in WISCORE_WEIGHTS:
                values[axis] = {item_id: float(record["scores"][axis]) for item_id, record in records.items()}
        return UnitValues(values=values, kinds=dict.fromkeys(values, "continuous"), unit="prompt", strata=strata)
