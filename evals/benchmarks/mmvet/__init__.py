"""MM-Vet: open questions over six integrated capabilities, each answer graded 0.0-1.0 by a judge."""

from .benchmark import MMVetBenchmark

__all__ = ["MMVetBenchmark"]
