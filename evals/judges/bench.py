"""What judge-scored benchmarks share: judge options, templates, pinned-data checks, the stages, coverage.

A judged benchmark (WISE, ImgEdit) has two stages: ``produce`` (the model makes one image per item,
saved under ``images/``) and ``judge`` (a vision-language judge scores it). Each judged item ends in one
explicit state (:mod:`evals.judges.states`); an item that is not ``ok`` has a ``failed`` record with the
state in its payload and error, so ``unilip eval run --retry-failed`` asks again, and the aggregate
excludes it and counts it instead of scoring it 0. A judge endpoint that gives no HTTP response stops
the judge stage with :class:`~evals.judges.client.JudgeUnreachable` and records nothing for the items
it did not judge: they stay to do, and the same command resumes them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

from evals.benchmark import (Benchmark, BenchmarkSpec, Item, StageContext, StageResult, model_identity,
                             produce_then_score_fingerprint)
from evals.judges.cache import JudgeCache, cache_key
from evals.judges.client import JudgeClient, JudgeUnreachable
from evals.judges.config import JudgeConfig, resolve_judge_config
from evals.judges.request import JudgeImage, JudgeRequest
from evals.judges.states import FAILED_STATES, JUDGE_ERROR, MISSING_IMAGE, OK, STATES, Judgement, MissingImage
from evals.runtime.records import canonical_hash, item_seed

logger = logging.getLogger(__name__)

Parser = Callable[[str], dict[str, Any]]

JUDGE_OPTIONS: dict[str, str] = {
    "judge_config": "judge settings file (YAML/JSON: model, version, base_url, api_key_env, auth, api_version, "
                    "temperature, max_tokens, seed, extra_body, timeout_s, max_retries, backoff_base_s, "
                    "backoff_max_s, concurrency, requests_per_minute); never the key itself",
    "judge_model": "judge model name (default: the protocol's judge; or $UNILIP_JUDGE_MODEL)",
    "judge_version": "judge snapshot/version string for the cache and spec (default: the model name)",
    "judge_base_url": "OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1 (or $UNILIP_JUDGE_BASE_URL)",
    "judge_api_key_env": "environment variable holding the key (default UNILIP_JUDGE_API_KEY, then OPENAI_API_KEY)",
    "judge_temperature": "judge sampling temperature (null: not sent)",
    "judge_max_tokens": "judge max_tokens (null: not sent)",
    "judge_seed": "judge sampling seed (null: not sent)",
    "judge_concurrency": "judge requests in flight at most (default 8)",
    "judge_rpm": "judge requests started per minute at most (default: no limit)",
    "judge_timeout_s": "per-request timeout in seconds (default 120)",
    "judge_max_retries": "retries after timeouts, HTTP 429/5xx, malformed bodies (default 5)",
    "judge_template": "judge prompt template YAML (keys: system, user) instead of the built-in one",
    "judge_parse_attempts": "answers to ask for while they do not parse (default: the protocol's)",
    "judge_cache_dir": "judge answer cache (default: CACHE_DIR/judge, CACHE_DIR from --cache-dir)",
}

IMAGES_DIR = "images"


# ---------------------------------------------------------------------- data and templates
def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_release_files(root: str | Path, files: list[str], candidates: Callable[[Path, str], list[Path]],
                       what: str, repository: str, commit: str) -> dict[str, Path]:
    """Find each repository path of ``files`` in a user's copy of a benchmark release.

    ``candidates(root, relative)`` lists where a file may be (the clone's layout, a sub-folder, the file
    alone); the first that exists wins. A missing folder or file raises, naming what to clone.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{what} data {root}: no such folder (clone {repository} and pass its path)")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for relative in files:
        hit = next((path for path in candidates(root, relative) if path.is_file()), None)
        if hit is None:
            missing.append(relative)
        else:
            found[relative] = hit
    if missing:
        tried = "; ".join(str(path) for relative in missing for path in candidates(root, relative))
        raise ValueError(f"{what} data {root}: cannot find {', '.join(missing)} (looked for {tried}). Clone "
                         f"{repository} (commit {commit[:12]}) and pass the clone's path")
    return found


