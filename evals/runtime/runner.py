"""Running a benchmark into a run directory: manifest, per-item records per stage, resume, aggregate.

Layout of a run directory::

    RUN/run.json                          identity of the model, options, environment (main process)
    RUN/.lock, RUN/.locks/                the run's locks (evals.runtime.rundir)
    RUN/<bench@variant>/manifest.json     spec, fingerprint, expected item ids
    RUN/<bench@variant>/<stage>/<item>.json (+ .npz)   one atomically written record per item and stage
    RUN/<bench@variant>/results.json      the aggregate, with coverage, spec, model and environment

A record on disk means that stage is done for that item, and is trusted on a resume only while it
still describes what is there: the stage fingerprint it names is the current one, every output file
it lists is still there unchanged, and every source file it read is unchanged (size and mtime, or
failing those, the sha256 of its bytes). Otherwise the item's stage is redone, and the item's later
stages with it. So a killed run resumes where it stopped with any number of processes.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from evals.benchmark import BenchmarkSpec, Item, ResolvedBenchmark, StageContext, StageResult
from evals.runtime.distributed import World, shard
from evals.runtime.records import atomic_write_json, atomic_write_npz, read_json, safe_item_name
from evals.runtime.rundir import RunDirectoryError
from unilip.errors import Interrupted

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RESULTS = "results.json"
# results.json's layout (evals/report/results.schema.json): MAJOR.MINOR. A reader refuses another MAJOR; a MINOR
# only adds optional fields. Bump MINOR for an added field, MAJOR for a renamed or removed one.
RESULTS_SCHEMA_VERSION = "1.1"

__all__ = [
    "MANIFEST",
    "RESULTS",
    "RunDirectoryError",
    "aggregate_run",
    "load_arrays",
    "load_record",
    "record_path",
    "run_benchmark",
    "stage_status",
    "write_manifest",
]


def record_path(bench_dir: Path, stage: str, item_id: str) -> Path:
    return bench_dir / stage / f"{safe_item_name(item_id)}.json"


def load_record(bench_dir: Path, stage: str, item_id: str) -> dict[str, Any] | None:
    """The record of ``item_id`` in ``stage``, None when there is none.

    Raises:
        RunDirectoryError: the record file is not a record (not JSON, or truncated by something other
            than this harness, whose writes are atomic); the message names the file and the fix.
    """
    path = record_path(bench_dir, stage, item_id)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as error:
        raise RunDirectoryError(
            f"{path} is not a readable record ({type(error).__name__}: {error}); delete it "
            "to redo that item, then run the same command"
        ) from None
    if not isinstance(record, dict) or "status" not in record or "fingerprint" not in record:
        raise RunDirectoryError(
            f"{path} is not a record of this harness (no status/fingerprint); delete it to "
            "redo that item, then run the same command"
        )
    return record


def load_arrays(bench_dir: Path, stage: str, item_id: str) -> dict[str, np.ndarray]:
    path = record_path(bench_dir, stage, item_id).with_suffix(".npz")
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise RunDirectoryError(
            f"{path} is not readable ({type(error).__name__}: {error}); delete it and its "
            f"record {path.with_suffix('.json').name} to redo that item, then run the same "
            "command"
        ) from None


# ------------------------------------------------------------------------------------ files behind a record
def _file_entry(path: Path, sha256: str) -> dict[str, Any]:
    stat = path.stat()
    return {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def file_unchanged(path: Path, entry: dict[str, Any]) -> bool:
    """Whether ``path`` still holds the bytes ``entry`` describes: cheap when size and mtime agree."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    if stat.st_size != entry.get("size"):
        return False
    if stat.st_mtime_ns == entry.get("mtime_ns"):
        return True
    # Touched or copied: compare the content (an entry without a digest is judged by size and mtime alone).
    from unilip.weights import file_sha256

    return bool(entry.get("sha256")) and file_sha256(path) == entry["sha256"]


def record_is_current(record: dict[str, Any], fingerprint: str, bench_dir: Path) -> tuple[bool, str]:
    """Whether a record may be trusted, and if not, why (for the log)."""
    if record["fingerprint"] != fingerprint:
        return False, "made with another stage fingerprint"
    for relative, entry in (record.get("outputs") or {}).items():
        if not file_unchanged(bench_dir / relative, entry):
            return False, f"its output {relative} is gone or changed"
    for source, entry in (record.get("inputs") or {}).items():
        path = Path(source)
        # A source that is gone cannot be read again: its record, made when it was there, stands.
        if path.exists() and not file_unchanged(path, entry):
            return False, f"its source {source} changed since"
    return True, ""


