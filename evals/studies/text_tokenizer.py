"""A tiny byte-level BPE text tokenizer for the tiny generator, trained offline with ``tokenizers``.

InternVL3's real tokenizer (Qwen2.5's byte-level BPE, 151k entries) comes with the released model
directories. The tiny variant needs a tokenizer of the same kind that fits a tiny LLM: byte-level BPE
(any text can be encoded, falling back to bytes), the same special tokens (``<|im_start|>``,
``<|im_end|>``, ``<img>``, ``</img>``, ``<IMG_CONTEXT>``, ``<|endoftext|>`` as padding), trained on the
prompts the tiny studies use. It is saved as a transformers tokenizer, so the pipelines load it exactly
as they load InternVL3's (``AutoTokenizer``).

The shipped one (``unilip/configs/text_tokenizers/tiny``) was made by::

    python -m evals.studies.text_tokenizer --out unilip/configs/text_tokenizers/tiny
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from unilip.prompts import NULL_EDIT_PROMPT, NULL_T2I_PROMPT, SPECIAL_TOKENS, edit_text, generation_prompt, t2i_text

DEFAULT_VOCAB_SIZE = 320


def digit_captions() -> list[str]:
    """The captions and edit instructions of the digits studies ("a handwritten digit seven")."""
    from unilip.training.digits import DIGIT_NAMES

    return [f"a handwritten digit {name}" for name in DIGIT_NAMES] + [
        f"make it the digit {name}" for name in DIGIT_NAMES
    ]


def training_corpus(image_tokens: int = 4) -> list[str]:
    """Whole prompt strings (template, captions, null prompts), as the tokenizer will meet them."""
    captions = digit_captions()
    texts = [t2i_text(c) for c in captions] + [edit_text(c) for c in captions] + [NULL_T2I_PROMPT, NULL_EDIT_PROMPT]
    return [generation_prompt(text, image_tokens) for text in texts]


def train_text_tokenizer(corpus: Iterable[str], out_dir: str | Path, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Train a byte-level BPE tokenizer on ``corpus`` and save it as a transformers tokenizer.

    The special tokens take ids 0-5 in the order of ``unilip.prompts.SPECIAL_TOKENS`` (so ``<img>``,
    ``</img>`` and ``<IMG_CONTEXT>`` are 3, 4 and 5); training is deterministic for a given corpus.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(corpus), vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS[1:] if t != "<|im_end|>"],
    )
    tokenizer.padding_side = "right"
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    args = parser.parse_args(argv)
    train_text_tokenizer(training_corpus(), args.out, args.vocab_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
