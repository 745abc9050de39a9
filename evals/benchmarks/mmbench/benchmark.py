"""MMBench DEV_EN (v1.0 and v1.1), scored with CircularEval over the rotated copies of each question."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evals.benchmark import ResolvedBenchmark, register_benchmark

from ..vlm import VlmRow
from ..vlm_benchmark import EXTRACTION_JUDGE, ChoiceBenchmark, VlmProtocol, judge_variants
from ..vlm_scoring import circular_index, score_circular


@register_benchmark
class MMBenchBenchmark(ChoiceBenchmark):
    """MMBench: a question counts as right only when every rotated copy of it is (VLMEvalKit's CircularEval)."""

    version = "1"
    variants = judge_variants({"dev-en": "MMBench_DEV_EN", "dev-en-v11": "MMBench_DEV_EN_V11"}, EXTRACTION_JUDGE)
    unit_noun = "questions"

    def check_rows(self, rows: Sequence[VlmRow], protocol: VlmProtocol) -> None:
        super().check_rows(rows, protocol)
        indices = {row.index for row in rows}
        orphans = sorted({circular_index(row.index) for row in rows} - indices)
        if orphans:
            raise ValueError(
                f"mmbench: {len(orphans)} questions have rotated copies but no original row (first: index "
                f"{orphans[0]}); CircularEval needs every copy of a question (is {protocol.dataset}.tsv complete?)"
            )

    def units(self, rows: Sequence[VlmRow], protocol: VlmProtocol) -> list[Any]:
        # A question and its rotated copies (index + k * 1,000,000) are scored together.
        return [circular_index(row.index) for row in rows]

    def score_rows(
        self, resolved: ResolvedBenchmark, scored: Sequence[tuple[VlmRow, dict[str, Any]]]
    ) -> dict[str, Any]:
        return score_circular([self.outcome(row, payload, resolved) for row, payload in scored])
