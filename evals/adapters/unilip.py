"""``unilip:`` (and a bare reference): a UniLIP tokenizer (reconstruction) or generator (all four capabilities).

The reference is anything ``unilip.load_tokenizer`` / ``unilip.load_generator`` take: a variant name or YAML, a
saved directory, a released model directory or tokenizer ``.pth``, or a repo id in the local Hugging Face cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evals.adapter import AnswerRequest, ModelAdapter, ModelInfo

_ENCODER_IS_FOR_INTERNVL = (
    "--encoder swaps a UniLIP encoder into a stock InternVL3: use it with --model internvl:INTERNVL3_DIR "
    "(a UniLIP model directory answers with its own encoder)"
)


class UniLIPAdapter(ModelAdapter):
    """A UniLIP tokenizer behind the protocol (reconstruction; ``UniLIPGeneratorAdapter`` adds the rest)."""

    capabilities = frozenset({"reconstruct"})
    offers = frozenset({"reconstruct", "generate", "edit", "answer"})
    summary = "UniLIP: tokenizers reconstruct; generators (tiny-digits, UniLIP-1B/3B) also generate, edit, answer"

    def __init__(self, tokenizer: Any, model_ref: str) -> None:
        self.tokenizer = tokenizer
        self.model_ref = model_ref

    @classmethod
    def probe(
        cls, model: str, weights: str | None = None, random_init: bool = False, encoder: str | None = None, **_: Any
    ) -> ModelInfo:
        from unilip.variants import probe_reference

        if encoder is not None:
            raise ValueError(_ENCODER_IS_FOR_INTERNVL)
        info = probe_reference(model, weights, random_init=random_init)
        generator = info.kind == "generator"
        return ModelInfo(
            "unilip-generator" if generator else "unilip",
            model,
            UniLIPGeneratorAdapter.capabilities if generator else UniLIPAdapter.capabilities,
            info.tokenizer.image_size,
        )

    @classmethod
    def load(
        cls,
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

            pipeline = load_pipeline(
                model, random_init=random_init, seed=seed, dtype=getattr(torch, dtype), device=device
            )
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

    def describe(self) -> dict[str, Any]:
        return {
            "adapter": "unilip",
            "model": self.model_ref,
            "weights_source": self.tokenizer.weights_source,
            "weights_sha256": self.weights_digest(self.tokenizer),
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
        model = self.pipeline.model
        return {
            "adapter": "unilip-generator",
            "model": self.model_ref,
            "weights_source": model.weights_source,
            "weights_sha256": self.weights_digest(self.pipeline.model),
            "config": {"tokenizer": model.tokenizer.config.to_dict(), "generator": model.config.to_dict()},
            "native_size": model.tokenizer.config.image_size,
            "sampler": self.sampler,
        }

    def generate(self, prompts: list[str], n: int, seed: int) -> list[list[Any]]:
        return self.pipeline.generate(prompts, n=n, seed=seed, **self.sampler)

    def generate_batch(self, prompts: list[str], n: int, seeds: list[int]) -> list[list[Any]]:
        """``n`` images per prompt, image k of prompt i seeded ``seeds[i] + k``; each as generated alone."""
        return self.pipeline.generate_many(prompts, seeds, n=n, **self.sampler)

    def edit(self, image: Any, instruction: str, seed: int) -> Any:
        return self.pipeline.edit(image, instruction, seed=seed, **self.sampler)

    def edit_batch(self, images: list[Any], instructions: list[str], seeds: list[int]) -> list[Any]:
        """One edited image per (image, instruction, seed); each as edited alone."""
        return self.pipeline.edit_many(images, instructions, seeds, **self.sampler)

    def answer(self, requests: Sequence[AnswerRequest]) -> list[str]:
        from evals.adapters.internvl import answer_with_chat

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
