"""AI2D (science diagrams), test split: plain multiple-choice accuracy."""

from .benchmark import AI2DBenchmark

__all__ = ["AI2DBenchmark"]
