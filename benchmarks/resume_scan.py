"""Resume-scan speed: how long a rerun takes to find that a run directory of 50,000 finished items has nothing to do.

The goal (issue 17): scanning a run directory of 50,000 finished items and deciding there is nothing to do takes at
most 2 s. What is timed is the runner itself (``evals.runtime.runner``), not a model load or a data listing:

- ``decide_s``: the manifest check and both stages' scans (every record read and trusted: fingerprint, status,
  output file unchanged): what ``unilip eval run`` does before it would run a stage;
- ``rerun_s``: the whole ``run_benchmark`` of a rerun: the same scans, then the aggregate rewritten (what a rerun
  of a finished ``unilip eval run`` costs on top of loading its model and listing its data);
- ``decide_cold_s``: ``decide_s`` without the stages' record indexes (``.index-<stage>.json``, which a run's
  aggregate writes): the first resume of a run that was interrupted before its aggregate reads every record file.

The run directory is made once (in a temporary folder, or ``--dir``, reused when it holds ``--items`` items) the
way the harness writes one: manifest, one record per item and stage (the produce record naming its output file,
with size and mtime, and a source it read), the output files, results.json and the record indexes. The
benchmark is a stand-in defined here (its stages are never called: a scan that tried to redo an item fails
loudly), so that only the runner's cost is measured. Prints one JSON object: seconds (median of ``--repeat``),
items, the machine.

    python benchmarks/resume_scan.py [--items 50000] [--repeat 5] [--dir /tmp/scan-run]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evals.benchmark import Benchmark, BenchmarkSpec, Item, ResolvedBenchmark, StageContext, StageResult  # noqa: E402
from evals.files import canonical_hash  # noqa: E402
from evals.runtime.distributed import World  # noqa: E402
from evals.runtime.records import atomic_write_json  # noqa: E402
from evals.runtime.runner import (  # noqa: E402
    MANIFEST,
    RecordReader,
    _record_payload,
    _run_stage,
    aggregate_run,
    index_path,
    record_path,
    run_benchmark,
    write_manifest,
)

NAME = "scan@default"
SOURCES_PER_SHARD = 1000  # items per source file (a tar shard of the data, judged by size and mtime)


class ScanBenchmark(Benchmark):
    """A stand-in benchmark: items ``item-00000`` ...; produce writes one small output file, score one number.
    Its stages must never run in this benchmark (every item is finished): they raise."""

    name = "scan"
    version = "1"
    variants = {"default": None}
    capability = "reconstruct"

    def __init__(self, count: int = 0, sources: Path | None = None) -> None:
        self.count = count
        self.sources = sources

    def build(self, variant: str, options: Any, model: Any) -> ResolvedBenchmark:
        items = tuple(Item(f"item-{index:05d}", index) for index in range(self.count))
        spec = BenchmarkSpec("scan", variant, self.version, {"items": self.count})
        return ResolvedBenchmark(self, spec, items)

    def produce_fingerprint(self, resolved: ResolvedBenchmark, model: dict[str, Any]) -> str:
        return canonical_hash({"model": model, "items": resolved.spec.knobs["items"]})

    def produce(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        raise AssertionError(f"produce asked to redo {len(items)} finished item(s): the scan is wrong")

    def score(
        self, resolved: ResolvedBenchmark, items: list[Item], ctx: StageContext
    ) -> Iterator[tuple[Item, StageResult]]:
        raise AssertionError(f"score asked to redo {len(items)} finished item(s): the scan is wrong")

    def aggregate(
        self, resolved: ResolvedBenchmark, records: dict[str, dict[str, Any]], bench_dir: Path
    ) -> dict[str, Any]:
        values = [record["value"] for record in records.values()]
        return {"value": {"value": sum(values) / len(values) if values else 0.0, "n": len(values)}}


class StubAdapter:
    """What the runner asks of a model on a resume: its capability and description (nothing is produced)."""

    keyed_outputs = False

    def require(self, capability: str) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"adapter": "stub", "weights_sha256": "0" * 64}


def build(root: Path, count: int) -> tuple[ResolvedBenchmark, Path]:
    """The finished run directory of ``count`` items under ``root`` (made once; reused when complete)."""
    bench_dir = root / NAME
    sources = root / "sources"
    resolved = ScanBenchmark(count, sources).resolve("default", {})
    done = bench_dir / ".complete"
    if done.is_file() and done.read_text() == str(count):
        return resolved, bench_dir
    sources.mkdir(parents=True, exist_ok=True)
    for shard in range(0, count, SOURCES_PER_SHARD):
        (sources / f"shard-{shard // SOURCES_PER_SHARD:04d}.tar").write_bytes(b"x" * 4096)
    adapter = StubAdapter()
    model = adapter.describe()
    bench_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(resolved, bench_dir)
    (bench_dir / "outputs").mkdir(exist_ok=True)
    produce_fp = resolved.stage_fingerprint("produce", model)
    score_fp = resolved.stage_fingerprint("score", model)
    for index, item in enumerate(resolved.items):
        relative = f"outputs/{item.id}.png"
        data = item.id.encode()
        (bench_dir / relative).write_bytes(data)
        source = str((sources / f"shard-{index // SOURCES_PER_SHARD:04d}.tar").resolve())
        produced = StageResult(
            "ok",
            payload={"output": relative},
            outputs={relative: hashlib.sha256(data).hexdigest()},
            inputs={source: ""},
        )
        path = record_path(bench_dir, "produce", item.id)
        atomic_write_json(path, _record_payload(item, "produce", produce_fp, produced, bench_dir))
        scored = StageResult("ok", payload={"value": float(index % 7)})
        atomic_write_json(
            record_path(bench_dir, "score", item.id), _record_payload(item, "score", score_fp, scored, bench_dir)
        )
    aggregate_run(resolved, list(resolved.items), bench_dir, model, {})
    done.write_text(str(count))
    return resolved, bench_dir


def decide(resolved: ResolvedBenchmark, bench_dir: Path) -> None:
    """What a rerun does before it would run a stage: check the manifest, scan both stages."""
    adapter = StubAdapter()
    model = adapter.describe()
    resolved, _ = write_manifest(resolved, bench_dir)
    ctx = StageContext(adapter=adapter, bench_dir=bench_dir, batch_size=8, cache_dir=bench_dir, progress=False)
    mine = list(resolved.items)
    reader = RecordReader(bench_dir)  # as run_benchmark reads: each record once across the stages
    for index in range(len(resolved.stages)):
        _run_stage(resolved, model, index, mine, ctx, retry_failed=False, reader=reader)


def rerun(resolved: ResolvedBenchmark, bench_dir: Path) -> None:
    """A whole rerun of the finished run: the scans, then the aggregate rewritten."""
    run_benchmark(resolved, StubAdapter(), bench_dir, World(0, 1), 8, bench_dir, progress=False)


def median_time(work: Any, repeat: int) -> tuple[float, list[float], float]:
    """Median wall seconds of ``repeat`` calls, each call's, and the median CPU seconds of this process (which a
    busy machine inflates less than the wall time)."""
    times, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        work()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return statistics.median(times), times, statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", help="where the run directory is made (and reused); default: a temporary folder")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="resume-scan-") as scratch:
        root = Path(args.dir) if args.dir else Path(scratch)
        started = time.perf_counter()
        resolved, bench_dir = build(root, args.items)
        build_s = time.perf_counter() - started
        print(f"run directory of {args.items} items ready in {build_s:.1f} s: {bench_dir}", file=sys.stderr)
        decide_s, decide_all, decide_cpu = median_time(lambda: decide(resolved, bench_dir), args.repeat)
        rerun_s, rerun_all, rerun_cpu = median_time(lambda: rerun(resolved, bench_dir), args.repeat)
        indexes = [index_path(bench_dir, stage) for stage in resolved.stages]
        for index in indexes:
            index.rename(index.with_name(index.name + ".aside"))
        try:
            cold_s, cold_all, _ = median_time(lambda: decide(resolved, bench_dir), args.repeat)
        finally:
            for index in indexes:
                index.with_name(index.name + ".aside").rename(index)
        assert json.loads((bench_dir / MANIFEST).read_text())["items"][0] == resolved.items[0].id
    report = {
        "items": args.items,
        "stages": list(resolved.stages),
        "decide_s": round(decide_s, 4),
        "rerun_s": round(rerun_s, 4),
        "decide_cold_s": round(cold_s, 4),
        "decide_cpu_s": round(decide_cpu, 4),
        "rerun_cpu_s": round(rerun_cpu, 4),
        "decide_runs_s": [round(t, 4) for t in decide_all],
        "rerun_runs_s": [round(t, 4) for t in rerun_all],
        "decide_cold_runs_s": [round(t, 4) for t in cold_all],
        "goal_s": 2.0,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
