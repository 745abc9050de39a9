"""Our reconstruction metrics against the official evaluator's way: same values, less time.

Measures, in one run on the same images (200 by default: seeded crops of the photos scikit-image
ships, or --data DIR), for one model and for a sweep of 4 model variants:

* official way (UniLIP's ``tokenizer/scripts/evaluation.py``, written out below): for every model,
  torch-fidelity Inception in float64 on the reals *and* the reconstructions, statistics with
  ``np.cov``, then a per-image scikit-image loop for PSNR and SSIM (upstream settings);
* ours: the harness's ``recon@upstream`` score stage and aggregate, with the real-image features
  cached (computed once per dataset and resolution) and vectorised PSNR/SSIM.

Both read the same reconstructions (the harness's produce stage, run first and not timed). It checks
that the values agree (FID within 1e-4 relative, PSNR and SSIM within 1e-6) and prints both time
ratios. Without --inception-weights it uses random Inception weights of the right architecture: the
timings and the agreement are what this measures, not the FID of any real model.

    python benchmarks/recon_metrics_vs_official.py [--images 200] [--size 224] [--inception-dtype float32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.benchmark import get_benchmark  # noqa: E402
from evals.registry import load_adapter  # noqa: E402
from evals.runtime.distributed import World  # noqa: E402
from evals.runtime.runner import load_record, run_benchmark  # noqa: E402
from unilip.data import builtin_photos, eval_transform  # noqa: E402
from unilip.pixels import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


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


def official_way(
    bench_dir: Path, data: Path, item_ids: list[str], size: int, weights: str, batch_size: int
) -> dict[str, float]:
    """UniLIP's evaluator: float64 Inception on reals and fakes every time, np.cov stats, skimage loop."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat",
        ["2048"],
        feature_extractor_weights_path=weights,
        feature_extractor_internal_dtype="float64",
    ).eval()
    # torch-fidelity 0.4.0 maps "float64" to float32 (helpers.text_to_dtype); run float64 as the official
    # evaluator (torch-fidelity 0.3.0) did: its forward casts inputs to this attribute.
    extractor.feature_extractor_internal_dtype = torch.float64
    extractor.double()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    real_features, fake_features, psnrs, ssims = [], [], [], []
    for start in range(0, len(item_ids), batch_size):
        ids = item_ids[start : start + batch_size]
        real = torch.stack([eval_transform(Image.open(data / i).convert("RGB"), size) for i in ids])
        real = ((real - mean) / std) * std + mean  # the evaluator un-normalises the normalised input
        q = torch.stack(
            [
                torch.from_numpy(
                    np.array(Image.open(bench_dir / load_record(bench_dir, "produce", i)["output"]))
                ).permute(2, 0, 1)
                for i in ids
            ]
        )
        fake = ((q.float() - 127.5) / 127.5 + 1) / 2  # 8-bit quantised reconstruction, back to [0, 1]
        with torch.no_grad():
            real_features.append(extractor((real * 255).to(torch.uint8))[0].double())
            fake_features.append(extractor((fake * 255).to(torch.uint8))[0].double())
        for r, f in zip(real.permute(0, 2, 3, 1).numpy(), fake.permute(0, 2, 3, 1).numpy(), strict=True):
            psnrs.append(peak_signal_noise_ratio(f, r))
            ssims.append(structural_similarity(f, r, channel_axis=-1, data_range=2.0))
    stats_real = fid_features_to_statistics(torch.cat(real_features))
    stats_fake = fid_features_to_statistics(torch.cat(fake_features))
    fid = fid_statistics_to_metric(stats_real, stats_fake, verbose=False)["frechet_inception_distance"]
    return {"rfid": float(fid), "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224, help="evaluation resolution (default 224)")
    parser.add_argument("--data", help="an image folder instead of the generated crops")
    parser.add_argument("--inception-weights", help="real torch-fidelity Inception weights (default: random)")
    parser.add_argument(
        "--inception-dtype",
        choices=["float64", "float32"],
        default="float64",
        help="dtype of OUR Inception pass (the official way is always float64)",
    )
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--variants", type=int, default=4, help="models in the sweep (tiny, seeds 0..N-1)")
    parser.add_argument("--out", help="keep the work directory here (default: a temporary one)")
    args = parser.parse_args()

    work = Path(args.out or tempfile.mkdtemp(prefix="recon-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else work / "images"
    if not args.data:
        data.mkdir(exist_ok=True)
        make_images(data, args.images, seed=0)
    weights = args.inception_weights
    if weights is None:
        from evals.metrics.testing import random_inception_state_dict

        weights = str(work / "random-inception.pth")
        torch.save(random_inception_state_dict(seed=0), weights)
    bench, variant = get_benchmark("recon@upstream")
    cache = work / "cache"
    rows = []
    for seed in range(args.variants):
        adapter = load_adapter("tiny", seed=seed)
        options = {
            "data_kind": "folder",
            "data": str(data),
            "num_images": args.images,
            "resolution": args.size,
            "inception_weights": weights,
            "inception_dtype": args.inception_dtype,
            "lpips_nets": [],
        }
        spec = bench.make_spec(variant, options, adapter)
        bench_dir = work / f"seed{seed}" / spec.name
        ours = run_benchmark(bench, spec, adapter, bench_dir, World(0, 1), args.batch_size, cache, progress=True)
        ours_time = ours["timings_s"]["score"] + ours["timings_s"]["aggregate"]
        item_ids = [i.id for i in bench.list_items(spec)]
        started = time.perf_counter()
        official = official_way(bench_dir, data, item_ids, args.size, weights, args.batch_size)
        official_time = time.perf_counter() - started
        row = {
            "seed": seed,
            "ours_s": ours_time,
            "official_s": official_time,
            "produce_s": ours["timings_s"]["produce"],
        }
        for name in ("rfid", "psnr", "ssim"):
            row[f"ours_{name}"], row[f"official_{name}"] = ours["metrics"][name]["value"], official[name]
        rows.append(row)
        print(json.dumps(row), flush=True)
    fid_rel = max(abs(r["ours_rfid"] - r["official_rfid"]) / abs(r["official_rfid"]) for r in rows)
    psnr_abs = max(abs(r["ours_psnr"] - r["official_psnr"]) for r in rows)
    ssim_abs = max(abs(r["ours_ssim"] - r["official_ssim"]) for r in rows)
    agree = fid_rel <= 1e-4 and psnr_abs <= 1e-6 and ssim_abs <= 1e-6
    one = rows[0]["official_s"] / rows[0]["ours_s"]
    sweep = sum(r["official_s"] for r in rows) / sum(r["ours_s"] for r in rows)
    summary = {
        "images": args.images,
        "size": args.size,
        "our_inception_dtype": args.inception_dtype,
        "variants": args.variants,
        "max_fid_rel_diff": fid_rel,
        "max_psnr_abs_diff": psnr_abs,
        "max_ssim_abs_diff": ssim_abs,
        "agree": agree,
        "one_model": {"official_s": rows[0]["official_s"], "ours_s": rows[0]["ours_s"], "speedup": one},
        "sweep": {
            "official_s": sum(r["official_s"] for r in rows),
            "ours_s": sum(r["ours_s"] for r in rows),
            "speedup": sweep,
        },
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(summary, indent=2))
    print(
        f"values {'agree' if agree else 'DISAGREE'}: FID rel {fid_rel:.2e}, PSNR abs {psnr_abs:.2e}, "
        f"SSIM abs {ssim_abs:.2e}; speed-up {one:.2f}x for one model, {sweep:.2f}x for the {args.variants}-variant "
        "sweep",
        file=sys.stderr,
    )
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
