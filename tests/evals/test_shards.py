"""World-size invariance: one process, torchrun (gloo on the CPU) and independent ``--shard I/N`` processes joined by
``unilip eval aggregate`` write the same per-item records and the same aggregate; a run started under one layout
finishes under another; shards take per-shard locks.

Layouts (processes are what this file costs, so few): ``recon@standard`` (tiny model, 5 built-in images) with 1
process, torchrun with 2 and 3, 3 shards (two side by side, then the third), and two resumes across layouts;
``wise@legacy`` (``folder:`` images, loopback judge) with 1 process, torchrun with 2, and 3 side-by-side shards.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from harness_helpers import run_cli
from judge_server import JudgeServer
from PIL import Image
from test_wise import PROMPTS, wise_judge, write_wise_repo

from evals.runtime.distributed import World, parse_shard, shard, shard_items
from evals.runtime.rundir import RunDirectoryError, RunLock
from unilip.cli import main

pytestmark = pytest.mark.slow

# Batch 1 and one thread per process in every layout: a float32 model's output can change at 1e-7 with the thread
# count and the batch's composition, which flips a few uint8 roundings; this file is about the harness.
THREADS = {"OMP_NUM_THREADS": "1"}
RECON = "recon@standard"
WISE = "wise@legacy"
# What legitimately differs between two runs of the same items: when an output file was written.
VOLATILE = ("mtime_ns",)


def _torchrun(procs: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]


def _recon_args(out: Path, cache: Path) -> list[str]:
    return [
        "eval", "run", "--model", "tiny-digits", "--bench", RECON, "--data", "builtin", "--num-images", "5",
        "--batch-size", "1", "--no-progress", "--out", str(out), "--cache-dir", str(cache),
    ]  # fmt: skip


def _cli(*argv) -> tuple[int, str, str]:
    """``unilip ARGV`` in this process: (exit code, stdout, what it logged and printed to stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main([str(arg) for arg in argv])
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return code, stdout.getvalue(), stderr.getvalue()


def _strip(value):
    """A record without what legitimately differs between layouts (see VOLATILE)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _records(bench_dir: Path) -> dict[str, dict]:
    """Every record of a benchmark's run, by ``stage/file``, volatile fields left out."""
    found = {}
    for path in sorted(bench_dir.glob("*/*.json")):
        found[f"{path.parent.name}/{path.name}"] = _strip(json.loads(path.read_text()))
    assert found
    return found


def _produced(log: str) -> int:
    """How many items the processes whose log this is had to produce (the rest were resumed from records)."""
    return sum(int(n) for n in re.findall(r"stage produce: (\d+) of this process's", log))


def _results(bench_dir: Path) -> dict:
    return json.loads((bench_dir / "results.json").read_text())


def _same_metrics(one: dict, other: dict) -> None:
    """Equal metrics, numbers to float rounding (summed in another order, a mean may differ in its last bit)."""
    assert one["coverage"] == other["coverage"] and one["failures"] == other["failures"]
    assert one["stages"] == other["stages"] and one["stage_fingerprints"] == other["stage_fingerprints"]
    assert one["spec"] == other["spec"] and one["metric_order"] == other["metric_order"]

    def close(a, b, where):
        if isinstance(a, float) or isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-12, abs=1e-12), where
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                close(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, list):
            assert len(a) == len(b), where
            for index, (x, y) in enumerate(zip(a, b, strict=True)):
                close(x, y, f"{where}[{index}]")
        else:
            assert a == b, where

    close(one["metrics"], other["metrics"], "metrics")


