"""Small synthetic TSVs in VLMEvalKit's real format for each understanding benchmark, with known gold answers.

Each ``write_*`` writes ``<folder>/<DATASET>.tsv`` and returns its path; the rows exercise what the real files
have: shared-image rows (a short ``image`` cell naming another row's index), multi-image rows (a list literal with
``image_path`` names), MMBench's rotated copies (index + k * 1,000,000, answers remapped), MME's image pairs and
MMMU's open questions. Images are small noise squares (a fixed seed per row).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from evals.benchmarks.vlm_scoring import MME_COGNITION, MME_PERCEPTION

COLUMNS = ("index", "image", "image_path", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category")


def noise_b64(seed: int, size: int = 40) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_rows(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    lines = ["\t".join(columns)] + ["\t".join(str(row.get(column, "")) for column in columns) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_mme(folder: Path) -> Path:
    """One image per subtask, two questions each (gold Yes then No); the second row shares the image by index."""
    rows = []
    for number, category in enumerate(MME_PERCEPTION + MME_COGNITION):
        first = 2 * number
        common = {"image_path": f"{category}/{number}.jpg", "category": category}
        rows.append({"index": first, "image": noise_b64(first), "question": f"Is it {category}?", "answer": "Yes"})
        rows.append({"index": first + 1, "image": str(first), "question": f"Is it not {category}?", "answer": "No"})
        rows[-2].update(common)
        rows[-1].update(common)
    return write_rows(folder / "MME.tsv", ["index", "image", "image_path", "question", "answer", "category"], rows)


MMBENCH_QUESTIONS = (
    # (g_index, question, options, gold letter of the original, category, l2-category, hint)
    (
        0,
        "What colour is the sky?",
        ("blue", "green", "red", "black"),
        "A",
        "attribute_recognition",
        "finegrained_perception (instance-level)",
        "Look up.",
    ),
    (1, "How many cats?", ("one", "two"), "B", "object_localization", "coarse_perception", ""),
)


def write_mmbench(folder: Path, dataset: str = "MMBench_DEV_EN", originals_first: bool = False) -> Path:
    """Two questions (4 and 2 options), each with all its rotated copies, as the real DEV files hold them.

    ``originals_first``: every original row, then every rotated copy (index order), instead of each question
    followed by its copies: a question's rows are then not contiguous in the file.
    """
    rows = []
    for g_index, question, options, gold, category, l2, hint in MMBENCH_QUESTIONS:
        letters = "ABCD"[: len(options)]
        for shift in range(len(options)):
            rotated = options[shift:] + options[:shift]
            answer = letters[rotated.index(options[letters.index(gold)])]
            row = {
                "index": g_index + shift * 1_000_000,
                "image": noise_b64(100 + g_index) if shift == 0 else str(g_index),
                "question": question,
                "hint": hint,
                "answer": answer,
                "category": category,
                "l2-category": l2,
            }
            row.update(dict(zip(letters, rotated, strict=True)))
            rows.append(row)
    if originals_first:
        rows.sort(key=lambda row: row["index"])
    columns = ["index", "image", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category"]
    return write_rows(folder / f"{dataset}.tsv", columns, rows)


def write_mmvp(folder: Path) -> Path:
    """Two pairs: rows 1-2 and 3-4 share a question, each row its own image."""
    rows = []
    for index, (question, gold) in enumerate(
        [
            ("Is the dog facing left?", "A"),
            ("Is the dog facing left?", "B"),
            ("Is the door open?", "B"),
            ("Is the door open?", "A"),
        ],
        start=1,
    ):
        rows.append(
            {
                "index": index,
                "image": noise_b64(200 + index),
                "question": question,
                "A": "(a) Yes",
                "B": "(b) No",
                "answer": gold,
                "category": "orientation",
            }
        )
    return write_rows(folder / "MMVP.tsv", ["index", "image", "question", "A", "B", "answer", "category"], rows)


def write_plain_mcq(
    folder: Path, dataset: str, categories: tuple[str, ...] = ("physics", "biology", "physics")
) -> Path:
    """Plain multiple choice (AI2D_TEST, SEEDBench_IMG): one row per category entry, gold letters A, B, C ..."""
    rows = []
    for index, category in enumerate(categories):
        rows.append(
            {
                "index": index,
                "image": noise_b64(300 + index),
                "question": f"Question {index}?",
                "A": "first",
                "B": "second",
                "C": "third",
                "D": "fourth",
                "answer": "ABCD"[index % 4],
                "category": category,
            }
        )
    columns = ["index", "image", "question", "A", "B", "C", "D", "answer", "category"]
    return write_rows(folder / f"{dataset}.tsv", columns, rows)


def write_mmmu(folder: Path) -> Path:
    """A dev MCQ, a validation MCQ over two images (interleaved placeholders), a validation open question, and a
    validation MCQ sharing the first row's image."""
    pair = repr([noise_b64(400), noise_b64(401)])
    rows = [
        {
            "index": "dev_Art_1",
            "image": noise_b64(402),
            "image_path": "dev_1.png",
            "question": "Which style? <image 1>",
            "A": "baroque",
            "B": "cubist",
            "answer": "B",
            "category": "Art",
            "split": "dev",
        },
        {
            "index": "validation_Math_1",
            "image": pair,
            "image_path": "['v1_1.png', 'v1_2.png']",
            "question": "Compare <image 1> and <image 2>: which is larger?",
            "A": "the first",
            "B": "the second",
            "C": "equal",
            "answer": "C",
            "category": "Math",
            "split": "validation",
        },
        {
            "index": "validation_Math_2",
            "image": noise_b64(403),
            "image_path": "v2.png",
            "question": "What is 6 x 7? <image 1>",
            "answer": "42",
            "category": "Math",
            "split": "validation",
        },
        {
            "index": "validation_Art_3",
            "image": "dev_Art_1",
            "image_path": "v3.png",
            "question": "Which period?",
            "A": "modern",
            "B": "ancient",
            "answer": "A",
            "category": "Art",
            "split": "validation",
        },
    ]
    columns = ["index", "image", "image_path", "question", "A", "B", "C", "answer", "category", "split"]
    return write_rows(folder / "MMMU_DEV_VAL.tsv", columns, rows)


def write_mmvet(folder: Path) -> Path:
    """Three open questions with capability strings (``rec,ocr`` ...)."""
    rows = [
        {
            "index": "v1",
            "image": noise_b64(500),
            "question": "What is written?",
            "answer": "STOP",
            "category": "ocr,rec",
        },
        {
            "index": "v2",
            "image": noise_b64(501),
            "question": "How much is it in total?",
            "answer": "12<OR>12.0",
            "category": "ocr,math",
        },
        {"index": "v3", "image": "v1", "question": "What is it for?", "answer": "traffic", "category": "know"},
    ]
    return write_rows(folder / "MMVet.tsv", ["index", "image", "question", "answer", "category"], rows)


def write_all(folder: Path) -> Path:
    """Every dataset the seven default variants read, in one ``$LMUData``-like folder."""
    write_mme(folder)
    write_mmbench(folder)
    write_mmbench(folder, "MMBench_DEV_EN_V11")
    write_mmvp(folder)
    write_plain_mcq(folder, "AI2D_TEST")
    write_plain_mcq(folder, "SEEDBench_IMG", ("Scene Understanding", "Instance Identity", "Scene Understanding"))
    write_mmmu(folder)
    write_mmvet(folder)
    return folder
