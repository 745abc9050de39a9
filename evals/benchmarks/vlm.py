"""What the understanding benchmarks share (MME, MMBench, MMVP, AI2D, SEED-Bench, MMMU, MM-Vet): reading
VLMEvalKit's TSVs, checking them against VLMEvalKit's pinned MD5s, the text prompts VLMEvalKit's InternVL
wrapper builds for InternVL3, and the rule-based answer extraction VLMEvalKit scores with.

Model-free: no image tokens here (the model side inserts them) and no judge (a judge, when configured,
only sees the items this module leaves :data:`UNRESOLVED`).

The rules follow VLMEvalKit (``open-compass/VLMEvalKit``); each function names the function it follows.
Where VLMEvalKit's behaviour is a quirk that moves scores (default pandas NA parsing, images re-encoded
as JPEG before the model reads them), the quirk is kept on purpose and documented.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import logging
import math
import re
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

UNRESOLVED: Final = "UNRESOLVED"
"""What extraction returns when the rules cannot tell the answer: never a guessed letter. VLMEvalKit's
exact-matching policy turns it into ``Z`` (a miss); a judge may resolve it instead."""

# An ``image`` cell this short names the ``index`` of the row whose image it shares (image_base.py).
IMAGE_REFERENCE_MAX_CHARS: Final = 64

# ---------------------------------------------------------------------------------------- pinned MD5s
# VLMEvalKit's DATASET_MD5 values for the TSVs issue 13 needs (dataset/image_mcq.py, image_yorn.py,
# image_vqa.py). VLMEvalKit re-published some files; each value any revision pinned is accepted, labelled.
PINNED_TSV_MD5: Final[Mapping[str, Mapping[str, str]]] = {
    "MME": {"b36b43c3f09801f5d368627fb92187c3": "image_yorn.py"},
    "MMBench_DEV_EN": {"b6caf1133a01c6bb705cf753bb527ed8": "image_mcq.py (MMBench v1.0)"},
    "MMBench_DEV_EN_V11": {
        "30c05be8f2f347a50be25aa067248184": "image_mcq.py, file under utils/VLMEval/",
        "8b7b30bb78b8f4a87ffc6b2258890a39": "image_mcq.py, later revision, file under utils/benchmarks/MMBench_V11/",
    },
    "MMVP": {"8cb732b141a0cba5b42159df2839e557": "image_mcq.py"},
    "AI2D_TEST": {"0f593e0d1c7df9a3d69bf1f947e71975": "image_mcq.py"},
    "SEEDBench_IMG": {"68017231464752261a2526d6ca3a10c0": "image_mcq.py"},
    "MMMU_DEV_VAL": {
        "521afc0f3bf341e6654327792781644d": "image_mcq.py (MMMUDataset)",
        "585e8ad75e73f75dcad265dfd0417d64": "image_mcq.py (MMMUDataset), later revision",
    },
    "MMVet": {"748aa6d4aa9d4de798306a63718455e3": "image_vqa.py"},
}


def file_md5(path: str | Path) -> str:
    """The MD5 hex digest of a file, read in 1 MiB chunks (VLMEvalKit pins TSVs by MD5, not sha256)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_tsv_md5(path: str | Path, dataset: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """Compare a TSV with VLMEvalKit's pinned MD5s, in the shape of :func:`evals.benchmarks.kit.check_pinned`.

    Args:
        path: the TSV.
        dataset: its VLMEvalKit name (``MMBench_DEV_EN``...); the file's stem when None, as VLMEvalKit
            names its downloads ``<dataset>.tsv``.

    Returns:
        The data identity (``{"files": {dataset: {md5, pinned_md5, matches_pinned}}, "matches_pinned"}``)
        and one warning when the file is not a pinned release: it is still evaluated, but the results
        say plainly that scores are not comparable with published ones.
    """
    path = Path(path)
    name = dataset or path.stem
    actual = file_md5(path)
    pinned = PINNED_TSV_MD5.get(name, {})
    matches = actual in pinned
    warnings: list[str] = []
    if not pinned:
        warnings.append(
            f"{name}: no pinned VLMEvalKit MD5 is known for this dataset name (md5 {actual}); "
            "scores are not comparable with published ones"
        )
    elif not matches:
        warnings.append(
            f"{name}: {path.name} differs from VLMEvalKit's pinned release (md5 {actual}, pinned "
            f"{' or '.join(sorted(pinned))}); scores are not comparable with published ones"
        )
    for warning in warnings:
        logger.warning(warning)
    files = {name: {"md5": actual, "pinned_md5": sorted(pinned), "matches_pinned": matches}}
    return {"files": files, "matches_pinned": matches}, warnings


# ---------------------------------------------------------------------------------------- TSV rows
@dataclass(frozen=True)
class VlmRow:
    """One question of a VLMEvalKit TSV.

    Images stay base64 until :meth:`images` decodes them: a TSV holds thousands of images (SEED-Bench
    about 14k) and decoding them all up front would hold gigabytes; rows sharing an image share the
    same string, so nothing is duplicated.

    Attributes:
        index: the ``index`` cell (int when every index of the file is an integer, as VLMEvalKit does).
        fields: every column except ``image``, as pandas parsed it; missing cells are None.
        images_b64: the row's image(s), references to other rows already resolved.
        image_names: the file name VLMEvalKit's ``dump_image`` writes each image to (``<index>.jpg``
            for a single image, the ``image_path`` names for a list); the suffix picks the encoding.
    """

    index: int | str
    fields: Mapping[str, Any]
    images_b64: tuple[str, ...]
    image_names: tuple[str, ...] = field(default=())

    @property
    def question(self) -> str:
        """The question text.

        Raises:
            ValueError: the row has no question (a missing cell: VLMEvalKit could not build a prompt either).
        """
        value = self.fields.get("question")
        if value is None:
            raise ValueError(f"row index {self.index} has no question")
        return str(value)

    @property
    def hint(self) -> str | None:
        value = self.fields.get("hint")
        return None if value is None else str(value)

    @property
    def answer(self) -> Any:
        return self.fields.get("answer")

    @property
    def options(self) -> dict[str, Any]:
        """The option columns ``A``..``Z`` present and not missing, in letter order (VLMEvalKit's choices)."""
        return {letter: self.fields[letter] for letter in string.ascii_uppercase if self.fields.get(letter) is not None}

    def images(self) -> list[Any]:
        """The RGB PIL images the model reads, decoded as VLMEvalKit hands them to InternVL.

        VLMEvalKit decodes the base64 (``decode_base64_to_image``: RGBA/P/LA become RGB), writes the image
        to ``image_names`` (``<index>.jpg``: a JPEG at PIL's default quality, even when the TSV held a
        PNG), and InternVL's ``load_image`` reopens that file as RGB. The re-encoding is kept because it
        changes the pixels the model sees.

        Raises:
            ValueError: an image cannot be decoded or written in the format its name asks for.
        """
        from PIL import Image

        extensions = Image.registered_extensions()
        decoded = []
        for number, (data, name) in enumerate(zip(self.images_b64, self.image_names, strict=True)):
            try:
                image = decode_base64_image(data)
                fmt = extensions.get(Path(name).suffix.lower())
                if fmt is None:
                    raise ValueError(f"no image format for file name {name!r}")
                buffer = io.BytesIO()
                image.save(buffer, format=fmt)
                buffer.seek(0)
                decoded.append(Image.open(buffer).convert("RGB"))
            except Exception as error:
                raise ValueError(f"row index {self.index}: image {number} cannot be decoded ({error})") from error
        return decoded


def decode_base64_image(data: str) -> Any:
    """A PIL image from base64, as VLMEvalKit's ``decode_base64_to_image``: RGBA, P and LA become RGB
    (alpha dropped, not composited), other modes are kept."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.mode in ("RGBA", "P", "LA"):
        image = image.convert("RGB")
    return image


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A pandas cell as a plain Python value; missing cells become None."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    return None if _is_missing(value) else value


def _as_list(cell: str) -> list[str]:
    """A cell holding ``[...]`` is a Python list literal (VLMEvalKit's ``toliststr``), otherwise one string."""
    if cell.startswith("[") and cell.endswith("]"):
        try:
            values = ast.literal_eval(cell)
        except Exception as error:  # literal_eval raises several types on malformed text
            raise ValueError(f"cannot parse the list literal ({error})") from error
        return [str(value) for value in values]
    return [cell]


def _int_like(text: str) -> bool:
    """Whether VLMEvalKit's ``istype(x, int)`` holds: the text is a Python int literal."""
    try:
        return isinstance(ast.literal_eval(text), int)
    except Exception:  # literal_eval raises several types on text that is no literal
        return False


def read_tsv(path: str | Path) -> list[VlmRow]:
    """Read a VLMEvalKit benchmark TSV into rows, as ``ImageBaseDataset`` loads it.

    - Parsed with pandas' defaults for tab-separated files, as VLMEvalKit's ``load`` does, so the
      default NA strings (empty, ``NA``, ``None``, ``nan``, ``N/A``, ``null``...) are missing values:
      an option whose text is ``None`` is absent from the question, in VLMEvalKit as here.
    - Rows without an image are skipped (``skip_noimg``), with a warning saying how many.
    - An ``image`` cell of 64 characters or fewer is the ``index`` of another row whose image it
      shares; a list literal is several images (their file names in ``image_path``).

    Raises:
        ValueError: no ``index`` or ``image`` column, a repeated index, an image reference to a row
            that does not exist (or is itself a reference), an unparseable image list, or an image
            list whose ``image_path`` names do not match it one for one. Each names the row.
    """
    import pandas as pd

    path = Path(path)
    frame = pd.read_csv(path, sep="\t")
    for column in ("index", "image"):
        if column not in frame.columns:
            raise ValueError(f"{path}: no {column!r} column; is this a VLMEvalKit benchmark TSV?")
    keep = ~frame["image"].isna()
    skipped = int((~keep).sum())
    if skipped:
        logger.warning("%s: %d rows without an image are skipped, as VLMEvalKit does", path.name, skipped)
    frame = frame[keep]

    records = frame.to_dict("records")
    indices = [str(_plain(record["index"])) for record in records]
    duplicates = sorted(index for index, count in Counter(indices).items() if count > 1)
    if duplicates:
        raise ValueError(f"{path}: index {', '.join(duplicates[:5])} appears more than once")
    cells = {index: str(record["image"]) for index, record in zip(indices, records, strict=True)}
    numeric = all(_int_like(index) for index in indices)

    rows = []
    for index, record in zip(indices, records, strict=True):
        cell = cells[index]
        if len(cell) <= IMAGE_REFERENCE_MAX_CHARS:
            target = cells.get(cell)
            if target is None:
                raise ValueError(
                    f"{path}: row index {index}: its image cell {cell!r} names no row of the file "
                    "(a short image cell is the index of the row whose image it shares)"
                )
            if len(target) <= IMAGE_REFERENCE_MAX_CHARS:
                raise ValueError(f"{path}: row index {index}: its image refers to row {cell}, itself a reference")
            cell = target
        try:
            images = _as_list(cell)
        except ValueError as error:
            raise ValueError(f"{path}: row index {index}: image cell: {error}") from error
        fields = {key: _plain(value) for key, value in record.items() if key != "image"}
        if len(images) == 1:
            names = (f"{index}.jpg",)
        else:
            paths = fields.get("image_path")
            names = tuple(_as_list(str(paths))) if paths is not None else ()
            if len(names) != len(images):
                raise ValueError(
                    f"{path}: row index {index}: {len(images)} images but {len(names)} image_path names; "
                    "VLMEvalKit writes each image of a list under its image_path name"
                )
        fields["index"] = int(index) if numeric else index
        rows.append(VlmRow(fields["index"], fields, tuple(images), names))
    return rows


# ---------------------------------------------------------------------------------------- prompts
# The dataset kind VLMEvalKit gives each benchmark (DATASET_TYPE); it picks InternVL's prompt.
DATASET_KIND: Final[Mapping[str, str]] = {
    "MME": "Y/N",
    "MMBench_DEV_EN": "MCQ",
    "MMBench_DEV_EN_V11": "MCQ",
    "MMVP": "MCQ",
    "AI2D_TEST": "MCQ",
    "SEEDBench_IMG": "MCQ",
    "MMMU_DEV_VAL": "MCQ",
    "MMVet": "VQA",
}

# Exact instruction strings of VLMEvalKit's InternVL wrapper (vlm/internvl/utils.py, internvl_chat.py).
MCQ_INSTRUCTION: Final = "Answer with the option's letter from the given choices directly."
MCQ_INSTRUCTION_CN: Final = "请直接回答选项字母。"
OPEN_INSTRUCTION: Final = "Answer the question directly."
OPEN_INSTRUCTION_CN: Final = "请直接回答问题。"
MME_SUFFIX: Final = " Answer the question using a single word or phrase."

_CJK = re.compile("[\u4e00-\u9fff]")


def has_chinese(text: str) -> bool:
    """Whether ``text`` holds a CJK unified ideograph (VLMEvalKit's ``cn_string``)."""
    return _CJK.search(text) is not None


def mcq_prompt(row: VlmRow) -> str:
    """InternVL's multiple-choice text (``build_multi_choice_prompt``).

    The hint (when present) and the question on their own lines, one ``X. text`` line per option, then
    the instruction to answer with the letter; with no options (MMMU's open questions), the
    instruction to answer directly. The instructions are in Chinese when the text holds Chinese.
    """
    text = row.question if row.hint is None else f"{row.hint}\n{row.question}"
    options = row.options
    for letter, option in options.items():
        text += f"\n{letter}. {option}"
    chinese = has_chinese(text)
    if options:
        return text + "\n" + (MCQ_INSTRUCTION_CN if chinese else MCQ_INSTRUCTION)
    return text + "\n" + (OPEN_INSTRUCTION_CN if chinese else OPEN_INSTRUCTION)


def internvl_prompt(row: VlmRow, dataset: str) -> str:
    """The text VLMEvalKit's InternVL wrapper sends for ``row`` of ``dataset`` (``build_prompt``, no CoT,
    no MPO prompt: neither applies to these benchmarks by default).

    - Y/N (MME): the question, then :data:`MME_SUFFIX`.
    - MCQ (MMBench, MMVP, AI2D, SEED-Bench, MMMU): :func:`mcq_prompt`.
    - MM-Vet: the question as it is.

    Raises:
        ValueError: ``dataset`` is not one of :data:`DATASET_KIND`.
    """
    kind = DATASET_KIND.get(dataset)
    if kind is None:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASET_KIND)}")
    if kind == "Y/N":
        return row.question + MME_SUFFIX
    if kind == "MCQ":
        return mcq_prompt(row)
    return row.question


