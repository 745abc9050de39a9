"""What a benchmark is, and the registry that finds them.

A benchmark is one folder under ``evals/benchmarks/`` whose ``__init__`` registers a :class:`Benchmark`
subclass; nothing else in the harness changes when one is added (``CONTRIBUTING.md``: add a benchmark).

The life of a benchmark in a run:

1. ``unilip eval run`` parses the benchmark's :attr:`Benchmark.Options` (a dataclass) once from its
   flags and ``--opt NAME=VALUE`` (``--opt BENCH.NAME=VALUE`` for one benchmark only), refusing a typo
   with the closest name (:func:`parse_options`).
2. :meth:`Benchmark.resolve` turns a variant (a typed protocol value), those options and what the model
   is into a frozen :class:`ResolvedBenchmark`: the versioned spec whose fingerprint identifies the
   scores, the items, and the scorers built for them. Nothing is kept on the benchmark object.
3. The runner (:mod:`evals.runtime.runner`) calls the resolved benchmark's steps, named by one
   vocabulary, :data:`STAGES`: ``produce`` (the model makes something per item), ``score`` (a metric or
   a judge scores it), then ``aggregate``.

What benchmarks share beyond this (statistics, PNG writing, pinned-release checks, the judged base
class) lives in :mod:`evals.benchmarks.kit` and :mod:`evals.benchmarks.judged`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from evals.files import canonical_hash

# The steps of every benchmark, in order: the model produces, a metric or a judge scores. Records live
# under RUN/<bench@variant>/<stage>/, where a benchmark may name its stages for what they do
# (``Benchmark.stages``: a judged one scores in ``judge/``); the steps keep these names.
STAGES: tuple[str, str] = ("produce", "score")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Every knob that moves a benchmark's score, versioned; hashed into its fingerprint."""

    benchmark: str
    variant: str
    version: str
    knobs: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.benchmark}@{self.variant}"

    @property
    def fingerprint(self) -> str:
        return canonical_hash(asdict(self))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Item:
    """One unit of work: a stable id (used for sharding, seeds and file names) and where its data is."""

    id: str
    source: Any = None


@dataclass
class StageResult:
    """The outcome of one stage for one item: ``ok`` with a payload (and arrays), or ``failed`` with a reason.

    ``outputs`` names the files the stage wrote for the item (path relative to the benchmark directory ->
    sha256 of the bytes written, as :func:`evals.files.write_output` returns). The runner keeps them in
    the record and, before trusting the record on a resume, checks that each file is still there with
    its size: an output deleted or replaced after its record makes the item be redone.
    ``inputs`` names the source files the stage read (absolute path -> sha256 of their bytes, or ``""`` to
    judge the file by its size and mtime alone, for a large container such as a tar shard): an input
    edited in place since the record was written makes the item be redone too.
    """

    status: str
    payload: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def failed(cls, error: str) -> StageResult:
        return cls(status="failed", error=error)


@dataclass
class StageContext:
    """What a stage may use: the model adapter, where to write outputs, batch size, caches."""

    adapter: Any
    bench_dir: Path
    batch_size: int
    cache_dir: Path
    progress: bool = True
    rank: int = 0


# ---------------------------------------------------------------------------------------- options
def option(help: str, *, flag: str | None = None, default: Any = None) -> Any:
    """A field of a benchmark's options dataclass: its one-line help and, optionally, a command-line flag.

    ``flag`` (``"--num-images"``) makes ``unilip eval run`` take the option as that flag too; several
    benchmarks may declare the same flag for an option of the same name (``--data``).
    """
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class NoOptions:
    """The options of a benchmark that takes none."""


