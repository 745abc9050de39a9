"""Scoring rules of the understanding benchmarks, as VLMEvalKit scores them, over per-item outcomes.

Pure functions: no model, no judge, no I/O. Extraction (:mod:`evals.benchmarks.vlm`) turns each prediction into an
answer (an option letter, ``Z``, ``Yes``/``No``) or :data:`~evals.benchmarks.vlm.UNRESOLVED`; a judge may resolve
some before scoring. This module turns those outcomes into the numbers VLMEvalKit reports:

- MME (:func:`score_mme`, after ``MME_rating`` in ``dataset/utils/yorn.py``): acc and acc+ per subtask, grouped by
  image; perception and cognition (VLMEvalKit's ``reasoning``) as sums of subtask scores.
- MMBench (:func:`score_circular`, after ``mcq_circular_eval`` and ``report_acc`` in
  ``dataset/utils/multiple_choice.py``): CircularEval over the rotated copies of each question.
- MMVP (:func:`score_mmvp`, after ``report_acc_MMVP``): pair accuracy and per-question accuracy.
- AI2D, SEED-Bench, MMMU (:func:`score_mcq`, after ``mcq_vanilla_eval`` and ``report_acc``): plain accuracy.
- MM-Vet (:func:`score_mmvet`, after ``MMVet_acc`` in ``dataset/utils/mmvet.py``): mean judge grade x100.

Coverage policy, the same for every rule: an item whose answer is ``UNRESOLVED`` is a miss, exactly as VLMEvalKit's
``exact_matching`` policy (which turns it into ``Z``) or its ``Unknown`` Y/N answer scores it, so the headline numbers
equal VLMEvalKit's exact-matching numbers; the number of unresolved items (and of groups whose result hangs on one)
is reported beside them, so a reader sees how much a judge could still move. A missing MM-Vet grade is never a 0
in disguise: see :func:`score_mmvet`.

Scales: MCQ accuracies are percentages (VLMEvalKit's ``report_acc`` writes fractions; the published tables,
``leaderboards/published/``, print percentages). MME scores are VLMEvalKit's points (acc + acc+, 0-200 a subtask).
Each headline metric is ``{"value", "se", "n"}`` (:func:`evals.benchmarks.kit.mean_se`); the standard error is over
the unit the metric averages (images for MME, question groups for MMBench, pairs for MMVP), not over rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from evals.benchmarks.kit import mean_se, not_computed
from evals.benchmarks.vlm import UNRESOLVED

# ---------------------------------------------------------------------------------------- constants
# VLMEvalKit's MME super-categories (MME_rating). Subtask names are the TSV's ``category`` values, case-sensitive.
MME_PERCEPTION: Final = (
    "OCR",
    "artwork",
    "celebrity",
    "color",
    "count",
    "existence",
    "landmark",
    "position",
    "posters",
    "scene",
)
MME_COGNITION: Final = ("code_reasoning", "commonsense_reasoning", "numerical_calculation", "text_translation")

# MMBench's ability names and the short names VLMEvalKit's report_acc prints for them (MMB_abbrs).
MMBENCH_ABBREVIATIONS: Final[Mapping[str, str]] = {
    "coarse_perception": "CP",
    "finegrained_perception (instance-level)": "FP-S",
    "finegrained_perception (cross-instance)": "FP-C",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
    "attribute_reasoning": "AR",
}

# A rotated MMBench copy has index g_index + r * CIRCULAR_STRIDE (r = 1, 2, ...); the original has r = 0.
CIRCULAR_STRIDE: Final = 1_000_000

# MM-Vet capabilities, matched as substrings of the ``category`` cell (``rec,ocr,spat``), as MMVet_acc does.
MMVET_CAPABILITIES: Final = ("rec", "ocr", "know", "gen", "spat", "math")


# ---------------------------------------------------------------------------------------- outcomes
@dataclass(frozen=True)
class Outcome:
    """One scored question: what extraction (or a judge) made of the prediction, and the gold answer.

    Attributes:
        index: the TSV ``index`` (an int for MMBench, whose rotated copies are told apart by it).
        answer: the extracted answer (option letter, ``Z``, ``Yes``, ``No``) or ``UNRESOLVED``.
        gold: the gold answer as scoring compares it (``scoring_choices`` for MMMU).
        category: the ``category`` cell (MME subtask, MMBench/SEED/AI2D category, MMMU subject).
        l2_category: the ``l2-category`` cell, when the TSV has one (MMBench).
        split: the ``split`` cell, when the TSV has one (MMMU: ``dev`` / ``validation``).
        image: what groups MME's questions by image (VLMEvalKit's ``image_path``).
        question: the question text (MMVP checks that a pair shares it).
        group: the MMBench question a copy belongs to; None means ``index % 1,000,000`` (VLMEvalKit's rule).
            Either way the question's original row is the one whose index equals the group.
    """

    index: int | str
    answer: str
    gold: Any
    category: str | None = None
    l2_category: str | None = None
    split: str | None = None
    image: str | None = None
    question: str | None = None
    group: int | str | None = None

    @property
    def unresolved(self) -> bool:
        return self.answer == UNRESOLVED

    @property
    def hit(self) -> bool:
        """Right when the answer equals the gold one; ``UNRESOLVED`` (and ``Z``) never does."""
        return not self.unresolved and self.answer == self.gold


@dataclass(frozen=True)
class Graded:
    """One MM-Vet item: its capability string and the judge's grade in [0, 1], None when grading failed."""

    index: int | str
    category: str
    grade: float | None


# ---------------------------------------------------------------------------------------- helpers
def _check_gold(outcomes: Sequence[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.gold is None or outcome.gold == UNRESOLVED:
            raise ValueError(f"index {outcome.index}: no gold answer ({outcome.gold!r}); cannot score it")


def percent(values: Iterable[float]) -> dict[str, Any]:
    """:func:`mean_se` of fractions in [0, 1], scaled to percent; :func:`not_computed` when there are none."""
    scaled = [100.0 * float(value) for value in values]
    if not scaled:
        return not_computed("no items")
    return mean_se(scaled)


def _coverage(outcomes: Sequence[Outcome]) -> dict[str, int]:
    unresolved = sum(outcome.unresolved for outcome in outcomes)
    return {"items": len(outcomes), "resolved": len(outcomes) - unresolved, "unresolved": unresolved}


def _by(
    outcomes: Sequence[Outcome], key: Callable[[Outcome], str | None], name: Callable[[str], str] = str
) -> dict[str, dict[str, Any]]:
    """Percent accuracy per value of ``key`` (items without one skipped), sorted as report_acc sorts them."""
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        value = key(outcome)
        if value is not None:
            groups.setdefault(value, []).append(outcome)
    return {name(value): percent(item.hit for item in groups[value]) for value in sorted(groups)}


def _abbreviate(name: str) -> str:
    return MMBENCH_ABBREVIATIONS.get(name, name)


# ---------------------------------------------------------------------------------------- MME
def score_mme(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """MME's scores, as VLMEvalKit's ``MME_rating``.

    Per subtask (``category``), questions grouped by ``image``:

    - ``acc`` = 100 x the fraction of questions right;
    - ``acc_plus`` = 100 x the fraction of images whose two questions are both right;
    - ``score`` = acc + acc+ (0-200).

    ``perception`` is the sum of the 10 subtasks of :data:`MME_PERCEPTION` (0-2000), ``cognition`` (VLMEvalKit's
    ``reasoning``) the sum of the 4 of :data:`MME_COGNITION` (0-800); either is :func:`not_computed` when one of its
    subtasks has no questions (VLMEvalKit raises a KeyError there). The standard errors are over images, the unit
    acc+ needs: with two questions an image, the subtask score is the mean over images of
    100 x ((h1 + h2) / 2 + h1 h2), and a sum's error is the root of the summed squared errors (subtasks share no
    image). An unresolved answer (VLMEvalKit's ``Unknown``) is a miss, counted in ``coverage``.

    Raises:
        ValueError: an outcome without a category or image, or an image with other than exactly two questions
            (VLMEvalKit multiplies the first two scores: a third would be ignored silently, a single one would
            crash), or without a gold answer.
    """
    _check_gold(outcomes)
    images: dict[str, dict[str, list[Outcome]]] = {}
    for outcome in outcomes:
        if outcome.category is None or outcome.image is None:
            raise ValueError(f"index {outcome.index}: MME needs the category and the image of every question")
        images.setdefault(outcome.category, {}).setdefault(outcome.image, []).append(outcome)

    subtasks: dict[str, dict[str, Any]] = {}
    for category in sorted(images):
        acc, acc_plus, score = [], [], []
        for image, questions in images[category].items():
            if len(questions) != 2:
                indices = ", ".join(str(question.index) for question in questions)
                raise ValueError(
                    f"MME {category}: image {image!r} has {len(questions)} questions (index {indices}); acc+ needs "
                    "exactly two per image (a limit must keep whole images)"
                )
            first, second = (float(question.hit) for question in questions)
            acc.append(100.0 * (first + second) / 2)
            acc_plus.append(100.0 * first * second)
            score.append(acc[-1] + acc_plus[-1])
        members = [question for questions in images[category].values() for question in questions]
        subtasks[category] = {
            "acc": mean_se(acc),
            "acc_plus": mean_se(acc_plus),
            "score": mean_se(score),
            "coverage": _coverage(members),
        }

    def total(names: Sequence[str]) -> dict[str, Any]:
        missing = [name for name in names if name not in subtasks]
        if missing:
            return not_computed(f"no questions for subtask(s) {', '.join(missing)}")
        parts = [subtasks[name]["score"] for name in names]
        se = [part["se"] for part in parts]
        return {
            "value": sum(part["value"] for part in parts),
            "se": None if None in se else math.sqrt(sum(value**2 for value in se)),
            "n": sum(part["n"] for part in parts),
        }

    return {
        "perception": total(MME_PERCEPTION),
        "cognition": total(MME_COGNITION),
        "subtasks": subtasks,
        "coverage": _coverage(outcomes),
    }


# ---------------------------------------------------------------------------------------- MMBench
def circular_index(index: int | str) -> int:
    """The MMBench question a row of this ``index`` belongs to: ``index % 1,000,000`` (VLMEvalKit's rule).

    Raises:
        ValueError: an index that is not an integer (VLMEvalKit asserts integer indices).
    """
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"index {index!r}: CircularEval needs integer indices (or an explicit group)")
    return index % CIRCULAR_STRIDE


def circular_group(outcome: Outcome) -> int | str:
    """The question an MMBench row belongs to: its ``group`` when set, else ``index % 1,000,000`` (VLMEvalKit).

    Raises:
        ValueError: no group and an index that is not an integer (VLMEvalKit asserts integer indices).
    """
    if outcome.group is not None:
        return outcome.group
    return circular_index(outcome.index)


def score_circular(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """MMBench's CircularEval, as VLMEvalKit's ``mcq_circular_eval`` then ``report_acc``.

    The rows of a question (its original and each rotated copy, grouped by :func:`circular_group`) count as one:
    right only when every copy is right. The original (the row whose index is the group's, ``index < 1,000,000``)
    gives the question's category, l2-category and split, as VLMEvalKit reports only those rows.

    Under VLMEvalKit's exact matching a group is wrong as soon as one copy is confidently wrong (``Z`` included),
    and also wrong when the others are right but one is unresolved; such ``undecided`` groups are counted apart in
    ``coverage``: a judge could still turn them right. Accuracies are percentages over groups (overall, per
    l2-category and per category with VLMEvalKit's short names, per split); the standard error is over groups.

    Raises:
        ValueError: a group without its original row (VLMEvalKit drops such copies silently; here a partial
            run must keep whole questions), a non-integer index without a group, or a missing gold answer.
    """
    _check_gold(outcomes)
    groups: dict[int | str, list[Outcome]] = {}
    for outcome in outcomes:
        groups.setdefault(circular_group(outcome), []).append(outcome)

    questions: list[tuple[Outcome, bool, bool]] = []  # (original row, right, undecided)
    for key, rows in groups.items():
        originals = [row for row in rows if row.index == key]
        if not originals:
            indices = ", ".join(str(row.index) for row in rows)
            raise ValueError(
                f"MMBench question {key}: rotated copies (index {indices}) without the original row {key}; "
                "CircularEval needs every copy of a question"
            )
        right = all(row.hit for row in rows)
        wrong = any(not row.unresolved and not row.hit for row in rows)
        questions.append((originals[0], right, not right and not wrong))

    hits = [float(right) for _, right, _ in questions]
    return {
        "overall": percent(hits),
        "by_l2_category": _by_group(questions, lambda row: row.l2_category),
        "by_category": _by_group(questions, lambda row: row.category),
        "by_split": _by_group(questions, lambda row: row.split, abbreviate=False),
        "coverage": {
            **_coverage(outcomes),
            "groups": len(questions),
            "undecided_groups": sum(undecided for _, _, undecided in questions),
        },
    }


def _by_group(
    questions: Sequence[tuple[Outcome, bool, bool]], key: Callable[[Outcome], str | None], *, abbreviate: bool = True
) -> dict[str, dict[str, Any]]:
    hits: dict[str, list[float]] = {}
    for original, right, _ in questions:
        value = key(original)
        if value is not None:
            hits.setdefault(value, []).append(float(right))
    name = _abbreviate if abbreviate else str
    return {name(value): percent(hits[value]) for value in sorted(hits)}


# ---------------------------------------------------------------------------------------- MMVP
def score_mmvp(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """MMVP's scores, as VLMEvalKit's ``report_acc_MMVP``.

    Rows are sorted by index (VLMEvalKit sorts the predictions by index before scoring) and paired as rows 2i and
    2i+1, which must ask the same question. ``pair_accuracy`` (VLMEvalKit's ``Overall``, the published number) is
    the percentage of pairs with both questions right, its standard error over pairs; ``question_accuracy``
    (VLMEvalKit's ``Average``) the percentage of questions right. ``coverage`` counts unresolved questions and the
    ``undecided_pairs`` (no wrong answer, one unresolved: a judge could still make them right).

    Raises:
        ValueError: an odd number of rows, a pair whose questions differ or are missing (naming both indices), or a
            missing gold answer.
    """
    _check_gold(outcomes)
    rows = sorted(outcomes, key=lambda outcome: outcome.index)
    if len(rows) % 2:
        raise ValueError(f"MMVP: {len(rows)} questions, an odd number; MMVP's questions come in pairs")
    pairs = []
    for first, second in zip(rows[0::2], rows[1::2], strict=True):
        if first.question is None or second.question is None or first.question != second.question:
            raise ValueError(
                f"MMVP: rows index {first.index} and {second.index} form a pair but ask different questions "
                f"({first.question!r} vs {second.question!r}); is the file complete and in VLMEvalKit's order?"
            )
        pairs.append((first, second))
    both = [float(first.hit and second.hit) for first, second in pairs]
    undecided = sum(
        not (first.hit and second.hit) and all(row.hit or row.unresolved for row in (first, second))
        for first, second in pairs
    )
    return {
        "pair_accuracy": percent(both),
        "question_accuracy": percent(float(row.hit) for row in rows),
        "coverage": {**_coverage(rows), "pairs": len(pairs), "undecided_pairs": undecided},
    }


# ---------------------------------------------------------------------------------------- vanilla MCQ
def score_mcq(outcomes: Sequence[Outcome], *, split: str | None = None) -> dict[str, Any]:
    """Plain multiple-choice accuracy (AI2D, SEED-Bench, MMMU), as VLMEvalKit's ``mcq_vanilla_eval`` and ``report_acc``.

    A hit is the extracted letter equal to the gold one. Percentages overall, per ``l2-category`` and per
    ``category`` (sorted; MMBench's ability names shortened as report_acc does), and per split. ``split`` restricts
    everything to one split first (MMMU_DEV_VAL's published number is ``split="validation"``).

    Raises:
        ValueError: a missing gold answer, or a ``split`` no outcome has.
    """
    _check_gold(outcomes)
    if split is not None:
        kept = [outcome for outcome in outcomes if outcome.split == split]
        if not kept:
            present = sorted({str(outcome.split) for outcome in outcomes})
            raise ValueError(f"no outcome has split {split!r} (splits present: {', '.join(present)})")
        outcomes = kept
    return {
        "overall": percent(outcome.hit for outcome in outcomes),
        "by_l2_category": _by(outcomes, lambda outcome: outcome.l2_category, _abbreviate),
        "by_category": _by(outcomes, lambda outcome: outcome.category, _abbreviate),
        "by_split": _by(outcomes, lambda outcome: outcome.split),
        "coverage": _coverage(outcomes),
    }


# ---------------------------------------------------------------------------------------- MM-Vet
def score_mmvet(items: Sequence[Graded], *, missing_as_zero: bool = False) -> dict[str, Any]:
    """MM-Vet's scores from the judge's grades, as VLMEvalKit's ``MMVet_acc``.

    - ``overall``: 100 x the mean grade.
    - ``by_capability``: for each of :data:`MMVET_CAPABILITIES`, 100 x the mean grade of the items whose
      ``category`` contains it (a substring test, as VLMEvalKit's).
    - ``by_combination``: the same per full capability string, commas turned into underscores (``ocr_spat``), in
      order of first appearance (VLMEvalKit's second table).

    A failed grading (``grade`` None) is left out of every mean and counted as ``ungraded`` in ``coverage``:
    never a silent 0, never a silent 1. ``missing_as_zero`` reproduces VLMEvalKit, which scores 0 after its five
    failed tries. A capability no graded item has is :func:`not_computed`.

    Raises:
        ValueError: a grade outside [0, 1] or not a number.
    """
    for item in items:
        if item.grade is not None and not (isinstance(item.grade, int | float) and 0.0 <= item.grade <= 1.0):
            raise ValueError(f"MM-Vet index {item.index}: grade {item.grade!r} is not a number in [0, 1]")
    graded = [(item, 0.0 if item.grade is None else float(item.grade)) for item in items]
    if not missing_as_zero:
        graded = [(item, grade) for item, grade in graded if item.grade is not None]

    combinations: dict[str, list[float]] = {}
    for item, grade in graded:
        combinations.setdefault(item.category.replace(",", "_"), []).append(grade)
    return {
        "overall": percent(grade for _, grade in graded),
        "by_capability": {
            capability: percent(grade for item, grade in graded if capability in item.category)
            for capability in MMVET_CAPABILITIES
        },
        "by_combination": {name: percent(grades) for name, grades in combinations.items()},
        "coverage": {
            "items": len(items),
            "graded": sum(item.grade is not None for item in items),
            "ungraded": sum(item.grade is None for item in items),
            "missing_as_zero": missing_as_zero,
        },
    }