# ---------------------------------------------------------------------------------- recon@standard
@pytest.fixture(scope="module")
def one_thread():
    """One thread in this process too (as in the torchrun workers): the same kernels in every layout."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def recon(tmp_path_factory, one_thread):
    """The recon runs of every layout, set up once: torchrun with 3 processes in its own processes, the rest in
    this one (independent shards need no process group: in one process one after the other, they are what
    a scheduler's processes are)."""
    tmp = tmp_path_factory.mktemp("shards-recon")
    runs = {"one": tmp / "one", "torchrun3": tmp / "torchrun3", "shards3": tmp / "shards3"}
    assert _cli(*_recon_args(runs["one"], tmp / "cache"))[0] == 0
    result = run_cli(*_recon_args(runs["torchrun3"], tmp / "cache"), env_extra=THREADS, launcher=_torchrun(3))
    assert result.returncode == 0, result.stderr
    # Shards 0/3 and 1/3; the aggregate then names the shard still to run; 2/3 finishes and aggregates itself.
    first = [_cli(*_recon_args(runs["shards3"], tmp / "cache"), "--shard", f"{i}/3") for i in (0, 1)]
    incomplete = _cli("eval", "aggregate", runs["shards3"])
    last = _cli(*_recon_args(runs["shards3"], tmp / "cache"), "--shard", "2/3")
    aggregated = _cli("eval", "aggregate", runs["shards3"])
    return {"tmp": tmp, "runs": runs, "first": first, "incomplete": incomplete, "last": last, "agg": aggregated}


def test_recon_records_and_aggregate_are_the_same_in_every_layout(recon):
    runs = recon["runs"]
    reference_records = _records(runs["one"] / RECON)
    reference = _results(runs["one"] / RECON)
    assert reference["coverage"]["ok"] == 5
    for name, out in runs.items():
        assert _records(out / RECON) == reference_records, name
        _same_metrics(_results(out / RECON), reference)
    assert _results(runs["torchrun3"] / RECON)["environment"]["world_size"] == 3


def test_a_shard_runs_its_items_and_the_aggregate_joins_them(recon):
    # Shards 0/3 and 1/3 ran items 0, 3 and 1, 4 of the manifest, then said what is left to do.
    for index, (code, out, log) in enumerate(recon["first"]):
        assert code == 0, log
        assert json.loads(out.splitlines()[-1]) == {
            "benchmark": RECON,
            "shard": f"{index}/3",
            "coverage": {"expected": 2, "ok": 2, "failed": 0, "missing": 0},
            "aggregated": False,
        }
        assert "unilip eval aggregate" in log and _produced(log) == 2
    # The aggregate with shard 2/3 not run: exit 1 (incomplete), naming it and how many items it holds, no results.
    code, out, log = recon["incomplete"]
    assert code == 1 and out == "" and "Traceback" not in log
    assert "1 of 5 item(s) not finished (shard 2/3: 1)" in log
    # The last shard found every item finished and aggregated itself; the aggregate command then agrees.
    code, out, log = recon["last"]
    assert code == 0 and _produced(log) == 1 and json.loads(out.splitlines()[-1])["coverage"]["ok"] == 5
    code, out, log = recon["agg"]
    assert code == 0, log
    line = json.loads(out.splitlines()[-1])
    assert line["benchmark"] == RECON and line["coverage"]["ok"] == 5
    results = _results(recon["runs"]["shards3"] / RECON)
    assert results["aggregated_by"] == "unilip eval aggregate" and results["environment"]["world_size"] == 3


def test_a_run_resumes_under_another_layout(recon):
    tmp, runs = recon["tmp"], recon["runs"]
    reference_records = _records(runs["one"] / RECON)
    reference = _results(runs["one"] / RECON)

    def interrupted(source: str, target: Path, keep: int) -> None:
        """A copy of ``source``'s run cut short: only ``keep`` items finished, no results."""
        shutil.copytree(runs[source], target)
        bench_dir = target / RECON
        (bench_dir / "results.json").unlink()
        for path in sorted((bench_dir / "produce").glob("*.json"))[keep:]:
            for stage in ("produce", "score"):
                (bench_dir / stage / path.name).unlink()

    # Started by torchrun with 3 processes, interrupted, finished by 2 shards (the second aggregates).
    resumed = tmp / "torchrun-then-shards"
    interrupted("torchrun3", resumed, keep=3)
    produced = 0
    for index in (0, 1):
        code, out, log = _cli(*_recon_args(resumed, tmp / "cache"), "--shard", f"{index}/2")
        assert code == 0, log
        produced += _produced(log)
    assert produced == 2  # the 3 finished items are kept
    assert json.loads(out.splitlines()[-1])["coverage"]["ok"] == 5
    assert _records(resumed / RECON) == reference_records
    _same_metrics(_results(resumed / RECON), reference)
    # Started by shards 0/3 and 1/3, interrupted, finished by a single process.
    mixed = tmp / "shards-then-one"
    interrupted("shards3", mixed, keep=2)
    code, _, log = _cli(*_recon_args(mixed, tmp / "cache"))
    assert code == 0, log
    assert _produced(log) == 3
    assert _records(mixed / RECON) == reference_records
    _same_metrics(_results(mixed / RECON), reference)


# ---------------------------------------------------------------------------------- locks and arguments
def test_shards_lock_per_shard_and_refuse_what_would_overlap(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out, World(0, 1), part=parse_shard("0/3")) as held:
        assert held.alone
        with RunLock(out, World(0, 1), part=parse_shard("1/3")) as beside:  # another shard runs beside it
            assert not beside.alone
        with pytest.raises(RunDirectoryError, match=r"shard 0/3 is already being run \(PID"):
            RunLock(out, World(0, 1), part=parse_shard("0/3")).acquire()
        with pytest.raises(RunDirectoryError, match=r"shard 0/3 of another layout is running.*--shard I/3"):
            RunLock(out, World(0, 1), part=parse_shard("1/2")).acquire()
        with pytest.raises(RunDirectoryError, match=r"being written by 1 --shard process\(es\) \(shard 0/3"):
            RunLock(out, World(0, 1)).acquire()  # a whole-run writer (one process, torchrun)
    with RunLock(out, World(0, 1)):  # and the other way round
        with pytest.raises(RunDirectoryError, match="not sharded with --shard"):
            RunLock(out, World(0, 1), part=parse_shard("0/3")).acquire()
    with RunLock(out, World(0, 1), part=parse_shard("1/2")):  # all released: any layout may take the run
        pass


def test_shard_items_are_the_ranks_items():
    items = [f"item{i}" for i in range(11)]
    for count in (1, 2, 3, 8):
        parts = [shard_items(items, index, count) for index in range(count)]
        assert parts == [shard(items, World(index, count)) for index in range(count)]
        assert sorted(sum(parts, [])) == sorted(items)
    assert parse_shard("7/8").index == 7 and str(parse_shard(" 2/3 ")) == "2/3"
    for bad in ("3/3", "1", "a/b", "-1/3", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


# ---------------------------------------------------------------------------------- wise@legacy (judged)
def _noise(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def wise(tmp_path_factory, one_thread):
    """WISE with 1 process, torchrun with 2 (its own processes), and 3 shards joined by ``unilip eval aggregate``."""
    tmp = tmp_path_factory.mktemp("shards-wise")
    data = write_wise_repo(tmp / "WISE")
    for number, pid in enumerate(PROMPTS):  # the generations, one <prompt id>.png each (folder: adapter)
        _noise(tmp / "images" / f"{pid}.png", number)
    runs = {name: tmp / name for name in ("one", "torchrun2", "shards3")}
    with pytest.MonkeyPatch.context() as patch, JudgeServer(wise_judge) as server:
        for name in ("UNILIP_JUDGE_API_KEY", "OPENAI_API_KEY", "UNILIP_JUDGE_MODEL", "UNILIP_JUDGE_BASE_URL"):
            patch.delenv(name, raising=False)  # no key or endpoint of this machine reaches the runs

        def args(name: str) -> list[str]:
            # Each layout its own judge cache: every layout asks the judge, none reads another's answers.
            return [
                "eval", "run", "--model", f"folder:{tmp / 'images'}", "--bench", WISE, "--data", str(data),
                "--opt", f"judge_base_url={server.base_url}", "--opt", "judge_max_retries=1",
                "--opt", "judge_config={backoff_base_s: 0.01, backoff_max_s: 0.02}",
                "--no-progress", "--out", str(runs[name]), "--cache-dir", str(tmp / f"cache-{name}"),
            ]  # fmt: skip

        one = _cli(*args("one"))
        assert one[0] == 1, one[2]  # prompts 3 and 4 are never judged: items failed
        two = run_cli(*args("torchrun2"), env_extra=THREADS, launcher=_torchrun(2))
        assert two.returncode == 1, two.stderr
        shards = [_cli(*args("shards3"), "--shard", f"{i}/3") for i in range(3)]
    aggregated = _cli("eval", "aggregate", runs["shards3"])  # the judge is gone: the aggregate needs none
    return {"runs": runs, "shards": shards, "agg": aggregated}


def test_judged_records_and_aggregate_are_the_same_in_every_layout(wise):
    runs = wise["runs"]
    for code, _, log in wise["shards"]:
        assert code in (0, 1) and "Traceback" not in log, log
    code, out, log = wise["agg"]
    assert code == 1, log  # finished, with failed items: as the 1-process run
    assert json.loads(out.splitlines()[-1])["benchmark"] == WISE
    reference_records = _records(runs["one"] / WISE)
    reference = _results(runs["one"] / WISE)
    assert {key.split("/")[0] for key in reference_records} == set(reference["stages"])  # generation and judge
    assert 0 < reference["coverage"]["ok"] < reference["coverage"]["expected"] == len(PROMPTS)
    for name, out in runs.items():
        assert _records(out / WISE) == reference_records, name
        _same_metrics(_results(out / WISE), reference)
