"""The digits-vqa questions: scikit-learn's handwritten digits as VLMEvalKit TSVs, made deterministically.

Three parts, each in the format (and scored by the code) of a real benchmark:

- ``mcq`` (as MMBench): "Which digit is shown?" with the right digit and three others as options, the four
  rotations of the options as copies (index + k * 1,000,000, sharing the image), scored by CircularEval;
- ``yes-no`` (as MME): "Is this the digit d?" twice per image, once with its digit (Yes) and once with another
  (No), scored by acc and acc+ over images;
- ``pairs`` (as MMVP): two images of digits that are easily confused (3 and 8, 1 and 7 ...) with one shared
  question and options, scored by pair accuracy.

Which split is used is the caller's: the benchmark reads the held-out ``test`` split only; the tiny MLLM of the
distillation study is instruction-tuned on the ``train`` split, in the same format. Images are the split's 56 px
RGB digits as PNG; the options and distractors come from a generator seeded by the row, so every call writes the
same bytes.
"""

from __future__ import annotations

import base64
import functools
import io
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

# VLMEvalKit-style dataset names of the three parts (the TSVs' stems).
PARTS: Final = {"mcq": "DigitsVQA_MCQ", "yes-no": "DigitsVQA_YN", "pairs": "DigitsVQA_PAIRS"}
MCQ_QUESTION: Final = "Which digit is shown?"
# Pairs of digits whose handwritten shapes are close; every digit is in at least one pair.
CONFUSABLE: Final = ((3, 8), (1, 7), (4, 9), (5, 6), (0, 8), (2, 7))
OPTIONS_PER_QUESTION: Final = 4
ROTATION_STRIDE: Final = 1_000_000
IMAGE_SIZE: Final = 56
# Bump when the questions or images change: the TSV bytes (and so every fingerprint) change with it.
DATA_VERSION: Final = "1"


def _png_b64(image: Any) -> str:
    """A ``3 x S x S`` tensor in [0, 1] as base64 PNG (8-bit RGB)."""
    from PIL import Image

    array = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@functools.lru_cache(maxsize=4)
def _digits(split: str, size: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The split's images as base64 PNG and their labels; encoded once per process (three parts share them)."""
    from unilip.training.digits import load_digits_split

    images, labels = load_digits_split(split, size=size, seed=0)
    return tuple(_png_b64(image) for image in images), tuple(int(label) for label in labels)


def mcq_rows(images: Sequence[str], labels: Sequence[int]) -> list[dict[str, Any]]:
    """Each image with its digit and three others (seeded by the image), in all four rotations."""
    rows = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        rng = random.Random(f"mcq-{index}")
        options = [label, *rng.sample([d for d in range(10) if d != label], OPTIONS_PER_QUESTION - 1)]
        rng.shuffle(options)
        letters = "ABCD"
        for shift in range(OPTIONS_PER_QUESTION):
            rotated = options[shift:] + options[:shift]
            row = {
                "index": index + shift * ROTATION_STRIDE,
                "image": image if shift == 0 else str(index),  # copies share the original's image
                "question": MCQ_QUESTION,
                "answer": letters[rotated.index(label)],
                "category": str(label),
                "l2-category": "digits",
            }
            row.update({letters[k]: str(digit) for k, digit in enumerate(rotated)})
            rows.append(row)
    return rows


def yes_no_rows(images: Sequence[str], labels: Sequence[int]) -> list[dict[str, Any]]:
    """Two questions per image: its own digit (Yes) and another, seeded by the image (No); the order of the
    two is seeded too, so the first question of an image is not always the Yes."""
    rows = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        rng = random.Random(f"yes-no-{index}")
        other = rng.choice([d for d in range(10) if d != label])
        questions = [(label, "Yes"), (other, "No")]
        rng.shuffle(questions)
        for k, (digit, answer) in enumerate(questions):
            rows.append(
                {
                    "index": 2 * index + k,
                    "image": image if k == 0 else str(2 * index),
                    "image_path": f"{index}.png",
                    "question": f"Is this the digit {digit}?",
                    "answer": answer,
                    "category": "digits",
                }
            )
    return rows


def pair_rows(images: Sequence[str], labels: Sequence[int]) -> list[dict[str, Any]]:
    """For each confusable pair (a, b), the k-th image of a beside the k-th image of b, asked the same question
    with the same two options (their order seeded per pair); rows 2j and 2j+1 are a pair."""
    by_digit: dict[int, list[str]] = {digit: [] for digit in range(10)}
    for image, label in zip(images, labels, strict=True):
        by_digit[label].append(image)
    rows = []
    for first, second in CONFUSABLE:
        for k in range(min(len(by_digit[first]), len(by_digit[second]))):
            pair = len(rows) // 2
            options = [first, second]
            random.Random(f"pairs-{pair}").shuffle(options)
            for digit in (first, second):
                rows.append(
                    {
                        "index": len(rows),
                        "image": by_digit[digit][k],
                        "question": MCQ_QUESTION,
                        "A": str(options[0]),
                        "B": str(options[1]),
                        "answer": "AB"[options.index(digit)],
                        "category": f"{first}-{second}",
                    }
                )
    return rows


_BUILDERS = {"mcq": mcq_rows, "yes-no": yes_no_rows, "pairs": pair_rows}
_COLUMNS = {
    "mcq": ("index", "image", "question", "A", "B", "C", "D", "answer", "category", "l2-category"),
    "yes-no": ("index", "image", "image_path", "question", "answer", "category"),
    "pairs": ("index", "image", "question", "A", "B", "answer", "category"),
}


def tsv_text(part: str, split: str = "test", size: int = IMAGE_SIZE) -> str:
    """The TSV of one part on one split of the digits, as text (tab-separated, header first)."""
    if part not in _BUILDERS:
        raise ValueError(f"unknown digits-vqa part {part!r}; parts: {', '.join(_BUILDERS)}")
    images, labels = _digits(split, size)
    columns = _COLUMNS[part]
    lines = ["\t".join(columns)]
    lines += ["\t".join(str(row.get(column, "")) for column in columns) for row in _BUILDERS[part](images, labels)]
    return "\n".join(lines) + "\n"


def write_part(folder: str | Path, part: str, split: str = "test", size: int = IMAGE_SIZE) -> Path:
    """``folder/<dataset>.tsv`` (``<dataset>_train.tsv`` for the train split), rewritten only when its bytes
    differ from what this version makes (so a file edited by hand is put back)."""
    from evals.files import atomic_write_bytes

    suffix = "" if split == "test" else f"_{split}"
    path = Path(folder) / f"{PARTS[part]}{suffix}.tsv"
    text = tsv_text(part, split, size)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, text.encode("utf-8"))
    return path
