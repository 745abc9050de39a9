"""MMMU_DEV_VAL: college-level questions with interleaved images; open questions as VLMEvalKit's two-way MCQ."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evals.benchmark import ResolvedBenchmark, register_benchmark

from ..kit import not_computed
from ..vlm import VlmRow
from ..vlm_benchmark import EXTRACTION_JUDGE, ChoiceBenchmark, judge_variants
from ..vlm_scoring import score_mcq


@register_benchmark
class MMMUBenchmark(ChoiceBenchmark):
    """MMMU as VLMEvalKit scores it: every dev and validation row is answered (the images after the text, the first
    upscaled 2x, 12 tiles each within the 64-tile budget); an open question (no option ``A``) is scored as the
    two-way choice ``A`` = the gold answer, ``B`` = ``Other Answers`` (hence the variant name ``two-way``), and the
    headline is the ``validation`` split's accuracy, with each subject beside it."""

    version = "1"
    variants = judge_variants({"two-way": "MMMU_DEV_VAL"}, EXTRACTION_JUDGE, split="validation")

    def score_rows(
        self, resolved: ResolvedBenchmark, scored: Sequence[tuple[VlmRow, dict[str, Any]]]
    ) -> dict[str, Any]:
        outcomes = [self.outcome(row, payload, resolved) for row, payload in scored]
        split = resolved.protocol.split
        every_split = score_mcq(outcomes)
        if not any(outcome.split == split for outcome in outcomes):
            reason = f"no {split} question was scored (splits scored: {', '.join(every_split['by_split']) or 'none'})"
            return {"overall": not_computed(reason), "by_split": every_split["by_split"]}
        metrics = score_mcq(outcomes, split=split)
        metrics["by_split"] = every_split["by_split"]
        return metrics
