"""The understanding benchmarks' common class: a VLMEvalKit TSV answered by a model, then scored by rules
(and, in the variants that say so, a judge).

Each benchmark folder (``mme``, ``mmbench``, ``mmvp``, ``ai2d``, ``seed``, ``mmmu``, ``mmvet``) subclasses
:class:`VlmBenchmark`, names its VLMEvalKit dataset(s) as variants and its scoring rule; everything else is here.

Stages:

1. ``answer`` (the produce step): the model answers each row's prompt (:func:`evals.benchmarks.vlm.internvl_prompt`
   then the row's images, as VLMEvalKit's InternVL wrapper orders its message), greedily, in batches of
   ``--batch-size``, through the adapter's ``answer``. The record keeps the prompt and the prediction.
2. ``score``: the rules of :mod:`evals.benchmarks.vlm` turn each prediction into an answer (an option letter, ``Z``,
   ``Yes``/``No``) or :data:`~evals.benchmarks.vlm.UNRESOLVED`. What happens to an unresolved answer is the
   variant's *fallback*:

   - ``rules`` (the default variants): it stays unresolved and scores as a miss, exactly as VLMEvalKit's
     ``exact_matching`` policy scores it; the number of such items is reported beside every headline.
   - ``judge`` (``...-judge`` variants): the judge of :mod:`evals.judges` reads the prediction and names the option
     (or Yes/No); a judgement that fails (no answer, an answer that does not parse) leaves the item ``failed`` in an
     explicit state, out of every mean and counted, to be asked again with ``--retry-failed``.
   - ``judge-then-random`` (``...-vlmevalkit-random`` variants, to reproduce old VLMEvalKit numbers only): as
     ``judge``, but an item whose judge answers never parse gets a random letter (options and ``Z``, seeded by the
     run seed and the item), as VLMEvalKit does after three tries. The record says ``by: random``.
   - ``grade`` (MM-Vet): every prediction is graded by the judge (0.0-1.0).

Aggregation scores only whole *units* (an MME image, an MMBench question and its rotated copies, an MMVP pair):
a unit with a question not scored (a failed answer or judgement, or one not done yet) is left out and counted, so
a partial run never turns a half-answered MMBench question into a right one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

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
)
from evals.benchmarks.judged import DEFAULT_CACHE_DIR, JudgeOptions
from evals.benchmarks.vlm import (
    UNRESOLVED,
    VlmRow,
    check_tsv_md5,
    extract_choice,
    extract_yes_no,
    infer_option,
    internvl_prompt,
    process_punctuation,
    read_tsv,
    scoring_choices,
)
from evals.benchmarks.vlm_scoring import Graded, Outcome, score_mcq
from evals.files import canonical_hash
from evals.judges.states import OK, STATES, ParseError

logger = logging.getLogger(__name__)

# VLMEvalKit's InternVLChat generation default (``kwargs_default``): greedy, at most 4096 new tokens.
DEFAULT_MAX_NEW_TOKENS: Final = 4096
# Bump when the prompts or the request layout change: the answers depend on them.
PROMPT_CONVENTION: Final = "vlmevalkit-internvl-build_prompt/1"
DATA_ENV: Final = "LMUData"
# The judge VLMEvalKit resolved MCQ and Y/N answers with when the published InternVL3 and UniLIP numbers were made
# (``chatgpt-0125``, until 2026-04; gpt-4o-mini since).
EXTRACTION_JUDGE: Final[Mapping[str, Any]] = {"model": "gpt-3.5-turbo-0125", "temperature": 0.0}
FALLBACKS: Final = ("rules", "judge", "judge-then-random", "grade")
# How a score record's answer was reached.
BY_RULES, BY_JUDGE, BY_RANDOM, UNRESOLVED_BY_RULES, BY_ZERO = "rules", "judge", "random", "unresolved", "zero"


@dataclass(frozen=True)
class VlmProtocol:
    """A variant of an understanding benchmark.

    Attributes:
        dataset: VLMEvalKit's dataset name: the TSV's stem, the key of its pinned MD5, and what the model's
            per-benchmark conventions (InternVL3's tile limits) are chosen by.
        fallback: what an unresolved answer becomes (one of :data:`FALLBACKS`; see the module docstring).
        judge: default judge settings when the fallback uses a judge (``model`` at least).
        split: score only this ``split`` (MMMU_DEV_VAL's published number is ``validation``).
        missing_as_zero: MM-Vet only: a failed grading counts 0, as VLMEvalKit after five tries.
    """

    dataset: str
    fallback: str = "rules"
    judge: Mapping[str, Any] | None = None
    split: str | None = None
    missing_as_zero: bool = False

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback {self.fallback!r} is not one of {FALLBACKS}")
        if (self.fallback != "rules") != (self.judge is not None):
            raise ValueError(f"fallback {self.fallback!r}: a judge is needed exactly when the fallback uses one")

    @property
    def uses_judge(self) -> bool:
        return self.judge is not None


@dataclass(frozen=True)
class VlmOptions(JudgeOptions):
    """Options of every understanding benchmark (the judge options apply to the variants with a judge)."""

    data: str | None = option(
        "a VLMEvalKit TSV, or the folder holding <DATASET>.tsv (default: $LMUData, else ~/LMUData)", flag="--data"
    )
    limit: int | None = option("evaluate only the first N units (MME images, MMBench questions, MMVP pairs, rows)")
    max_new_tokens: int | None = option(
        f"the longest answer, in tokens (default {DEFAULT_MAX_NEW_TOKENS}, VLMEvalKit's)"
    )
    answer_is_rule: bool | None = option("also read '(correct) answer is X' (VLMEvalKit's newest rule; default false)")
    seed: int | None = option("seed of the vlmevalkit-random fallback (default: the run seed)")


@dataclass(frozen=True)
class VlmScorers:
    """What the score step needs: the rows and units by item id, and the judge when the variant has one."""

    rows: Mapping[str, VlmRow]
    units: Mapping[str, Any]  # item id -> the unit it is scored with
    judge: Any = None  # evals.judges.config.JudgeConfig
    template: Any = None  # evals.judges.template.JudgeTemplate
    parse_attempts: int = 1
    cache_dir: Path | None = None


PAIRED_KINDS: Final = ("binary", "continuous")


@dataclass(frozen=True)
class PairedMetric:
    """How a headline metric is compared unit by unit in paired tests (:meth:`VlmBenchmark.unit_values`).

    Attributes:
        kind: ``"binary"`` (a unit right or wrong: McNemar's test) or ``"continuous"`` (a paired bootstrap).
        scale: the factor from the mean of the units' values to the metric (100 for a percentage of units right).
        weights: for a metric that weighs the means of strata (MME's perception: the sum of its subtask scores),
            stratum -> weight, and each unit's score names its stratum (:class:`~evals.benchmark.Strata`: the
            paired test reweighs the units both runs scored); None for a plain mean over units.
    """

    kind: str
    scale: float = 100.0
    weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in PAIRED_KINDS:
            raise ValueError(f"paired kind {self.kind!r} is not one of {PAIRED_KINDS}")


@dataclass(frozen=True)
class UnitScore:
    """One unit's raw value of one paired metric, and its stratum when the metric weighs strata."""

    value: float
    stratum: str | None = None


def judge_variants(
    base: Mapping[str, str], judge: Mapping[str, Any], *, split: str | None = None
) -> dict[str, VlmProtocol]:
    """Three variants of each ``name -> dataset`` of ``base`` (a benchmark whose answers are options): ``name``
    (rules), ``name-judge`` and ``name-vlmevalkit-random``; for the name ``default``, ``judge`` and
    ``vlmevalkit-random``."""
    variants: dict[str, VlmProtocol] = {}
    for name, dataset in base.items():
        prefix = "" if name == "default" else f"{name}-"
        variants[name] = VlmProtocol(dataset, split=split)
        variants[f"{prefix}judge"] = VlmProtocol(dataset, "judge", judge, split=split)
        variants[f"{prefix}vlmevalkit-random"] = VlmProtocol(dataset, "judge-then-random", judge, split=split)
    return variants


def find_tsv(data: str | None, dataset: str, benchmark: str) -> Path:
    """The TSV of ``dataset``: ``data`` when it is a file, else ``<data or $LMUData or ~/LMUData>/<dataset>.tsv``.

    Raises:
        FileNotFoundError: one line naming the file looked for and how to get it (nothing is downloaded).
    """
    if data is not None and Path(data).expanduser().is_file():
        return Path(data).expanduser()
    root = Path(data or os.environ.get(DATA_ENV) or Path.home() / "LMUData").expanduser()
    path = root / f"{dataset}.tsv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{benchmark}: {path} not found; download VLMEvalKit's {dataset}.tsv (see evals/benchmarks/{benchmark}/"
            f"README.md) into that folder, or pass --data FOLDER_OR_TSV (or set ${DATA_ENV}); nothing is downloaded"
        )
    return path


class VlmBenchmark(Benchmark):
    """Base of the understanding benchmarks; see the module docstring.

    Subclasses set ``version``, ``variants`` (:class:`VlmProtocol` values) and ``headlines``, implement
    :meth:`extract` and :meth:`score_rows`, and :meth:`units` when rows are scored together; multiple-choice
    benchmarks get extraction, the judge's template and parser from :class:`ChoiceBenchmark`. Paired tests
    (:meth:`unit_values`) take the metrics of :meth:`paired_metrics`, each unit's values from :meth:`unit_scores`.
    """

    capability: ClassVar[str] = "answer"
    stages: ClassVar[tuple[str, str]] = ("answer", "score")
    Options: ClassVar[type] = VlmOptions
    # The metrics a table shows, in order; the first one also carries coverage, states, warnings and the breakdown.
    headlines: ClassVar[tuple[str, ...]] = ("overall",)
    # The placeholders a judge template must use (``{question}``, ``{prediction}`` ...): see default_judge_template.
    judge_placeholders: ClassVar[tuple[str, ...]] = ()
    # Answers per item a judge is asked for while they do not parse (VLMEvalKit: 3 for options, 5 otherwise).
    judge_parse_attempts: ClassVar[int] = 3

    # ------------------------------------------------------------------ subclass hooks
    def units(self, rows: Sequence[VlmRow], protocol: VlmProtocol) -> list[Any]:
        """The unit of each row of the file (rows of one unit are scored together); by default each row alone."""
        return [row.index for row in rows]

    def data_file(self, options: VlmOptions, protocol: VlmProtocol) -> tuple[Path, dict[str, Any], list[str]]:
        """The TSV to read, its identity for the spec, and warnings: by default the user's VLMEvalKit file
        (:func:`find_tsv`), checked against VLMEvalKit's pinned MD5 (:func:`~evals.benchmarks.vlm.check_tsv_md5`)."""
        path = find_tsv(options.data, protocol.dataset, self.name)
        identity, warnings = check_tsv_md5(path, protocol.dataset)
        return path, identity, warnings

    def prompt(self, row: VlmRow, protocol: VlmProtocol) -> str:
        """The text the model reads with the row's images: VLMEvalKit's InternVL prompt for the dataset."""
        return internvl_prompt(row, protocol.dataset)

    def headlines_for(self, protocol: VlmProtocol) -> tuple[str, ...]:
        """The headline metrics of a variant (:attr:`headlines` unless a benchmark's variants differ)."""
        return self.headlines

    def check_rows(self, rows: Sequence[VlmRow], protocol: VlmProtocol) -> None:
        """Refuse data that cannot be scored (a missing gold answer ...) before anything runs."""
        missing = [row.index for row in rows if row.answer is None]
        if missing:
            raise ValueError(
                f"{self.name}: {len(missing)} rows have no answer (first index {missing[0]}); "
                f"{protocol.dataset} must be a split with answers"
            )

    @abstractmethod
    def extract(self, row: VlmRow, prediction: str, resolved: ResolvedBenchmark) -> str:
        """The answer the rules read from ``prediction``, or ``UNRESOLVED``."""

    def default_judge_template(self) -> Any:
        """The built-in judge template (a ``JudgeTemplate``; the option ``judge_template`` replaces it)."""
        raise NotImplementedError(f"{type(self).__name__} has no judge template")

    def judge_values(self, row: VlmRow, prediction: str, protocol: VlmProtocol) -> dict[str, str]:
        """The template's placeholder values (names without braces) for ``row`` and its prediction."""
        raise NotImplementedError(f"{type(self).__name__} has no judge template")

    def judge_parser(self, row: VlmRow, protocol: VlmProtocol) -> Callable[[str], dict[str, Any]]:
        """What reads the judge's replies about ``row``: ``{"answer": ...}`` (or ``{"grade": ...}``), or
        ``ParseError`` (the judge is asked again, up to the parse attempts; the reply is not cached)."""
        raise NotImplementedError(f"{type(self).__name__} has no judge parser")

    def last_resort(self, row: VlmRow, seed: int, protocol: VlmProtocol) -> dict[str, Any] | None:
        """A score payload for an item the judge could not judge (no parsable reply, an endpoint error, a filtered
        request), when the variant reproduces VLMEvalKit's last resort (a random letter, an MM-Vet 0); None (the
        default) leaves the item failed."""
        return None

    def extraction_knobs(self, options: VlmOptions) -> dict[str, Any]:
        """The extraction settings the rules read (in the spec). Only multiple choice reads ``answer_is_rule``."""
        if options.answer_is_rule is not None:
            raise ValueError(f"{self.name}: answer_is_rule is a multiple-choice extraction rule; {self.name} has none")
        return {}

    def paired_metrics(self, protocol: VlmProtocol) -> dict[str, PairedMetric]:
        """The headline metrics of ``protocol`` that paired tests can compare unit by unit (their names as results.json
        has them) and how; empty (the default) when the benchmark has no per-unit values, which the paired report
        says."""
        return {}

    def paired_unit(self, protocol: VlmProtocol) -> str:
        """What one unit of ``protocol`` is, for the paired report (``image``, ``question``, ``pair``)."""
        return self.unit_noun.removesuffix("s")

    def unit_scores(
        self, scored: Sequence[tuple[VlmRow, Mapping[str, Any]]], protocol: VlmProtocol
    ) -> dict[str, UnitScore]:
        """One whole unit's values per metric of :meth:`paired_metrics`, from its rows (file order) and their ``ok``
        score records, exactly as :meth:`score_rows` counts them; a metric left out leaves the unit out of that
        metric (as its aggregate leaves it out of the mean: an MM-Vet grade that failed)."""
        return {}

    def unit_values(self, bench_dir: Path, manifest_ids: list[str]) -> UnitValues | None:
        """Per-unit values of the headline metrics of :meth:`paired_metrics` (a question, a CircularEval group, an
        MMVP pair, an MME image ...), for paired tests: :meth:`unit_scores` of each unit whose rows are all scored
        ``ok`` (a unit with a row not scored is left out, as the aggregate leaves it out); a metric that weighs strata
        keeps the raw values with its :class:`~evals.benchmark.Strata` (:meth:`UnitValues.contributions` reweighs
        them), and has no values at all when one of its strata has no unit (its headline is not computed then).

        The run directory holds no gold answers, so the data file is read again: from the ``--data`` the run
        recorded, else where a run finds it by default (``$LMUData``). None when the benchmark pairs no metric, or
        the file is absent or is not the one the run scored.

        Raises:
            ValueError: a unit score of a metric not paired, or without the stratum its metric weighs.
        """
        from evals.files import read_json
        from evals.runtime.runner import MANIFEST

        spec = read_json(bench_dir / MANIFEST)["spec"]
        protocol: VlmProtocol | None = self.variants.get(spec["variant"])
        if protocol is None:
            return None
        metrics = self.paired_metrics(protocol)
        if not metrics:
            return None
        units = self._scored_units(bench_dir, spec, protocol, manifest_ids)
        if units is None:
            return None
        scores: dict[str, dict[str, UnitScore]] = {metric: {} for metric in metrics}
        for key, scored in units.items():
            for metric, score in self.unit_scores(scored, protocol).items():
                if metric not in scores:
                    raise ValueError(f"{self.name}: unit {key!r} has a value of {metric!r}, which is not paired")
                scores[metric][key] = score
        values: dict[str, dict[str, float]] = {}
        strata: dict[str, Strata] = {}
        for metric, how in metrics.items():
            raw = {key: score.value for key, score in scores[metric].items()}
            if how.weights is None:
                values[metric] = raw
                continue
            stratum: dict[str, str] = {}
            for key, score in scores[metric].items():
                if score.stratum is None:
                    raise ValueError(f"{self.name}: unit {key!r} of {metric!r} has no stratum; {metric} weighs strata")
                stratum[key] = score.stratum
            if set(how.weights) - set(stratum.values()):
                continue  # a stratum without a scored unit: the headline is not computed, so nothing is paired
            values[metric] = raw
            strata[metric] = Strata(stratum, how.weights)
        return UnitValues(
            values,
            {metric: metrics[metric].kind for metric in values},
            self.paired_unit(protocol),
            {metric: metrics[metric].scale for metric in values},
            strata,
        )

    def _scored_units(
        self, bench_dir: Path, spec: Mapping[str, Any], protocol: VlmProtocol, manifest_ids: list[str]
    ) -> dict[str, list[tuple[VlmRow, dict[str, Any]]]] | None:
        """The run's whole units (unit id -> its rows, in file order, with their ``ok`` score records); a unit with a
        row not scored ``ok`` is left out. None when the data file the run scored is not found, or holds none of
        the manifest's items."""
        from evals.files import read_json
        from evals.runtime.runner import RESULTS, counted_records_of

        recorded = read_json(bench_dir / RESULTS).get("data_path") if (bench_dir / RESULTS).is_file() else None
        found = None
        for options in ([VlmOptions(data=str(recorded))] if recorded else []) + [VlmOptions()]:
            try:
                path, identity, _ = self.data_file(options, protocol)
            except (FileNotFoundError, ValueError):
                continue
            if identity == spec["knobs"]["produce"]["data"]:
                found = path
                break
        if found is None:
            return None
        rows = [row for row in read_tsv(found) if row.images_b64]
        wanted = set(manifest_ids)
        unit_rows: dict[str, list[VlmRow]] = {}
        for row, key in zip(rows, self.units(rows, protocol), strict=True):
            if str(row.index) in wanted and (protocol.split is None or row.fields.get("split") == protocol.split):
                unit_rows.setdefault(str(key), []).append(row)
        if not unit_rows:
            return None
        counted = counted_records_of(bench_dir, self.stages, manifest_ids)
        units: dict[str, list[tuple[VlmRow, dict[str, Any]]]] = {}
        for key, members in unit_rows.items():
            scored = []
            for row in members:
                record = counted.get(str(row.index))
                if record is None:
                    break  # a unit with a row not counted is left out, as the aggregate leaves it out
                scored.append((row, record))
            else:
                units[key] = scored
        return units

    @abstractmethod
    def score_rows(
        self, resolved: ResolvedBenchmark, scored: Sequence[tuple[VlmRow, dict[str, Any]]]
    ) -> dict[str, Any]:
        """Metrics from whole units of scored rows (row, its ok score record's payload), in file order."""

    # ------------------------------------------------------------------ resolution
    def build(self, variant: str, options: VlmOptions, model: Any) -> ResolvedBenchmark:
        from evals.benchmarks.kit import take_first
        from evals.judges.config import resolve_judge_config
        from evals.judges.template import JudgeTemplate

        protocol: VlmProtocol = self.variants[variant]
        judge_given = sorted(
            f.name
            for f in dataclasses.fields(JudgeOptions)
            if getattr(options, f.name) is not None and f.name != "judge_cache_dir"
        )
        if judge_given and not protocol.uses_judge:
            judged = [name for name, p in self.variants.items() if p.uses_judge]
            raise ValueError(
                f"{self.name}@{variant} uses no judge, so {', '.join(judge_given)} would change nothing; "
                f"the judged variants are {', '.join(judged) or 'none'} (in a command with several benchmarks, "
                f"give judge options to one of them: --opt BENCH.{judge_given[0]}=...)"
            )
        path, data_identity, warnings = self.data_file(options, protocol)
        rows = [row for row in read_tsv(path) if row.images_b64]
        if not rows:
            raise ValueError(f"{self.name}: {path} has no rows with an image")
        self.check_rows(rows, protocol)
        units: dict[Any, list[VlmRow]] = {}
        for row, key in zip(rows, self.units(rows, protocol), strict=True):
            units.setdefault(key, []).append(row)
        kept_units, limit, limit_warnings = take_first(list(units), options.limit, f"{self.unit_noun} of {path.name}")
        # Units are fixed here, over the whole file, and kept for aggregation (a unit may depend on every row).
        unit_of = {str(row.index): key for key in kept_units for row in units[key]}
        rows = [row for row in rows if str(row.index) in unit_of]
        warnings += limit_warnings
        max_new_tokens = int(options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
        if max_new_tokens < 1:
            raise ValueError(f"{self.name}: max_new_tokens must be at least 1, got {max_new_tokens}")
        produce = {
            "dataset": protocol.dataset,
            "data": data_identity,
            "prompt": PROMPT_CONVENTION,
            "max_new_tokens": max_new_tokens,
            "decoding": "greedy",
        }
        knobs: dict[str, Any] = {
            "produce": produce,
            "limit": limit,
            "units": len(kept_units),
            "fallback": protocol.fallback,
            "extraction": self.extraction_knobs(options),
            "split": protocol.split,
            "missing_as_zero": protocol.missing_as_zero,
        }
        scorers = VlmScorers(rows={str(row.index): row for row in rows}, units=unit_of)
        if protocol.uses_judge:
            judge = resolve_judge_config(dataclasses.asdict(options), protocol.judge)
            if options.judge_template:
                template = JudgeTemplate.load(options.judge_template, self.judge_placeholders)
            else:
                template = self.default_judge_template()
            attempts = int(options.judge_parse_attempts or self.judge_parse_attempts)
            if attempts < 1:
                raise ValueError(f"{self.name}: judge_parse_attempts must be at least 1")
            if judge.identity != protocol.judge["model"]:
                warnings.append(
                    f"the judge is {judge.identity}, not the protocol's {protocol.judge['model']}: "
                    "scores are not comparable with published ones"
                )
            knobs["judge"] = {
                **judge.fingerprint_fields(),
                "protocol_judge": protocol.judge["model"],
                "template": template.describe(),
                "parse_attempts": attempts,
            }
            if protocol.fallback == "judge-then-random":
                knobs["random_seed"] = int(options.seed or 0)  # the random letters depend on it
            cache_dir = Path(options.judge_cache_dir).expanduser() if options.judge_cache_dir else None
            scorers = dataclasses.replace(
                scorers, judge=judge, template=template, parse_attempts=attempts, cache_dir=cache_dir
            )
        spec = BenchmarkSpec(self.name, variant, self.version, knobs)
        items = tuple(Item(id=str(row.index), source=row) for row in rows)
        for warning in warnings:
            logger.warning("%s@%s: %s", self.name, variant, warning)
        return ResolvedBenchmark(self, spec, items, options, protocol, scorers, tuple(warnings))

    unit_noun: ClassVar[str] = "rows"

    def produce_fingerprint(self, resolved: ResolvedBenchmark, model: dict[str, Any]) -> str:
        # Answers depend on the model, the data, the prompt convention and decoding: changing the judge re-scores.
        return canonical_hash({"model": model_identity(model), "produce": resolved.spec.knobs["produce"]})

    def preflight(self, resolved: ResolvedBenchmark) -> None:
        """A missing or unusable API key fails now; a judge that does not answer now is only a warning."""
        if not resolved.protocol.uses_judge:
            return
        from evals.judges.client import JudgeClient, JudgeUnreachable

        try:
            JudgeClient(resolved.scorers.judge).check_reachable()
        except JudgeUnreachable as error:
            logger.warning("%s: %s (checked before answering; scoring starts after it)", resolved.name, error)

    # ------------------------------------------------------------------ steps
    def produce(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        from tqdm.auto import tqdm

        from evals.adapter import AnswerRequest

        knobs = resolved.spec.knobs["produce"]
        size = max(1, int(ctx.batch_size))
        with tqdm(total=len(items), desc=f"{resolved.name} answer", unit="item", disable=not ctx.progress) as bar:
            for start in range(0, len(items), size):
                batch = items[start : start + size]
                ready: list[tuple[Item, str, AnswerRequest]] = []
                for item in batch:
                    prompt = self.prompt(item.source, resolved.protocol)
                    try:  # an image that does not decode fails its item only
                        images = item.source.images()
                    except ValueError as error:
                        yield item, StageResult.failed(str(error))
                        continue
                    request = AnswerRequest((prompt, *images), knobs["dataset"], max_new_tokens=knobs["max_new_tokens"])
                    ready.append((item, prompt, request))
                try:
                    predictions = ctx.adapter.answer([request for _, _, request in ready]) if ready else []
                    if len(predictions) != len(ready):
                        raise RuntimeError(f"the adapter gave {len(predictions)} answers to {len(ready)} requests")
                except Exception as error:  # the batch's items fail, explicitly; --retry-failed asks again
                    logger.warning("%s: a batch of %d failed: %s", resolved.name, len(ready), error)
                    for item, _, _ in ready:
                        yield item, StageResult.failed(f"{type(error).__name__}: {error}")
                else:
                    for (item, prompt, _), prediction in zip(ready, predictions, strict=True):
                        yield item, StageResult(status="ok", payload={"prompt": prompt, "prediction": str(prediction)})
                bar.update(len(batch))

    def score(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        from evals.runtime.runner import load_record

        protocol: VlmProtocol = resolved.protocol
        predictions = {}
        for item in items:
            record = load_record(ctx.bench_dir, self.stages[0], item.id)
            predictions[item.id] = str(record["prediction"])  # a record holds its payload's fields
        to_judge: list[Item] = []
        for item in items:
            if protocol.fallback == "grade":
                to_judge.append(item)
                continue
            answer = self.extract(item.source, predictions[item.id], resolved)
            if answer != UNRESOLVED or not protocol.uses_judge:
                by = BY_RULES if answer != UNRESOLVED else UNRESOLVED_BY_RULES
                yield item, StageResult(status="ok", payload={"answer": answer, "by": by})
            else:
                to_judge.append(item)
        if to_judge:
            yield from self._judge(resolved, to_judge, predictions, ctx)

    def _judge(
        self, resolved: ResolvedBenchmark, items: list[Item], predictions: Mapping[str, str], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        from tqdm.auto import tqdm

        from evals.judges.cache import JudgeCache
        from evals.judges.client import JudgeClient
        from evals.judges.request import JudgeRequest

        scorers: VlmScorers = resolved.scorers
        cache = scorers.cache_dir or Path(ctx.cache_dir or DEFAULT_CACHE_DIR) / "judge"
        client = JudgeClient(scorers.judge, cache=JudgeCache(cache))
        protocol: VlmProtocol = resolved.protocol

        def request_for(item: Item) -> Callable[[], JudgeRequest]:
            values = self.judge_values(item.source, predictions[item.id], protocol)
            return lambda: scorers.template.render({f"{{{k}}}": v for k, v in values.items()})

        jobs = ((item, request_for(item)) for item in items)
        seed = int(resolved.spec.knobs.get("random_seed", 0))
        judged = client.judge_many(
            jobs, lambda item: self.judge_parser(item.source, protocol), scorers.parse_attempts, per_tag=True
        )
        with tqdm(total=len(items), desc=f"{resolved.name} judge", unit="item", disable=not ctx.progress) as bar:
            for item, judgement in judged:
                bar.update(1)
                payload = judgement.to_payload()
                error = payload.pop("error", None)
                if judgement.state == OK:
                    scores = dict(judgement.scores or {})
                    yield item, StageResult(status="ok", payload={**payload, **scores, "by": BY_JUDGE})
                elif resort := self.last_resort(item.source, item_seed_for(seed, item.id), protocol):
                    yield item, StageResult(status="ok", payload={**payload, **resort})
                else:
                    yield item, StageResult(status="failed", payload=payload, error=f"{judgement.state}: {error}")

    # ------------------------------------------------------------------ dry run
    def judge_plan(self, resolved: ResolvedBenchmark, bench_dir: Path, cache_dir: Path) -> dict[str, Any]:
        """How many judge calls scoring ``resolved`` in ``bench_dir`` would make now (``unilip eval plan``).

        Makes no call and loads no model. Answers the rules read cost nothing; answers not made yet cost a call
        each in MM-Vet, and at most one each in a ``-judge`` variant (only those the rules cannot read).

        Raises:
            ValueError: the variant uses no judge.
        """
        from evals.judges.cache import JudgeCache, cache_key
        from evals.runtime.runner import load_record

        protocol: VlmProtocol = resolved.protocol
        if not protocol.uses_judge:
            raise ValueError(f"{resolved.name} uses no judge; nothing to plan")
        scorers: VlmScorers = resolved.scorers
        cache = JudgeCache(scorers.cache_dir or Path(cache_dir) / "judge")
        counts = dict.fromkeys(
            ("already_judged", "resolved_by_rules", "cached", "calls", "awaiting_generation", "generation_failed"), 0
        )
        counts["missing_image"] = 0  # the judge sees text only: no image can go missing
        for item in resolved.items:
            scored = load_record(bench_dir, self.stages[1], item.id)
            if scored is not None and scored["status"] == "ok":
                counts["already_judged"] += 1
                continue
            answered = load_record(bench_dir, self.stages[0], item.id)
            if answered is None:
                counts["awaiting_generation"] += 1
                continue
            if answered["status"] != "ok":
                counts["generation_failed"] += 1
                continue
            prediction = str(answered["prediction"])
            if protocol.fallback != "grade" and self.extract(item.source, prediction, resolved) != UNRESOLVED:
                counts["resolved_by_rules"] += 1
                continue
            values = self.judge_values(item.source, prediction, protocol)
            request = scorers.template.render({f"{{{k}}}": v for k, v in values.items()})
            counts["cached" if cache_key(request, scorers.judge) in cache else "calls"] += 1
        certain = counts["calls"] + (counts["awaiting_generation"] if protocol.fallback == "grade" else 0)
        attempts = scorers.parse_attempts * (scorers.judge.max_retries + 1)
        return {
            "benchmark": resolved.name,
            "fingerprint": resolved.spec.fingerprint,
            "judge": scorers.judge.identity,
            "endpoint": scorers.judge.describe()["endpoint"],
            "cache_dir": str(cache.root),
            "items": len(resolved.items),
            **counts,
            "judge_calls": certain,
            "judge_calls_at_most": (counts["calls"] + counts["awaiting_generation"]) * attempts,
        }

    # ------------------------------------------------------------------ aggregate
    def aggregate(
        self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]], bench_dir: Path
    ) -> dict[str, Any]:
        from evals.runtime.runner import load_record

        rows = [item.source for item in resolved.items]
        by_unit: dict[Any, list[VlmRow]] = {}
        for row in rows:
            by_unit.setdefault(resolved.scorers.units[str(row.index)], []).append(row)
        scored: list[tuple[VlmRow, dict[str, Any]]] = []
        complete_units = 0
        stranded = 0  # scored, but in a unit with a question not scored: left out with its unit
        for unit_rows in by_unit.values():
            if all(str(row.index) in records for row in unit_rows):
                complete_units += 1
                scored.extend((row, records[str(row.index)]) for row in unit_rows)
            else:
                stranded += sum(str(row.index) in records for row in unit_rows)
        order = {str(row.index): position for position, row in enumerate(rows)}
        scored.sort(key=lambda pair: order[str(pair[0].index)])
        metrics = self.score_rows(resolved, scored)

        states = {name: 0 for name in (BY_RULES, UNRESOLVED_BY_RULES, BY_JUDGE, BY_RANDOM, BY_ZERO)}
        for _, payload in scored:
            states[payload["by"]] += 1
        not_scored = {state: 0 for state in STATES if state != OK}
        not_scored.update({"answer_failed": 0, "pending": 0})
        for item in resolved.items:
            if item.id in records:
                continue
            answered = load_record(bench_dir, self.stages[0], item.id)
            judged = load_record(bench_dir, self.stages[1], item.id)
            if answered is not None and answered["status"] == "failed":
                not_scored["answer_failed"] += 1
            elif judged is not None and judged["status"] == "failed":
                state = judged.get("state")
                not_scored[state if state in not_scored else "judge_error"] += 1
            else:
                not_scored["pending"] += 1
        coverage = {
            "items": len(rows),
            "scored": len(scored),
            "units": len(by_unit),
            "units_scored": complete_units,
            "fraction": len(scored) / len(rows) if rows else 0.0,
            "answers_by": states,
            "not_scored": {**not_scored, "in_incomplete_units": stranded},
        }
        headlines = self.headlines_for(resolved.protocol)
        breakdown = {key: value for key, value in metrics.items() if key not in headlines}
        cells = {name: dict(metrics[name]) for name in headlines}
        first = cells[headlines[0]]
        first["coverage"] = coverage
        first["breakdown"] = breakdown
        first["warnings"] = list(resolved.warnings)
        if resolved.protocol.uses_judge:
            first["judge"] = resolved.scorers.judge.describe()
        return cells


def item_seed_for(seed: int, item_id: str) -> int:
    """The random fallback's seed for one item (the run seed and the item id)."""
    return int(canonical_hash({"seed": seed, "item": item_id}), 16) % 2**31


# ---------------------------------------------------------------------------------------- multiple choice
CHOICE_TEMPLATE_USER: Final = """A multiple-choice question was put to a model, which answered in its own words. \
Decide which option the model's answer picks.

Question: {question}
Options:
{options}
Model's answer: {prediction}

Reply with the letter of the option the answer picks. If the answer picks none of them, or more than one, \
reply Z. Reply with the letter only."""


class ChoiceBenchmark(VlmBenchmark):
    """A multiple-choice understanding benchmark (MMBench, MMVP, AI2D, SEED-Bench, MMMU): VLMEvalKit's
    ``can_infer`` rules, a judge that names the option, and VLMEvalKit's random last resort as a variant."""

    judge_placeholders: ClassVar[tuple[str, ...]] = ("{question}", "{options}", "{prediction}")
    judge_parse_attempts: ClassVar[int] = 3

    def default_judge_template(self) -> Any:
        from evals.judges.template import JudgeTemplate

        return JudgeTemplate(
            user=CHOICE_TEMPLATE_USER,
            system="You read answers to multiple-choice questions and say which option they pick.",
            source="builtin:vlm-choice",
        )

    def choices(self, row: VlmRow, protocol: VlmProtocol) -> dict[str, Any]:
        """The options extraction and the judge match against (MMMU's open questions: the two-way choice)."""
        return scoring_choices(row, protocol.dataset)[0]

    def extraction_knobs(self, options: VlmOptions) -> dict[str, Any]:
        return {"answer_is_rule": bool(options.answer_is_rule)}

    def extract(self, row: VlmRow, prediction: str, resolved: ResolvedBenchmark) -> str:
        return extract_choice(
            prediction, self.choices(row, resolved.protocol), answer_is_rule=bool(resolved.options.answer_is_rule)
        )

    def judge_values(self, row: VlmRow, prediction: str, protocol: VlmProtocol) -> dict[str, str]:
        return {
            "question": row.question,
            "options": "\n".join(f"{letter}. {text}" for letter, text in self.choices(row, protocol).items()),
            "prediction": prediction,
        }

    def judge_parser(self, row: VlmRow, protocol: VlmProtocol) -> Callable[[str], dict[str, Any]]:
        # VLMEvalKit reads the judge's reply with can_infer against the question's own options; Z (none fits) is
        # an answer too: a miss.
        choices = self.choices(row, protocol)

        def parse(reply: str) -> dict[str, Any]:
            letter = infer_option(reply, choices)
            if letter is None:
                raise ParseError(f"no single option of {', '.join(choices)} (or Z) in the reply {reply[:80]!r}")
            return {"answer": letter}

        return parse

    def last_resort(self, row: VlmRow, seed: int, protocol: VlmProtocol) -> dict[str, Any] | None:
        if protocol.fallback != "judge-then-random":
            return None
        # VLMEvalKit when the judge gives no usable letter: a random pick among the options and Z.
        letters = list(self.choices(row, protocol))
        pool = letters + ["Z"] if "Z" not in letters else letters
        return {"answer": random.Random(seed).choice(pool), "by": BY_RANDOM}

    def row_hit(self, row: VlmRow, payload: Mapping[str, Any], protocol: VlmProtocol) -> bool:
        """Right when the answer is the gold option (as :class:`~evals.benchmarks.vlm_scoring.Outcome` scores it)."""
        gold = scoring_choices(row, protocol.dataset)[1]
        return Outcome(index=row.index, answer=str(payload["answer"]), gold=gold).hit

    def paired_metrics(self, protocol: VlmProtocol) -> dict[str, PairedMetric]:
        """The first headline (plain, circular or pair accuracy): a unit right or wrong, in percent."""
        return {self.headlines_for(protocol)[0]: PairedMetric("binary")}

    def unit_scores(
        self, scored: Sequence[tuple[VlmRow, Mapping[str, Any]]], protocol: VlmProtocol
    ) -> dict[str, UnitScore]:
        """1 when every row of the unit (a question, a CircularEval group, an MMVP pair) is right, else 0."""
        right = all(self.row_hit(row, payload, protocol) for row, payload in scored)
        return {self.headlines_for(protocol)[0]: UnitScore(float(right))}

    def score_rows(
        self, resolved: ResolvedBenchmark, scored: Sequence[tuple[VlmRow, dict[str, Any]]]
    ) -> dict[str, Any]:
        """Plain multiple-choice accuracy overall and per category (``score_mcq``); MMBench, MMVP override it."""
        return score_mcq([self.outcome(row, payload, resolved) for row, payload in scored])

    def outcome(self, row: VlmRow, payload: Mapping[str, Any], resolved: ResolvedBenchmark) -> Outcome:
        """The scored row as :mod:`evals.benchmarks.vlm_scoring` takes it."""
        gold = scoring_choices(row, resolved.protocol.dataset)[1]
        return Outcome(
            index=row.index,
            answer=str(payload["answer"]),
            gold=gold,
            category=_text(row.fields.get("category")),
            l2_category=_text(row.fields.get("l2-category")),
            split=_text(row.fields.get("split")),
            question=row.question,
        )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------- yes / no
YES_NO_TEMPLATE_USER: Final = """A yes/no question was put to a model, which answered in its own words. Decide \
whether the answer means yes or no.

Question: {question}
Model's answer: {prediction}

Reply Yes, No, or Unknown when the answer says neither or both. Reply with that one word only."""


def yes_no_template() -> Any:
    from evals.judges.template import JudgeTemplate

    return JudgeTemplate(
        user=YES_NO_TEMPLATE_USER,
        system="You read answers to yes/no questions and say whether they mean yes or no.",
        source="builtin:vlm-yes-no",
    )


def parse_yes_no_reply(reply: str) -> dict[str, Any]:
    """The judge's Yes/No by the same rule as the model's (``extract_yes_no``); its ``Unknown`` is an answer too,
    ``UNRESOLVED`` (a miss, as VLMEvalKit scores it); ``ParseError`` for anything else."""
    answer = extract_yes_no(reply)
    if answer == UNRESOLVED and "unknown" not in process_punctuation(reply.lower()).split():
        raise ParseError(f"neither yes, no nor unknown in the judge's reply {reply[:80]!r}")
    return {"answer": answer}


def yes_no_outcome(row: VlmRow, payload: Mapping[str, Any]) -> Outcome:
    """A yes/no row and its score record as :func:`evals.benchmarks.vlm_scoring.score_mme` takes them (grouped
    by ``image_path`` within ``category``)."""
    return Outcome(
        index=row.index,
        answer=str(payload.get("answer", UNRESOLVED)),
        gold=row.answer,
        category=str(row.fields["category"]),
        image=str(row.fields["image_path"]),
    )


def yes_no_pair_hits(scored: Sequence[tuple[VlmRow, Mapping[str, Any]]]) -> tuple[float, float]:
    """The hits (1.0 right, 0.0 wrong or unresolved) of the two questions of one image, as
    :func:`evals.benchmarks.vlm_scoring.score_mme` scores them (acc and acc+ pair them).

    Raises:
        ValueError: an image with other than exactly two questions (``score_mme`` refuses it too).
    """
    hits = [float(yes_no_outcome(row, payload).hit) for row, payload in scored]
    if len(hits) != 2:
        indices = ", ".join(str(row.index) for row, _ in scored)
        raise ValueError(f"image with {len(hits)} questions (index {indices}); acc+ needs exactly two per image")
    return hits[0], hits[1]


def graded(row: VlmRow, payload: Mapping[str, Any]) -> Graded:
    """An MM-Vet row and its score record as :func:`evals.benchmarks.vlm_scoring.score_mmvet` takes them."""
    return Graded(index=row.index, category=str(row.fields.get("category") or ""), grade=payload.get("grade"))


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "ChoiceBenchmark",
    "PairedMetric",
    "UnitScore",
    "VlmBenchmark",
    "VlmOptions",
    "VlmProtocol",
    "VlmScorers",
    "find_tsv",
    "graded",
    "item_seed_for",
    "judge_variants",
    "parse_yes_no_reply",
    "yes_no_outcome",
    "yes_no_pair_hits",
    "yes_no_template",
]
