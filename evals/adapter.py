"""The adapter protocol: the only way the harness reaches a model.

An adapter declares its capabilities (``reconstruct``, ``generate``, ``edit``, ``answer``); a benchmark
names the one it needs and the runtime refuses an adapter without it before any work starts.
Adding a model family is adding one adapter: a :class:`ModelAdapter` subclass with ``load`` (and, for
checks before minutes of loading, ``probe``), made known to :mod:`evals.registry` (built in, by entry point,
or as ``pkg.module:factory=MODEL``).
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CAPABILITIES = ("reconstruct", "generate", "edit", "answer")


class CapabilityError(ValueError):
    """The model behind an adapter cannot do what a benchmark asks."""


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
    # Set when the adapter has no cheap probe and had to be loaded to answer (see ``evals.registry.register_adapter``).
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
        weights_changed: what a changed weights digest means, said when a run directory refuses the model.
        keyed_outputs: the adapter reads outputs made elsewhere (``folder:``): benchmarks pass each item's
            output key (``keys=``, see :func:`keyed`) and the runtime asks :meth:`check_outputs` before producing.

    Batching across items (optional): an adapter that defines ``generate_batch(prompts, n, seeds)`` (image k
    of prompt i seeded by ``seeds[i] + k``) or ``edit_batch(images, instructions, seeds)`` is given up to
    ``--batch-size`` items per call, each with its own seed; it must return for each item what a call with
    that item alone returns, bit for bit. Benchmarks reach both through :func:`generate_items` and
    :func:`edit_items`, which call ``generate`` / ``edit`` once per item for an adapter without them.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    offers: ClassVar[frozenset[str] | None] = None
    summary: ClassVar[str] = ""
    keyed_outputs: ClassVar[bool] = False
    # What a changed weights digest means for this adapter, for the refusal of a run directory holding the
    # earlier one ("" for models: another checkpoint is simply another model).
    weights_changed: ClassVar[str] = ""

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

    def check_outputs(
        self, capability: str, keys: Sequence[str], per_item: int = 1, size: int | None = None
    ) -> OutputCheck:
        """Of the output ``keys`` a benchmark will ask for (``per_item`` images each, ``size`` x ``size`` when the
        benchmark fixes it), those this adapter cannot produce, and what it holds that no key asks for. Only
        adapters with ``keyed_outputs`` are asked; the runtime fails the missing items with their reason and lists
        the extra ones in the results."""
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


def generate_items(
    adapter: Any, prompts: Sequence[str], n: int, seeds: Sequence[int], keys: Sequence[str]
) -> list[Any]:
    """For each prompt, what ``adapter.generate([prompt], n, seed)`` returns (``[[n images]]`` when well
    formed): from one ``generate_batch`` call when the adapter has it, else from one ``generate`` call per
    prompt (with its output key for a ``keyed_outputs`` adapter). Each benchmark checks the shape per item.

    Raises:
        ValueError: ``generate_batch`` answered with other than one list of images per prompt.
    """
    if len({len(prompts), len(seeds), len(keys)}) != 1:
        raise ValueError(f"{len(prompts)} prompts, {len(seeds)} seeds and {len(keys)} keys: give one of each")
    batch = getattr(adapter, "generate_batch", None)
    if batch is None or getattr(adapter, "keyed_outputs", False):
        return [
            adapter.generate([prompt], n, seed, **keyed(adapter, [key]))
            for prompt, seed, key in zip(prompts, seeds, keys, strict=True)
        ]
    images = batch(list(prompts), n, [int(seed) for seed in seeds])
    if not isinstance(images, list) or len(images) != len(prompts):
        raise ValueError(
            f"{type(adapter).__name__}.generate_batch returned {type(images).__name__} "
            f"for {len(prompts)} prompts; want one list of images per prompt"
        )
    return [[row] for row in images]


def edit_items(
    adapter: Any, images: Sequence[Any], instructions: Sequence[str], seeds: Sequence[int], keys: Sequence[str]
) -> list[Any]:
    """For each edit, what ``adapter.edit(image, instruction, seed)`` returns: from one ``edit_batch`` call when
    the adapter has it, else from one ``edit`` call per edit (with its output key for a ``keyed_outputs``
    adapter).

    Raises:
        ValueError: ``edit_batch`` answered with other than one image per edit.
    """
    if len({len(images), len(instructions), len(seeds), len(keys)}) != 1:
        raise ValueError(
            f"{len(images)} images, {len(instructions)} instructions, {len(seeds)} seeds and {len(keys)} keys: "
            "give one of each"
        )
    batch = getattr(adapter, "edit_batch", None)
    if batch is None or getattr(adapter, "keyed_outputs", False):
        return [
            adapter.edit(image, instruction, seed, **keyed(adapter, [key]))
            for image, instruction, seed, key in zip(images, instructions, seeds, keys, strict=True)
        ]
    edited = batch(list(images), list(instructions), [int(seed) for seed in seeds])
    if not isinstance(edited, list) or len(edited) != len(images):
        raise ValueError(
            f"{type(adapter).__name__}.edit_batch returned {type(edited).__name__} "
            f"for {len(images)} edits; want one image per edit"
        )
    return edited


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


# Config keys that say where a model was read from, not what it is: a moved directory is the same model.
_WHERE_KEYS = ("_name_or_path", "name_or_path")


def portable_config(config: Any) -> Any:
    """A model's config for its identity: plain JSON types (dtypes and other objects as their strings), without
    the keys that record where it was loaded from (``_name_or_path``), at any depth."""
    import json

    def drop(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: drop(item) for key, item in value.items() if key not in _WHERE_KEYS}
        if isinstance(value, list):
            return [drop(item) for item in value]
        return value

    return drop(json.loads(json.dumps(config, default=str)))


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
