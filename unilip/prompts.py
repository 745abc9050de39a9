"""UniLIP's prompt format and the text tokenizer that turns it into ids.

Upstream (``unilip/train/train_stage*.py``, ``add_template`` in the evaluation scripts):

- text-to-image: ``"Generate an image: {caption}"``; editing: ``"Edit the image: {instruction}\\n<image>"``;
- classifier-free guidance's null prompts: ``"Generate an image."`` and ``"Edit the image.\\n<image>"``
  (the edit null prompt keeps the reference image);
- one user turn and no system prompt, ending in the assistant's ``<img>``:
  ``<|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n<img>``, after which the model appends
  its learnable queries;
- ``<image>`` in the user turn becomes ``<img>`` + N x ``<IMG_CONTEXT>`` + ``</img>`` (N = 256 for a
  448 px image), whose positions receive the reference image's features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

T2I_TEMPLATE = "Generate an image: {}"
EDIT_TEMPLATE = "Edit the image: {}\n<image>"
NULL_T2I_PROMPT = "Generate an image."
NULL_EDIT_PROMPT = "Edit the image.\n<image>"
IMAGE_PLACEHOLDER = "<image>"

IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", IMG_START, IMG_END, IMG_CONTEXT)


def t2i_text(caption: str) -> str:
    """The user text of a text-to-image request."""
    return T2I_TEMPLATE.format(caption)


def edit_text(instruction: str) -> str:
    """The user text of an edit request (the reference image follows the instruction)."""
    return EDIT_TEMPLATE.format(instruction)


def expand_image_placeholder(text: str, image_tokens: int) -> str:
    """``<image>`` -> ``<img>`` + ``image_tokens`` x ``<IMG_CONTEXT>`` + ``</img>`` (at most one image)."""
    count = text.count(IMAGE_PLACEHOLDER)
    if count > 1:
        raise ValueError(f"a prompt may hold one reference image; this one has {count} '<image>' placeholders")
    return text.replace(IMAGE_PLACEHOLDER, IMG_START + IMG_CONTEXT * image_tokens + IMG_END)


def generation_prompt(user_text: str, image_tokens: int) -> str:
    """The whole string the LLM reads before the queries (no system prompt, ends in ``<img>``)."""
    return (
        f"<|im_start|>user\n{expand_image_placeholder(user_text, image_tokens)}<|im_end|>\n"
        f"<|im_start|>assistant\n{IMG_START}"
    )


def chat_prompt(question: str, image_tokens: int, with_image: bool = True) -> str:
    """An InternVL3 chat turn about an image (for ``answer``): the image first, then the question.

    InternVL3's own chat template adds a default system message; UniLIP's understanding evaluations
    run through InternVL's chat code, so pass ``system`` text in ``question`` when a protocol needs it.
    """
    image = expand_image_placeholder(IMAGE_PLACEHOLDER, image_tokens) + "\n" if with_image else ""
    return f"<|im_start|>user\n{image}{question}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class TokenizedPrompts:
    """Right-padded ids and their mask (``B x L``): the upstream collator's padding side."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: str | torch.device) -> TokenizedPrompts:
        return TokenizedPrompts(self.input_ids.to(device), self.attention_mask.to(device))


def tokenize(text_tokenizer: Any, texts: list[str]) -> TokenizedPrompts:
    """Tokenise whole prompt strings (special tokens written in them are parsed as such), right-padded.

    Args:
        text_tokenizer: a transformers tokenizer with the special tokens of ``SPECIAL_TOKENS``.
        texts: prompt strings from :func:`generation_prompt` or :func:`chat_prompt`.
    """
    encoded = [text_tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    length = max(len(ids) for ids in encoded)
    pad_id = text_tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the text tokenizer has no pad token (InternVL3's is <|endoftext|>)")
    input_ids = torch.full((len(texts), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(texts), length), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return TokenizedPrompts(input_ids, attention_mask)


def special_token_ids(text_tokenizer: Any) -> dict[str, int]:
    """Ids of the image tokens in a text tokenizer; raises if one is missing (a wrong tokenizer)."""
    ids = {}
    for token in (IMG_START, IMG_END, IMG_CONTEXT):
        token_id = text_tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == text_tokenizer.unk_token_id:
            raise ValueError(
                f"the text tokenizer has no {token} token: it is not an InternVL3 tokenizer "
                "(use the tokenizer files shipped in the UniLIP model directory)"
            )
        ids[token] = int(token_id)
    return ids


def load_text_tokenizer(directory: str | Path) -> Any:
    """The text tokenizer saved in a model directory (InternVL3's, or a tiny variant's), offline."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    files = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
    if not any((directory / name).is_file() for name in files):
        raise FileNotFoundError(
            f"{directory} holds no text tokenizer ({', '.join(files)}); a UniLIP model "
            "directory ships InternVL3's tokenizer files beside the weights"
        )
    from transformers.utils import logging as transformers_logging

    # AutoTokenizer reads the directory's config.json to pick a class; ours names a model type transformers
    # does not know, which it reports as a (harmless) warning: keep that one quiet.
    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    finally:
        transformers_logging.set_verbosity(previous)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"
    return tokenizer