def check_pinned(found: Mapping[str, Path], pinned: Mapping[str, str], what: str) -> tuple[dict[str, Any], list[str]]:
    """Compare user-supplied files with the sha256 values of the pinned release.

    Returns the spec's data identity (each file's sha256, the pinned one, whether they match) and one
    warning per file that differs: a different file is evaluated (and fingerprinted as such), but
    the results say plainly that it is not the release the published numbers used.
    """
    files: dict[str, Any] = {}
    warnings: list[str] = []
    for name, path in found.items():
        actual = file_sha256(path)
        expected = pinned.get(name)
        files[name] = {"sha256": actual, "pinned_sha256": expected, "matches_pinned": actual == expected}
        if actual != expected:
            warnings.append(f"{what}: {name} differs from the pinned release (sha256 {actual[:16]}..., pinned "
                            f"{(expected or 'none')[:16]}...); scores are not comparable with published ones")
    for warning in warnings:
        logger.warning(warning)
    return {"files": files, "matches_pinned": not warnings}, warnings


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt: an optional system line and a user text with placeholders such as ``{prompt}``.

    ``source`` says where it came from (``builtin:NAME`` or a file's name); ``sha256`` identifies its text
    and goes into the spec fingerprint and the cache keys.
    """

    user: str
    system: str | None = None
    source: str = "inline"

    @property
    def sha256(self) -> str:
        """sha256 of the template's text (system and user)."""
        return canonical_hash({"system": self.system, "user": self.user}, length=64)

    def describe(self) -> dict[str, str]:
        """Where the template came from and its hash, for the spec."""
        return {"source": self.source, "sha256": self.sha256}

    def render(self, values: Mapping[str, str]) -> JudgeRequest:
        """A request whose text has each placeholder (a key of ``values``) replaced; images are added later."""
        text = self.user
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        return JudgeRequest(text=text, system=self.system, template_sha256=self.sha256)

    @classmethod
    def load(cls, path: str | Path, placeholders: tuple[str, ...], source: str | None = None) -> "JudgeTemplate":
        """Read a YAML template (``user`` required, ``system`` optional) that uses every placeholder given."""
        import yaml

        path = Path(path).expanduser()
        if not path.is_file():
            raise ValueError(f"judge template {path}: no such file")
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("user"), str):
            raise ValueError(f"judge template {path}: want a YAML mapping with a 'user' text (and optional 'system')")
        unknown = sorted(set(data) - {"system", "user"})
        if unknown:
            raise ValueError(f"judge template {path}: unknown keys {unknown} (want system, user)")
        system = data.get("system")
        if system is not None and not isinstance(system, str):
            raise ValueError(f"judge template {path}: 'system' must be text")
        template = cls(user=data["user"], system=system.strip() if system else None,
                       source=source or f"file:{path.name}")
        template.require(placeholders)
        return template

    def require(self, placeholders: tuple[str, ...]) -> None:
        """Raise ValueError unless the user text uses every placeholder given."""
        missing = [p for p in placeholders if p not in self.user]
        if missing:
            raise ValueError(f"judge template {self.source} does not use {', '.join(missing)}")


def take_first(entries: list, limit: Any, noun: str) -> tuple[list, int | None, list[str]]:
    """The first ``limit`` entries (all when ``limit`` is None), the limit as an int, and a warning for results."""
    if limit is None:
        return entries, None, []
    count = int(limit)
    if not 1 <= count <= len(entries):
        raise ValueError(f"limit must be between 1 and {len(entries)} (the number of {noun}), got {limit!r}")
    return entries[:count], count, [f"only the first {count} of {len(entries)} {noun} are evaluated (limit)"]


SEED_DERIVATION = "per item: int(canonical_hash({seed, item: id}), 16) % 2**31"
IMAGE_DELETED = "the image was deleted after generation; run the same command again to regenerate it"


class PathEscapesRoot(ValueError):
    """A path named by benchmark data leads outside the folder it must stay in."""


