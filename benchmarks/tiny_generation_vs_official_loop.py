"""Images per second on the CPU: our batched generation against the official scripts' loop, tiny model.

The official GenEval/WISE scripts (``eval/geneval/geneval.py``; ``docs/unilip-spec.md`` sections 5-6) go one
prompt at a time: reseed the global RNG per prompt, then for each of the ``n`` samples one call of
``generate_image`` with a batch of one image (CFG: the conditional and the null prompt in one batch of two),
which rebuilds the DPM-Solver++ scheduler on every call. The "official loop" here is that structure with our
modules (one :meth:`UniLIPPipeline._sample` call per image, no filler rows, per-image seed ``seed + k`` instead
of consecutive draws of one RNG so that the images can be compared). "Ours" is what ``unilip eval run`` does for
GenEval: ``--batch-size`` prompts per :meth:`UniLIPPipeline.generate_many` call, each prompt with its own seed,
images batched in fixed-shape batches of ``pipeline.batch_size`` rows of one prompt length.

Both loops run on the same prompts (GenEval's first ones) and seeds, in interleaved rounds (the order alternates
each round; the machine is shared and noisy), and the medians are reported with the largest pixel difference
between the two loops' images (they differ only at float rounding: kernels round differently for batches of
other shapes). JSON on stdout.

    python benchmarks/tiny_generation_vs_official_loop.py --prompts 8 --n 4 --steps 20 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch


def official_loop(pipeline, prompts: list[str], seeds: list[int], n: int, settings) -> list[list]:
    """The official scripts' structure: per prompt a global reseed, then one batch-of-one call per image."""
    from unilip.pipelines import tensor_to_pil
    from unilip.prompts import NULL_T2I_PROMPT, t2i_text

    out = []
    for prompt, seed in zip(prompts, seeds, strict=True):
        torch.manual_seed(seed)  # set_global_seed(42) once per prompt, as upstream (here it seeds nothing used)
        images = []
        for k in range(n):
            # One call per image: tokenise, condition, a fresh scheduler (sample_latents builds it), denoise, decode.
            pixels = pipeline._sample([t2i_text(prompt)], [NULL_T2I_PROMPT], None, [seed + k], settings)
            images.extend(tensor_to_pil(pixels))
        out.append(images)
    return out


def ours(pipeline, prompts: list[str], seeds: list[int], n: int, settings, batch_size: int) -> list[list]:
    """The harness's GenEval produce step: ``batch_size`` prompts per call, each with its own seed."""
    out = []
    for start in range(0, len(prompts), batch_size):
        out.extend(
            pipeline.generate_many(
                prompts[start : start + batch_size],
                seeds[start : start + batch_size],
                n=n,
                steps=settings.steps,
                guidance=settings.guidance,
                flow_shift=settings.flow_shift,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the interleaved rounds and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-digits")
    parser.add_argument("--prompts", type=int, default=8, help="GenEval's first prompts")
    parser.add_argument("--n", type=int, default=4, help="images per prompt (GenEval: 4)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per call (unilip eval run --batch-size)")
    parser.add_argument("--pipeline-batch", type=int, default=8, help="rows per model call (the adapter's: 8)")
    args = parser.parse_args(argv)

    from evals.benchmarks.geneval.protocol import load_prompts
    from evals.runtime.records import item_seed
    from unilip.pipelines import SamplerSettings, load_pipeline
    from unilip.prompts import NULL_T2I_PROMPT, t2i_text

    pipeline = load_pipeline(args.model, batch_size=args.pipeline_batch)
    prompts = [record["prompt"] for record in load_prompts()[: args.prompts]]
    seeds = [item_seed(0, f"{index:05d}") for index in range(len(prompts))]
    settings = SamplerSettings(steps=args.steps)
    lengths = [pipeline._pair_length(t2i_text(prompt), NULL_T2I_PROMPT) for prompt in prompts]

    calls = {"n": 0}
    sample = pipeline._sample

    def counted(*a, **k):
        calls["n"] += 1
        return sample(*a, **k)

    pipeline._sample = counted
    runs = {
        "official_loop": lambda: official_loop(pipeline, prompts, seeds, args.n, settings),
        "ours_batched": lambda: ours(pipeline, prompts, seeds, args.n, settings, args.batch_size),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    model_calls: dict[str, int] = {}
    images: dict[str, list[list]] = {}
    for name, run in runs.items():  # warm-up, not timed
        calls["n"] = 0
        images[name] = run()
        model_calls[name] = calls["n"]
    for round_index in range(args.rounds):
        order = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
        for name in order:
            started = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - started)

    total = len(prompts) * args.n
    diffs = [
        np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
        for row_a, row_b in zip(images["official_loop"], images["ours_batched"], strict=True)
        for a, b in zip(row_a, row_b, strict=True)
    ]
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "model": args.model,
        "prompts": len(prompts),
        "images_per_prompt": args.n,
        "images": total,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "pipeline_batch": args.pipeline_batch,
        "prompt_pair_token_lengths": lengths,
        "model_calls": model_calls,
        "rounds": args.rounds,
        "seconds": seconds,
        "median_seconds": medians,
        "images_per_second": {name: total / value for name, value in medians.items()},
        "speedup_ours_over_official": medians["official_loop"] / medians["ours_batched"],
        "same_images": {
            "identical_images": sum(int(not d.any()) for d in diffs),
            "of": len(diffs),
            "max_abs_grey_level_difference": int(max(d.max() for d in diffs)),
            "differing_pixel_values": int(sum(int((d > 0).sum()) for d in diffs)),
            "pixel_values": int(sum(d.size for d in diffs)),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
