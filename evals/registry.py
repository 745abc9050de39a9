"""The adapter registry: which adapters a model reference can name, and resolving one to a loaded adapter.

Adapters (:class:`evals.adapter.ModelAdapter` subclasses) are made known by

- the built-in table (:data:`BUILTIN_ADAPTERS`: ``unilip``, ``internvl``, ``diffusers-ae``, ``diffusers-pipe``,
  ``hf-vlm``, ``folder``, one module each in ``evals/adapters/``);
- the ``unilip.adapters`` entry-point group of an installed package (``name = "pkg.module:MyAdapter"``);
- a ``module.path:factory=MODEL`` reference, which imports ``module.path`` and calls ``factory(MODEL, ...)``
  (no packaging);
- :func:`register_adapter` (in code: tests, notebooks).

A reference is ``ADAPTER:MODEL``; a bare ``MODEL`` is ``unilip:MODEL``. An unknown ``ADAPTER`` is an error that
suggests the closest names, never a fallback to ``unilip``. The protocol lives in :mod:`evals.adapter`, which
imports nothing of this module (the adapters import the protocol; this module imports the adapters).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.adapter import ModelAdapter, ModelInfo

logger = logging.getLogger(__name__)

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
    "flow_shift": "--flow-shift",
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


class UnknownAdapterError(ValueError):
    """A reference names an adapter that is neither built in, installed, registered nor importable."""


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
    _REGISTERED[name] = dataclasses.replace(entry, probe=probe) if probe is not None else entry


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

    points: dict[str, Any] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in points and points[point.name].value != point.value:
            raise UnknownAdapterError(
                f"two installed packages declare the adapter {point.name!r} ({points[point.name].value} and "
                f"{point.value}); uninstall one"
            )
        points[point.name] = point
    return points


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
        try:
            entries[name] = _entry_from_object(
                name, _import_object(point.value, f"entry point {name} = {point.value}"), f"entry point {point.value}"
            )
        except (UnknownAdapterError, TypeError) as error:
            # One broken plug-in must not hide the others: it is listed with what is wrong with it.
            entries[name] = AdapterEntry(name, _broken(error), None, None, f"cannot be loaded: {error}", "broken")
    entries.update(_REGISTERED)
    return entries


def _broken(error: Exception) -> AdapterFactory:
    def refuse(model: str, **_: Any) -> ModelAdapter:
        raise UnknownAdapterError(str(error))

    return refuse


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
            if not match["model"].strip():
                raise ValueError(f"{name}: names no model: give {name}:MODEL (a directory, or a repo id)")
            return ParsedReference(entry, match["model"])
        factory = _MODULE_FACTORY.match(reference)
        if factory:
            target = f"{factory['module']}:{factory['attr']}"
            if not factory["model"].strip():
                raise ValueError(f"{reference}: names no model: give {target}=MODEL")
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
    probed, checked for ``capability`` before the load, then loaded (``evals.cli`` wraps those commands with it)."""
    if parse_reference(reference).entry.keyed_outputs:
        raise ValueError(
            f"{reference} holds outputs made elsewhere, matched to a benchmark's items: score it with "
            "`unilip eval run --model ... --bench ...`; it cannot make new ones"
        )
    info = probe_adapter(reference, **options)
    info.require(capability)
    return load_adapter(reference, info, **options)
