"""digits-vqa: the understanding benchmarks' formats and scoring on held-out handwritten digits (CPU scale)."""

from .benchmark import DigitsVQABenchmark

__all__ = ["DigitsVQABenchmark"]
