"""SEED-Bench, image part (9 dimensions): plain multiple-choice accuracy of generated answers."""

from __future__ import annotations

from evals.benchmark import register_benchmark

from ..vlm_benchmark import EXTRACTION_JUDGE, ChoiceBenchmark, judge_variants


@register_benchmark
class SEEDBenchmark(ChoiceBenchmark):
    """Accuracy overall and per category (VLMEvalKit's ``mcq_vanilla_eval`` and ``report_acc``): the
    multiple-choice defaults of :class:`~evals.benchmarks.vlm_benchmark.ChoiceBenchmark`."""

    version = "1"
    variants = judge_variants({"default": "SEEDBench_IMG"}, EXTRACTION_JUDGE)
