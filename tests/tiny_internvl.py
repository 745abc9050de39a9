"""A tiny stock InternVL3 (random weights, transformers' classes and directory layout) for understanding tests."""

from __future__ import annotations

from pathlib import Path

import torch

from evals.studies.tiny_mllm import tiny_internvl_config
from unilip import get_variant

SPEC = get_variant("tiny")

__all__ = ["SPEC", "save_tiny_internvl", "save_tiny_internvl_chat", "tiny_internvl_config"]


def save_tiny_internvl(directory: Path, seed: int = 1234) -> Path:
    """A tiny random InternVL3 saved as users have a stock one (``save_pretrained``), weights only."""
    from transformers import InternVLForConditionalGeneration

    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(tiny_internvl_config()).eval()
    model.save_pretrained(directory)
    return directory


def save_tiny_internvl_chat(source: Path, directory: Path) -> Path:
    """``source`` (:func:`save_tiny_internvl`) with its text tokenizer beside the weights, as a stock one ships.

    The LLM's matrices are redrawn larger than transformers' init (std 0.02), under which the tiny model answers
    every prompt with the same newline; at this scale its greedy tokens depend on the prompt and the images, so
    equal answers mean something.
    """
    from unilip.prompts import load_text_tokenizer
    from unilip.understanding import load_internvl

    model = load_internvl(source)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.model.language_model.named_parameters():
            if parameter.dim() == 2:
                scale = 1.0 if "embed" in name else 0.3
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    model.save_pretrained(directory)
    load_text_tokenizer(SPEC.text_tokenizer).save_pretrained(directory)
    return directory
