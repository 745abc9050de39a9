"""UniLIP: CLIP adapted for unified multimodal understanding, generation and editing (arXiv 2507.23278).

The model side of the project: ``UniLIPTokenizer`` (encoder + bridge + pixel decoder), ``UniLIPGenerator``
(InternVL3 LLM + queries + connector + SANA DiT) with its pipelines (``unilip.pipelines``), variants as
data, loading of the released checkpoints, training. It never imports ``evals``.
"""

from unilip.generator import GeneratorConfig, UniLIPGenerator
from unilip.tokenizer import TokenizerConfig, UniLIPTokenizer, build_tokenizer, pixel_shuffle
from unilip.variants import get_variant, list_pretrained, list_variants, load_generator, load_tokenizer

__version__ = "0.1.0"

__all__ = ["GeneratorConfig", "TokenizerConfig", "UniLIPGenerator", "UniLIPTokenizer", "build_tokenizer",
           "get_variant", "list_pretrained", "list_variants", "load_generator", "load_tokenizer", "pixel_shuffle",
           "__version__"]
