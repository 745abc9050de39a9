"""A run directory is never silently replaced, has one writer, and trusts a record only with its files."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from harness_helpers import ROOT
from PIL import Image

from evals.benchmark import get_benchmark
from evals.registry import load_adapter
from evals.runtime.distributed import World
from evals.runtime.rundir import RunLock
from evals.runtime.runner import RunDirectoryError, load_record, record_path, run_benchmark
from unilip.cli import main


def cli(capsys, *argv):
    """``unilip ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def eval_run(capsys, data, out, *extra, model="tiny"):
    return cli(
        capsys,
        "eval",
        "run",
        "--model",
        model,
        "--bench",
        "recon@standard",
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--no-progress",
        "--cache-dir",
        str(Path(out).parent / "cache"),
        *extra,
    )


def _run(data, out, adapter=None, **options):
    adapter = adapter or load_adapter("tiny")
    bench, name = get_benchmark("recon@standard")
    resolved = bench.resolve(name, {"data_kind": "folder", "data": str(data), **options}, adapter)
    return run_benchmark(
        resolved, adapter, Path(out) / resolved.name, World(0, 1), 2, Path(out) / "cache", progress=False
    )


# ---------------------------------------------------------------------------------- whose run it is
def test_another_model_or_seed_is_refused_and_fresh_discards_it(photo_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = eval_run(capsys, photo_folder, out)
    assert code == 0, err
    first = (out / "run.json").read_text()
    results = (out / "recon@standard" / "results.json").read_text()
    code, _, err = eval_run(capsys, photo_folder, out, "--seed", "1")
    assert code == 2
    assert "holds the run of another model or seed (seed differs)" in err and "--fresh" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, _, err = eval_run(capsys, photo_folder, out, model="tiny-digits")
    assert code == 2 and "adapter differs" in err
    # Refused means untouched: the earlier run's files are exactly as they were.
    assert (out / "run.json").read_text() == first
    assert (out / "recon@standard" / "results.json").read_text() == results
    code, _, err = eval_run(capsys, photo_folder, out, "--seed", "1", "--fresh")
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["identity"]["seed"] == 1


def test_the_same_weights_at_another_path_resume_the_run(photo_folder, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    from unilip import load_tokenizer

    first, moved = tmp_path / "tok-a", tmp_path / "tok-b"
    load_tokenizer("tiny", random_init=True, seed=3).save_pretrained(first)
    shutil.copytree(first, moved)
    out = tmp_path / "run"
    assert eval_run(capsys, photo_folder, out, model=str(first))[0] == 0
    caplog.clear()
    code, _, err = eval_run(capsys, photo_folder, out, model=str(moved))
    assert code == 0, err
    assert "stage produce: 0 of this process's 6 items to do" in caplog.text


def test_a_folder_that_is_not_a_run_directory_is_refused(photo_folder, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, _, err = eval_run(capsys, photo_folder, out)
    assert code == 2 and "not a run directory" in err and "notes.txt" in err
    assert (out / "notes.txt").read_text() == "my notes" and not (out / "run.json").exists()


# ---------------------------------------------------------------------------------- one writer
def test_a_second_writer_is_refused_naming_the_holder(photo_folder, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out, World(0, 1)):
        code, _, err = eval_run(capsys, photo_folder, out)
    assert code == 2
    assert "is being written by another run" in err and f"PID {os.getpid()}" in err
    assert "pytest" in err or "python" in err  # the holder's command line
    assert not (out / "run.json").exists()
    code, _, err = eval_run(capsys, photo_folder, out)  # released: now it runs
    assert code == 0, err


def test_a_worker_of_an_earlier_run_still_writing_is_refused(photo_folder, tmp_path, capsys):
    import fcntl

    out = tmp_path / "run"
    (out / ".locks").mkdir(parents=True)
    # A torchrun worker whose agent was killed: it still holds its rank lock (the main lock is free).
    with open(out / ".locks" / "rank-1.lock", "a+") as orphan:
        fcntl.flock(orphan.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = eval_run(capsys, photo_folder, out)
    assert code == 2 and "still holds rank-1.lock" in err


def test_the_lock_goes_with_a_killed_holder(photo_folder, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; sys.path.insert(0, sys.argv[1]); from evals.runtime.rundir import RunLock; "
                "from evals.runtime.distributed import World; "
                "lock = RunLock(sys.argv[2], World(0, 1)); lock.acquire(); "
                "print('held', flush=True); time.sleep(60)"
            ),
            str(ROOT),
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert eval_run(capsys, photo_folder, out)[0] == 2
    finally:
        holder.kill()
        holder.wait()
    code, _, err = eval_run(capsys, photo_folder, out)  # SIGKILL released it
    assert code == 0, err


# ---------------------------------------------------------------------------------- records and their files
def test_stale_temporary_files_are_removed_on_resume(photo_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert eval_run(capsys, photo_folder, out)[0] == 0
    leftover = out / "recon@standard" / "outputs" / ".a-1234.png.x8k2.tmp"
    leftover.write_bytes(b"half a png")
    assert eval_run(capsys, photo_folder, out)[0] == 0
    assert not leftover.exists()


def test_an_output_deleted_or_replaced_after_its_record_is_redone(photo_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    clean = _run(photo_folder, tmp_path / "clean")
    out = tmp_path / "run"
    _run(photo_folder, out)
    bench_dir = out / "recon@standard"
    ids = sorted(json.loads((bench_dir / "manifest.json").read_text())["items"])
    gone = bench_dir / load_record(bench_dir, "produce", ids[0])["output"]
    gone.unlink()
    # Another model's reconstruction written over a file of this run (two runs racing on one directory).
    replaced = bench_dir / load_record(bench_dir, "produce", ids[1])["output"]
    other = bench_dir.parent / "other"
    _run(photo_folder, other, adapter=load_adapter("tiny", seed=5))
    shutil.copyfile(
        other / "recon@standard" / load_record(other / "recon@standard", "produce", ids[1])["output"], replaced
    )
    caplog.clear()
    resumed = _run(photo_folder, out)
    assert f"redoing produce of item {ids[0]}: its output" in caplog.text
    assert f"redoing produce of item {ids[1]}: its output" in caplog.text
    assert resumed["metrics"] == clean["metrics"]  # measured on this model's reconstructions only


def test_a_source_edited_in_place_with_the_same_size_is_redone(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        # Uncompressed PNGs: the file size depends on the pixel count only, so an edit keeps it.
        Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(data / f"{name}.png", compress_level=0)
    out = tmp_path / "run"
    _run(data, out)
    size = (data / "b.png").stat().st_size
    Image.fromarray(np.zeros((60, 60, 3), np.uint8)).save(data / "b.png", compress_level=0)
    assert (data / "b.png").stat().st_size == size
    caplog.clear()
    resumed = _run(data, out)
    assert "redoing produce of item b.png: its source" in caplog.text
    assert "redoing produce of item a.png" not in caplog.text
    assert resumed["metrics"] == _run(data, tmp_path / "fresh")["metrics"]


def test_an_unreadable_record_is_named_with_the_fix(photo_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert eval_run(capsys, photo_folder, out)[0] == 0
    bench_dir = out / "recon@standard"
    broken = record_path(bench_dir, "score", "a/chelsea.png")
    broken.write_text('{"id": "a/chelsea.png", "stat')
    code, _, err = eval_run(capsys, photo_folder, out)
    assert code == 2 and str(broken) in err and "delete it to redo that item" in err
    broken.unlink()
    assert eval_run(capsys, photo_folder, out)[0] == 0


def test_a_listing_that_lost_files_resumes_with_them_missing(photo_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(photo_folder, data)

    class KilledAfterFirstBatch:
        def __init__(self):
            self.inner, self.calls = load_adapter("tiny"), 0
            self.capabilities = self.inner.capabilities

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def reconstruct(self, images):
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt
            return self.inner.reconstruct(images)

    with pytest.raises(KeyboardInterrupt, match=r"recon@standard: 0/6 items finished"):
        _run(data, tmp_path / "run", adapter=KilledAfterFirstBatch())
    (data / "b" / "hubble.jpg").unlink()  # not reached before the kill
    resumed = _run(data, tmp_path / "run")
    assert resumed["coverage"] == {"expected": 6, "ok": 5, "failed": 0, "missing": 1, "fraction": 5 / 6}
    # Added files are another dataset: refused.
    shutil.copy(photo_folder / "b" / "coffee.jpg", data / "b" / "new.jpg")
    with pytest.raises(RunDirectoryError, match="another recon@standard spec"):
        _run(data, tmp_path / "run")


def test_a_file_name_that_is_not_utf8_is_an_ordinary_item(photo_folder, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(photo_folder / "b" / "astronaut.jpg", data / "plain.jpg")
    shutil.copy(photo_folder / "b" / "astronaut.jpg", os.fsencode(data) + b"/caf\xe9.jpg")
    code, out, err = eval_run(capsys, data, tmp_path / "run")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["coverage"]["ok"] == 2


def test_a_rerun_says_how_many_items_failed_earlier(folder_with_corrupt, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    assert eval_run(capsys, folder_with_corrupt, out)[0] == 1
    caplog.clear()
    assert eval_run(capsys, folder_with_corrupt, out)[0] == 1
    assert "1 item(s) failed earlier; pass --retry-failed to redo them" in caplog.text


# ---------------------------------------------------------------------------------- interruptions and I/O errors
def test_ctrl_c_says_what_is_kept_and_exits_130(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for index in range(40):
        Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(data / f"{index:03d}.png")
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "unilip",
        "eval",
        "run",
        "--model",
        "tiny",
        "--bench",
        "recon@standard",
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-size",
        "1",
        "--no-progress",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    produce = out / "recon@standard" / "produce"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(produce.glob("*.json"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("unilip eval run: interrupted: recon@standard: ")
    assert "/40 items finished and kept; run the same command to resume" in last
    assert "Traceback" not in err


def test_a_full_disk_is_one_line_and_exit_2(photo_folder, tmp_path, capsys, monkeypatch):
    import errno

    import evals.files as records

    out = tmp_path / "run"
    real_fsync = os.fsync
    written = {"n": 0}

    def fsync(fd):
        written["n"] += 1
        if written["n"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(records.os, "fsync", fsync)
    code, _, err = eval_run(capsys, photo_folder, out)
    assert code == 2
    (line,) = err.strip().splitlines()[-1:]
    assert "no space left on the disk holding " in line and str(out) in line and "(mounted at /" in line
    assert "Traceback" not in err
    monkeypatch.setattr(records.os, "fsync", real_fsync)
    # Nothing damaged: the resumed run ends as a clean one.
    assert eval_run(capsys, photo_folder, out)[0] == 0
    clean = tmp_path / "clean"
    assert eval_run(capsys, photo_folder, clean)[0] == 0

    def metrics(run):
        return json.loads((run / "recon@standard" / "results.json").read_text())["metrics"]

    assert metrics(out) == metrics(clean)


# ---------------------------------------------------------------------------------- checks before work
def test_problems_are_found_before_the_model_loads(photo_folder, tmp_path, capsys, monkeypatch):
    import evals.registry

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the request was checked")

    monkeypatch.setattr(evals.registry, "load_adapter", refuse)
    out = tmp_path / "run"
    pickled = tmp_path / "pickled.pth"
    import pickle

    pickled.write_bytes(pickle.dumps({"weights": "not tensors", "hook": print}))
    cases = [
        (["--bench", "recon@standrd"], "has no variant 'standrd'"),
        (["--bench", "recn"], "did you mean recon"),
        (["--bench", "recon", "--opt", "num_image=3"], "did you mean num_images?"),
        (["--bench", "recon", "--data", str(tmp_path / "nowhere")], "does not exist"),
        (["--bench", "geneval@hf-mask2former"], "cannot 'generate'"),
        (["--bench", "recon", "--inception-weights", str(tmp_path / "typo.pth")], "typo.pth"),
        (["--bench", "recon", "--inception-weights", str(pickled)], "pickled.pth"),
    ]
    for extra, expected in cases:
        argv = ["eval", "run", "--model", "tiny", "--data", str(photo_folder), "--out", str(out), *extra]
        code, _, err = cli(capsys, *argv)
        assert code == 2, (extra, err)
        assert expected in err, (extra, err)
        assert "Traceback" not in err
    assert not (out / "run.json").exists()


def test_an_unwritable_out_is_one_line(photo_folder, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, _, err = eval_run(capsys, photo_folder, blocker / "run")
    assert code == 2 and "cannot write to the run directory" in err and "Traceback" not in err


def test_cuda_without_a_gpu_is_a_usage_error(photo_folder, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = eval_run(capsys, photo_folder, tmp_path / "run", "--device", "cuda")
    assert code == 2 and "no CUDA device is available" in err and "--device cpu" in err


def test_cuda_means_each_process_s_own_gpu(monkeypatch):
    import torch

    from unilip.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("cuda", env={"LOCAL_RANK": "3"}) == "cuda:3"
    assert resolve_device("cuda", env={}) == "cuda"
    assert resolve_device(None, env={"LOCAL_RANK": "1"}) == "cuda:1"
    assert resolve_device("cuda:2", env={"LOCAL_RANK": "1"}) == "cuda:2"  # explicit stays
    with pytest.raises(ValueError, match="LOCAL_RANK 5"):
        resolve_device("cuda", env={"LOCAL_RANK": "5"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None, env={"LOCAL_RANK": "1"}) == "cpu"


def test_dtype_is_honoured_and_recorded(photo_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = eval_run(capsys, photo_folder, out, "--dtype", "bfloat16", "--opt", "num_images=1")
    assert code == 0, err
    results = json.loads((out / "recon@standard" / "results.json").read_text())
    assert results["dtype"] == "bfloat16"
    assert json.loads((out / "run.json").read_text())["options"]["dtype"] == "bfloat16"
