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
    targets: torch.Tensor  # B x 3 x S x S in [0, 1]
    sources: torch.Tensor | None  # B x 3 x S x S in [0, 1], editing only
    task: str  # "t2i" or "edit"


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
    from unilip.data import read_image
    from unilip.pipelines import pil_to_tensor

    return pil_to_tensor(read_image(path), size)[0]


class GenerationData:
    """Examples of one configuration, held in memory (images as [0, 1] tensors at ``size``)."""

    def __init__(self, config: GeneratorDataConfig) -> None:
        self.config = config
        self.t2i_images: torch.Tensor | None = None  # digits only: all images in memory (1,437 tiny ones)
        self.t2i_texts: list[str] = []
        self.edit_texts: list[str] = []
        self.has_edits = False
        self.digit_labels: torch.Tensor | None = None
        if config.dataset == "digits":
            from unilip.training.digits import load_digits_split

            images, labels = load_digits_split("train", size=config.size, seed=0)
            self.t2i_images, self.digit_labels = images, labels
            self.t2i_texts = [digit_caption(int(label)) for label in labels]
            self.has_edits = True  # edits are made from the labels
        else:
            self._read_jsonl(Path(config.path))
        # null: batches drawn in proportion to the examples, as upstream's concatenated datasets are.
        self.edit_fraction = (
            config.edit_fraction if config.edit_fraction is not None else len(self.edit_texts) / max(1, len(self))
        )
        if self.edit_fraction > 0 and not self.has_edits:
            raise ValueError(f"data.edit_fraction is {self.edit_fraction} but {config.path} holds no edit examples")
        if not len(self.t2i_texts) and self.edit_fraction < 1:
            raise ValueError(f"{config.path} holds no text-to-image examples but data.edit_fraction < 1")

    def _read_jsonl(self, path: Path) -> None:
        # Only the records are held; images are read when a batch needs them (datasets are large).
        if not path.is_file():
            raise FileNotFoundError(f"data.path {path} does not exist")
        self.t2i_paths: list[Path] = []
        self.edit_paths: list[tuple[Path, Path]] = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                target = path.parent / record["image"]
                if "source" in record:
                    self.edit_paths.append((path.parent / record["source"], target))
                    self.edit_texts.append(str(record["instruction"]))
                else:
                    caption = str(record["caption"])
                    if len(caption) > self.config.max_caption_chars:
                        continue  # upstream resamples captions over 1000 characters; we leave them out
                    self.t2i_paths.append(target)
                    self.t2i_texts.append(caption)
            except (KeyError, TypeError, json.JSONDecodeError) as error:
                raise ValueError(
                    f"{path}:{number}: not a generator example ({error!r}); expected "
                    '{"image", "caption"} or {"image", "source", "instruction"}'
                ) from None
        self.has_edits = bool(self.edit_paths)

    def _images(self, paths: list[Path]) -> torch.Tensor:
        return torch.stack([_read_resized(p, self.config.size) for p in paths])

    def t2i_targets(self, index: list[int]) -> torch.Tensor:
        """Text-to-image target images by example index."""
        if self.digit_labels is not None:
            return self.t2i_images[index]
        return self._images([self.t2i_paths[i] for i in index])

    def scale_images(self, limit: int = 1024) -> torch.Tensor:
        """The first ``limit`` text-to-image targets (for measuring the latent scale)."""
        return self.t2i_targets(list(range(min(limit, len(self.t2i_texts)))))

    def __len__(self) -> int:
        """Examples of both tasks (what an epoch counts)."""
        return len(self.t2i_texts) + len(self.edit_texts)

    def batch(self, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> GenerationBatch:
        """This process's share of step ``step``'s global batch, the same on every rerun."""
        generator = torch.Generator().manual_seed(_stream_seed(seed, step, "examples", rank))
        # The task is drawn from (seed, step) only, so every process trains the same task at a step.
        task_draw = torch.Generator().manual_seed(_stream_seed(seed, step, "task"))
        is_edit = float(torch.rand((), generator=task_draw)) < self.edit_fraction
        local = max(1, batch_size // world)
        null = torch.rand(local, generator=generator) < self.config.null_prompt_prob
        if not is_edit:
            index = torch.randint(len(self.t2i_texts), (local,), generator=generator).tolist()
            texts = [NULL_T2I_PROMPT if null[i] else t2i_text(self.t2i_texts[j]) for i, j in enumerate(index)]
            return GenerationBatch(texts, self.t2i_targets(index), None, "t2i")
        if self.digit_labels is not None:
            return self._digit_edit_batch(local, null, generator)
        index = torch.randint(len(self.edit_texts), (local,), generator=generator).tolist()
        texts = [NULL_EDIT_PROMPT if null[i] else edit_text(self.edit_texts[j]) for i, j in enumerate(index)]
        sources = self._images([self.edit_paths[j][0] for j in index])
        return GenerationBatch(texts, self._images([self.edit_paths[j][1] for j in index]), sources, "edit")

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
