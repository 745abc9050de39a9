"""SEED-Bench, image part (9 dimensions): plain multiple-choice accuracy of generated answers."""

from .benchmark import SEEDBenchmark

__all__ = ["SEEDBenchmark"]
