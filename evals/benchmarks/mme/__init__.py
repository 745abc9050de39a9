"""MME: yes/no questions, two per image with opposite answers; perception and cognition scores."""

from .benchmark import MMEBenchmark

__all__ = ["MMEBenchmark"]
