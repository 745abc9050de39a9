"""Reconstruction benchmark: rFID, PSNR, SSIM, LPIPS (and IS) of a tokenizer's reconstructions."""

from .benchmark import ReconstructionBenchmark

__all__ = ["ReconstructionBenchmark"]
