"""``hf-vlm:DIR``: any transformers image-text-to-text model (Qwen2.5-VL, LLaVA, Gemma 3, ...) that ``answer`` s.

The model loads through ``AutoModelForImageTextToText`` and ``AutoProcessor`` and is prompted with its own chat
template: the generic conventions of its model card, not the per-model prompts VLMEvalKit writes for each family
(InternVL3 keeps its exact VLMEvalKit conventions through ``internvl:``). Numbers from this adapter are therefore
comparable with each other, not necessarily with a VLMEvalKit leaderboard.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from evals.adapter import AnswerRequest, ModelAdapter, ModelInfo, answer_by_budget, local_model_path, portable_config

logger = logging.getLogger(__name__)

WHAT = "a transformers image-text-to-text model directory"
PROMPTS = (
    "The model's own generic chat template (system turn, then one user turn with the benchmark's text and images "
    "in order) with greedy decoding; not the per-model prompts VLMEvalKit writes for each family, and the "
    "request's dataset name is not used (InternVL3 keeps its exact VLMEvalKit conventions through internvl:)."
)


def _image_text_to_text_types() -> dict[str, str]:
    """Model type -> class name of every model ``AutoModelForImageTextToText`` builds (transformers' table)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return dict(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def _model_directory(model: str) -> Path:
    """The model's directory, checked to hold a ``config.json`` whose model type is image-text-to-text.

    Raises:
        FileNotFoundError: no such path or cached repo, or no ``config.json`` in it.
        ValueError: a model type ``AutoModelForImageTextToText`` does not build.
    """
    path = local_model_path(model, WHAT)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: hf-vlm: expects {WHAT} (written by save_pretrained)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in _image_text_to_text_types():
        hint = " (an InternVL3 chat model: use internvl:)" if str(model_type).startswith("internvl") else ""
        raise ValueError(
            f"hf-vlm:{model}: model type {model_type!r} in {config_path} is not one transformers' "
            f"AutoModelForImageTextToText builds{hint}; hf-vlm: expects {WHAT} (Qwen2.5-VL, LLaVA, Gemma 3, ...; "
            "models that need trust_remote_code are not loaded)"
        )
    return path


def _chat_template_text(processor: Any) -> str:
    """The processor's chat template as one text (several named templates: their JSON, keys sorted)."""
    template = processor.chat_template
    return template if isinstance(template, str) else json.dumps(template, sort_keys=True)


def _messages(request: AnswerRequest) -> tuple[list[dict[str, Any]], list[Any]]:
    """The chat messages of ``request`` (an optional system turn, one user turn with its parts in order) and its
    images, in the order their placeholders appear."""
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    content: list[dict[str, Any]] = []
    images: list[Any] = []
    for part in request.parts:
        if isinstance(part, str):
            content.append({"type": "text", "text": part})
        else:
            content.append({"type": "image"})
            images.append(part.convert("RGB") if hasattr(part, "convert") else part)
    messages.append({"role": "user", "content": content})
    return messages, images


class HFVisionLanguageAdapter(ModelAdapter):
    """A transformers image-text-to-text model with its processor: ``answer`` through the model's chat template.

    Batches are left-padded with an attention mask, from which ``generate`` derives each row's positions, so an
    answer does not depend on the other requests of its batch (up to float rounding of differently shaped kernels,
    which the tests check does not change the greedy tokens of a tiny model in float32).
    """

    capabilities = frozenset({"answer"})
    summary = (
        "any transformers image-text-to-text model (Qwen2.5-VL, LLaVA, ...) answers with its chat template "
        "(generic prompts, not VLMEvalKit's per-model ones)"
    )

    def __init__(self, model: Any, processor: Any, model_ref: str, path: Path, dtype: str) -> None:
        self.model = model
        self.processor = processor
        self.model_ref = model_ref
        self.path = path
        self.dtype = dtype
        tokenizer = processor.tokenizer
        # Decoder-only generation appends after the last position: shorter prompts must be padded on the left.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = model.generation_config.eos_token_id
        eos = eos if eos is not None else tokenizer.eos_token_id
        self._eos_ids = {int(token) for token in (eos if isinstance(eos, list | tuple) else [eos]) if token is not None}

    @classmethod
    def probe(cls, model: str, seed: int = 0, device: str = "cpu", dtype: str = "float32") -> ModelInfo:
        """What ``model`` is from its ``config.json`` alone (no weights read)."""
        _model_directory(model)
        _torch_dtype(dtype)
        return ModelInfo("hf-vlm", f"hf-vlm:{model}", cls.capabilities)

    @classmethod
    def load(cls, model: str, seed: int = 0, device: str = "cpu", dtype: str = "float32") -> HFVisionLanguageAdapter:
        """Load ``model`` (weights and processor) strictly: a weight missing from the files or of another shape
        is refused, never initialised at random.

        Args:
            model: a model directory, or a repo id in the local Hugging Face cache.
            seed: unused (decoding is greedy and nothing is initialised at random); named so the run's seed is
                accepted.
            device: where the model runs.
            dtype: ``float32``, ``bfloat16`` or ``float16``.

        Raises:
            FileNotFoundError: no such directory or cached repo, or no ``config.json``.
            ValueError: an unsupported model type, missing or mismatched weights, or a processor without a chat
                template.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = _model_directory(model)
        # Mismatched shapes are reported in the loading info (then refused below) instead of transformers'
        # RuntimeError, so the user gets the same one-line refusal as for a missing weight.
        loaded, info = AutoModelForImageTextToText.from_pretrained(
            path, dtype=_torch_dtype(dtype), output_loading_info=True, ignore_mismatched_sizes=True
        )
        # Tied weights (an lm_head tied to the embeddings) are not reported missing by transformers: what is
        # reported here really had no weight in the files.
        missing = sorted(str(key) for key in info.get("missing_keys") or ())
        mismatched = sorted(
            f"{entry[0]} (file {tuple(entry[1])}, model {tuple(entry[2])})"
            if isinstance(entry, tuple) and len(entry) == 3
            else str(entry)
            for entry in info.get("mismatched_keys") or ()
        )
        if missing or mismatched:
            problems = []
            if missing:
                problems.append(f"missing weights {missing}")
            if mismatched:
                problems.append(f"weights of another shape {mismatched}")
            raise ValueError(
                f"hf-vlm:{model}: {' and '.join(problems)} in {path}; they would be initialised at random, so the "
                "model is refused (is the directory complete, and its config the one its weights were saved with?)"
            )
        unexpected = sorted(str(key) for key in info.get("unexpected_keys") or ())
        if unexpected:
            logger.warning("hf-vlm:%s: weights the model does not use were ignored: %s", model, unexpected)
        processor = AutoProcessor.from_pretrained(path)
        if getattr(processor, "chat_template", None) is None or not hasattr(processor, "tokenizer"):
            raise ValueError(
                f"hf-vlm:{model}: the processor in {path} has no chat template (chat_template.jinja or "
                "processor_config.json): hf-vlm: prompts the model through its chat template"
            )
        loaded = loaded.to(device).eval()
        return cls(loaded, processor, model, path, dtype)

    def describe(self) -> dict[str, Any]:
        return {
            "adapter": "hf-vlm",
            "model": f"hf-vlm:{self.model_ref}",
            "model_class": type(self.model).__name__,
            "weights_source": str(self.path),
            "weights_sha256": self.weights_digest(self.model),
            "config": portable_config(self.model.config.to_dict()),
            "dtype": self.dtype,
            "prompts": PROMPTS,
            "chat_template_sha256": hashlib.sha256(_chat_template_text(self.processor).encode()).hexdigest(),
        }

    def answer(self, requests: Sequence[AnswerRequest]) -> list[str]:
        """Greedy answers, in order: one ``generate`` per ``max_new_tokens`` value among ``requests``."""
        return answer_by_budget(requests, self._generate)

    @torch.inference_mode()
    def _generate(self, requests: Sequence[AnswerRequest], max_new_tokens: int) -> list[str]:
        """One left-padded batch through ``generate``; only the new tokens, up to the first end token, decoded."""
        texts, images = [], []
        for request in requests:
            messages, request_images = _messages(request)
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            images.extend(request_images)
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        # BatchFeature.to(dtype) casts only floating tensors (pixels), never the token ids.
        inputs = inputs.to(self.model.device).to(self.model.dtype)
        generated = self.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True
        )
        # An encoder-decoder returns only the decoded tokens; a decoder-only model returns the prompt before them.
        new = generated if self.model.config.is_encoder_decoder else generated[:, inputs["input_ids"].shape[1] :]
        answers = []
        for row in new.tolist():
            # Rows that finish early are filled with padding: cut at the first end token rather than trusting
            # that the padding token is a special one.
            end = next((index for index, token in enumerate(row) if token in self._eos_ids), len(row))
            answers.append(self.processor.tokenizer.decode(row[:end], skip_special_tokens=True).strip())
        return answers


def _torch_dtype(dtype: str) -> torch.dtype:
    """``float32``/``bfloat16``/``float16`` -> the torch dtype (anything else: a clear error)."""
    allowed = ("float32", "bfloat16", "float16")
    if dtype not in allowed:
        raise ValueError(f"--dtype {dtype!r} is not one of {', '.join(allowed)}")
    return getattr(torch, dtype)
