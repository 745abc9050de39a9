"""MMMU_DEV_VAL: college-level questions with interleaved images; open questions as VLMEvalKit's two-way MCQ."""

from .benchmark import MMMUBenchmark

__all__ = ["MMMUBenchmark"]
