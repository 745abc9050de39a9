"""WISE: world-knowledge text-to-image generation scored by a judge (legacy and verified protocols)."""

from .benchmark import WiseBenchmark

__all__ = ["WiseBenchmark"]
