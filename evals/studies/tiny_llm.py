"""Pre-training the tiny LLM, so that the tiny generator has what the real one starts from.

UniLIP's LLM is InternVL3's, pretrained and frozen: its last hidden states already carry what a prompt
means, and the learnable queries read that through its attention. A randomly initialised tiny LLM
carries almost nothing (measured: at the query positions, the digit asked for explains ~1e-5 of the
hidden states' variance), so a generator trained on it cannot follow prompts. This step gives the tiny
LLM a small piece of pretraining of the same kind, causal language modelling, on a corpus about the
study's prompts: each prompt in the chat format, followed by the numeral it names
(``... digit seven<|im_end|>\\n<|im_start|>assistant\\n<img>7``). Afterwards the LLM is frozen, and
the connector is re-initialised from its last layers, as upstream initialises it from the pretrained
LLM's.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
import torch.nn.functional as F

from unilip.generator import UniLIPGenerator
from unilip.prompts import edit_text, generation_prompt, t2i_text, tokenize


def digit_corpus(image_tokens: int) -> list[str]:
    """Text-to-image and edit prompts about each digit, each followed by its numeral and ``<|im_end|>``."""
    from unilip.training.digits import DIGIT_NAMES
    from unilip.training.generator_data import digit_caption, digit_instruction

    texts = []
    for label in range(len(DIGIT_NAMES)):
        for user in (t2i_text(digit_caption(label)), edit_text(digit_instruction(label))):
            texts.append(generation_prompt(user.replace("\n<image>", ""), image_tokens) + f"{label}<|im_end|>")
    return texts


def pretrain_llm(
    model: UniLIPGenerator,
    text_tokenizer: Any,
    corpus: list[str],
    *,
    steps: int = 300,
    batch_size: int = 20,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Causal-LM training of ``model.language_model`` (and its tied head) on ``corpus``; then freeze it
    and copy its last layers into the connector. Returns the first and last losses."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    batch = tokenize(text_tokenizer, corpus)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    parameters = [*model.language_model.parameters()] + ([] if model.ties_lm_head else [*model.lm_head.parameters()])
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    losses = []
    model.language_model.train()
    for _ in tqdm(range(steps), desc="tiny LLM pretraining", file=sys.stderr, disable=not progress):
        index = torch.randint(len(corpus), (batch_size,), generator=generator)
        ids, mask, target = batch.input_ids[index], batch.attention_mask[index], labels[index]
        hidden = model.language_model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model.lm_head(hidden[:, :-1]).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.language_model.eval()
    model.language_model.requires_grad_(False)
    model.lm_head.requires_grad_(False)
    model.init_connector_from_llm()
    return {"first_loss": losses[0], "last_loss": sum(losses[-10:]) / min(10, len(losses)), "steps": steps}