def _drop_later_records(bench_dir: Path, stages: tuple[str, ...], index: int, item_id: str) -> None:
    for stage in stages[index + 1 :]:
        path = record_path(bench_dir, stage, item_id)
        path.unlink(missing_ok=True)
        path.with_suffix(".npz").unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ manifest
def write_manifest(
    resolved: ResolvedBenchmark, bench_dir: Path, rescore: bool = False
) -> tuple[ResolvedBenchmark, list[str]]:
    """Write the manifest, or check that an existing one describes this spec and these items.

    Returns the benchmark to run (with the run's own spec) and the manifest's item ids (the expected
    items). ``rescore`` accepts a changed spec for the same items: every record carries its stage
    fingerprint, so the stages whose inputs changed (a judge, a template, a scorer) are redone and the
    others (generated images) kept.
    A data listing that lost items since the run started (files deleted) resumes with the run's own
    spec: the lost items count as missing, and finished items whose source changed are redone.
    """
    path = bench_dir / MANIFEST
    spec = resolved.spec
    ids = [item.id for item in resolved.items]
    payload = {"spec": spec.to_dict(), "items": ids}
    if not path.is_file():
        atomic_write_json(path, payload)
        return resolved, ids
    try:
        existing = read_json(path)
        old_spec = existing["spec"]
        old_ids = list(existing["items"])
    except (ValueError, KeyError, TypeError) as error:
        raise RunDirectoryError(
            f"{path} is not a readable manifest ({type(error).__name__}: {error}); pass --fresh "
            "to discard this benchmark's run"
        ) from None
    changed = sorted(
        k for k in set(old_spec["knobs"]) | set(spec.knobs) if old_spec["knobs"].get(k) != spec.knobs.get(k)
    )
    lost = sorted(set(old_ids) - set(ids))
    added = sorted(set(ids) - set(old_ids))
    listing = resolved.benchmark.listing_knob
    if old_spec["fingerprint"] != spec.fingerprint:
        if rescore and old_ids == ids:
            logger.info(
                "%s: spec changed (%s); redoing the stages that depend on it",
                spec.name,
                ", ".join(changed) or "version",
            )
            atomic_write_json(path, payload)
            return resolved, ids
        if not (listing is not None and changed == [listing] and not added and old_spec["version"] == spec.version):
            raise RunDirectoryError(
                f"{bench_dir} was started with another {spec.name} spec (changed: {', '.join(changed) or 'version'}); "
                "resume with the same options, --rescore to redo only the stages that depend on what changed, "
                "a new --out, or --fresh to discard it"
            )
        spec = BenchmarkSpec(old_spec["benchmark"], old_spec["variant"], old_spec["version"], old_spec["knobs"])
        resolved = resolved.with_spec(spec)
    if added:
        raise RunDirectoryError(
            f"{bench_dir} was started with another {spec.name} spec: the data now lists "
            f"{len(added)} item(s) the run did not have (e.g. {added[0]!r}); use a new --out, or "
            "--fresh to start this benchmark over"
        )
    if lost:
        logger.warning(
            "%s: %d item(s) of the run are no longer in the data (e.g. %r): they count as missing unless "
            "they were finished before",
            spec.name,
            len(lost),
            lost[0],
        )
    return resolved, old_ids


def stage_status(
    bench_dir: Path, stages: tuple[str, ...], item_ids: list[str], fingerprints: dict[str, str] | None = None
) -> dict[str, dict[str, int]]:
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


# ------------------------------------------------------------------------------------ running
def _record_payload(item: Item, stage: str, fingerprint: str, result: StageResult, bench_dir: Path) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": item.id,
        "stage": stage,
        "status": result.status,
        "fingerprint": fingerprint,
        **({"error": result.error} if result.error else {}),
        **result.payload,
    }
    if result.outputs:
        payload["outputs"] = {rel: _file_entry(bench_dir / rel, sha) for rel, sha in result.outputs.items()}
    if result.inputs:
        payload["inputs"] = {
            src: _file_entry(Path(src), sha) for src, sha in result.inputs.items() if Path(src).is_file()
        }
    return payload


