"""Our reconstruction metrics against the official evaluator's code path: values and time.

On the same images (200 by default: seeded crops of the photos scikit-image ships, or --data DIR) and
the same reconstructions (the harness's produce stage, run once first and not timed), for one model and
a sweep of --variants models (tiny, seeds 0..N-1), it times and compares:

* official: UniLIP's ``tokenizer/scripts/evaluation.py`` with TiTok's evaluator, as
  :mod:`evals.metrics.official` re-expresses it: for every model the float64 Inception forward of its
  own ``inception.py`` on the reals *and* the reconstructions (batches of --official-batch-size),
  per-sample float64 running sums of outer products, FID by a torch covariance product and
  ``scipy.linalg.sqrtm``, Inception Score, and a per-image scikit-image loop on float32 arrays for PSNR
  and SSIM (``data_range=2.0``);
* ours: the harness's ``recon@upstream`` score stage and aggregate at its default settings (float32
  Inception, float64 statistics, real-image features cached per dataset and resolution, so the first
  model of a repetition computes them and the others read them; vectorised PSNR/SSIM).

Repetitions interleave the two (the order alternates) and every time reported is a median. FID parity is
reported at the run's size (N images: rank-deficient covariances when N <= 2048, where the eigenvalue and
sqrtm paths differ by rounding in thousands of near-zero eigenvalues) and at full rank: --full-rank
synthetic features (default 2,500 > 2,048 dimensions) carrying the feature error measured in this run
between our float32 network and the official float64 one, our FID against the official FID of the exact
features. Without --inception-weights the Inception weights are random ones of the real architecture
(seeded): agreement and time are what this measures, not any model's FID. LPIPS is off on both sides
(the official evaluator has none). Prints one JSON object (command, machine, settings, per-run values,
medians, ratios, parity) to stdout; progress to stderr.

    python benchmarks/recon_metrics_vs_official.py [--images 200] [--variants 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.benchmark import get_benchmark  # noqa: E402
from evals.metrics import FeatureStats, frechet_distance  # noqa: E402
from evals.metrics.official import (  # noqa: E402
    OfficialEvaluator,
    official_inception_features,
    official_inception_net,
    official_psnr_ssim,
)
from evals.registry import load_adapter  # noqa: E402
from evals.runtime.distributed import World  # noqa: E402
from evals.runtime.runner import load_arrays, load_record, run_benchmark  # noqa: E402
from unilip.data import builtin_photos, eval_transform  # noqa: E402
from unilip.pixels import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

WEIGHT_ENV = ("UNILIP_INCEPTION_WEIGHTS", "UNILIP_LPIPS_ALEX_WEIGHTS", "UNILIP_LPIPS_VGG_WEIGHTS")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_images(folder: Path, count: int, seed: int) -> None:
    """``count`` seeded random crops (random scale, position, flip) of the built-in photos, as PNG."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(p) for p in builtin_photos().values()]
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 3, min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"img{index:04d}.png")