def option_help(options: type) -> dict[str, str]:
    """Option name -> its help, for ``unilip eval list --options``."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(options)}


def option_flags(options: type) -> dict[str, str]:
    """Command-line flag -> option name, for the options that declare a flag."""
    return {f.metadata["flag"]: f.name for f in dataclasses.fields(options) if f.metadata.get("flag")}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` (as YAML read it, or a string) as the annotated type: int, float, bool, str, list, X | None."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = members[0] if len(members) == 1 else Any
        origin = typing.get_origin(annotation)
    if value is None or annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not str(value).strip().lstrip("-").isdigit():
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a number, got {value!r}") from None
    if annotation is str:
        return str(value)
    if origin in (list, tuple):
        values = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"{where} must be a list (a, b or [a, b]), got {value!r}")
        return tuple(values) if origin is tuple else list(values)
    return value


def parse_options(options: type, given: Mapping[str, Any], owner: str) -> Any:
    """The options dataclass ``options`` filled from ``given`` (name -> value, values possibly strings).

    Raises:
        ValueError: a name the dataclass does not have (with the closest one), or a value of the wrong type.
    """
    known = {f.name: f for f in dataclasses.fields(options)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise ValueError(f"{owner}: unknown options {', '.join(hints)}; known: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(options)
    values = {name: _coerce(value, hints[name], f"{owner}: option {name}") for name, value in given.items()}
    return options(**values)


# ---------------------------------------------------------------------------------------- paired values
@dataclass(frozen=True)
class UnitValues:
    """A run's per-unit values, for paired tests between two runs of one spec (``unilip eval compare --paired``).

    Attributes:
        values: metric (as results.json names it, or its own name) -> unit id -> the unit's value; only the units
            scored ``ok`` are here.
        kinds: metric -> ``"continuous"`` (a per-item number: a paired bootstrap) or ``"binary"`` (1.0 right,
            0.0 wrong: McNemar's exact test).
        unit: what a unit is, for the report (``image``, ``question``, ``question group``).
        scale: metric -> the factor from the mean of the unit values to the metric's scale (100 for an accuracy
            reported in percent); 1 when absent.
        strata: metric -> its :class:`Strata`, for a metric that weighs the means of strata (GenEval's overall, the
            mean of its task means; MME's perception, the sum of its subtask scores): its ``values`` are then the
            units' raw values, and :meth:`contributions` reweighs them.
    """

    values: Mapping[str, Mapping[str, float]]
    kinds: Mapping[str, str]
    unit: str = "item"
    scale: Mapping[str, float] = field(default_factory=dict)
    strata: Mapping[str, Strata] = field(default_factory=dict)

    def contributions(self, metric: str, units: Iterable[str] | None = None) -> dict[str, float]:
        """Unit -> what ``metric`` averages over ``units`` (every unit of the metric by default).

        A plain metric averages the units' values. A metric with :attr:`strata` weighs stratum means, so each unit
        contributes its value reweighted over the given units alone (:func:`stratified_unit_values`): the mean of
        the contributions is the metric restricted to those units, and two runs restricted to the units both
        scored are compared on the same footing.

        Raises:
            KeyError: a unit without a value of ``metric``.
        """
        raw = self.values[metric]
        chosen = {unit: float(raw[unit]) for unit in (raw if units is None else units)}
        strata = self.strata.get(metric)
        return chosen if strata is None else stratified_unit_values(chosen, strata.of_unit, strata.weights)


@dataclass(frozen=True)
class Strata:
    """How a metric weighs the means of strata (:func:`stratified_unit_values`): each unit's stratum, and each
    stratum's weight (a stratum without a weight is not in the metric)."""

    of_unit: Mapping[str, str]
    weights: Mapping[str, float]


def stratified_unit_values(
    values: Mapping[str, float], stratum: Mapping[str, str], weights: Mapping[str, float]
) -> dict[str, float]:
    """Per-unit contributions to a metric that weighs the means of strata: ``sum_s weights[s] * mean_s(values)``.

    GenEval's overall (the mean of its task means), WISE's (fixed category weights), ImgEdit's (the mean of its
    type means) and MME's perception (the sum of its subtask scores) are such metrics: a unit's raw value does not
    count the same in every stratum. Unit ``u`` of stratum ``s`` (``n_s`` units of the ``N`` given) contributes
    ``values[u] * weights[s] * N / n_s``, so that the mean of the contributions is the metric, and the mean of the
    paired differences of two runs scored on the same units is the difference of their metrics. Units whose
    stratum has no weight are left out (they are not in the metric).

    Raises:
        ValueError: a unit without a stratum.
    """
    missing = [unit for unit in values if unit not in stratum]
    if missing:
        raise ValueError(f"unit {missing[0]!r} has no stratum ({len(missing)} in all)")
    kept = [unit for unit in values if stratum[unit] in weights]
    counts: dict[str, int] = {}
    for unit in kept:
        counts[stratum[unit]] = counts.get(stratum[unit], 0) + 1
    total = len(kept)
    return {unit: float(values[unit]) * weights[stratum[unit]] * total / counts[stratum[unit]] for unit in kept}


# ---------------------------------------------------------------------------------------- benchmarks
@dataclass(frozen=True)
class ResolvedBenchmark:
    """One benchmark variant made concrete for a run: spec, items and the scorers built for them.

    Made by :meth:`Benchmark.resolve`; the runner calls :meth:`run_stage` (``produce`` then ``score``) and
    :meth:`aggregate`. Frozen: everything a step needs is here, nothing lives on the benchmark object.

    Attributes:
        benchmark: the benchmark definition (stateless).
        spec: the versioned spec; its fingerprint identifies the scores.
        items: the items, in a stable order.
        options: the parsed options (the benchmark's :attr:`Benchmark.Options`).
        protocol: the variant's typed protocol value.
        scorers: what the benchmark built for scoring (metric objects, a judge configuration ...).
        warnings: for the results (data that differ from a pinned release, a limit ...).
    """

    benchmark: Benchmark
    spec: BenchmarkSpec
    items: tuple[Item, ...]
    options: Any = None
    protocol: Any = None
    scorers: Any = None
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capability(self) -> str:
        return self.benchmark.capability

    @property
    def stages(self) -> tuple[str, ...]:
        """The benchmark's names for the :data:`STAGES` steps (its record folders)."""
        return self.benchmark.stages

    def step(self, stage: str) -> str:
        """The step (``produce`` or ``score``) a stage of :attr:`stages` is."""
        if stage not in self.stages:
            raise ValueError(f"{self.name} has no stage {stage!r} (stages: {', '.join(self.stages)})")
        return STAGES[self.stages.index(stage)]

    def stage_fingerprint(self, stage: str, model: dict[str, Any]) -> str:
        """Hash of what a stage's records depend on: a record with another fingerprint is redone."""
        produce = self.benchmark.produce_fingerprint(self, model)
        # The score step also depends on the whole spec: changing a scorer redoes scoring, never production.
        if self.step(stage) == "produce":
            return produce
        return canonical_hash({"produce": produce, "spec": self.spec.fingerprint})

    def run_stage(self, stage: str, items: list[Item], ctx: StageContext) -> Iterator[tuple[Item, StageResult]]:
        """Process ``items`` (those still to do, for this process) and yield each one's result."""
        step = self.step(stage)
        if not items:
            return iter(())
        if step == "produce":
            return self.benchmark.produce(self, items, ctx)
        return self.benchmark.score(self, items, ctx)

    def aggregate(self, records: dict[str, dict[str, Any]], bench_dir: Path) -> dict[str, Any]:
        """The metrics of the ``score`` stage's ``ok`` records (item id -> record), in manifest order."""
        return self.benchmark.aggregate(self, records, bench_dir)

    def outputs_per_item(self) -> int:
        """How many outputs (images) the produce step makes per item (see :meth:`Benchmark.outputs_per_item`)."""
        return self.benchmark.outputs_per_item(self)

    def output_size(self) -> int | None:
        """The side of the square images the produce step makes, when fixed (see :meth:`Benchmark.output_size`)."""
        return self.benchmark.output_size(self)

    def preflight(self) -> None:
        """The environment checks of :meth:`Benchmark.preflight`."""
        self.benchmark.preflight(self)

    def with_spec(self, spec: BenchmarkSpec) -> ResolvedBenchmark:
        """The same benchmark run under another spec (a run's own, resumed after its data lost files)."""
        return dataclasses.replace(self, spec=spec)


class Benchmark(ABC):
    """A benchmark: typed protocol variants, typed options, and the produce / score / aggregate steps.

    Subclasses set the class attributes and implement :meth:`build`, :meth:`produce_fingerprint`,
    :meth:`produce`, :meth:`score` and :meth:`aggregate`. They keep no state: whatever a run needs
    goes into the :class:`ResolvedBenchmark` that :meth:`resolve` returns.
    """

    # The benchmark's name (``NAME@VARIANT``): by default its folder's name (see register_benchmark).
    name: ClassVar[str]
    # Bump when a change moves scores; log it in the benchmark's README (tests pin each default spec).
    version: ClassVar[str]
    # Variant name -> its protocol, a frozen dataclass (e.g. a recon protocol with ``ssim_data_range``).
    variants: ClassVar[Mapping[str, Any]]
    capability: ClassVar[str]
    # The options dataclass; ``option(help, flag=...)`` declares each field.
    Options: ClassVar[type] = NoOptions
    # The knob of the spec that identifies the data listing (ids and sizes), if any. When only it has
    # changed since a run started and no item was added (files deleted or edited in place), the run
    # resumes with its own spec: deleted items count as missing, edited ones are redone.
    listing_knob: ClassVar[str | None] = None
    # The record folders of the two steps of STAGES (a judged benchmark scores in ``judge``).
    stages: ClassVar[tuple[str, str]] = STAGES
    # The metrics (names :meth:`aggregate` returns) where a lower value is better (recon: ``rfid``); every
    # other metric is higher-is-better. Written into results.json, so tables can put an arrow on each column.
    lower_is_better: ClassVar[frozenset[str]] = frozenset()

    def outputs_per_item(self, resolved: ResolvedBenchmark) -> int:
        """Images the produce step makes per item (GenEval: ``n_samples``): what an adapter of outputs made
        elsewhere (``folder:``) must hold for each item id, its output key."""
        return 1

    def output_size(self, resolved: ResolvedBenchmark) -> int | None:
        """The side of the square images the produce step makes when the benchmark fixes it (recon: its
        resolution), else None: outputs made elsewhere (``folder:``) of another size fail their items."""
        return None

    @classmethod
    def options_help(cls) -> dict[str, str]:
        """Option name -> one-line help."""
        return option_help(cls.Options)

    @classmethod
    def parse_options(cls, given: Mapping[str, Any]) -> Any:
        """This benchmark's options from name -> value (strings allowed); ValueError on a typo."""
        return parse_options(cls.Options, given, cls.name)

    def resolve(self, variant: str, options: Any, model: Any = None) -> ResolvedBenchmark:
        """The variant, the options and the model made concrete (see :meth:`build`).

        ``options``: an :attr:`Options` instance, or option name -> value (parsed here, once).
        """
        if isinstance(options, Mapping):
            options = self.parse_options(options)
        return self.build(variant, options, model)

    @abstractmethod
    def build(self, variant: str, options: Any, model: Any) -> ResolvedBenchmark:
        """The variant, the parsed options (an :attr:`Options` instance) and the model (an
        ``evals.adapter.ModelInfo`` or adapter; may be None for a benchmark that needs nothing of it)
        made concrete: read and check the data, build the scorers, and make the spec."""

    @abstractmethod
    def produce_fingerprint(self, resolved: ResolvedBenchmark, model: dict[str, Any]) -> str:
        """Hash of what the ``produce`` records depend on (the model's identity and the production knobs)."""

    @abstractmethod
    def produce(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        """The model's work for ``items`` (non-empty); yield each item's result."""

    @abstractmethod
    def score(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        """Score ``items`` (non-empty; each produced ``ok``); yield each item's result."""

    @abstractmethod
    def aggregate(
        self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]], bench_dir: Path
    ) -> dict[str, Any]:
        """Turn the ``score`` stage's ``ok`` records (item id -> record) into metrics."""

    def unit_values(self, bench_dir: Path, manifest_ids: list[str]) -> UnitValues | None:
        """The per-unit values of the run in ``bench_dir`` (its manifest's item ids ``manifest_ids``), for paired
        tests; None (the default) when the benchmark does not support them, which the paired report says."""
        return None

    def preflight(self, resolved: ResolvedBenchmark) -> None:  # noqa: B027 (an optional hook)
        """Checks of the environment a run needs (an API key, a reachable service ...).

        Called by ``unilip eval run`` after every benchmark is resolved and before the model loads, so that
        a missing key costs seconds, not a model load. Raise ``ValueError`` (or ``OSError``) with one line
        naming the problem and the fix; warn (``logging``) about what may still come right later.
        """


_REGISTRY: dict[str, type[Benchmark]] = {}


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator used by each benchmark folder.

    A class that sets no ``name`` is named after its folder (``evals/benchmarks/<name>/``), so a folder
    copied under another name is another benchmark with no edit.
    """
    if "name" not in cls.__dict__:
        prefix = "evals.benchmarks."
        if not cls.__module__.startswith(prefix):
            raise TypeError(f"{cls.__qualname__} sets no name and is not in a folder under evals/benchmarks/")
        cls.name = cls.__module__[len(prefix) :].split(".")[0]
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"benchmark {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    import evals.benchmarks as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.ispkg:
            importlib.import_module(f"{package.__name__}.{module.name}")


def benchmark_classes() -> dict[str, type[Benchmark]]:
    """Every registered benchmark class by name."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def list_benchmarks() -> list[str]:
    """Every ``name@variant`` the registry knows."""
    return sorted(f"{name}@{variant}" for name, cls in benchmark_classes().items() for variant in cls.variants)


def get_benchmark(reference: str) -> tuple[Benchmark, str]:
    """``name@variant`` (or ``name`` for its first variant) -> (benchmark instance, variant)."""
    _discover()
    name, _, variant = reference.partition("@")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        raise ValueError(
            f"unknown benchmark {name!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + f" Known: {', '.join(list_benchmarks())}"
        )
    cls = _REGISTRY[name]
    variant = variant or next(iter(cls.variants))
    if variant not in cls.variants:
        raise ValueError(f"benchmark {name!r} has no variant {variant!r}; variants: {', '.join(cls.variants)}")
    return cls(), variant


def model_identity(model: dict[str, Any]) -> dict[str, Any]:
    """An adapter's description minus where its weights were read from and the reference that named them: a
    moved checkpoint (or the same one spelled ``out`` or ``./out``) is the same model, a sampler setting
    (steps, guidance) is not."""
    return {key: value for key, value in model.items() if key not in ("weights_source", "model")}


# ---------------------------------------------------------------------------------------- --opt
def parse_opts(pairs: list[str]) -> dict[str, Any]:
    """``["limit=5", "wise.judge_model=gpt-4o"]`` -> ``{"limit": 5, "wise.judge_model": "gpt-4o"}`` (values as YAML)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--opt wants NAME=VALUE, got {pair!r}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value  # not YAML: the text itself (a path with a colon, say)
        options[name.strip()] = value if isinstance(parsed, (dict, type(None))) and value.strip() else parsed
    return options


def select_options(bench: Benchmark | type[Benchmark], given: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``given`` that ``bench`` takes, leaving out those not set (None).

    A bare ``NAME`` goes to every benchmark that declares it; ``BENCH.NAME`` only to the benchmark ``BENCH``,
    and wins over a bare ``NAME`` (two benchmarks that both take ``data`` in one command).
    """
    declared = set(option_help(bench.Options))
    chosen = {
        name: value for name, value in given.items() if "." not in name and name in declared and value is not None
    }
    prefix = f"{bench.name}."
    chosen.update(
        {name[len(prefix) :]: value for name, value in given.items() if name.startswith(prefix) and value is not None}
    )
    return chosen


def check_option_names(
    given: Mapping[str, Any], benches: list[tuple[Benchmark, str]], spelled: Mapping[str, str] | None = None
) -> None:
    """Refuse option names no selected benchmark takes, suggesting the closest ones.

    ``spelled`` names how an option was given when it was not ``--opt NAME`` (a flag such as ``--size``).

    Raises:
        ValueError: naming each unclaimed option (bare, or ``BENCH.NAME`` with an unknown part).
    """
    known = sorted(
        {name for bench, _ in benches for name in option_help(bench.Options)}
        | {f"{bench.name}.{name}" for bench, _ in benches for name in option_help(bench.Options)}
    )
    unclaimed = sorted(name for name in given if name not in known)
    if not unclaimed:
        return
    hints = []
    for name in unclaimed:
        if spelled and name in spelled:
            hints.append(spelled[name])
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"--opt {name}" + (f" (did you mean {close[0]}?)" if close else ""))
    selected = ", ".join(f"{bench.name}@{variant}" for bench, variant in benches)
    raise ValueError(
        f"no selected benchmark ({selected}) takes {', '.join(hints)}; "
        "`unilip eval list --options` lists each benchmark's options"
    )
