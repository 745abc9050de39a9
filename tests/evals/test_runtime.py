"""The run directory: resume after a kill, failed items, batch-size and world-size invariance, status."""

import shutil
from pathlib import Path

import pytest
from harness_helpers import run_cli

from evals.benchmark import get_benchmark
from evals.registry import load_adapter
from evals.runtime.distributed import World
from evals.runtime.runner import RunDirectoryError, run_benchmark


def _run(data, out, batch_size=2, adapter=None, variant="recon@standard", cache=None, **options):
    adapter = adapter or load_adapter("tiny")
    bench, name = get_benchmark(variant)
    resolved = bench.resolve(name, {"data_kind": "folder", "data": str(data), **options}, adapter)
    return run_benchmark(
        resolved,
        adapter,
        Path(out) / resolved.name,
        World(0, 1),
        batch_size,
        Path(cache or Path(out) / "cache"),
        progress=False,
    )


class _KilledAfter:
    """Wraps an adapter; the n-th reconstruct call dies as a killed process would."""

    def __init__(self, adapter, calls_before_kill):
        self.inner, self.left, self.calls = adapter, calls_before_kill, 0
        self.capabilities = adapter.capabilities

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def reconstruct(self, images):
        self.calls += 1
        if self.calls > self.left:
            raise KeyboardInterrupt("simulated kill")
        return self.inner.reconstruct(images)


def test_resume_after_kill_redoes_nothing_and_matches_uninterrupted(photo_folder, tmp_path):
    clean = _run(photo_folder, tmp_path / "clean")
    killed = _KilledAfter(load_adapter("tiny"), calls_before_kill=1)
    with pytest.raises(KeyboardInterrupt):
        _run(photo_folder, tmp_path / "resumed", adapter=killed)
    produce_dir = tmp_path / "resumed" / "recon@standard" / "produce"
    assert len(list(produce_dir.glob("*.json"))) == 2  # the first batch of 2 was recorded before the kill
    counting = _KilledAfter(load_adapter("tiny"), calls_before_kill=99)
    resumed = _run(photo_folder, tmp_path / "resumed", adapter=counting)
    assert counting.calls == 2  # the 4 remaining items, 2 per batch: the first batch was not redone
    assert resumed["metrics"] == clean["metrics"]
    assert (
        resumed["coverage"] == clean["coverage"] == {"expected": 6, "ok": 6, "failed": 0, "missing": 0, "fraction": 1.0}
    )


def test_corrupt_image_is_a_failed_item_and_the_run_goes_on(folder_with_corrupt, tmp_path):
    result = _run(folder_with_corrupt, tmp_path / "run")
    assert result["coverage"] == {"expected": 7, "ok": 6, "failed": 1, "missing": 0, "fraction": 6 / 7}
    ((item, reason),) = result["failures"].items()
    assert item == "b/broken.jpg" and reason.startswith("produce: ") and "not a readable image" in reason
    assert result["metrics"]["psnr"]["n"] == 6


def test_batch_size_does_not_change_the_result(photo_folder, tmp_path):
    one = _run(photo_folder, tmp_path / "b1", batch_size=1)
    eight = _run(photo_folder, tmp_path / "b8", batch_size=8)
    # Not bit-equal on every CPU: on AVX-512 machines MKL/oneDNN choose other float32 kernels for a batch of
    # 8 than for 1, which moves a reconstruction by ~1e-7 and flips a few uint8 roundings (PSNR moved 1e-7
    # relative here). A harness that mixed up items across a batch would move these by orders more.
    for name in ("psnr", "ssim"):
        assert one["metrics"][name]["value"] == pytest.approx(eight["metrics"][name]["value"], rel=1e-5)


def test_changed_spec_in_same_directory_is_refused(photo_folder, tmp_path):
    _run(photo_folder, tmp_path / "run", num_images=3)
    with pytest.raises(RunDirectoryError, match="another recon@standard spec"):
        _run(photo_folder, tmp_path / "run", num_images=4)


def test_unknown_benchmark_and_option_are_explained(photo_folder):
    with pytest.raises(ValueError, match="did you mean recon"):
        get_benchmark("recn@standard")
    with pytest.raises(ValueError, match="no variant"):
        get_benchmark("recon@paper")
    bench, variant = get_benchmark("recon@standard")
    with pytest.raises(ValueError, match="unknown options"):
        bench.resolve(variant, {"data": str(photo_folder), "colour": 1}, load_adapter("tiny"))


@pytest.mark.slow
def test_status_command_counts_done_and_missing(folder_with_corrupt, tmp_path):
    _run(folder_with_corrupt, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "recon@standard" / "score")
    result = run_cli("eval", "status", str(tmp_path / "run"))
    assert result.returncode == 1  # incomplete
    assert "produce    done      6  failed      1  missing      0" in result.stdout
    assert "score      done      0  failed      1  missing      6" in result.stdout
