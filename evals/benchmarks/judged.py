"""Benchmarks scored by a judge: the options, the two steps, explicit end states, the dry run.

A judged benchmark (WISE, ImgEdit) has two stages: ``produce`` (the model makes one image per item,
saved under ``images/``) and ``judge`` (its score step: a vision-language judge scores the image).
Each judged item ends in one explicit state (:mod:`evals.judges.states`); an item that is not ``ok``
has a ``failed`` record with the state in its payload and error, so ``unilip eval run --retry-failed``
asks again, and the aggregate excludes it and counts it instead of scoring it 0. A judge endpoint that
gives no HTTP response stops the judge stage with :class:`~evals.judges.client.JudgeUnreachable` and
records nothing for the items it did not judge: they stay to do, and the same command resumes them.

The judge client itself (:mod:`evals.judges`) knows nothing of benchmarks.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from evals.benchmark import (
    Benchmark,
    BenchmarkSpec,
    Item,
    ResolvedBenchmark,
    StageContext,
    StageResult,
    model_identity,
    option,
)
from evals.files import canonical_hash
from evals.judges.cache import JudgeCache, cache_key
from evals.judges.client import JudgeClient, JudgeUnreachable
from evals.judges.config import JudgeConfig, resolve_judge_config
from evals.judges.request import JudgeImage, JudgeRequest
from evals.judges.states import FAILED_STATES, JUDGE_ERROR, MISSING_IMAGE, OK, STATES, Judgement, MissingImage
from evals.judges.template import JudgeTemplate

logger = logging.getLogger(__name__)

Parser = Callable[[str], dict[str, Any]]

IMAGES_DIR = "images"
SEED_DERIVATION = "per item: int(canonical_hash({seed, item: id}), 16) % 2**31"
IMAGE_DELETED = "the image was deleted after generation; run the same command again to regenerate it"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "unilip"


@dataclass(frozen=True)
class JudgeOptions:
    """The judge options every judged benchmark takes (its own options dataclass extends this one)."""

    judge_config: str | None = option(
        "judge settings file (YAML/JSON: model, version, base_url, api_key_env, auth, api_version, temperature, "
        "max_tokens, seed, extra_body, timeout_s, max_retries, backoff_base_s, backoff_max_s, concurrency, "
        "requests_per_minute); never the key itself"
    )
    judge_model: str | None = option("judge model name (default: the protocol's judge; or $UNILIP_JUDGE_MODEL)")
    judge_version: str | None = option("judge snapshot/version string for the cache and spec (default: the model name)")
    judge_base_url: str | None = option(
        "OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1 (or $UNILIP_JUDGE_BASE_URL)"
    )
    judge_api_key_env: str | None = option(
        "environment variable holding the key (default UNILIP_JUDGE_API_KEY, then OPENAI_API_KEY)"
    )
    judge_temperature: float | None = option("judge sampling temperature (null: not sent)")
    judge_max_tokens: int | None = option("judge max_tokens (null: not sent)")
    judge_seed: int | None = option("judge sampling seed (null: not sent)")
    judge_concurrency: int | None = option("judge requests in flight at most (default 8)")
    judge_rpm: float | None = option("judge requests started per minute at most (default: no limit)")
    judge_timeout_s: float | None = option("per-request timeout in seconds (default 120)")
    judge_max_retries: int | None = option("retries after timeouts, HTTP 429/5xx, malformed bodies (default 5)")
    judge_template: str | None = option("judge prompt template YAML (keys: system, user) instead of the built-in one")
    judge_parse_attempts: int | None = option("answers to ask for while they do not parse (default: the protocol's)")
    judge_cache_dir: str | None = option("judge answer cache (default: CACHE_DIR/judge, CACHE_DIR from --cache-dir)")


@dataclass
class Prepared:
    """What a judged benchmark's :meth:`JudgedBenchmark.prepare` returns for one variant and its options.

    Attributes:
        items: the items, in a stable order.
        knobs: score-moving settings; must hold ``produce`` (what the produce stage depends on).
        templates: the judge templates by name (one, or one per item group).
        parser: reads an answer into scores; raises ``ParseError``.
        parse_attempts: the protocol's answers-per-item policy (overridable by ``judge_parse_attempts``).
        warnings: for the results (data that differ from the pinned release ...).
    """

    items: list[Item]
    knobs: dict[str, Any]
    templates: dict[str, JudgeTemplate]
    parser: Parser
    parse_attempts: int = 1
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JudgeScorers:
    """The score step of a resolved judged benchmark: judge, templates, parser and answer cache."""

    judge: JudgeConfig
    templates: Mapping[str, JudgeTemplate]
    parser: Parser
    parse_attempts: int
    cache_dir: Path | None

    def cache(self, cache_dir: Path) -> JudgeCache:
        """The answer cache: ``judge_cache_dir`` when given, else ``cache_dir/judge``."""
        return JudgeCache(self.cache_dir or Path(cache_dir) / "judge")


def generated_image(bench_dir: Path, relative: str) -> JudgeImage:
    """A produced image for the judge; :class:`MissingImage` saying how to regenerate it when it is gone.

    The produce record of such an image is ``ok`` (it was written), so ``--retry-failed`` is not the fix:
    the runner redoes a produce stage whose recorded output vanished, so the same command regenerates it.
    """
    path = bench_dir / relative
    if not path.is_file():
        raise MissingImage(f"{relative}: {IMAGE_DELETED}")
    return JudgeImage.from_file(path)


class JudgedBenchmark(Benchmark):
    """Base of benchmarks scored by a judge: stages ``produce`` then ``judge``; see the module docstring.

    Subclasses set ``name``, ``version``, ``capability``, ``variants`` (protocol values, each with a
    ``judge`` mapping of default judge settings) and ``Options`` (a dataclass extending
    :class:`JudgeOptions`), and implement :meth:`prepare`, :meth:`produce_one`, :meth:`build_request`
    and :meth:`metrics`.
    """

    stages: ClassVar[tuple[str, str]] = ("produce", "judge")
    Options: ClassVar[type] = JudgeOptions

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def prepare(self, variant: str, options: Any) -> Prepared:
        """Read the user's data for ``variant`` (checking it), and choose templates and parser."""

    @abstractmethod
    def produce_one(self, resolved: ResolvedBenchmark, item: Item, ctx: StageContext, seed: int) -> StageResult:
        """Make this item's image with ``ctx.adapter`` and save it under ``ctx.bench_dir / images``."""

    def produce_batch(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext, seeds: list[int]
    ) -> list[StageResult]:
        """Make the images of up to ``--batch-size`` items, each with its own seed, in order. Default: one
        :meth:`produce_one` per item; a benchmark whose adapter call can take several items overrides it, and
        each item's image must be what :meth:`produce_one` makes for it."""
        return [self.produce_one(resolved, item, ctx, seed) for item, seed in zip(items, seeds, strict=True)]

    @abstractmethod
    def build_request(self, resolved: ResolvedBenchmark, item: Item, bench_dir: Path) -> JudgeRequest:
        """The judge request for a produced item; raise ``MissingImage`` when an image is absent."""

    @abstractmethod
    def metrics(self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Metrics from the ``ok`` judge records (item id -> record); ``overall`` is the headline."""

    def describe_scores(self, resolved: ResolvedBenchmark, item: Item, scores: dict[str, Any]) -> dict[str, Any]:
        """Extra per-item fields for an ``ok`` record (a per-item score, a category); none by default."""
        return {}

    # ------------------------------------------------------------------ resolution
    def build(self, variant: str, options: Any, model: Any) -> ResolvedBenchmark:
        protocol = self.variants[variant]
        judge_defaults = protocol.judge
        prepared = self.prepare(variant, options)
        if "produce" not in prepared.knobs:
            raise TypeError(f"{type(self).__name__}.prepare must put the produce stage's knobs under 'produce'")
        judge = resolve_judge_config(dataclasses.asdict(options), judge_defaults)
        parse_attempts = int(options.judge_parse_attempts or prepared.parse_attempts)
        if parse_attempts < 1:
            raise ValueError(f"{self.name}: judge_parse_attempts must be at least 1")
        seed = int(getattr(options, "seed", 0) or 0)
        warnings = list(prepared.warnings)
        protocol_judge = judge_defaults["model"]
        if judge.identity != protocol_judge:
            warnings.append(
                f"the judge is {judge.identity}, not the protocol's {protocol_judge}: "
                "scores are not comparable with published ones"
            )
            logger.warning("%s@%s: %s", self.name, variant, warnings[-1])
        knobs = {
            **prepared.knobs,
            "produce": {**prepared.knobs["produce"], "seed": seed, "seed_derivation": SEED_DERIVATION},
            "judge": {
                **judge.fingerprint_fields(),
                "protocol_judge": protocol_judge,
                "templates": {name: t.describe() for name, t in prepared.templates.items()},
                "parse_attempts": parse_attempts,
            },
        }
        spec = BenchmarkSpec(self.name, variant, self.version, knobs)
        cache_dir = Path(options.judge_cache_dir).expanduser() if options.judge_cache_dir else None
        scorers = JudgeScorers(judge, dict(prepared.templates), prepared.parser, parse_attempts, cache_dir)
        return ResolvedBenchmark(self, spec, tuple(prepared.items), options, protocol, scorers, tuple(warnings))

    def produce_fingerprint(self, resolved: ResolvedBenchmark, model: dict[str, Any]) -> str:
        # The produce stage depends on the model and the prompts/seed only: changing the judge re-judges.
        return canonical_hash({"model": model_identity(model), "produce": resolved.spec.knobs["produce"]})

    def preflight(self, resolved: ResolvedBenchmark) -> None:
        """Refuse a missing or unusable API key now; warn when the judge does not answer now.

        Generation may run for hours before judging starts, so an endpoint that is down now (a local
        server not started yet) is only a warning; the judge stage probes it again before its first call.

        Raises:
            JudgeConfigError: no key for a remote endpoint, or a key an HTTP header cannot carry.
        """
        client = JudgeClient(resolved.scorers.judge)
        try:
            client.check_reachable()
        except JudgeUnreachable as error:
            logger.warning("%s: %s (checked before generation; judging starts after it)", resolved.name, error)

    # ------------------------------------------------------------------ steps
    def produce(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        from tqdm.auto import tqdm

        from evals.runtime.records import item_seed

        seed = resolved.spec.knobs["produce"]["seed"]
        size = max(1, ctx.batch_size)
        bar = tqdm(total=len(items), desc=f"{resolved.name} produce", unit="item", disable=not ctx.progress)
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            results = self.produce_batch(resolved, batch, ctx, [item_seed(seed, item.id) for item in batch])
            for item, result in zip(batch, results, strict=True):
                bar.update(1)
                yield item, result
        bar.close()

    def score(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        from tqdm.auto import tqdm

        scorers: JudgeScorers = resolved.scorers
        client = JudgeClient(scorers.judge, cache=scorers.cache(ctx.cache_dir))
        jobs = ((item, _bind(self.build_request, resolved, item, ctx.bench_dir)) for item in items)
        judged = client.judge_many(jobs, scorers.parser, resolved.spec.knobs["judge"]["parse_attempts"])
        finished = 0
        with tqdm(total=len(items), desc=f"{resolved.name} judge", unit="item", disable=not ctx.progress) as bar:
            try:
                for item, judgement in judged:
                    finished += 1
                    bar.update(1)
                    yield item, self._to_result(resolved, item, judgement)
            except JudgeUnreachable:
                logger.warning(
                    "%s: judging stopped, judge unreachable: %d of the %d items asked for were judged "
                    "and kept; the other %d stay to do",
                    resolved.name,
                    finished,
                    len(items),
                    len(items) - finished,
                )
                raise

    def _to_result(self, resolved: ResolvedBenchmark, item: Item, judgement: Judgement) -> StageResult:
        payload = judgement.to_payload()
        error = payload.pop("error", None)
        if judgement.state == OK:
            payload.update(self.describe_scores(resolved, item, judgement.scores or {}))
            return StageResult(status="ok", payload=payload)
        return StageResult(status="failed", payload=payload, error=f"{judgement.state}: {error or 'no detail'}")

    # ------------------------------------------------------------------ aggregate
    def judge_states(
        self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]], bench_dir: Path
    ) -> dict[str, int]:
        """Items per end state (plus ``pending``: not judged yet); sums to the item count."""
        from evals.runtime.runner import load_record

        produce, judge = self.stages
        counts = {state: 0 for state in STATES}
        counts["pending"] = 0
        for item in resolved.items:
            if item.id in records:
                counts[OK] += 1
                continue
            produced = load_record(bench_dir, produce, item.id)
            judged = load_record(bench_dir, judge, item.id)
            if produced is not None and produced["status"] == "failed":
                counts[MISSING_IMAGE] += 1  # nothing to judge: the image was never made
            elif judged is not None and judged["status"] == "failed":
                state = judged.get("state")
                counts[state if state in FAILED_STATES else JUDGE_ERROR] += 1
            else:
                counts["pending"] += 1
        return counts

    def aggregate(
        self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]], bench_dir: Path
    ) -> dict[str, Any]:
        metrics = self.metrics(resolved, records)
        states = self.judge_states(resolved, records, bench_dir)
        expected = sum(states.values())
        # The headline metric carries coverage by state and the warnings, so a table row cannot lose them.
        headline = metrics.setdefault("overall", {"status": "not_computed", "reason": "no item was judged"})
        headline["judge_states"] = states
        headline["coverage"] = states[OK] / expected if expected else 0.0
        headline["judge"] = resolved.scorers.judge.describe()
        headline["warnings"] = list(resolved.warnings)
        # The headline first (results.json's metric_order, the first column of a table), values untouched.
        return {"overall": headline, **{name: value for name, value in metrics.items() if name != "overall"}}

    # ------------------------------------------------------------------ dry run
    def judge_plan(self, resolved: ResolvedBenchmark, bench_dir: Path, cache_dir: Path) -> dict[str, Any]:
        """How many judge calls judging ``resolved`` in ``bench_dir`` would make now, and how many are cached.

        Makes no call and loads no model. Items already judged ``ok`` cost nothing; produced items cost
        a call unless their request is in the cache; items not produced yet will cost a call each once
        generated (their images cannot be cached yet); items whose generation failed are not judged.
        """
        from evals.runtime.runner import load_record

        produce, judge = self.stages
        scorers: JudgeScorers = resolved.scorers
        cache = scorers.cache(cache_dir)
        counts = {
            "items": len(resolved.items),
            "already_judged": 0,
            "cached": 0,
            "calls": 0,
            "awaiting_generation": 0,
            "generation_failed": 0,
            "missing_image": 0,
        }
        for item in resolved.items:
            judged = load_record(bench_dir, judge, item.id)
            if judged is not None and judged["status"] == "ok":
                counts["already_judged"] += 1
                continue
            produced = load_record(bench_dir, produce, item.id)
            if produced is None:
                counts["awaiting_generation"] += 1
                continue
            if produced["status"] != "ok":
                counts["generation_failed"] += 1
                continue
            try:
                request = self.build_request(resolved, item, bench_dir)
            except MissingImage:
                counts["missing_image"] += 1
                continue
            counts["cached" if cache_key(request, scorers.judge) in cache else "calls"] += 1
        calls = counts["calls"] + counts["awaiting_generation"]
        attempts = resolved.spec.knobs["judge"]["parse_attempts"] * (scorers.judge.max_retries + 1)
        return {
            "benchmark": resolved.name,
            "fingerprint": resolved.spec.fingerprint,
            "judge": scorers.judge.identity,
            "endpoint": scorers.judge.describe()["endpoint"],
            "cache_dir": str(cache.root),
            **counts,
            "judge_calls": calls,
            "judge_calls_at_most": calls * attempts,
        }


def plan(
    references: list[str], out: str | Path, options: Mapping[str, Any], cache_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """One dry-run plan per judged benchmark of ``references`` for the run directory ``out``.

    Args:
        references: ``name@variant`` of judge-scored benchmarks (any benchmark with a ``judge_plan`` method).
        out: the run directory (need not exist yet: then every item awaits generation).
        options: benchmark options as ``unilip eval run`` takes them (each benchmark gets those it declares).
        cache_dir: the run's cache directory (``--cache-dir``; default ``~/.cache/unilip``).
    """
    from evals.benchmark import get_benchmark, select_options

    plans = []
    for reference in references:
        bench, variant = get_benchmark(reference)
        if not callable(getattr(bench, "judge_plan", None)):  # a JudgedBenchmark, or a family of its own
            raise ValueError(f"{reference} is not scored by a judge; nothing to plan")
        resolved = bench.resolve(variant, select_options(bench, options), None)
        plans.append(bench.judge_plan(resolved, Path(out) / resolved.name, Path(cache_dir or DEFAULT_CACHE_DIR)))
    return plans


def _bind(function: Callable[..., JudgeRequest], *args: Any) -> Callable[[], JudgeRequest]:
    return lambda: function(*args)