def official_run(
    net: torch.nn.Module, bench_dir: Path, data: Path, item_ids: list[str], size: int, batch_size: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """One model through the official evaluator's path; returns its metrics and its float64 pool3 features."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    evaluator = OfficialEvaluator()
    psnrs: list[float] = []
    ssims: list[float] = []
    features: dict[str, list[np.ndarray]] = {"real": [], "fake": []}
    for start in range(0, len(item_ids), batch_size):
        ids = item_ids[start : start + batch_size]
        # The evaluator receives the ImageNet-normalised input and un-normalises it (float32).
        normalised = (
            torch.stack([eval_transform(Image.open(data / i).convert("RGB"), size) for i in ids]) - mean
        ) / std
        real = normalised * std + mean
        # The model's output quantised to 8 bits in [-1, 1] (what the PNG holds), then mapped to [0, 1].
        q = torch.stack(
            [
                torch.from_numpy(np.array(Image.open(bench_dir / load_record(bench_dir, "produce", i)["output"])))
                for i in ids
            ]
        ).permute(0, 3, 1, 2)
        fake = ((q.float() - 127.5) / 127.5 + 1) / 2
        fake_out = official_inception_features(net, (fake * 255).to(torch.uint8))
        real_out = official_inception_features(net, (real * 255).to(torch.uint8))
        evaluator.update(real_out["2048"], fake_out["2048"], fake_out["logits_unbiased"])
        features["real"].append(real_out["2048"].numpy())
        features["fake"].append(fake_out["2048"].numpy())
        p, s = official_psnr_ssim(fake, real)
        psnrs += p
        ssims += s
    metrics = {
        "rfid": evaluator.fid(),
        "is": evaluator.inception_score(),
        "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
    }
    return metrics, {name: np.concatenate(parts) for name, parts in features.items()}


def full_rank_parity(samples: int, feature_error: float, seed: int = 0) -> dict[str, Any]:
    """Our FID (features with ``feature_error`` relative noise, rounded to float32, float64 statistics)
    against the official FID of the exact float64 features, on ``samples`` > 2048 synthetic pool3-like
    vectors (correlated, non-negative, O(1)), so that both covariances have full rank."""
    dim = 2048
    generator = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / dim**0.5
    real = torch.relu(torch.randn(samples, dim, generator=generator, dtype=torch.float64) @ mix)
    fake = torch.relu(torch.randn(samples, dim, generator=generator, dtype=torch.float64) @ mix + 0.05) * 1.02
    official = OfficialEvaluator()
    official.update(real, fake, per_sample=False)  # the per-sample loop's sums, up to float64 rounding
    expected = official.fid()
    ours_real, ours_fake = FeatureStats(dim), FeatureStats(dim)
    for stats, exact in ((ours_real, real), (ours_fake, fake)):
        noise = torch.randn(exact.shape, generator=generator, dtype=torch.float64) * feature_error * exact.abs().max()
        stats.update((exact + noise).to(torch.float32))
    ours = frechet_distance(ours_real, ours_fake)
    return {
        "samples": samples,
        "dims": dim,
        "feature_error_applied": feature_error,
        "official_fid": expected,
        "our_fid": ours,
        "fid_rel_diff": abs(ours - expected) / expected,
    }


def machine() -> dict[str, Any]:
    import scipy
    import skimage
    import torch_fidelity

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "scipy": scipy.__version__,
        "scikit_image": skimage.__version__,
        "torch_fidelity": str(getattr(torch_fidelity, "__version__", "unknown")),
        "numpy": np.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224, help="evaluation resolution (default 224)")
    parser.add_argument("--data", help="an image folder instead of the generated crops")
    parser.add_argument("--inception-weights", help="real torch-fidelity Inception weights (default: random)")
    parser.add_argument("--batch-size", type=int, default=32, help="our batch size (default 32)")
    parser.add_argument("--official-batch-size", type=int, default=32, help="the official side's (default 32)")
    parser.add_argument("--variants", type=int, default=4, help="models in the sweep (tiny, seeds 0..N-1)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions (default 1)")
    parser.add_argument("--full-rank", type=int, default=2500, help="samples of the full-rank check (0: skip)")
    parser.add_argument("--out", help="keep the work directory here (default: a temporary one)")
    args = parser.parse_args()

    work = Path(args.out or tempfile.mkdtemp(prefix="recon-vs-official-"))
    work.mkdir(parents=True, exist_ok=True)
    # No metric weights from this machine: LPIPS is off on both sides, Inception is the file given here.
    for name in WEIGHT_ENV:
        os.environ.pop(name, None)
    os.environ["TORCH_HOME"] = str(work / "torch-home")
    data = Path(args.data) if args.data else work / "images"
    if not args.data:
        data.mkdir(exist_ok=True)
        make_images(data, args.images, seed=0)
    weights = args.inception_weights
    if weights is None:
        from evals.metrics.testing import random_inception_state_dict

        weights = str(work / "random-inception.pth")
        torch.save(random_inception_state_dict(seed=0), weights)
    load_before = os.getloadavg()
    bench, variant = get_benchmark("recon@upstream")
    options = {"data_kind": "folder", "data": str(data), "num_images": args.images, "resolution": args.size}
    adapters = [load_adapter("tiny", seed=seed) for seed in range(args.variants)]
    # Reconstructions once per model (untimed), with Inception unavailable so that this scoring is cheap;
    # every timed run re-scores a copy with --rescore (the produce records stay current).
    templates = []
    for seed, adapter in enumerate(adapters):
        resolved = bench.resolve(variant, options, adapter)
        template = work / "produced" / f"seed{seed}" / resolved.name
        run_benchmark(resolved, adapter, template, World(0, 1), args.batch_size, work / "unused-cache", progress=False)
        templates.append(template)
        log(f"produced seed {seed}")
    scored_options = {**options, "inception_weights": weights}  # every other setting at its default
    resolved_runs = [bench.resolve(variant, scored_options, adapter) for adapter in adapters]
    item_ids = [item.id for item in resolved_runs[0].items]
    net = official_inception_net(weights)

    runs: list[dict[str, Any]] = []
    official_features: list[dict[str, np.ndarray]] = []
    for repeat in range(args.repeats):
        cache = work / f"cache{repeat}"  # cold for the first model of each repetition
        for seed, (adapter, resolved) in enumerate(zip(adapters, resolved_runs, strict=True)):
            order = ("official", "ours") if (repeat + seed) % 2 == 0 else ("ours", "official")
            row: dict[str, Any] = {"repeat": repeat, "seed": seed, "order": list(order)}
            for side in order:
                bench_dir = work / f"rep{repeat}" / f"seed{seed}" / resolved.name
                if side == "ours":
                    shutil.copytree(templates[seed], bench_dir)
                    result = run_benchmark(
                        resolved, adapter, bench_dir, World(0, 1), args.batch_size, cache, progress=False, rescore=True
                    )
                    row["ours_s"] = result["timings_s"]["score"] + result["timings_s"]["aggregate"]
                    row["ours"] = {name: result["metrics"][name]["value"] for name in ("rfid", "is", "psnr", "ssim")}
                    row["ours_features"] = str(bench_dir)
                else:
                    started = time.perf_counter()
                    metrics, features = official_run(
                        net, templates[seed], data, item_ids, args.size, args.official_batch_size
                    )
                    row["official_s"] = time.perf_counter() - started
                    row["official"] = metrics
                    if repeat == 0:
                        official_features.append(features)
            log(json.dumps({k: v for k, v in row.items() if k != "ours_features"}))
            runs.append(row)

    # Feature error of our float32 network against the official float64 forward, on these images.
    feature_error = 0.0
    for seed, features in enumerate(official_features):
        bench_dir = Path(next(r["ours_features"] for r in runs if r["seed"] == seed))
        arrays = [load_arrays(bench_dir, resolved_runs[seed].stages[1], i) for i in item_ids]
        for name in ("real", "fake"):
            ours = np.stack([a[f"{name}_pool3"] for a in arrays])
            feature_error = max(
                feature_error, float(np.abs(ours - features[name]).max() / np.abs(features[name]).max())
            )
    for row in runs:
        row.pop("ours_features")

    def median(key: str, seeds: range) -> float:
        per_repeat = [
            sum(r[key] for r in runs if r["repeat"] == rep and r["seed"] in seeds) for rep in range(args.repeats)
        ]
        return statistics.median(per_repeat)

    one = {"official_s": median("official_s", range(1)), "ours_s": median("ours_s", range(1))}
    sweep = {
        "official_s": median("official_s", range(args.variants)),
        "ours_s": median("ours_s", range(args.variants)),
    }
    for entry in (one, sweep):
        entry["speedup"] = entry["official_s"] / entry["ours_s"]
    differences = {
        "rfid_rel": max(abs(r["ours"]["rfid"] - r["official"]["rfid"]) / abs(r["official"]["rfid"]) for r in runs),
        "is_rel": max(abs(r["ours"]["is"] - r["official"]["is"]) / abs(r["official"]["is"]) for r in runs),
        "psnr_abs": max(abs(r["ours"]["psnr"] - r["official"]["psnr"]) for r in runs),
        "ssim_abs": max(abs(r["ours"]["ssim"] - r["official"]["ssim"]) for r in runs),
    }
    summary: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "settings": {
            "benchmark": "recon@upstream",
            "ours": "harness defaults (float32 Inception, float64 statistics, real features cached)",
            "images": len(item_ids),
            "size": args.size,
            "variants": args.variants,
            "repeats": args.repeats,
            "batch_size": args.batch_size,
            "official_batch_size": args.official_batch_size,
            "inception_weights": "given" if args.inception_weights else "random (seed 0)",
        },
        "runs": runs,
        "one_model": one,
        "sweep": sweep,
        "parity_at_run_size": {
            **differences,
            "note": f"{len(item_ids)} samples in 2048 dimensions: rank-deficient covariances"
            if len(item_ids) <= 2048
            else "full-rank covariances",
            "feature_error_float32_vs_official": feature_error,
        },
    }
    if args.full_rank:
        log(f"full-rank check on {args.full_rank} synthetic samples")
        summary["parity_full_rank"] = full_rank_parity(args.full_rank, max(feature_error, 1e-7))
    print(json.dumps(summary, indent=2))
    log(
        f"speed-up {one['speedup']:.2f}x for one model, {sweep['speedup']:.2f}x for the {args.variants}-model "
        f"sweep; FID rel {differences['rfid_rel']:.1e} at {len(item_ids)} images"
        + (f", {summary['parity_full_rank']['fid_rel_diff']:.1e} at full rank" if args.full_rank else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
