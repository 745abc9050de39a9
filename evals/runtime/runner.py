"""Running a benchmark into a run directory: manifest, per-item records per stage, resume, aggregate.

Layout of a run directory::

    RUN/run.json                          model, options, environment (written by the main process)
    RUN/<bench@variant>/manifest.json     spec, fingerprint, expected item ids
    RUN/<bench@variant>/<stage>/<item>.json (+ .npz)   one atomically written record per item and stage
    RUN/<bench@variant>/results.json      the aggregate, with coverage, spec, model and environment

A record on disk means that stage is done for that item (with the stage fingerprint it names), so a
killed run resumes where it stopped with any number of processes, and redoes nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from evals.benchmark import Benchmark, BenchmarkSpec, Item, StageContext
from evals.runtime.distributed import World, shard
from evals.runtime.records import atomic_write_json, atomic_write_npz, read_json, safe_item_name

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RESULTS = "results.json"


class RunDirectoryError(ValueError):
    """The run directory holds something incompatible with what was asked."""


def record_path(bench_dir: Path, stage: str, item_id: str) -> Path:
    return bench_dir / stage / f"{safe_item_name(item_id)}.json"


def load_record(bench_dir: Path, stage: str, item_id: str) -> dict[str, Any] | None:
    path = record_path(bench_dir, stage, item_id)
    return read_json(path) if path.is_file() else None


def load_arrays(bench_dir: Path, stage: str, item_id: str) -> dict[str, np.ndarray]:
    path = record_path(bench_dir, stage, item_id).with_suffix(".npz")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def write_manifest(bench_dir: Path, spec: BenchmarkSpec, items: list[Item], rescore: bool = False) -> None:
    """Write the manifest, or check that an existing one describes the same spec and items.

    ``rescore`` accepts a changed spec for the same items: every record carries its stage fingerprint, so
    the stages whose inputs changed (a judge, a template, a scorer) are redone and the others (the
    generated images) are kept.
    """
    path = bench_dir / MANIFEST
    payload = {"spec": spec.to_dict(), "items": [item.id for item in items]}
    if path.is_file():
        existing = read_json(path)
        if existing["spec"]["fingerprint"] != spec.fingerprint:
            changed = sorted(k for k in set(existing["spec"]["knobs"]) | set(spec.knobs)
                             if existing["spec"]["knobs"].get(k) != spec.knobs.get(k))
            if rescore and existing["items"] == payload["items"]:
                logger.info("%s: spec changed (%s); redoing the stages that depend on it", spec.name,
                            ", ".join(changed) or "version")
                atomic_write_json(path, payload)
                return
            raise RunDirectoryError(
                f"{bench_dir} was started with another {spec.name} spec (changed: {', '.join(changed) or 'version'}); "
                "resume with the same options, --rescore to redo only the stages that depend on what changed, "
                "a new --out, or --fresh to discard it")
        if existing["items"] != payload["items"]:
            raise RunDirectoryError(f"{bench_dir}: the data now lists other items than the run's manifest "
                                    f"({len(existing['items'])} before, {len(items)} now); use a new --out")
        return
    atomic_write_json(path, payload)


def stage_status(bench_dir: Path, stages: tuple[str, ...], item_ids: list[str],
                 fingerprints: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
    """Per stage: how many items are done, failed (in this or an earlier stage), stale or missing.

    ``stale`` (a record made with another stage fingerprint) is only counted when fingerprints are given.
    """
    status: dict[str, dict[str, int]] = {}
    failed_before: set[str] = set()
    for stage in stages:
        fingerprint = fingerprints[stage] if fingerprints else None
        counts = {"done": 0, "failed": 0, "stale": 0, "missing": 0}
        for item_id in item_ids:
            record = load_record(bench_dir, stage, item_id)
            if item_id in failed_before:
                counts["failed"] += 1
            elif record is None:
                counts["missing"] += 1
            elif fingerprint is not None and record["fingerprint"] != fingerprint:
                counts["stale"] += 1
            elif record["status"] == "failed":
                counts["failed"] += 1
                failed_before.add(item_id)
            else:
                counts["done"] += 1
        status[stage] = counts
    return status


def run_benchmark(bench: Benchmark, spec: BenchmarkSpec, adapter: Any, bench_dir: Path, world: World,
                  batch_size: int, cache_dir: Path, progress: bool = True, retry_failed: bool = False,
                  extra_results: dict[str, Any] | None = None, rescore: bool = False) -> dict[str, Any] | None:
    """Run every stage of ``spec`` for this process's shard, then (main process) aggregate.

    Returns the aggregate on the main process, None on the others.
    """
    adapter.require(bench.capability)
    model = adapter.describe()
    items = bench.list_items(spec)
    if world.is_main:
        bench_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(bench_dir, spec, items, rescore=rescore)
    world.barrier()
    ctx = StageContext(adapter=adapter, bench_dir=bench_dir, batch_size=batch_size, cache_dir=cache_dir,
                       progress=progress and world.is_main, rank=world.rank)
    mine = shard(items, world)
    timings: dict[str, float] = {}
    for index, stage in enumerate(bench.stages):
        started = time.perf_counter()
        fingerprint = bench.stage_fingerprint(stage, spec, model)
        todo = []
        for item in mine:
            if index > 0:
                previous = load_record(bench_dir, bench.stages[index - 1], item.id)
                if previous is None or previous["status"] != "ok":
                    continue  # failed earlier (kept as failed) or not produced by this process's shard
            record = load_record(bench_dir, stage, item.id)
            if record is None or record["fingerprint"] != fingerprint or (retry_failed and record["status"] != "ok"):
                todo.append(item)
        logger.info("%s stage %s: %d of this process's %d items to do", spec.name, stage, len(todo), len(mine))
        for item, result in bench.run_stage(stage, spec, todo, ctx):
            path = record_path(bench_dir, stage, item.id)
            if result.arrays:
                atomic_write_npz(path.with_suffix(".npz"), result.arrays)
            payload = {"id": item.id, "stage": stage, "status": result.status, "fingerprint": fingerprint,
                       **({"error": result.error} if result.error else {}), **result.payload}
            atomic_write_json(path, payload)
            if result.status != "ok":
                logger.warning("%s: item %s failed in %s: %s", spec.name, item.id, stage, result.error)
        world.barrier()
        timings[stage] = time.perf_counter() - started
    if not world.is_main:
        return None
    return aggregate_run(bench, spec, items, bench_dir, model, {**(extra_results or {}), "timings_s": timings})


def aggregate_run(bench: Benchmark, spec: BenchmarkSpec, items: list[Item], bench_dir: Path,
                  model: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Aggregate the final stage's records in manifest order and write ``results.json``."""
    fingerprints = {stage: bench.stage_fingerprint(stage, spec, model) for stage in bench.stages}
    status = stage_status(bench_dir, bench.stages, [item.id for item in items], fingerprints)
    final = bench.stages[-1]
    fingerprint = bench.stage_fingerprint(final, spec, model)
    records: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for item in items:
        for stage in bench.stages:
            record = load_record(bench_dir, stage, item.id)
            if record is not None and record["status"] == "failed":
                failures[item.id] = f"{stage}: {record.get('error', 'failed')}"
                break
        else:
            record = load_record(bench_dir, final, item.id)
            if record is not None and record["status"] == "ok" and record["fingerprint"] == fingerprint:
                records[item.id] = record
    coverage = {"expected": len(items), "ok": len(records), "failed": len(failures),
                "missing": len(items) - len(records) - len(failures)}
    coverage["fraction"] = coverage["ok"] / coverage["expected"] if items else 0.0
    started = time.perf_counter()
    metrics = bench.aggregate(spec, records, bench_dir)
    if "timings_s" in extra:  # wall time of this invocation's stages (work resumed from disk is not counted)
        extra = {**extra, "timings_s": {**extra["timings_s"], "aggregate": time.perf_counter() - started}}
    results = {
        "benchmark": spec.name, "spec": spec.to_dict(), "model": model, "coverage": coverage,
        "stages": status, "failures": failures, "metrics": metrics, **extra,
    }
    atomic_write_json(bench_dir / RESULTS, results)
    return results
