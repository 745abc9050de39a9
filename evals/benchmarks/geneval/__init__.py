"""GenEval (object-focused text-to-image alignment): the official prompts, layout, rules and aggregation.

Variants: ``geneval@hf-mask2former`` (scored in process with transformers Mask2Former + CLIP; not the
official mmdetection stack) and ``geneval@official`` (the official scorer run in the user's environment).
"""

from evals.runtime.records import item_seed

from .benchmark import GenEvalBenchmark

__all__ = ["GenEvalBenchmark", "item_seed"]
