"""The adapter protocol: the only way the harness reaches a model.

An adapter declares its capabilities (``reconstruct``, ``generate``, ``edit``, ``answer``); a benchmark
names the one it needs and the runtime refuses an adapter without it before any work starts.
Adding a model family is adding one adapter and registering it.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

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


class ModelAdapter(ABC):
    """Base of all adapters. Subclasses implement the methods of the capabilities they declare."""

    capabilities: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Identity of the model for results: name, weights source and digest, config."""

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise CapabilityError(
                f"{type(self).__name__} cannot '{capability}' (it can: "
                f"{', '.join(sorted(self.capabilities)) or 'nothing'})"
            )

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


def state_dict_digest(module: torch.nn.Module) -> str:
    """sha256 over every tensor of a module's state dict (names, dtypes, shapes, bytes), in key order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class UniLIPAdapter(ModelAdapter):
    """A UniLIP tokenizer behind the protocol (reconstruction; ``UniLIPGeneratorAdapter`` adds the rest)."""

    capabilities = frozenset({"reconstruct"})

    def __init__(self, tokenizer: Any, model_ref: str) -> None:
        self.tokenizer = tokenizer
        self.model_ref = model_ref
        self._digest: str | None = None

    def describe(self) -> dict[str, Any]:
        if self._digest is None:
            self._digest = state_dict_digest(self.tokenizer)
        return {
            "adapter": "unilip",
            "model": self.model_ref,
            "weights_source": self.tokenizer.weights_source,
            "weights_sha256": self._digest,
            "config": self.tokenizer.config.to_dict(),
            "native_size": self.tokenizer.config.image_size,
        }

    @property
    def native_size(self) -> int:
        return self.tokenizer.config.image_size

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        parameter = next(self.tokenizer.parameters())
        with torch.inference_mode():
            out = self.tokenizer.reconstruct(images.to(parameter.device, parameter.dtype))
        return out.float().cpu()


class UniLIPGeneratorAdapter(UniLIPAdapter):
    """A UniLIP generator behind the protocol: generation, editing, chat, and its tokenizer's reconstruction.

    Sampler settings (steps, guidance, flow shift) are the adapter's and appear in ``describe()``, so
    they enter every stage fingerprint: results made with other settings are never mixed.
    """

    capabilities = frozenset({"reconstruct", "generate", "edit", "answer"})

    def __init__(
        self, pipeline: Any, model_ref: str, steps: int = 20, guidance: float = 4.5, flow_shift: float = 3.0
    ) -> None:
        super().__init__(pipeline.model.tokenizer, model_ref)
        self.pipeline = pipeline
        self.sampler = {"steps": int(steps), "guidance": float(guidance), "flow_shift": float(flow_shift)}

    def describe(self) -> dict[str, Any]:
        if self._digest is None:
            self._digest = state_dict_digest(self.pipeline.model)
        model = self.pipeline.model
        return {
            "adapter": "unilip-generator",
            "model": self.model_ref,
            "weights_source": model.weights_source,
            "weights_sha256": self._digest,
            "config": {"tokenizer": model.tokenizer.config.to_dict(), "generator": model.config.to_dict()},
            "native_size": model.tokenizer.config.image_size,
            "sampler": self.sampler,
        }

    def generate(self, prompts: list[str], n: int, seed: int) -> list[list[Any]]:
        return self.pipeline.generate(prompts, n=n, seed=seed, **self.sampler)

    def edit(self, image: Any, instruction: str, seed: int) -> Any:
        return self.pipeline.edit(image, instruction, seed=seed, **self.sampler)

    def answer(self, requests: Sequence[AnswerRequest]) -> list[str]:
        # The MLLM part (encoder, mlp1, LLM, lm_head) viewed as InternVL3, with InternVL3's chat conventions.
        chat = self.__dict__.get("_chat")
        if chat is None:
            from unilip.pixels import IMAGENET_MEAN, IMAGENET_STD
            from unilip.understanding import InternVLChat

            config = self.pipeline.model.tokenizer.config
            if (tuple(config.image_mean), tuple(config.image_std)) != (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)):
                # InternVL3's tiles are ImageNet-normalised; this model's encoder expects other statistics.
                raise ValueError(
                    f"{self.model_ref}: its encoder normalises with mean {config.image_mean} / std "
                    f"{config.image_std}, not ImageNet's; answer with --model internvl:DIR --encoder {self.model_ref}"
                )
            chat = self.__dict__["_chat"] = InternVLChat(self.pipeline.model.mllm, self.pipeline.text_tokenizer)
        return answer_with_chat(chat, requests)


def answer_with_chat(chat: Any, requests: Sequence[AnswerRequest]) -> list[str]:
    """``requests`` answered by a :class:`unilip.understanding.InternVLChat`, one ``generate`` per
    ``max_new_tokens`` value (order kept): VLMEvalKit's InternVL3 conventions for each request's dataset."""
    from unilip.understanding import ChatRequest

    answers: list[str | None] = [None] * len(requests)
    by_budget: dict[int, list[int]] = {}
    for position, request in enumerate(requests):
        by_budget.setdefault(request.max_new_tokens, []).append(position)
    for budget, positions in by_budget.items():
        chats = [ChatRequest.from_parts(requests[i].parts, requests[i].dataset, requests[i].system) for i in positions]
        for position, text in zip(positions, chat.answer(chats, max_new_tokens=budget), strict=True):
            answers[position] = text
    return [str(text) for text in answers]


class InternVLAdapter(ModelAdapter):
    """A stock InternVL3 chat model (transformers layout), or one with a UniLIP encoder swapped in: ``answer``.

    The paper's understanding baseline (stock InternVL3-1B/2B) and how each UniLIP tokenizer is evaluated for
    understanding (its encoder and ``mlp1`` in InternVL3's slots, ``--encoder``). Its identity holds the weights'
    digest of the whole chat model, so another encoder is another model in every fingerprint.
    """

    capabilities = frozenset({"answer"})

    def __init__(self, chat: Any, model_ref: str, encoder_ref: str | None = None) -> None:
        self.chat = chat
        self.model_ref = model_ref
        self.encoder_ref = encoder_ref
        self._digest: str | None = None

    def describe(self) -> dict[str, Any]:
        if self._digest is None:
            self._digest = state_dict_digest(self.chat.model)
        model = self.chat.model
        return {
            "adapter": "internvl",
            "model": self.model_ref,
            "vision_encoder": self.encoder_ref or "InternVL3's own",
            "weights_source": getattr(model, "vision_encoder_source", self.model_ref),
            "weights_sha256": self._digest,
            "config": model.config.to_dict(),
            "chat": {"tile_size": self.chat.tile_size, "tokens_per_tile": self.chat.tokens_per_tile},
        }

    def answer(self, requests: Sequence[AnswerRequest]) -> list[str]:
        return answer_with_chat(self.chat, requests)


@dataclass(frozen=True)
class ModelInfo:
    """What a model reference is, known before its weights load (from configs and file headers).

    ``unilip eval run`` checks benchmarks, data and capabilities against it and builds every spec before
    spending minutes on a model load. Benchmarks read ``native_size`` (their default resolution).
    """

    adapter: str
    model: str
    capabilities: frozenset[str]
    native_size: int | None = None
    # Set when the adapter has no cheap probe and had to be loaded to answer (see ``register_adapter``).
    loaded: ModelAdapter | None = None

    def require(self, capability: str) -> None:
        """Raise ``CapabilityError`` unless the model can do ``capability``."""
        if capability not in self.capabilities:
            raise CapabilityError(
                f"{self.model} ({self.adapter}) cannot '{capability}' (it can: "
                f"{', '.join(sorted(self.capabilities)) or 'nothing'})"
            )


AdapterFactory = Callable[..., ModelAdapter]
AdapterProbe = Callable[..., ModelInfo]
_ADAPTERS: dict[str, tuple[AdapterFactory, AdapterProbe]] = {}


def register_adapter(name: str, factory: AdapterFactory, probe: AdapterProbe | None = None) -> None:
    """Make ``name:MODEL`` model references resolve through ``factory(MODEL, **options)``.

    ``probe(MODEL, **options)`` says what the model is without loading it (and raises, as the factory
    would, for a missing file or an unknown name). Without one, answering that means loading the model
    (once: ``load_adapter`` then reuses it), so the checks that need it come after the load.
    """
    if name in _ADAPTERS:
        raise ValueError(f"adapter {name!r} is already registered")
    _ADAPTERS[name] = (factory, probe)


_ENCODER_IS_FOR_INTERNVL = (
    "--encoder swaps a UniLIP encoder into a stock InternVL3: use it with --model internvl:INTERNVL3_DIR "
    "(a UniLIP model directory answers with its own encoder)"
)


def _unilip_probe(
    model: str, weights: str | None = None, random_init: bool = False, encoder: str | None = None, **_: Any
) -> ModelInfo:
    from unilip.variants import probe_reference

    if encoder is not None:
        raise ValueError(_ENCODER_IS_FOR_INTERNVL)

    info = probe_reference(model, weights, random_init=random_init)
    capabilities = UniLIPGeneratorAdapter.capabilities if info.kind == "generator" else UniLIPAdapter.capabilities
    return ModelInfo(
        "unilip-generator" if info.kind == "generator" else "unilip", model, capabilities, info.tokenizer.image_size
    )


def _unilip_factory(
    model: str,
    weights: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    steps: int | None = None,
    guidance: float | None = None,
    flow_shift: float | None = None,
    encoder: str | None = None,
) -> UniLIPAdapter:
    from unilip.variants import is_generator_reference

    if encoder is not None:
        raise ValueError(_ENCODER_IS_FOR_INTERNVL)

    sampler = {
        k: v for k, v in {"steps": steps, "guidance": guidance, "flow_shift": flow_shift}.items() if v is not None
    }
    if is_generator_reference(model):
        from unilip.pipelines import load_pipeline

        pipeline = load_pipeline(model, random_init=random_init, seed=seed, dtype=getattr(torch, dtype), device=device)
        return UniLIPGeneratorAdapter(pipeline, model, **sampler)
    if sampler:
        raise ValueError(
            f"{model} is a tokenizer (reconstruction only): sampler settings {sorted(sampler)} do not apply"
        )
    from unilip import load_tokenizer

    tokenizer = load_tokenizer(
        model, weights=weights, random_init=random_init, seed=seed, dtype=getattr(torch, dtype), device=device
    )
    return UniLIPAdapter(tokenizer, model)


register_adapter("unilip", _unilip_factory, _unilip_probe)


def _internvl_settings(
    weights: str | None = None, random_init: bool = False, encoder: str | None = None, **others: Any
) -> None:
    """Refuse run settings that mean nothing for an ``internvl:`` model (the probe and the factory share this)."""
    if random_init:
        raise ValueError("--random-init does not apply to internvl: models (they load a saved InternVL3 directory)")
    if weights is not None and encoder is None:
        raise ValueError("--weights with internvl: is the weights of an --encoder variant name; pass --encoder too")
    sampler = sorted(name for name in ("steps", "guidance", "flow_shift") if others.get(name) is not None)
    if sampler:
        raise ValueError(f"internvl: models answer greedily; {sampler} do not apply")


def _internvl_probe(model: str, **options: Any) -> ModelInfo:
    from unilip.understanding import probe_understanding

    _internvl_settings(**options)
    probe_understanding(model, options.get("encoder"), tokenizer_weights=options.get("weights"))
    return ModelInfo("internvl", model, InternVLAdapter.capabilities)


def _internvl_factory(model: str, **options: Any) -> InternVLAdapter:
    from unilip.understanding import InternVLChat

    _internvl_settings(**options)
    encoder = options.get("encoder")
    chat = InternVLChat.from_directory(
        Path(model),
        encoder,
        tokenizer_weights=options.get("weights"),
        dtype=getattr(torch, options.get("dtype", "float32")),
        device=options.get("device", "cpu"),
    )
    return InternVLAdapter(chat, model, encoder)


register_adapter("internvl", _internvl_factory, _internvl_probe)


def _split_reference(reference: str) -> tuple[str, str]:
    name, sep, model = reference.partition(":")
    if not sep or name not in _ADAPTERS:
        return "unilip", reference
    return name, model


def probe_adapter(reference: str, **options: Any) -> ModelInfo:
    """What ``ADAPTER:MODEL`` (or a bare MODEL, meaning ``unilip:MODEL``) is, without loading it."""
    name, model = _split_reference(reference)
    factory, probe = _ADAPTERS[name]
    if probe is not None:
        return probe(model, **options)
    adapter = factory(model, **options)
    return ModelInfo(
        name, model, frozenset(adapter.capabilities), getattr(adapter, "native_size", None), loaded=adapter
    )


def load_adapter(reference: str, info: ModelInfo | None = None, **options: Any) -> ModelAdapter:
    """Resolve ``ADAPTER:MODEL`` (or a bare MODEL, meaning ``unilip:MODEL``) to an adapter.

    ``info``: what :func:`probe_adapter` said of the same reference; a model it already loaded is reused.
    """
    if info is not None and info.loaded is not None:
        return info.loaded
    name, model = _split_reference(reference)
    return _ADAPTERS[name][0](model, **options)
