"""What a benchmark is (a spec, items, stages, an aggregate) and the registry that finds them.

A benchmark is one folder under ``evals/benchmarks/`` whose ``__init__`` registers a ``Benchmark``
subclass; nothing else in the harness changes when one is added.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from evals.runtime.records import canonical_hash


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
    sha256 of the bytes written, as :func:`evals.runtime.records.write_output` returns). The runner keeps
    them in the record and, before trusting the record on a resume, checks that each file is still
    there with its size: an output deleted or replaced after its record makes the item be redone.
    ``inputs`` names the source files the stage read (absolute path -> sha256 of their bytes, or ``""`` to
    judge the file by its size and mtime alone, for a large container such as a tar shard): an input
    edited in place since the record was written makes the item be redone too.
    """

    status: str
    payload: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def failed(cls, error: str) -> "StageResult":
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


class Benchmark(ABC):
    """A benchmark: named protocol variants, items, stages that turn items into records, an aggregate."""

    name: ClassVar[str]
    version: ClassVar[str]
    variants: ClassVar[dict[str, dict[str, Any]]]
    stages: ClassVar[tuple[str, ...]]
    capability: ClassVar[str]
    # Option name -> one-line help. ``unilip eval run`` hands a benchmark only the options it names here
    # (from its dedicated flags or ``--opt NAME=VALUE``), so several benchmarks can run in one command.
    options: ClassVar[dict[str, str]] = {}
    # The knob of the spec that identifies the data listing (ids and sizes), if any. When only it has
    # changed since a run started and no item was added (files deleted or edited in place), the run
    # resumes with its own spec: deleted items count as missing, edited ones are redone.
    listing_knob: ClassVar[str | None] = None

    @abstractmethod
    def make_spec(self, variant: str, options: dict[str, Any], adapter: Any) -> BenchmarkSpec:
        """Resolve a variant plus user options into the full spec (validating every option).

        ``options`` holds only names from :attr:`options` that the user gave (values may be strings).
        """

    @abstractmethod
    def list_items(self, spec: BenchmarkSpec) -> list[Item]:
        """The items of this spec, in a stable order."""

    @abstractmethod
    def stage_fingerprint(self, stage: str, spec: BenchmarkSpec, model: dict[str, Any]) -> str:
        """Hash of what a stage's records depend on: a record with another fingerprint is redone."""

    @abstractmethod
    def run_stage(self, stage: str, spec: BenchmarkSpec, items: list[Item],
                  ctx: StageContext) -> Iterator[tuple[Item, StageResult]]:
        """Process ``items`` (those still to do, for this process) and yield each one's result."""

    @abstractmethod
    def aggregate(self, spec: BenchmarkSpec, records: dict[str, dict[str, Any]], bench_dir: Path) -> dict[str, Any]:
        """Turn the final stage's ``ok`` records (item id -> record) into metrics."""

    def preflight(self, spec: BenchmarkSpec) -> None:
        """Checks of the environment a run of ``spec`` needs (an API key, a reachable service ...).

        Called by ``unilip eval run`` after every spec is made and before the model loads, so that a
        missing key costs seconds, not a model load. Raise ``ValueError`` (or ``OSError``) with one line
        naming the problem and the fix; warn (``logging``) about what may still come right later.
        """


_REGISTRY: dict[str, type[Benchmark]] = {}


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator used by each benchmark folder."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"benchmark {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    import evals.benchmarks as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.ispkg:
            importlib.import_module(f"{package.__name__}.{module.name}")


def list_benchmarks() -> list[str]:
    """Every ``name@variant`` the registry knows."""
    _discover()
    return sorted(f"{name}@{variant}" for name, cls in _REGISTRY.items() for variant in cls.variants)


def get_benchmark(reference: str) -> tuple[Benchmark, str]:
    """``name@variant`` (or ``name`` for its first variant) -> (benchmark instance, variant)."""
    _discover()
    name, _, variant = reference.partition("@")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        raise ValueError(f"unknown benchmark {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                         + f" Known: {', '.join(list_benchmarks())}")
    cls = _REGISTRY[name]
    variant = variant or next(iter(cls.variants))
    if variant not in cls.variants:
        raise ValueError(f"benchmark {name!r} has no variant {variant!r}; variants: {', '.join(cls.variants)}")
    return cls(), variant


def model_identity(model: dict[str, Any]) -> dict[str, Any]:
    """An adapter's description minus where its weights were read from: a moved checkpoint is the same
    model, a sampler setting (steps, guidance) is not."""
    return {key: value for key, value in model.items() if key != "weights_source"}


def produce_then_score_fingerprint(stage: str, produce: str, spec: BenchmarkSpec) -> str:
    """Fingerprints of a two-stage benchmark: ``produce`` for the produce stage; every later stage also
    depends on the whole spec (changing a scorer setting redoes scoring, never generation)."""
    return produce if stage == "produce" else canonical_hash({"produce": produce, "spec": spec.fingerprint})


def select_options(bench: Benchmark, given: dict[str, Any]) -> dict[str, Any]:
    """The options of ``given`` that ``bench`` declares, leaving out those not set (None)."""
    return {name: value for name, value in given.items() if name in bench.options and value is not None}
