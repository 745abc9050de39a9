"""PSNR and SSIM against the official evaluator's per-image scikit-image loop: values and time, side by side.

The same ``--images`` pairs (seeded crops of the photos scikit-image ships at ``--size``, and a noisy copy of
each quantised to 8 bits, both in [0, 1]) go through

* official: ``evals.metrics.official.official_psnr_ssim``, UniLIP's evaluator's loop: per image, float32
  ``H x W x 3`` arrays into ``skimage.metrics.peak_signal_noise_ratio`` and ``structural_similarity``
  (``data_range=2.0``, computed in float32);
* ours: ``evals.metrics.psnr_per_image`` and ``ssim_per_image`` on the batch tensors as the recon benchmark calls
  them (float64 sums; on CPUs SSIM runs one image at a time through SciPy's running-sum box filter).

Repetitions interleave the two (the order alternates); times are medians. Prints one JSON object (command, machine,
per-repetition times, medians, ratio, the largest value differences) to stdout.

    python benchmarks/pixel_metrics_vs_official.py [--images 200] [--size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.benchmarks.recon.benchmark import ReconstructionBenchmark  # noqa: E402
from evals.metrics import psnr_per_image, ssim_per_image  # noqa: E402
from evals.metrics.official import official_psnr_ssim  # noqa: E402
from unilip.data import builtin_photos, eval_transform  # noqa: E402


def image_pairs(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` crops of the built-in photos at ``size`` and noisy 8-bit copies: two ``B x 3 x H x W`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    photos = list(builtin_photos().values())
    reals = []
    for index in range(count):
        photo = photos[index % len(photos)]
        side = int(rng.integers(min(photo.size) // 2, min(photo.size) + 1))
        left = int(rng.integers(0, photo.size[0] - side + 1))
        top = int(rng.integers(0, photo.size[1] - side + 1))
        reals.append(eval_transform(photo.crop((left, top, left + side, top + side)), size))
    real = torch.stack(reals).clamp(0, 1)
    noise = torch.from_numpy(rng.normal(0.0, 0.08, real.shape)).to(torch.float32)
    fake = ((real + noise).clamp(0, 1) * 255).round() / 255
    return fake, real


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    protocol = ReconstructionBenchmark.variants["upstream"]
    fake, real = image_pairs(args.images, args.size, seed=0)
    load_before = os.getloadavg()

    def official() -> tuple[list[float], list[float]]:
        return official_psnr_ssim(fake, real)

    def ours() -> tuple[list[float], list[float]]:
        psnr = psnr_per_image(fake, real, data_range=protocol.psnr_data_range)
        ssim = ssim_per_image(fake, real, data_range=protocol.ssim_data_range)
        return psnr.tolist(), ssim.tolist()

    times: dict[str, list[float]] = {"official_s": [], "ours_s": []}
    values: dict[str, tuple[list[float], list[float]]] = {}
    for repeat in range(args.repeats):
        order = (("official_s", official), ("ours_s", ours))
        for key, work in order if repeat % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            values[key] = work()
            times[key].append(time.perf_counter() - started)
        print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in times.items()), file=sys.stderr)
    medians = {key: statistics.median(value) for key, value in times.items()}
    psnr_ours, ssim_ours = values["ours_s"]
    psnr_official, ssim_official = values["official_s"]
    summary = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"images": args.images, "size": args.size, "repeats": args.repeats, "protocol": "upstream"},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "runs_s": {key: [round(t, 4) for t in value] for key, value in times.items()},
        "median_s": {key: round(value, 4) for key, value in medians.items()},
        "speedup": medians["official_s"] / medians["ours_s"],
        "max_abs_difference": {
            "psnr": max(abs(a - b) for a, b in zip(psnr_ours, psnr_official, strict=True)),
            "ssim": max(abs(a - b) for a, b in zip(ssim_ours, ssim_official, strict=True)),
        },
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
