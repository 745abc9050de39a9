"""Generator training examples and deterministic batches.

Two sources:

- ``digits``: scikit-learn's handwritten digits (the training split of the tokenizer study), captions
  made from the labels ("a handwritten digit seven") and an edit task of the same kind: a digit image
  as reference, "make it the digit three", a different training image of a three as the target;
- ``jsonl``: one JSON object per line, ``{"image": PATH, "caption": TEXT}`` for text-to-image or
  ``{"image": PATH, "source": PATH, "instruction": TEXT}`` for editing (paths relative to the file).

Batches are single-task (all text-to-image or all edit), drawn from a generator seeded by
(seed, step, process), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unilip.prompts import NULL_EDIT_PROMPT, NULL_T2I_PROMPT, edit_text, t2i_text
from unilip.training.config import GeneratorDataConfig


@dataclass
class GenerationBatch:
    """What one step trains on: the user texts, the target images and (editing) the reference images."""

    texts: list[str]
    targets: torch.Tensor            # B x 3 x S x S in [0, 1]
    sources: torch.Tensor | None     # B x 3 x S x S in [0, 1], editing only
    task: str                        # "t2i" or "edit"


def _stream_seed(*parts: object) -> int:
    """A seed from its parts, the same in every process and Python run (``hash`` of a str is not)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def digit_caption(label: int) -> str:
    from unilip.training.digits import DIGIT_NAMES

    return f"a handwritten digit {DIGIT_NAMES[label]}"


def digit_instruction(label: int) -> str:
    from unilip.training.digits import DIGIT_NAMES

    return f"make it the digit {DIGIT_NAMES[label]}"


def _read_resized(path: Path, size: int) -> torch.Tensor:
    from unilip.pipelines import pil_to_tensor
    from unilip.data import read_image

    return pil_to_tensor(read_image(path), size)[0]


class GenerationData:
    """Examples of one configuration, held in memory (images as [0, 1] tensors at ``size``)."""

    def __init__(self, config: GeneratorDataConfig, seed: int = 0) -> None:
        self.config = config
        self.t2i_images: torch.Tensor
        self.t2i_texts: list[str]
        self.edit_sources: torch.Tensor | None = None
        self.edit_targets: torch.Tensor | None = None
        self.edit_texts: list[str] = []
        self.digit_labels: torch.Tensor | None = None
        if config.dataset == "digits":
            from unilip.training.digits import load_digits_split

            images, labels = load_digits_split("train", size=config.size, seed=0)
            self.t2i_images, self.digit_labels = images, labels
            self.t2i_texts = [digit_caption(int(label)) for label in labels]
        else:
            self._read_jsonl(Path(config.path))
        if config.edit_fraction > 0 and self.edit_sources is None and self.digit_labels is None:
            raise ValueError(f"data.edit_fraction is {config.edit_fraction} but {config.path} holds no edit examples")
        if not len(self.t2i_texts) and config.edit_fraction < 1:
            raise ValueError(f"{config.path} holds no text-to-image examples but data.edit_fraction < 1")

    def _read_jsonl(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"data.path {path} does not exist")
        t2i_images, t2i_texts, sources, targets, instructions = [], [], [], [], []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                target = _read_resized(path.parent / record["image"], self.config.size)
                if "source" in record:
                    sources.append(_read_resized(path.parent / record["source"], self.config.size))
                    targets.append(target)
                    instructions.append(str(record["instruction"]))
                else:
                    caption = str(record["caption"])
                    if len(caption) > self.config.max_caption_chars:
                        continue  # upstream resamples captions over 1000 characters; we leave them out
                    t2i_images.append(target)
                    t2i_texts.append(caption)
            except (KeyError, json.JSONDecodeError) as error:
                raise ValueError(f"{path}:{number}: not a generator example ({error}); expected "
                                 '{"image", "caption"} or {"image", "source", "instruction"}') from None
        self.t2i_images = torch.stack(t2i_images) if t2i_images else torch.empty(0)
        self.t2i_texts = t2i_texts
        if sources:
            self.edit_sources, self.edit_targets = torch.stack(sources), torch.stack(targets)
            self.edit_texts = instructions

    def batch(self, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> GenerationBatch:
        """This process's share of step ``step``'s global batch, the same on every rerun."""
        generator = torch.Generator().manual_seed(_stream_seed(seed, step, "examples", rank))
        # The task is drawn from (seed, step) only, so every process trains the same task at a step.
        task_draw = torch.Generator().manual_seed(_stream_seed(seed, step, "task"))
        is_edit = float(torch.rand((), generator=task_draw)) < self.config.edit_fraction
        local = max(1, batch_size // world)
        null = torch.rand(local, generator=generator) < self.config.null_prompt_prob
        if not is_edit:
            index = torch.randint(len(self.t2i_texts), (local,), generator=generator)
            texts = [NULL_T2I_PROMPT if null[i] else t2i_text(self.t2i_texts[int(j)]) for i, j in enumerate(index)]
            return GenerationBatch(texts, self.t2i_images[index], None, "t2i")
        if self.digit_labels is not None:
            return self._digit_edit_batch(local, null, generator)
        index = torch.randint(len(self.edit_texts), (local,), generator=generator)
        texts = [NULL_EDIT_PROMPT if null[i] else edit_text(self.edit_texts[int(j)]) for i, j in enumerate(index)]
        return GenerationBatch(texts, self.edit_targets[index], self.edit_sources[index], "edit")

    def _digit_edit_batch(self, local: int, null: torch.Tensor, generator: torch.Generator) -> GenerationBatch:
        labels = self.digit_labels
        source_index = torch.randint(len(labels), (local,), generator=generator)
        # A different digit than the source's: the edit must change what the image says.
        wanted = (labels[source_index] + torch.randint(1, 10, (local,), generator=generator)) % 10
        target_index = []
        for digit in wanted.tolist():
            candidates = (labels == digit).nonzero().squeeze(1)
            target_index.append(int(candidates[torch.randint(len(candidates), (1,), generator=generator)]))
        texts = [NULL_EDIT_PROMPT if null[i] else edit_text(digit_instruction(int(d))) for i, d in enumerate(wanted)]
        return GenerationBatch(texts, self.t2i_images[target_index], self.t2i_images[source_index], "edit")
