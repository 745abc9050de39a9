"""AI2D (science diagrams), test split: plain multiple-choice accuracy."""

from __future__ import annotations

from evals.benchmark import register_benchmark

from ..vlm_benchmark import EXTRACTION_JUDGE, ChoiceBenchmark, judge_variants


@register_benchmark
class AI2DBenchmark(ChoiceBenchmark):
    """Accuracy overall and per category (VLMEvalKit's ``mcq_vanilla_eval`` and ``report_acc``): the
    multiple-choice defaults of :class:`~evals.benchmarks.vlm_benchmark.ChoiceBenchmark`."""

    version = "1"
    variants = judge_variants({"default": "AI2D_TEST"}, EXTRACTION_JUDGE)
