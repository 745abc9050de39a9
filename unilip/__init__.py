"""UniLIP: CLIP adapted for unified multimodal understanding, generation and editing (arXiv 2507.23278).

The model side of the project: ``UniLIPTokenizer`` (encoder + bridge + pixel decoder), ``UniLIPGenerator``
(InternVL3 LLM + queries + connector + SANA DiT) with its pipelines (``unilip.pipelines``), variants as
data, loading of the released checkpoints, training. It never imports ``evals``.

The names below are imported lazily (PEP 562) on first access, so ``import unilip`` (and the ``unilip``
command line, which only builds a parser) does not pay for torch, transformers or diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    "GeneratorConfig": "unilip.generator",
    "UniLIPGenerator": "unilip.generator",
    "TokenizerConfig": "unilip.tokenizer",
    "UniLIPTokenizer": "unilip.tokenizer",
    "build_tokenizer": "unilip.tokenizer",
    "pixel_shuffle": "unilip.tokenizer",
    "get_variant": "unilip.variants",
    "list_pretrained": "unilip.variants",
    "list_variants": "unilip.variants",
    "load_generator": "unilip.variants",
    "load_tokenizer": "unilip.variants",
    "list_recipes": "unilip.training.config",
}

__all__ = [
    "GeneratorConfig",
    "TokenizerConfig",
    "UniLIPGenerator",
    "UniLIPTokenizer",
    "__version__",
    "build_tokenizer",
    "get_variant",
    "list_pretrained",
    "list_recipes",
    "list_variants",
    "load_generator",
    "load_tokenizer",
    "pixel_shuffle",
]

if TYPE_CHECKING:
    from unilip.generator import GeneratorConfig, UniLIPGenerator
    from unilip.tokenizer import TokenizerConfig, UniLIPTokenizer, build_tokenizer, pixel_shuffle
    from unilip.training.config import list_recipes
    from unilip.variants import get_variant, list_pretrained, list_variants, load_generator, load_tokenizer


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
