"""MM-Vet: open questions over six integrated capabilities, each answer graded 0.0-1.0 by a judge."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.benchmark import ResolvedBenchmark, register_benchmark
from evals.judges.states import ParseError

from ..vlm import VlmRow
from ..vlm_benchmark import BY_ZERO, PairedMetric, UnitScore, VlmBenchmark, VlmProtocol, graded
from ..vlm_scoring import score_mmvet

# VLMEvalKit's MM-Vet judge: gpt-4-turbo (gpt-4-1106-preview); it asks up to five times (temperatures 0, 0.5 ...).
MMVET_JUDGE = {"model": "gpt-4-1106-preview", "temperature": 0.0, "max_tokens": 2048}
TEMPLATE = Path(__file__).parent / "templates" / "grade.yaml"


def parse_grade(reply: str) -> dict[str, Any]:
    """The judge's grade: the whole reply is a number in [0, 1], as VLMEvalKit reads it; ``ParseError`` otherwise."""
    try:
        grade = float(reply.strip())
    except ValueError:
        raise ParseError(f"the grade {reply.strip()[:40]!r} is not a number") from None
    if not (math.isfinite(grade) and 0.0 <= grade <= 1.0):
        raise ParseError(f"the grade {grade} is not in [0, 1]")
    return {"grade": grade}


@register_benchmark
class MMVetBenchmark(VlmBenchmark):
    """MM-Vet as VLMEvalKit's ``MMVet_acc`` scores it: 100 x the mean grade, overall and per capability.

    ``default``: a grading that fails (no reply, five replies that are not a number in [0, 1]) leaves the item
    failed, out of every mean and counted. ``vlmevalkit-zero`` counts it 0, as VLMEvalKit does: only to reproduce
    old numbers.
    """

    version = "1"
    variants = {
        "default": VlmProtocol("MMVet", "grade", MMVET_JUDGE),
        "vlmevalkit-zero": VlmProtocol("MMVet", "grade", MMVET_JUDGE, missing_as_zero=True),
    }
    judge_placeholders = ("{question}", "{answer}", "{prediction}")
    judge_parse_attempts = 5

    def extract(self, row: VlmRow, prediction: str, resolved: ResolvedBenchmark) -> str:
        raise TypeError("MM-Vet answers are graded by the judge, never extracted")  # fallback "grade" skips this

    def default_judge_template(self) -> Any:
        from evals.judges.template import JudgeTemplate

        return JudgeTemplate.load(TEMPLATE, self.judge_placeholders, source="builtin:mmvet-grade")

    def judge_values(self, row: VlmRow, prediction: str, protocol: VlmProtocol) -> dict[str, str]:
        return {"question": row.question, "answer": str(row.answer), "prediction": prediction}

    def judge_parser(self, row: VlmRow, protocol: VlmProtocol) -> Callable[[str], dict[str, Any]]:
        return parse_grade

    def last_resort(self, row: VlmRow, seed: int, protocol: VlmProtocol) -> dict[str, Any] | None:
        return {"grade": None, "by": BY_ZERO} if protocol.missing_as_zero else None

    def score_rows(
        self, resolved: ResolvedBenchmark, scored: Sequence[tuple[VlmRow, Mapping[str, Any]]]
    ) -> dict[str, Any]:
        items = [graded(row, payload) for row, payload in scored]
        return score_mmvet(items, missing_as_zero=resolved.protocol.missing_as_zero)

    def paired_metrics(self, protocol: VlmProtocol) -> dict[str, PairedMetric]:
        """``overall`` per question: the judge's grade (0-1, continuous), in percent."""
        return {"overall": PairedMetric("continuous")}

    def unit_scores(
        self, scored: Sequence[tuple[VlmRow, Mapping[str, Any]]], protocol: VlmProtocol
    ) -> dict[str, UnitScore]:
        """A question's grade, counted as ``score_mmvet`` counts it: a grading that failed is 0 in
        ``vlmevalkit-zero`` (``missing_as_zero``) and otherwise left out, exactly as it is left out of ``overall``.

        Raises:
            ValueError: a unit of several rows, or a grade that is not a number in [0, 1] (``score_mmvet`` refuses
                it too).
        """
        if len(scored) != 1:
            raise ValueError(f"MM-Vet: a unit of {len(scored)} rows; each question is its own unit")
        item = graded(*scored[0])
        if item.grade is None:
            return {"overall": UnitScore(0.0)} if protocol.missing_as_zero else {}
        if not (isinstance(item.grade, int | float) and 0.0 <= item.grade <= 1.0):
            raise ValueError(f"MM-Vet index {item.index}: grade {item.grade!r} is not a number in [0, 1]")
        return {"overall": UnitScore(float(item.grade))}