def run_benchmark(
    resolved: ResolvedBenchmark,
    adapter: Any,
    bench_dir: Path,
    world: World,
    batch_size: int,
    cache_dir: Path,
    progress: bool = True,
    retry_failed: bool = False,
    extra_results: dict[str, Any] | None = None,
    rescore: bool = False,
) -> dict[str, Any] | None:
    """Run the stages of ``resolved`` (produce, then score) for this process's shard, then (main
    process) aggregate.

    Returns the aggregate on the main process, None on the others.

    Raises:
        Interrupted: on Ctrl-C, saying how many items are finished (all finished work is on disk).
    """
    adapter.require(resolved.capability)
    model = adapter.describe()

    def start() -> tuple[ResolvedBenchmark, list[str]]:
        bench_dir.mkdir(parents=True, exist_ok=True)
        return write_manifest(resolved, bench_dir, rescore=rescore)

    resolved, expected = world.on_main(start)
    ctx = StageContext(
        adapter=adapter,
        bench_dir=bench_dir,
        batch_size=batch_size,
        cache_dir=cache_dir,
        progress=progress and world.is_main,
        rank=world.rank,
    )
    mine = shard(list(resolved.items), world)
    # Outputs made elsewhere (folder:): what the adapter lacks fails its item up front, with the missing path.
    unavailable: dict[str, str] = {}
    if getattr(adapter, "keyed_outputs", False):
        check = adapter.check_outputs(
            resolved.capability,
            [item.id for item in resolved.items],
            per_item=resolved.outputs_per_item(),
            size=resolved.output_size(),
        )
        unavailable = dict(check.missing)
        extra_results = {
            **(extra_results or {}),
            "outputs_check": {"missing": dict(check.missing), "extra": list(check.extra)},
        }
    timings: dict[str, float] = {}
    stages = resolved.stages
    try:
        for index, stage in enumerate(stages):
            started = time.perf_counter()
            _run_stage(resolved, model, index, mine, ctx, retry_failed, unavailable if index == 0 else {})
            world.barrier()
            timings[stage] = time.perf_counter() - started
    except KeyboardInterrupt:
        final = stage_status(bench_dir, stages, expected)[stages[-1]]
        finished = final["done"] + final["failed"]
        raise Interrupted(f"{resolved.name}: {finished}/{len(expected)} items finished and kept") from None
    if not world.is_main:
        return None
    return aggregate_run(resolved, expected, bench_dir, model, {**(extra_results or {}), "timings_s": timings})


def _run_stage(
    resolved: ResolvedBenchmark,
    model: dict[str, Any],
    index: int,
    mine: list[Item],
    ctx: StageContext,
    retry_failed: bool,
    unavailable: dict[str, str] | None = None,
) -> None:
    """Run one stage for this process's items still to do. ``unavailable``: item id -> why the adapter cannot
    produce it (outputs made elsewhere that are missing); those items are recorded as failed without asking."""
    bench_dir = ctx.bench_dir
    spec, stages = resolved.spec, resolved.stages
    stage = stages[index]
    fingerprint = resolved.stage_fingerprint(stage, model)
    previous_fingerprint = resolved.stage_fingerprint(stages[index - 1], model) if index else None
    todo: list[Item] = []
    failed_earlier = 0
    for item in mine:
        if index > 0:
            previous = load_record(bench_dir, stages[index - 1], item.id)
            if previous is None or previous["status"] != "ok" or previous["fingerprint"] != previous_fingerprint:
                continue  # failed earlier (kept as failed) or not produced by this process's shard
        record = load_record(bench_dir, stage, item.id)
        if record is None:
            todo.append(item)
            continue
        current, why = record_is_current(record, fingerprint, bench_dir)
        if not current:
            logger.info("%s: redoing %s of item %s: %s", spec.name, stage, item.id, why)
            todo.append(item)
        elif record["status"] != "ok":
            if retry_failed:
                todo.append(item)
            else:
                failed_earlier += 1
    if failed_earlier:
        logger.warning(
            "%s %s: %d item(s) failed earlier; pass --retry-failed to redo them", spec.name, stage, failed_earlier
        )
    logger.info("%s stage %s: %d of this process's %d items to do", spec.name, stage, len(todo), len(mine))
    unavailable = unavailable or {}
    refused = [(item, StageResult.failed(unavailable[item.id])) for item in todo if item.id in unavailable]
    todo = [item for item in todo if item.id not in unavailable]
    for item, result in itertools.chain(refused, resolved.run_stage(stage, todo, ctx)):
        path = record_path(bench_dir, stage, item.id)
        if result.arrays:
            atomic_write_npz(path.with_suffix(".npz"), result.arrays)
        atomic_write_json(path, _record_payload(item, stage, fingerprint, result, bench_dir))
        _drop_later_records(bench_dir, stages, index, item.id)
        if result.status != "ok":
            logger.warning("%s: item %s failed in %s: %s", spec.name, item.id, stage, result.error)


