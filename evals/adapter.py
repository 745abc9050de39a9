"""The adapter protocol, the only way the harness reaches a model, and the registry that resolves references.

An adapter declares its capabilities (``reconstruct``, ``generate``, ``edit``, ``answer``); a benchmark
names the one it needs and the runtime refuses an adapter without it before any work starts.
Adding a model family is adding one adapter: a :class:`ModelAdapter` subclass with ``load`` (and, for
checks before minutes of loading, ``probe``), made known by one of

- the built-in table (:data:`BUILTIN_ADAPTERS`: ``unilip``, ``internvl``, ``diffusers-ae``, ``diffusers-pipe``,
  ``hf-vlm``, ``folder``, one module each in ``evals/adapters/``);
- the ``unilip.adapters`` entry-point group of an installed package (``name = "pkg.module:MyAdapter"``);
- a ``module.path:factory=MODEL`` reference, which imports ``module.path`` and calls ``factory(MODEL, ...)``
  (no packaging);
- :func:`register_adapter` (in code: tests, notebooks).

A reference is ``ADAPTER:MODEL``; a bare ``MODEL`` is ``unilip:MODEL``. An unknown ``ADAPTER`` is an error that
suggests the closest names, never a fallback to ``unilip``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CAPABILITIES = ("reconstruct", "generate", "edit", "answer")
ENTRY_POINT_GROUP = "unilip.adapters"

# Run settings an adapter may take, and the flag a user gives each by (for refusals that name the flag).
# ``seed``, ``device`` and ``dtype`` always have a value; the others are passed only when given.
OPTION_FLAGS = {
    "seed": "--seed",
    "device": "--device",
    "dtype": "--dtype",
    "weights": "--weights",
    "random_init": "--random-init",
    "encoder": "--encoder",
    "steps": "--steps",
    "guidance": "--guidance",
    "flow_shift": "flow_shift",
}
ALWAYS_GIVEN = ("seed", "device", "dtype")

# name -> "module:ModelAdapter subclass", imported only when a reference names it (diffusers and transformers
# load only when used). Strings, not imports: the adapters import this module.
BUILTIN_ADAPTERS: dict[str, str] = {
    "unilip": "evals.adapters.unilip:UniLIPAdapter",
    "internvl": "evals.adapters.internvl:InternVLAdapter",
    "diffusers-ae": "evals.adapters.diffusers_ae:DiffusersAutoencoderAdapter",
    "diffusers-pipe": "evals.adapters.diffusers_pipe:DiffusersPipelineAdapter",
    "hf-vlm": "evals.adapters.hf_vlm:HFVisionLanguageAdapter",
    "folder": "evals.adapters.folder:FolderAdapter",
}


class CapabilityError(ValueError):
    """The model behind an adapter cannot do what a benchmark asks."""


class UnknownAdapterError(ValueError):
    """A reference names an adapter that is neither built in, installed, registered nor importable."""


@dataclass(frozen=True)
class AnswerRequest:
    """One question for a model that can ``answer``: text and images in order, and how to decode.

    Attributes:
        parts: text (``str``) and PIL images, interleaved in the order the benchmark's message has them
            (VLMEvalKit's: the text, then the images); zero, one or several images.
        dataset: the VLMEvalKit name of the benchmark asking (``MMBench_DEV_EN``, ``MMMU_DEV_VAL`` ...), from
            which a model applies its own per-benchmark conventions (InternVL3's tile limits); None for none.
        system: the system message; None for the model's own default.
        max_new_tokens: the most tokens an answer may have. Decoding is greedy.
    """

    parts: tuple[Any, ...]
    dataset: str | None = None
    system: str | None = None
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens is at least 1; got {self.max_new_tokens}")
        if not any(isinstance(part, str) and part for part in self.parts):
            raise ValueError("an answer request needs some text")


@dataclass(frozen=True)
class ModelInfo:
    """What a model reference is, known before its weights load (from configs and file headers).

    ``unilip eval run`` checks benchmarks, data and capabilities against it and builds every spec before
    spending minutes on a model load. Benchmarks read ``native_size`` (their default resolution) and
    ``size_multiple`` (a resolution the model takes must be a multiple of it).
    """

    adapter: str
    model: str
    capabilities: frozenset[str]
    native_size: int | None = None
    # Set when the adapter has no cheap probe and had to be loaded to answer (see ``register_adapter``).
    loaded: ModelAdapter | None = None
    size_multiple: int = 1

    def require(self, capability: str) -> None:
        """Raise ``CapabilityError`` unless the model can do ``capability``."""
        if capability not in self.capabilities:
            raise CapabilityError(
                f"{self.model} ({self.adapter}) cannot '{capability}' (it can: "
                f"{', '.join(sorted(self.capabilities)) or 'nothing'})"
            )


@dataclass(frozen=True)
class OutputCheck:
    """What a ``keyed_outputs`` adapter holds for a benchmark's items: the missing ones (key -> reason, each a
    failed item) and the outputs no item asks for (listed in the results)."""

    missing: dict[str, str]
    extra: tuple[str, ...]


class ModelAdapter(ABC):
    """Base of all adapters. Subclasses implement the methods of the capabilities they declare.

    Class attributes:
        capabilities: what an instance can do.
        offers: what the adapter can do for some model (``unilip eval adapters`` lists it; default:
            ``capabilities``). The unilip adapter reconstructs with any UniLIP model and generates only
            with a generator.
        summary: one line for ``unilip eval adapters``.
        keyed_outputs: the adapter reads outputs made elsewhere (``folder:``): benchmarks pass each item's
            output key (``keys=``, see :func:`keyed`) and the runtime asks :meth:`check_outputs` before producing.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    offers: ClassVar[frozenset[str] | None] = None
    summary: ClassVar[str] = ""
    keyed_outputs: ClassVar[bool] = False

    @classmethod
    def load(cls, model: str, **options: Any) -> ModelAdapter:
        """The adapter for ``model`` (the part of the reference after ``ADAPTER:``), loaded.

        ``options`` are the run settings the signature names (see :data:`OPTION_FLAGS`); a setting the
        user gave that the signature does not name is refused by the registry, never ignored.
        """
        raise NotImplementedError(f"{cls.__name__} does not implement load()")

    @classmethod
    def probe(cls, model: str, **options: Any) -> ModelInfo | None:
        """What ``model`` is without loading it (configs and file headers only), or None when that needs the
        model loaded. It raises, as ``load`` would, for a missing file or a model it cannot take."""
        return None

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Identity of the model for results and fingerprints: adapter, model, weights source and sha256
        digest, config, dtype, and anything else that changes outputs."""

    def weights_digest(self, *modules: torch.nn.Module) -> str:
        """:func:`state_dict_digest` of ``modules``, computed on the first call and kept (weights do not change
        during a run; hashing a real-size model takes seconds)."""
        cached = self.__dict__.get("_weights_digest")
        if cached is None:
            cached = self.__dict__["_weights_digest"] = state_dict_digest(*modules)
        return cached

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise CapabilityError(
                f"{type(self).__name__} cannot '{capability}' (it can: "
                f"{', '.join(sorted(self.capabilities)) or 'nothing'})"
            )

    def check_outputs(self, capability: str, keys: Sequence[str], per_item: int = 1) -> OutputCheck:
        """Of the output ``keys`` a benchmark will ask for (``per_item`` images each), those this adapter cannot
        produce, and what it holds that no key asks for. Only adapters with ``keyed_outputs`` are asked; the
        runtime fails the missing items with their reason and lists the extra ones in the results."""
        return OutputCheck({}, ())

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` images in [0, 1] -> reconstructions in [0, 1], same shape."""
        self.require("reconstruct")
        raise NotImplementedError(f"{type(self).__name__} declares 'reconstruct' but does not implement it")

    def generate(self, prompts: list[str], n: int, seed: int) -> list[list[Any]]:
        """``n`` images per prompt; image k of a prompt depends only on (prompt, seed, k)."""
        self.require("generate")
        raise NotImplementedError(f"{type(self).__name__} declares 'generate' but does not implement it")

    def edit(self, image: Any, instruction: str, seed: int) -> Any:
        """One edited image."""
        self.require("edit")
        raise NotImplementedError(f"{type(self).__name__} declares 'edit' but does not implement it")

    def answer(self, requests: Sequence[AnswerRequest]) -> list[str]:
        """Greedy text answers to ``requests``, in order. Batch as you like: an answer must not depend on the
        other requests of the call (the understanding benchmarks batch by ``--batch-size``)."""
        self.require("answer")
        raise NotImplementedError(f"{type(self).__name__} declares 'answer' but does not implement it")


def keyed(adapter: Any, keys: Sequence[str]) -> dict[str, Any]:
    """The keyword a benchmark adds to a produce call: ``{"keys": keys}`` for adapters that read outputs made
    elsewhere (``keyed_outputs``), nothing for models (whose protocol methods take no keys)."""
    return {"keys": list(keys)} if getattr(adapter, "keyed_outputs", False) else {}


def answer_by_budget(
    requests: Sequence[AnswerRequest], answer_group: Callable[[list[AnswerRequest], int], list[str]]
) -> list[str]:
    """``requests`` answered in one call of ``answer_group(requests, max_new_tokens)`` per ``max_new_tokens``
    value among them (generate takes one budget per call), the answers put back in the requests' order."""
    answers: list[str | None] = [None] * len(requests)
    by_budget: dict[int, list[int]] = {}
    for position, request in enumerate(requests):
        by_budget.setdefault(request.max_new_tokens, []).append(position)
    for budget, positions in by_budget.items():
        texts = answer_group([requests[i] for i in positions], budget)
        for position, text in zip(positions, texts, strict=True):
            answers[position] = text
    return [str(text) for text in answers]


def state_dict_digest(*modules: torch.nn.Module) -> str:
    """sha256 over every tensor of the modules' state dicts (names, dtypes, shapes, bytes), in key order."""
    import torch

    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        prefix = f"{index}." if len(modules) > 1 else ""
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{prefix}{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def local_model_path(model: str, what: str) -> Path:
    """A model directory or file named by a local path, or by a Hugging Face repo id found in the local cache.

    Args:
        model: a path, or ``namespace/name`` (never downloaded: read from the local Hugging Face cache).
        what: what is expected there, for the error (``"a diffusers autoencoder directory"``).

    Raises:
        FileNotFoundError: neither a path that exists nor a cached repo (the message says which, and how to
            get the repo).
    """
    from unilip.persistence import resolve_pretrained

    path = resolve_pretrained(model)
    if not path.exists():
        raise FileNotFoundError(f"{model} does not exist (expected {what})")
    return path


# ------------------------------------------------------------------------------------------------ the registry
AdapterFactory = Callable[..., ModelAdapter]
AdapterProbe = Callable[..., ModelInfo]


@dataclass(frozen=True)
class AdapterEntry:
    """One resolvable adapter name: how to load and (optionally) probe a model, and what it offers."""

    name: str
    factory: AdapterFactory
    probe: AdapterProbe | None
    offers: frozenset[str] | None  # None: known only once a model is loaded
    summary: str
    origin: str  # "built-in", "entry point pkg.module:Obj", "registered in code", "module:factory"
    keyed_outputs: bool = False  # outputs made elsewhere (folder:): only benchmarks, which name each item, can ask


def _entry_from_object(name: str, target: Any, origin: str) -> AdapterEntry:
    """An entry from a :class:`ModelAdapter` subclass (``load``/``probe``) or a plain factory callable."""
    if isinstance(target, type) and issubclass(target, ModelAdapter):
        offers = target.offers if target.offers is not None else target.capabilities
        return AdapterEntry(
            name, target.load, target.probe, frozenset(offers), target.summary, origin, target.keyed_outputs
        )
    if not callable(target):
        raise TypeError(f"adapter {name} ({origin}) is neither a ModelAdapter subclass nor a callable factory")
    offers = getattr(target, "capabilities", None)
    summary = (inspect.getdoc(target) or "").split("\n", 1)[0]
    return AdapterEntry(name, target, None, frozenset(offers) if offers else None, summary, origin)


_REGISTERED: dict[str, AdapterEntry] = {}


def register_adapter(name: str, factory: Any, probe: AdapterProbe | None = None) -> None:
    """Make ``name:MODEL`` references resolve through ``factory`` (in code: tests, notebooks).

    ``factory``: a :class:`ModelAdapter` subclass (its ``load`` and ``probe``), or a callable
    ``factory(MODEL, **options) -> ModelAdapter``. ``probe(MODEL, **options) -> ModelInfo`` says what the model
    is without loading it; without one, answering that means loading the model (once: :func:`load_adapter`
    then reuses it), so the checks that need it come after the load.
    """
    if name in _REGISTERED or name in _builtin_names():
        raise ValueError(f"adapter {name!r} is already registered")
    entry = _entry_from_object(name, factory, "registered in code")
    if probe is not None:
        entry = AdapterEntry(name, entry.factory, probe, entry.offers, entry.summary, entry.origin)
    _REGISTERED[name] = entry


def _builtin_names() -> tuple[str, ...]:
    return tuple(BUILTIN_ADAPTERS)


def _import_object(target: str, what: str) -> Any:
    """``"pkg.module:Name"`` -> the object (errors name the target and what it was for)."""
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UnknownAdapterError(f"{what}: cannot import {module_name} ({error})") from None
    obj: Any = module
    for part in attribute.split(".") if attribute else ():
        if not hasattr(obj, part):
            raise UnknownAdapterError(f"{what}: {module_name} has no {attribute}")
        obj = getattr(obj, part)
    return obj


def _installed_entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def adapter_entries() -> dict[str, AdapterEntry]:
    """Every adapter a reference can name: built in, installed (entry points), registered in code.

    An installed adapter may not take a built-in's name (it is skipped, with a warning): ``unilip:`` and the
    others always mean what this package documents.
    """
    entries = {
        name: _entry_from_object(name, _import_object(target, f"built-in adapter {name}"), "built-in")
        for name, target in BUILTIN_ADAPTERS.items()
    }
    for name, point in _installed_entry_points().items():
        if name in entries:
            logger.warning("entry point %s = %s takes a built-in adapter's name; ignored", name, point.value)
            continue
        entries[name] = _entry_from_object(
            name, _import_object(point.value, f"entry point {name} = {point.value}"), f"entry point {point.value}"
        )
    entries.update(_REGISTERED)
    return entries


def _adapter_entry(name: str) -> AdapterEntry | None:
    """One entry by name, importing only that adapter (resolution must not import every installed plug-in)."""
    if name in BUILTIN_ADAPTERS:
        return _entry_from_object(name, _import_object(BUILTIN_ADAPTERS[name], f"built-in adapter {name}"), "built-in")
    if name in _REGISTERED:
        return _REGISTERED[name]
    point = _installed_entry_points().get(name)
    if point is None:
        return None
    return _entry_from_object(
        name, _import_object(point.value, f"entry point {name} = {point.value}"), f"entry point {point.value}"
    )


def _known_names() -> list[str]:
    return sorted({*BUILTIN_ADAPTERS, *_installed_entry_points(), *_REGISTERED})


# "pkg.module:factory=MODEL": a dotted module path, an attribute, then the model.
_MODULE_FACTORY = re.compile(r"^(?P<module>[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_][\w.]*)=(?P<model>.*)$")
# What reads as an adapter prefix: a name (not a Windows drive letter, not a path).
_PREFIX = re.compile(r"^(?P<name>[A-Za-z][\w.-]+):(?P<model>.*)$")


@dataclass(frozen=True)
class ParsedReference:
    """A model reference split into the adapter that resolves it and the model part it is given."""

    entry: AdapterEntry
    model: str


def parse_reference(reference: str) -> ParsedReference:
    """``ADAPTER:MODEL``, ``pkg.module:factory=MODEL`` or a bare ``MODEL`` (meaning ``unilip:MODEL``).

    Raises:
        UnknownAdapterError: a prefix that names no adapter (with the closest names and the list), or a
            ``module:factory`` that cannot be imported.
    """
    match = _PREFIX.match(reference)
    if match and not Path(reference).exists():
        name = match["name"]
        entry = _adapter_entry(name)
        if entry is not None:
            return ParsedReference(entry, match["model"])
        factory = _MODULE_FACTORY.match(reference)
        if factory:
            target = f"{factory['module']}:{factory['attr']}"
            obj = _import_object(target, f"--model {reference}")
            return ParsedReference(_entry_from_object(target, obj, "module:factory"), factory["model"])
        known = _known_names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(f'{c}:' for c in close)}?" if close else ""
        raise UnknownAdapterError(
            f"unknown adapter {name!r} in model reference {reference!r}.{hint} Installed adapters: "
            f"{', '.join(known)} (`unilip eval adapters` lists them); a module of your own: "
            "--model pkg.module:factory=MODEL; a local path: give it as ./PATH"
        )
    entry = _adapter_entry("unilip")
    assert entry is not None
    return ParsedReference(entry, reference)


def _options_for(entry: AdapterEntry, call: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The run settings ``call`` takes; a setting the user gave that it does not take is refused."""
    given = {
        key: value
        for key, value in options.items()
        if key in ALWAYS_GIVEN or (value is not None and value is not False)
    }
    try:
        parameters = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return given
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return given
    taken = {key: value for key, value in given.items() if key in parameters}
    refused = sorted(key for key in given if key not in parameters and key not in ALWAYS_GIVEN)
    if refused:
        flags = ", ".join(OPTION_FLAGS.get(key, key) for key in refused)
        raise ValueError(f"{flags} does not apply to {entry.name}: models (it takes none of them); drop it")
    return taken


def probe_adapter(reference: str, **options: Any) -> ModelInfo:
    """What ``reference`` is, without loading it when its adapter has a probe (else it is loaded, once)."""
    parsed = parse_reference(reference)
    entry = parsed.entry
    if entry.probe is not None:
        info = entry.probe(parsed.model, **_options_for(entry, entry.probe, options))
        if info is not None:
            return info
    adapter = entry.factory(parsed.model, **_options_for(entry, entry.factory, options))
    if not isinstance(adapter, ModelAdapter):
        raise TypeError(f"adapter {entry.name} ({entry.origin}) returned {type(adapter).__name__}, not a ModelAdapter")
    return ModelInfo(
        entry.name,
        reference,
        frozenset(adapter.capabilities),
        getattr(adapter, "native_size", None),
        loaded=adapter,
        size_multiple=int(getattr(adapter, "size_multiple", 1)),
    )


def load_adapter(reference: str, info: ModelInfo | None = None, **options: Any) -> ModelAdapter:
    """Resolve ``ADAPTER:MODEL`` (or a bare MODEL, meaning ``unilip:MODEL``) to a loaded adapter.

    ``info``: what :func:`probe_adapter` said of the same reference; a model it already loaded is reused.
    """
    if info is not None and info.loaded is not None:
        return info.loaded
    parsed = parse_reference(reference)
    entry = parsed.entry
    adapter = entry.factory(parsed.model, **_options_for(entry, entry.factory, options))
    if not isinstance(adapter, ModelAdapter):
        raise TypeError(f"adapter {entry.name} ({entry.origin}) returned {type(adapter).__name__}, not a ModelAdapter")
    return adapter


def load_for_command(reference: str, capability: str, **options: Any) -> ModelAdapter:
    """The adapter of an ``ADAPTER:MODEL`` reference for a model-side command (``unilip reconstruct`` ...):
    probed, checked for ``capability`` before the load, then loaded (``unilip.references`` calls this)."""
    if parse_reference(reference).entry.keyed_outputs:
        raise ValueError(
            f"{reference} holds outputs made elsewhere, matched to a benchmark's items: score it with "
            "`unilip eval run --model ... --bench ...`; it cannot make new ones"
        )
    info = probe_adapter(reference, **options)
    info.require(capability)
    return load_adapter(reference, info, **options)