def path_inside(root: str | Path, relative: str, what: str) -> Path:
    """``root / relative`` when it stays inside ``root``; raise :class:`PathEscapesRoot` otherwise.

    The check is on the normalised path (``..`` resolved, an absolute ``relative`` taken as it is), not
    through symbolic links: data cannot create links, and a link the user put inside ``root`` (a
    dataset kept on another disk) is the user's choice.

    Args:
        root: the folder the path must stay in.
        relative: the path as the data gives it.
        what: what the path is, for the message (``source image``, ``output``).
    """
    base = Path(os.path.normpath(Path(root).expanduser().absolute()))
    candidate = Path(os.path.normpath(base / relative))
    if candidate == base or not candidate.is_relative_to(base):
        raise PathEscapesRoot(f"{what} path {relative!r} escapes {base} (it leads to {candidate}); refused: "
                              "data may only name files inside that folder")
    return candidate


def generated_image(bench_dir: Path, relative: str) -> JudgeImage:
    """A produced image for the judge; :class:`MissingImage` saying how to regenerate it when it is gone.

    The produce record of such an image is ``ok`` (it was written), so ``--retry-failed`` is not the fix:
    the runner redoes a produce stage whose recorded output vanished, so the same command regenerates it.
    """
    path = bench_dir / relative
    if not path.is_file():
        raise MissingImage(f"{relative}: {IMAGE_DELETED}")
    return JudgeImage.from_file(path)


def save_png(image: Any, path: Path) -> str:
    """Save a PIL image as PNG atomically; return the sha256 of the bytes written."""
    import io

    from PIL import Image

    from evals.runtime.records import atomic_write_bytes

    if not isinstance(image, Image.Image):
        raise TypeError(f"the adapter returned a {type(image).__name__}, not a PIL image")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- the benchmark base
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


@dataclass
class _SpecState:
    items: list[Item]
    prepared: Prepared
    judge: JudgeConfig
    cache_dir: Path | None
    warnings: list[str]


