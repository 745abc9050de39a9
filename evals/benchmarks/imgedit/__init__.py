"""ImgEdit-Bench: single-turn image editing (basic, UGE) scored by a judge."""

from .benchmark import ImgEditBenchmark

__all__ = ["ImgEditBenchmark"]
