"""MMBench DEV_EN (v1.0 and v1.1), scored with CircularEval over the rotated copies of each question."""

from .benchmark import MMBenchBenchmark

__all__ = ["MMBenchBenchmark"]