class JudgedBenchmark(Benchmark):
    """Base of benchmarks scored by a judge: stages ``produce`` then ``judge``; see the module docstring.

    Subclasses set ``name``, ``version``, ``capability``, ``variants`` (each with a ``judge`` mapping of
    default judge settings) and ``options`` (including :data:`JUDGE_OPTIONS`), and implement
    :meth:`prepare`, :meth:`produce`, :meth:`build_request` and :meth:`score`.
    """

    stages = ("produce", "judge")
    options: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self._specs: dict[str, _SpecState] = {}

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def prepare(self, variant: str, options: dict[str, Any]) -> Prepared:
        """Read the user's data for ``variant`` (checking it), and choose templates and parser."""

    @abstractmethod
    def produce(self, spec: BenchmarkSpec, item: Item, ctx: StageContext, seed: int) -> StageResult:
        """Make this item's image with ``ctx.adapter`` and save it under ``ctx.bench_dir / images``."""

    @abstractmethod
    def build_request(self, spec: BenchmarkSpec, item: Item, bench_dir: Path) -> JudgeRequest:
        """The judge request for a produced item; raise ``MissingImage`` when an image is absent."""

    @abstractmethod
    def score(self, spec: BenchmarkSpec, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Metrics from the ``ok`` judge records (item id -> record); ``overall`` is the headline."""

    def describe_scores(self, spec: BenchmarkSpec, item: Item, scores: dict[str, Any]) -> dict[str, Any]:
        """Extra per-item fields for an ``ok`` record (a per-item score, a category); none by default."""
        return {}

    # ------------------------------------------------------------------ spec
    def make_spec(self, variant: str, options: dict[str, Any], adapter: Any) -> BenchmarkSpec:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"{self.name}: unknown options {unknown}; known: {sorted(self.options)}")
        prepared = self.prepare(variant, options)
        if "produce" not in prepared.knobs:
            raise TypeError(f"{type(self).__name__}.prepare must put the produce stage's knobs under 'produce'")
        judge = resolve_judge_config(options, self.variants[variant]["judge"])
        parse_attempts = int(options.get("judge_parse_attempts") or prepared.parse_attempts)
        if parse_attempts < 1:
            raise ValueError(f"{self.name}: judge_parse_attempts must be at least 1")
        seed = int(options.get("seed") or 0)
        warnings = list(prepared.warnings)
        protocol_judge = self.variants[variant]["judge"]["model"]
        if judge.identity != protocol_judge:
            warnings.append(f"the judge is {judge.identity}, not the protocol's {protocol_judge}: "
                            "scores are not comparable with published ones")
            logger.warning("%s@%s: %s", self.name, variant, warnings[-1])
        knobs = {
            **prepared.knobs,
            "produce": {**prepared.knobs["produce"], "seed": seed, "seed_derivation": SEED_DERIVATION},
            "judge": {**judge.fingerprint_fields(), "protocol_judge": protocol_judge,
                      "templates": {name: t.describe() for name, t in prepared.templates.items()},
                      "parse_attempts": parse_attempts},
        }
        spec = BenchmarkSpec(self.name, variant, self.version, knobs)
        cache_dir = Path(options["judge_cache_dir"]).expanduser() if options.get("judge_cache_dir") else None
        self._specs[spec.fingerprint] = _SpecState(prepared.items, prepared, judge, cache_dir, warnings)
        return spec

    def _state(self, spec: BenchmarkSpec) -> _SpecState:
        try:
            return self._specs[spec.fingerprint]
        except KeyError:
            raise ValueError(f"{spec.name}: this spec was not made by this benchmark object "
                             "(make_spec first)") from None

    def list_items(self, spec: BenchmarkSpec) -> list[Item]:
        return self._state(spec).items

    def judge_config(self, spec: BenchmarkSpec) -> JudgeConfig:
        return self._state(spec).judge

    def judge_cache(self, spec: BenchmarkSpec, cache_dir: Path) -> JudgeCache:
        """The answer cache: ``judge_cache_dir`` when given, else ``cache_dir/judge``."""
        return JudgeCache(self._state(spec).cache_dir or Path(cache_dir) / "judge")

    def stage_fingerprint(self, stage: str, spec: BenchmarkSpec, model: dict[str, Any]) -> str:
        # The produce stage depends on the model and the prompts/seed only: changing the judge re-judges.
        produce = canonical_hash({"model": model_identity(model), "produce": spec.knobs["produce"]})
        return produce_then_score_fingerprint(stage, produce, spec)

    # ------------------------------------------------------------------ stages
    def run_stage(self, stage: str, spec: BenchmarkSpec, items: list[Item],
                  ctx: StageContext) -> Iterator[tuple[Item, StageResult]]:
        if not items:
            return
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=f"{spec.name} {stage}", unit="item", disable=not ctx.progress)
        try:
            if stage == "produce":
                seed = spec.knobs["produce"]["seed"]
                for item in items:
                    yield item, self.produce(spec, item, ctx, item_seed(seed, item.id))
                    bar.update(1)
            elif stage == "judge":
                for item, result in self._judge(spec, items, ctx):
                    yield item, result
                    bar.update(1)
            else:
                raise ValueError(f"{spec.name} has no stage {stage!r}")
        finally:
            bar.close()

    def preflight(self, spec: BenchmarkSpec) -> None:
        """Refuse a missing or unusable API key now; warn when the judge does not answer now.

        Generation may run for hours before judging starts, so an endpoint that is down now (a local
        server not started yet) is only a warning; the judge stage probes it again before its first call.

        Raises:
            JudgeConfigError: no key for a remote endpoint, or a key an HTTP header cannot carry.
        """
        client = JudgeClient(self._state(spec).judge)
        try:
            client.check_reachable()
        except JudgeUnreachable as error:
            logger.warning("%s: %s (checked before generation; judging starts after it)", spec.name, error)

    def _judge(self, spec: BenchmarkSpec, items: list[Item], ctx: StageContext) -> Iterator[tuple[Item, StageResult]]:
        state = self._state(spec)
        client = JudgeClient(state.judge, cache=self.judge_cache(spec, ctx.cache_dir))
        jobs = ((item, _bind(self.build_request, spec, item, ctx.bench_dir)) for item in items)
        judged = client.judge_many(jobs, state.prepared.parser, spec.knobs["judge"]["parse_attempts"])
        finished = 0
        try:
            for item, judgement in judged:
                finished += 1
                yield item, self._to_result(spec, item, judgement)
        except JudgeUnreachable:
            logger.warning("%s: judging stopped, judge unreachable: %d of the %d items asked for were judged and "
                           "kept; the other %d stay to do", spec.name, finished, len(items), len(items) - finished)
            raise

    def _to_result(self, spec: BenchmarkSpec, item: Item, judgement: Judgement) -> StageResult:
        payload = judgement.to_payload()
        error = payload.pop("error", None)
        if judgement.state == OK:
            payload.update(self.describe_scores(spec, item, judgement.scores or {}))
            return StageResult(status="ok", payload=payload)
        return StageResult(status="failed", payload=payload, error=f"{judgement.state}: {error or 'no detail'}")

    # ------------------------------------------------------------------ aggregate
    def judge_states(self, spec: BenchmarkSpec, records: dict[str, dict[str, Any]], bench_dir: Path) -> dict[str, int]:
        """Items per end state (plus ``pending``: not judged yet); sums to the item count."""
        from evals.runtime.runner import load_record

        counts = {state: 0 for state in STATES}
        counts["pending"] = 0
        for item in self.list_items(spec):
            if item.id in records:
                counts[OK] += 1
                continue
            produced = load_record(bench_dir, "produce", item.id)
            judged = load_record(bench_dir, "judge", item.id)
            if produced is not None and produced["status"] == "failed":
                counts[MISSING_IMAGE] += 1  # nothing to judge: the image was never made
            elif judged is not None and judged["status"] == "failed":
                state = judged.get("state")
                counts[state if state in FAILED_STATES else JUDGE_ERROR] += 1
            else:
                counts["pending"] += 1
        return counts

    def aggregate(self, spec: BenchmarkSpec, records: dict[str, dict[str, Any]], bench_dir: Path) -> dict[str, Any]:
        metrics = self.score(spec, records)
        states = self.judge_states(spec, records, bench_dir)
        expected = sum(states.values())
        # The headline metric carries coverage by state and the warnings, so a table row cannot lose them.
        headline = metrics.setdefault("overall", {"status": "not_computed", "reason": "no item was judged"})
        headline["judge_states"] = states
        headline["coverage"] = states[OK] / expected if expected else 0.0
        headline["judge"] = self._state(spec).judge.describe()
        headline["warnings"] = list(self._state(spec).warnings)
        return metrics

    # ------------------------------------------------------------------ dry run
    def judge_plan(self, spec: BenchmarkSpec, bench_dir: Path, cache_dir: Path) -> dict[str, Any]:
        """How many judge calls judging ``spec`` in ``bench_dir`` would make now, and how many are cached.

        Makes no call and loads no model. Items already judged ``ok`` cost nothing; produced items cost
        a call unless their request is in the cache; items not produced yet will cost a call each once
        generated (their images cannot be cached yet); items whose generation failed are not judged.
        """
        from evals.runtime.runner import load_record

        state = self._state(spec)
        cache = self.judge_cache(spec, cache_dir)
        counts = {"items": len(state.items), "already_judged": 0, "cached": 0, "calls": 0,
                  "awaiting_generation": 0, "generation_failed": 0, "missing_image": 0}
        for item in state.items:
            judged = load_record(bench_dir, "judge", item.id)
            if judged is not None and judged["status"] == "ok":
                counts["already_judged"] += 1
                continue
            produced = load_record(bench_dir, "produce", item.id)
            if produced is None:
                counts["awaiting_generation"] += 1
                continue
            if produced["status"] != "ok":
                counts["generation_failed"] += 1
                continue
            try:
                request = self.build_request(spec, item, bench_dir)
            except MissingImage:
                counts["missing_image"] += 1
                continue
            counts["cached" if cache_key(request, state.judge) in cache else "calls"] += 1
        calls = counts["calls"] + counts["awaiting_generation"]
        attempts = spec.knobs["judge"]["parse_attempts"] * (state.judge.max_retries + 1)
        return {"benchmark": spec.name, "fingerprint": spec.fingerprint, "judge": state.judge.identity,
                "endpoint": state.judge.describe()["endpoint"], "cache_dir": str(cache.root), **counts,
                "judge_calls": calls, "judge_calls_at_most": calls * attempts}


def _bind(function: Callable[..., JudgeRequest], *args: Any) -> Callable[[], JudgeRequest]:
    return lambda: function(*args)


def mean_se(values: list[float]) -> dict[str, Any]:
    """Mean, standard error of the mean (None for one value) and count of ``values``."""
    import math

    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
    return {"value": mean, "se": se, "n": n}


def not_computed(reason: str) -> dict[str, Any]:
    """A metric that could not be computed, with the reason (how result tables show it)."""
    return {"status": "not_computed", "reason": reason}
