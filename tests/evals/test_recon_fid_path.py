"""The harness's rFID / IS / LPIPS path end to end, with random weights of the real architectures."""

import pytest
import torch
from PIL import Image

from evals.benchmark import get_benchmark
from evals.metrics.testing import random_inception_state_dict
from evals.registry import load_adapter
from evals.runtime.distributed import World
from evals.runtime.runner import load_record, run_benchmark
from unilip.data import eval_transform


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import torchvision

    folder = tmp_path_factory.mktemp("weights")
    torch.save(random_inception_state_dict(seed=7), folder / "inception.pth")
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), folder / "alexnet.pth")
    return folder


def test_rfid_matches_torch_fidelity_on_the_same_images(photo_folder, weights, tmp_path):
    from torch_fidelity import calculate_metrics

    bench, variant = get_benchmark("recon@standard")
    adapter = load_adapter("tiny")
    options = {
        "data_kind": "folder",
        "data": str(photo_folder),
        "inception_weights": str(weights / "inception.pth"),
        "inception_dtype": "float32",
        "lpips_nets": ["alex"],
        "lpips_alex_weights": str(weights / "alexnet.pth"),
    }
    resolved = bench.resolve(variant, options, adapter)
    bench_dir = tmp_path / "run" / resolved.name
    cache = tmp_path / "cache"
    result = run_benchmark(resolved, adapter, bench_dir, World(0, 1), 4, cache, progress=False)
    metrics = result["metrics"]
    assert metrics["lpips_alex"]["n"] == 6 and 0 <= metrics["lpips_alex"]["value"]
    assert metrics["is"]["value"] >= 1.0 and metrics["rfid"]["n"] == 6
    assert len(list(cache.rglob("*.npz"))) == 6  # real features cached once per image

    # The same uint8 images through torch-fidelity itself (which runs this network in float32).
    reals, fakes = tmp_path / "reals", tmp_path / "fakes"
    reals.mkdir(), fakes.mkdir()
    for index, item in enumerate(resolved.items):
        real = eval_transform(Image.open(photo_folder / item.id).convert("RGB"), 56)
        Image.fromarray((real * 255).round().byte().permute(1, 2, 0).numpy()).save(reals / f"{index}.png")
        output = bench_dir / load_record(bench_dir, "produce", item.id)["output"]
        Image.open(output).save(fakes / f"{index}.png")
    reference = calculate_metrics(
        input1=str(fakes),
        input2=str(reals),
        fid=True,
        isc=True,
        isc_splits=1,
        feature_extractor_weights_path=str(weights / "inception.pth"),
        verbose=False,
        cuda=False,
        save_cpu_ram=True,
    )
    # 6 samples in 2048 dimensions: the covariance product is rank-deficient and the two eigensolver paths
    # differ by rounding noise in ~2040 near-zero eigenvalues (see test_metrics_fid), hence 1e-4, not 1e-6.
    assert metrics["rfid"]["value"] == pytest.approx(reference["frechet_inception_distance"], rel=1e-4)
    assert metrics["is"]["value"] == pytest.approx(reference["inception_score_mean"], rel=1e-6)

    # A second model over the same images reuses the cached real features.
    other = load_adapter("tiny", seed=1)
    resolved2 = bench.resolve(variant, options, other)
    second = run_benchmark(resolved2, other, tmp_path / "run2" / resolved2.name, World(0, 1), 4, cache, progress=False)
    assert len(list(cache.rglob("*.npz"))) == 6
    assert second["metrics"]["rfid"]["value"] != metrics["rfid"]["value"]


def test_a_damaged_real_feature_cache_entry_is_computed_again(photo_folder, weights, tmp_path, caplog):
    bench, variant = get_benchmark("recon@standard")
    adapter = load_adapter("tiny")
    options = {
        "data_kind": "folder",
        "data": str(photo_folder),
        "inception_weights": str(weights / "inception.pth"),
        "inception_dtype": "float32",
        "lpips_nets": ["alex"],
        "lpips_alex_weights": str(weights / "alexnet.pth"),
    }
    resolved = bench.resolve(variant, options, adapter)
    cache = tmp_path / "cache"
    clean = run_benchmark(resolved, adapter, tmp_path / "a" / resolved.name, World(0, 1), 4, cache, progress=False)
    entries = sorted(cache.rglob("*.npz"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated, as a killed copy would leave it
    entries[1].write_bytes(b"")
    again = run_benchmark(resolved, adapter, tmp_path / "b" / resolved.name, World(0, 1), 4, cache, progress=False)
    assert again["metrics"]["rfid"] == clean["metrics"]["rfid"]
    assert caplog.text.count("real-feature cache entry") == 2
    assert entries[0].stat().st_size > 100  # rewritten whole