def counted_records(
    bench_dir: Path, stages: tuple[str, ...], ids: list[str], final_fingerprint: str | None
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The records an aggregate counts, and the failures: item id -> the final stage's record, for each item (in
    ``ids`` order) that failed no stage and whose final record is ``ok`` and made with ``final_fingerprint`` (any,
    when None); item id -> ``"stage: error"`` for each item a stage failed."""
    records: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for item_id in ids:
        for stage in stages:
            record = load_record(bench_dir, stage, item_id)
            if record is not None and record["status"] == "failed":
                failures[item_id] = f"{stage}: {record.get('error', 'failed')}"
                break
        else:
            record = load_record(bench_dir, stages[-1], item_id)
            if record is not None and record["status"] == "ok":
                if final_fingerprint is None or record["fingerprint"] == final_fingerprint:
                    records[item_id] = record
    return records, failures


def counted_records_of(bench_dir: Path, stages: tuple[str, ...], ids: list[str]) -> dict[str, dict[str, Any]]:
    """The final stage's records that the finished run in ``bench_dir`` counted in its results.json (per-unit values
    for paired tests must be those): :func:`counted_records` with the fingerprint results.json recorded (results
    written before it was recorded: any fingerprint)."""
    path = bench_dir / RESULTS
    recorded = read_json(path).get("stage_fingerprints", {}) if path.is_file() else {}
    return counted_records(bench_dir, stages, ids, recorded.get(stages[-1]))[0]


def aggregate_run(
    resolved: ResolvedBenchmark,
    items: list[Item] | list[str],
    bench_dir: Path,
    model: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Aggregate the final stage's records in manifest order and write ``results.json``.

    ``items``: the run's expected items (or their ids): the manifest's, which includes items whose data
    has gone since the run started (they count as missing unless they were finished).
    """
    spec, stages = resolved.spec, resolved.stages
    ids = [item if isinstance(item, str) else item.id for item in items]
    fingerprints = {stage: resolved.stage_fingerprint(stage, model) for stage in stages}
    status = stage_status(bench_dir, stages, ids, fingerprints)
    records, failures = counted_records(bench_dir, stages, ids, fingerprints[stages[-1]])
    coverage = {
        "expected": len(ids),
        "ok": len(records),
        "failed": len(failures),
        "missing": len(ids) - len(records) - len(failures),
    }
    coverage["fraction"] = coverage["ok"] / coverage["expected"] if ids else 0.0
    started = time.perf_counter()
    metrics = resolved.aggregate(records, bench_dir)
    if "timings_s" in extra:  # wall time of this invocation's stages (work resumed from disk is not counted)
        extra = {**extra, "timings_s": {**extra["timings_s"], "aggregate": time.perf_counter() - started}}
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "benchmark": spec.name,
        "spec": spec.to_dict(),
        "model": model,
        "coverage": coverage,
        "stages": status,
        "failures": failures,
        "metrics": metrics,
        # What the records the metrics count were made with, so that a later reader of the records (paired tests)
        # counts exactly those (counted_records_of).
        "stage_fingerprints": fingerprints,
        # results.json is written with sorted keys: keep the benchmark's own order (headline first) and
        # each metric's direction for the tables (``unilip eval compare``).
        "metric_order": list(metrics),
        "metric_directions": {
            name: "lower" if name in resolved.benchmark.lower_is_better else "higher" for name in metrics
        },
        **extra,
    }
    atomic_write_json(bench_dir / RESULTS, results)
    return results