def scoring_choices(row: VlmRow, dataset: str) -> tuple[dict[str, Any], Any]:
    """The choices extraction matches against and the gold letter, as VLMEvalKit's MCQ evaluation sets them.

    For MMMU an open question (option ``A`` missing) becomes a two-way choice, ``A`` = the gold answer
    text and ``B`` = ``Other Answers`` (``MMMU_preproc``), and a gold answer that is not a single capital
    letter scores as ``A``.
    """
    choices = row.options
    gold = row.answer
    if "MMMU" in dataset:
        if row.fields.get("A") is None:
            choices = {**choices, "A": gold, "B": "Other Answers"}
            choices = dict(sorted(choices.items()))
        if not (isinstance(gold, str) and gold in string.ascii_uppercase and len(gold) == 1):
            gold = "A"
    return choices, gold


# ---------------------------------------------------------------------------------------- extraction
_SEPARATORS = ".()[],:;!*#{}"
_API_FAILURE = "Failed to obtain answer via API"
_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
# The "(correct) answer is X" rule of VLMEvalKit's newest matching_util.py (letters A-D only).
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def infer_option(prediction: str, choices: Mapping[str, Any], *, answer_is_rule: bool = False) -> str | None:
    """The option letter the prediction names, or ``Z``, or None (VLMEvalKit's ``can_infer_option``).

    - The API-failure marker: None. A known refusal phrase: ``Z``.
    - Each of ``. ( ) [ ] , : ; ! * # { }`` becomes a space; the text is split on whitespace; a letter
      counts only as a whole token, case-sensitive.
    - Exactly one choice letter among the tokens: that letter, when its first token is among the last
      four (position > tokens - 5). Several letters: None. No letter but a ``Z`` token: ``Z``.
    - ``answer_is_rule``: also accept ``(correct) answer is X`` (VLMEvalKit's newest revision only;
      off by default, as the published InternVL3 numbers predate it).
    """
    if _API_FAILURE in prediction:
        return None
    if any(phrase in prediction for phrase in _REFUSALS):
        return "Z"
    spaced = prediction
    for separator in _SEPARATORS:
        spaced = spaced.replace(separator, " ")
    tokens = spaced.split()
    present = [letter for letter in choices if letter in tokens]
    if len(present) == 1:
        letter = present[0]
        if tokens.index(letter) > len(tokens) - 5:
            return letter
    elif not present and "Z" in tokens:
        return "Z"
    if answer_is_rule:
        match = _ANSWER_IS.search(prediction)
        if match and match.group(1).upper() in choices:
            return match.group(1).upper()
    return None


