"""MMVP: 150 pairs of images that CLIP-like encoders confuse, one question per pair; pair accuracy."""

from .benchmark import MMVPBenchmark

__all__ = ["MMVPBenchmark"]
