"""WISE: world-knowledge text-to-image generation scored by a judge (legacy and verified protocols)."""

from evals.benchmarks.wise.benchmark import WiseBenchmark

__all__ = ["WiseBenchmark"]
