"""MMVP: 150 pairs of images that CLIP-like encoders confuse, one question per pair; pair accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evals.benchmark import ResolvedBenchmark, register_benchmark

from ..vlm import VlmRow
from ..vlm_benchmark import EXTRACTION_JUDGE, ChoiceBenchmark, VlmProtocol, judge_variants
from ..vlm_scoring import score_mmvp


@register_benchmark
class MMVPBenchmark(ChoiceBenchmark):
    """MMVP: the headline is the share of pairs with both questions right (VLMEvalKit's ``Overall``)."""

    version = "1"
    variants = judge_variants({"default": "MMVP"}, EXTRACTION_JUDGE)
    headlines = ("pair_accuracy", "question_accuracy")
    unit_noun = "pairs"

    def check_rows(self, rows: Sequence[VlmRow], protocol: VlmProtocol) -> None:
        super().check_rows(rows, protocol)
        ordered = sorted(rows, key=lambda row: row.index)
        if len(ordered) % 2:
            raise ValueError(f"mmvp: {len(ordered)} questions, an odd number; MMVP's questions come in pairs")
        for first, second in zip(ordered[0::2], ordered[1::2], strict=True):
            if first.question != second.question:
                raise ValueError(
                    f"mmvp: rows index {first.index} and {second.index} form a pair but ask different questions "
                    f"({first.question!r} vs {second.question!r}); is {protocol.dataset}.tsv VLMEvalKit's?"
                )

    def units(self, rows: Sequence[VlmRow], protocol: VlmProtocol) -> list[Any]:
        # VLMEvalKit sorts by index and pairs rows 2i and 2i+1.
        rank = {index: position for position, index in enumerate(sorted(row.index for row in rows))}
        return [rank[row.index] // 2 for row in rows]

    def score_rows(
        self, resolved: ResolvedBenchmark, scored: Sequence[tuple[VlmRow, dict[str, Any]]]
    ) -> dict[str, Any]:
        return score_mmvp([self.outcome(row, payload, resolved) for row, payload in scored])