def infer_text(prediction: str, choices: Mapping[str, Any]) -> str | None:
    """The option whose text the prediction contains, or None (VLMEvalKit's ``can_infer_text``).

    Case-insensitive substring match; exactly one option text must match. A prediction longer than
    twice the options' total text length is not matched at all.
    """
    lowered = prediction.lower()
    if len(lowered) > 2 * sum(len(str(text)) for text in choices.values()):
        return None
    hits = [letter for letter, text in choices.items() if str(text).lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def extract_choice(prediction: Any, choices: Mapping[str, Any], *, answer_is_rule: bool = False) -> str:
    """The answer letter of a multiple-choice prediction by VLMEvalKit's rules (``can_infer``), ``Z`` for
    a refusal, or :data:`UNRESOLVED` (never a guess).

    The prediction is taken as ``str(prediction)``, as VLMEvalKit does (a missing one is ``'nan'``).
    """
    text = str(prediction)
    option = infer_option(text, choices, answer_is_rule=answer_is_rule)
    if option is not None:
        return option
    matched = infer_text(text, choices)
    return UNRESOLVED if matched is None else matched


_PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# VLMEvalKit passes re.UNICODE as the count argument of its period substitution: at most 32 periods go.
_PERIODS_REMOVED = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """VQA-style punctuation clean-up, as VLMEvalKit's ``process_punctuation``.

    Each listed mark is deleted when it touches a space somewhere in the text (or the text has a
    digit-comma-digit), otherwise replaced by a space; then periods not followed by a digit are
    removed (the first 32 of them).
    """
    out = text
    digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _PUNCTUATION:
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIODS_REMOVED)


def extract_yes_no(prediction: Any) -> str:
    """``Yes``, ``No`` or :data:`UNRESOLVED` (VLMEvalKit's ``YOrN_Extraction``, whose ``Unknown`` this is).

    Lower-cased, punctuation processed, split into words: ``yes`` without ``no`` is Yes, ``no`` without
    ``yes`` is No, anything else (both, neither: ``not``, ``nope`` are not ``no``) is unresolved.
    """
    words = process_punctuation(str(prediction).lower()).split()
    if "yes" in words and "no" not in words:
        return "Yes"
    if "no" in words and "yes" not in words:
        return "No"
    return UNRESOLVED
