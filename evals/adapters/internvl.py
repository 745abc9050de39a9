"""``internvl:DIR``: a stock InternVL3 chat model, or one with a UniLIP encoder swapped in (``--encoder``).

It answers with VLMEvalKit's InternVL3 conventions for each benchmark (tiles, layouts, MMMU's upscale):
the paper's understanding baseline and how each UniLIP tokenizer is evaluated for understanding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evals.adapter import AnswerRequest, ModelAdapter, ModelInfo, answer_by_budget, local_model_path

_WHAT = "an InternVL3 chat model directory in transformers' format (or its repo id in the local Hugging Face cache)"


def answer_with_chat(chat: Any, requests: Sequence[AnswerRequest]) -> list[str]:
    """``requests`` answered by a :class:`unilip.understanding.InternVLChat`, one ``generate`` per
    ``max_new_tokens`` value (order kept): VLMEvalKit's InternVL3 conventions for each request's dataset."""
    from unilip.understanding import ChatRequest

    def answer_group(group: list[AnswerRequest], budget: int) -> list[str]:
        chats = [ChatRequest.from_parts(request.parts, request.dataset, request.system) for request in group]
        return chat.answer(chats, max_new_tokens=budget)

    return answer_by_budget(requests, answer_group)


def _check_settings(weights: str | None, random_init: bool, encoder: str | None, sampler: dict[str, Any]) -> None:
    """Refuse run settings that mean nothing for an ``internvl:`` model (the probe and the loader share this)."""
    if random_init:
        raise ValueError("--random-init does not apply to internvl: models (they load a saved InternVL3 directory)")
    if weights is not None and encoder is None:
        raise ValueError("--weights with internvl: is the weights of an --encoder variant name; pass --encoder too")
    given = sorted(name for name, value in sampler.items() if value is not None)
    if given:
        raise ValueError(f"internvl: models answer greedily; {given} do not apply")


class InternVLAdapter(ModelAdapter):
    """A stock InternVL3 chat model (transformers layout), or one with a UniLIP encoder swapped in: ``answer``.

    Its identity holds the weights' digest of the whole chat model, so another encoder is another model in
    every fingerprint.
    """

    capabilities = frozenset({"answer"})
    summary = "stock InternVL3 (optionally with a UniLIP encoder, --encoder) with VLMEvalKit's InternVL3 prompts"

    def __init__(self, chat: Any, model_ref: str, encoder_ref: str | None = None) -> None:
        self.chat = chat
        self.model_ref = model_ref
        self.encoder_ref = encoder_ref

    @classmethod
    def probe(
        cls,
        model: str,
        weights: str | None = None,
        random_init: bool = False,
        encoder: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        flow_shift: float | None = None,
        **_: Any,
    ) -> ModelInfo:
        from unilip.understanding import probe_understanding

        _check_settings(weights, random_init, encoder, {"steps": steps, "guidance": guidance, "flow_shift": flow_shift})
        probe_understanding(str(local_model_path(model, _WHAT)), encoder, tokenizer_weights=weights)
        return ModelInfo("internvl", model, cls.capabilities)

    @classmethod
    def load(
        cls,
        model: str,
        weights: str | None = None,
        random_init: bool = False,
        encoder: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        steps: int | None = None,
        guidance: float | None = None,
        flow_shift: float | None = None,
        **_: Any,
    ) -> InternVLAdapter:
        from unilip.understanding import InternVLChat

        _check_settings(weights, random_init, encoder, {"steps": steps, "guidance": guidance, "flow_shift": flow_shift})
        chat = InternVLChat.from_directory(
            local_model_path(model, _WHAT),
            encoder,
            tokenizer_weights=weights,
            dtype=getattr(torch, dtype),
            device=device,
        )
        return InternVLAdapter(chat, model, encoder)

    def describe(self) -> dict[str, Any]:
        model = self.chat.model
        return {
            "adapter": "internvl",
            "model": self.model_ref,
            "vision_encoder": self.encoder_ref or "InternVL3's own",
            "weights_source": getattr(model, "vision_encoder_source", self.model_ref),
            "weights_sha256": self.weights_digest(self.chat.model),
            "config": model.config.to_dict(),
            "chat": {"tile_size": self.chat.tile_size, "tokens_per_tile": self.chat.tokens_per_tile},
        }

    def answer(self, requests: Sequence[AnswerRequest]) -> list[str]:
        return answer_with_chat(self.chat, requests)
