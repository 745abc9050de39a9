"""Running a benchmark into a run directory: manifest, per-item records per stage, resume, aggregate.

Layout of a run directory::

    RUN/run.json                          identity of the model, options, environment (main process)
    RUN/.lock, RUN/.locks/                the run's locks (evals.runtime.rundir)
    RUN/<bench@variant>/manifest.json     spec, fingerprint, expected item ids
    RUN/<bench@variant>/<stage>/<item>.json (+ .npz)   one atomically written record per item and stage
    RUN/<bench@variant>/results.json      the aggregate, with coverage, spec, model and environment
    RUN/<bench@variant>/.index-<stage>.json   a cache of the stage's records (RecordReader), never trusted alone

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
import os
import time
import zipfile
from dataclasses import astuple
from pathlib import Path
from typing import Any

import numpy as np

from evals.benchmark import BenchmarkSpec, Item, ResolvedBenchmark, StageContext, StageResult
from evals.runtime.distributed import ShardSpec, World, shard, shard_items
from evals.runtime.records import atomic_write_bytes, atomic_write_json, atomic_write_npz, read_json, safe_item_name
from evals.runtime.rundir import RunDirectoryError, serialized
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
    "RecordReader",
    "record_path",
    "run_benchmark",
    "stage_status",
    "unfinished_by_shard",
    "unfinished_items",
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
    return _read_record(record_path(bench_dir, stage, item_id))


def _read_record(path: Path | str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            record = json.loads(handle.read().decode("utf-8"))  # decoded here: json's own sniffing costs more
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


# A cache of each stage's records beside them (``<bench>/.index-<stage>.json``): one JSON file read instead of one
# file per item. An entry is trusted only while its record file has the inode, size and mtime it had when it was
# read (an atomic rewrite makes a new inode), so a stale, partial or foreign index costs reads, never a wrong
# record. Written by the aggregate, the point where a run has read every record.
INDEX_FORMAT = 1


def index_path(bench_dir: Path | str, stage: str) -> Path:
    """Where :class:`RecordReader` keeps ``stage``'s record index."""
    return Path(bench_dir) / f".index-{stage}.json"


def _load_index(path: Path) -> dict[str, list[Any]]:
    """The entries of an index file (name -> [inode, size, mtime_ns, record]); empty when there is none or it is
    not one this version wrote (an index is only a cache: the records are read instead)."""
    try:
        with open(path, "rb") as handle:
            index = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError) as error:
        logger.debug("ignoring the record index %s: %s", path, error)
        return {}
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or not isinstance(index.get("entries"), dict):
        logger.debug("ignoring the record index %s: not format %s", path, INDEX_FORMAT)
        return {}
    return index["entries"]


_UNREAD = object()  # RecordReader's marker of a record not looked at yet (None: looked at, there is none)


class RecordReader:
    """The records of one benchmark directory, each read at most once (a resume of 50,000 finished items reads
    each record once, not once per question asked of it), through each stage's record index where it still holds.

    Each stage's folder is listed once, so an item with no record costs no ``open``. Only for a span in which
    no other process writes what it reads: the records this process writes go through :meth:`wrote` and
    :meth:`dropped`; after a barrier (other ranks wrote theirs), read through a new reader.
    """

    def __init__(self, bench_dir: Path) -> None:
        self.bench_dir = bench_dir
        self._records: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._listings: dict[str, set[str]] = {}
        self._names: dict[str, str] = {}
        self._folders: dict[str, str] = {}
        self._index: dict[str, dict[str, list[Any]]] = {}  # stage -> the index file's entries
        self._known: dict[str, dict[str, list[Any]]] = {}  # stage -> entries this reader checked or read
        self._forget: dict[str, set[str]] = {}  # stage -> records deleted here since

    def _name(self, item_id: str) -> str:
        name = self._names.get(item_id)
        if name is None:
            name = self._names[item_id] = f"{safe_item_name(item_id)}.json"
        return name

    def _list(self, stage: str) -> set[str]:
        listing = self._listings.get(stage)
        if listing is None:
            folder = self._folders[stage] = os.path.join(self.bench_dir, stage, "")
            try:
                listing = self._listings[stage] = set(os.listdir(folder))
            except FileNotFoundError:
                listing = self._listings[stage] = set()
            self._index[stage] = _load_index(index_path(self.bench_dir, stage)) if listing else {}
            self._known[stage] = {}
            self._forget[stage] = set()
        return listing

    def get(self, stage: str, item_id: str) -> dict[str, Any] | None:
        """:func:`load_record`, read once (from the stage's index when the record file is unchanged since)."""
        key = (stage, item_id)
        record = self._records.get(key, _UNREAD)
        if record is not _UNREAD:
            return record
        name = self._names.get(item_id) or self._name(item_id)
        listing = self._listings.get(stage)
        if listing is None:
            listing = self._list(stage)
        record = self._read(stage, name) if name in listing else None
        self._records[key] = record
        return record

    def _read(self, stage: str, name: str) -> dict[str, Any] | None:
        path = self._folders[stage] + name
        try:
            # Before the read: a record replaced between the two is then kept under the old file's key, and
            # read again next time, never the other way round.
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        entry = self._index[stage].get(name)
        if entry is not None and entry[0] == stat.st_ino and entry[1] == stat.st_size and entry[2] == stat.st_mtime_ns:
            self._known[stage][name] = entry
            return entry[3]
        record = _read_record(path)
        if record is not None:
            self._known[stage][name] = [stat.st_ino, stat.st_size, stat.st_mtime_ns, record]
        return record

    def wrote(self, stage: str, item_id: str) -> None:
        """This process wrote the item's record: it is read back (from the page cache) as the file holds it, so
        that the index saved after an interruption or at the aggregate has it."""
        self._records.pop((stage, item_id), None)
        if stage in self._listings:
            name = self._name(item_id)
            self._listings[stage].add(name)
            self._known[stage].pop(name, None)
            self._records[(stage, item_id)] = self._read(stage, name)

    def dropped(self, stage: str, item_id: str) -> None:
        """This process deleted the record (if any)."""
        self._records[(stage, item_id)] = None
        if stage in self._listings:
            name = self._name(item_id)
            self._known[stage].pop(name, None)
            self._forget[stage].add(name)

    def save_index(self) -> None:
        """Write each listed stage's index: what this reader checked or read, and the earlier index's entries for
        records it did not look at (another shard's), unless that stage's index already says all of it.

        A write that fails is logged and ignored: the index only saves reads.
        """
        for stage, known in self._known.items():
            earlier = self._index[stage]
            forget = self._forget[stage]
            entries = {name: entry for name, entry in earlier.items() if name not in forget and name not in known}
            entries.update(known)
            listing = self._listings[stage]
            entries = {name: entry for name, entry in entries.items() if name in listing}
            if not entries or (entries.keys() == earlier.keys() and all(entries[n] is earlier[n] for n in entries)):
                continue
            try:
                payload = json.dumps({"format": INDEX_FORMAT, "entries": entries}, separators=(",", ":"))
                atomic_write_bytes(index_path(self.bench_dir, stage), payload.encode())
            except (OSError, TypeError, ValueError) as error:
                logger.warning("could not write the record index of %s/%s: %s", self.bench_dir, stage, error)
                continue
            self._index[stage] = entries


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


def record_is_current(
    record: dict[str, Any], fingerprint: str, bench_dir: Path | str, sources: dict[str, Any] | None = None
) -> tuple[bool, str]:
    """Whether a record may be trusted, and if not, why (for the log).

    ``bench_dir``: the benchmark directory (a scan of many records passes it as a ``str`` once made).
    ``sources``: a memo of the sources' ``stat`` (source -> stat result, None when gone) shared by the records
    of one scan: many items read one source (a tar shard of the data), which is then looked at once.
    """
    if record["fingerprint"] != fingerprint:
        return False, "made with another stage fingerprint"
    base = bench_dir if isinstance(bench_dir, str) else os.fspath(bench_dir)
    for relative, entry in (record.get("outputs") or {}).items():
        try:  # the common case first, without building a Path: size and mtime as recorded
            stat = os.stat(relative if relative.startswith(os.sep) else f"{base}{os.sep}{relative}")
            if stat.st_size == entry.get("size") and stat.st_mtime_ns == entry.get("mtime_ns"):
                continue
        except FileNotFoundError:
            return False, f"its output {relative} is gone or changed"
        if not file_unchanged(Path(base) / relative, entry):
            return False, f"its output {relative} is gone or changed"
    for source, entry in (record.get("inputs") or {}).items():
        if sources is not None:
            if source not in sources:
                try:
                    sources[source] = os.stat(source)
                except FileNotFoundError:
                    sources[source] = None
            stat = sources[source]
            # Size and mtime as recorded: unchanged, as file_unchanged would say without looking again.
            if stat is None or (stat.st_size == entry.get("size") and stat.st_mtime_ns == entry.get("mtime_ns")):
                continue
        path = Path(source)
        # A source that is gone cannot be read again: its record, made when it was there, stands.
        if path.exists() and not file_unchanged(path, entry):
            return False, f"its source {source} changed since"
    return True, ""


def _drop_later_records(
    bench_dir: Path, stages: tuple[str, ...], index: int, item_id: str, reader: RecordReader | None = None
) -> None:
    for stage in stages[index + 1 :]:
        path = record_path(bench_dir, stage, item_id)
        path.unlink(missing_ok=True)
        path.with_suffix(".npz").unlink(missing_ok=True)
        if reader is not None:
            reader.dropped(stage, item_id)


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
    bench_dir: Path,
    stages: tuple[str, ...],
    item_ids: list[str],
    fingerprints: dict[str, str] | None = None,
    reader: RecordReader | None = None,
) -> dict[str, dict[str, int]]:
    """Per stage: how many items are done, failed (in this or an earlier stage), stale or missing.

    ``stale`` (a record made with another stage fingerprint) is only counted when fingerprints are given.
    ``reader``: where records are read (one shared with other questions asked of the same records).
    """
    reader = reader or RecordReader(bench_dir)
    status: dict[str, dict[str, int]] = {}
    failed_before: set[str] = set()
    for stage in stages:
        fingerprint = fingerprints[stage] if fingerprints else None
        counts = {"done": 0, "failed": 0, "stale": 0, "missing": 0}
        for item_id in item_ids:
            record = reader.get(stage, item_id)
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


def unfinished_items(
    bench_dir: Path,
    stages: tuple[str, ...],
    ids: list[str],
    fingerprints: dict[str, str],
    first_only: bool = False,
    reader: RecordReader | None = None,
) -> list[str]:
    """The items of ``ids`` not finished yet: no record of a stage they reached, or one made with another
    fingerprint (a run would redo it). An item that failed a stage is finished (it counts as failed).

    One directory listing of the first stage finds the items never started without reading a record;
    ``first_only``: return those alone when there are any (enough to know the run is not finished: the usual
    answer when a shard finishes before the others), else read the records (through ``reader``, so that the
    aggregate that follows reads none of them again).
    """
    reader = reader or RecordReader(bench_dir)
    try:
        started = {entry.name for entry in os.scandir(bench_dir / stages[0])}
    except FileNotFoundError:
        started = set()
    never = {item_id for item_id in ids if f"{safe_item_name(item_id)}.json" not in started}
    if never and first_only:
        return [item_id for item_id in ids if item_id in never]
    unfinished = []
    for item_id in ids:
        if item_id in never:
            unfinished.append(item_id)
            continue
        for stage in stages:
            record = reader.get(stage, item_id)
            if record is None or record["fingerprint"] != fingerprints[stage]:
                unfinished.append(item_id)
                break
            if record["status"] == "failed":
                break
    return unfinished


def unfinished_by_shard(unfinished: list[str], items: list[str], count: int) -> dict[str, int]:
    """How many of ``unfinished`` each shard ``"I/N"`` of ``count`` holds (shards with none left out), the
    shards split as :func:`evals.runtime.distributed.shard_items` splits ``items`` (the run's items, in
    order); an unfinished id no longer in ``items`` (its data is gone) counts under ``"gone"``."""
    position = {item_id: index for index, item_id in enumerate(items)}
    counts: dict[str, int] = {}
    for item_id in unfinished:
        key = f"{position[item_id] % count}/{count}" if item_id in position else "gone"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda pair: int(pair[0].split("/")[0]) if pair[0] != "gone" else count))


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
    part: ShardSpec | None = None,
) -> dict[str, Any] | None:
    """Run the stages of ``resolved`` (produce, then score) for this process's shard, then (main
    process) aggregate.

    ``part``: this process is the independent shard ``part`` (``--shard I/N``; ``world`` is this process
    alone): it runs ``manifest[I::N]`` and aggregates only when every item of the run is finished.

    Returns the aggregate on the main process (a shard: when it aggregated), None on the others.

    Raises:
        Interrupted: on Ctrl-C, saying how many items are finished (all finished work is on disk).
    """
    adapter.require(resolved.capability)
    model = adapter.describe()

    def start() -> tuple[ResolvedBenchmark, list[str]]:
        bench_dir.mkdir(parents=True, exist_ok=True)
        if part is None:
            return write_manifest(resolved, bench_dir, rescore=rescore)
        # Shards starting together: the first writes the manifest, the others check theirs against it.
        with serialized(bench_dir.parent):
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
    mine = shard(list(resolved.items), world) if part is None else shard_items(list(resolved.items), *astuple(part))
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
    # This process's records, read once for all stages (no other process writes them).
    reader = RecordReader(bench_dir)
    try:
        for index, stage in enumerate(stages):
            started = time.perf_counter()
            _run_stage(
                resolved, model, index, mine, ctx, retry_failed, unavailable if index == 0 else {}, reader=reader
            )
            world.barrier()
            timings[stage] = time.perf_counter() - started
    except KeyboardInterrupt:
        reader.save_index()  # what this process read and wrote: the resume reads it from one file per stage
        final = stage_status(bench_dir, stages, expected)[stages[-1]]
        finished = final["done"] + final["failed"]
        raise Interrupted(f"{resolved.name}: {finished}/{len(expected)} items finished and kept") from None
    if not world.is_main:
        return None
    extra = {**(extra_results or {}), "timings_s": timings}
    if part is None:
        # One process wrote every record it did not read: what it read stands. Other ranks wrote theirs since.
        alone = world.size == 1
        return aggregate_run(resolved, expected, bench_dir, model, extra, reader=reader if alone else None)
    fingerprints = {stage: resolved.stage_fingerprint(stage, model) for stage in stages}
    # Every item finished means no shard writes a record any more: what this check reads, the aggregate reuses.
    finished = RecordReader(bench_dir)
    if unfinished_items(bench_dir, stages, expected, fingerprints, first_only=True, reader=finished):
        reader.save_index()  # this shard's records (the last shard's aggregate indexes them all)
        return None
    # The last shard to finish: one aggregate at a time (two finishing together would write the same numbers).
    with serialized(bench_dir.parent):
        return aggregate_run(resolved, expected, bench_dir, model, extra, reader=finished)


def _run_stage(
    resolved: ResolvedBenchmark,
    model: dict[str, Any],
    index: int,
    mine: list[Item],
    ctx: StageContext,
    retry_failed: bool,
    unavailable: dict[str, str] | None = None,
    reader: RecordReader | None = None,
) -> None:
    """Run one stage for this process's items still to do. ``unavailable``: item id -> why the adapter cannot
    produce it (outputs made elsewhere that are missing); those items are recorded as failed without asking.
    ``reader``: this process's records (only it writes them), read once across the stages."""
    bench_dir = ctx.bench_dir
    reader = reader or RecordReader(bench_dir)
    sources: dict[str, Any] = {}
    base = os.fspath(bench_dir)  # once, for the outputs of every record checked
    spec, stages = resolved.spec, resolved.stages
    stage = stages[index]
    fingerprint = resolved.stage_fingerprint(stage, model)
    previous_fingerprint = resolved.stage_fingerprint(stages[index - 1], model) if index else None
    todo: list[Item] = []
    failed_earlier = 0
    for item in mine:
        if index > 0:
            previous = reader.get(stages[index - 1], item.id)
            if previous is None or previous["status"] != "ok" or previous["fingerprint"] != previous_fingerprint:
                continue  # failed earlier (kept as failed) or not produced by this process's shard
        record = reader.get(stage, item.id)
        if record is None:
            todo.append(item)
            continue
        current, why = record_is_current(record, fingerprint, base, sources)
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
        reader.wrote(stage, item.id)
        _drop_later_records(bench_dir, stages, index, item.id, reader)
        if result.status != "ok":
            logger.warning("%s: item %s failed in %s: %s", spec.name, item.id, stage, result.error)


def counted_records(
    bench_dir: Path,
    stages: tuple[str, ...],
    ids: list[str],
    final_fingerprint: str | None,
    reader: RecordReader | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The records an aggregate counts, and the failures: item id -> the final stage's record, for each item (in
    ``ids`` order) that failed no stage and whose final record is ``ok`` and made with ``final_fingerprint`` (any,
    when None); item id -> ``"stage: error"`` for each item a stage failed."""
    reader = reader or RecordReader(bench_dir)
    records: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for item_id in ids:
        for stage in stages:
            record = reader.get(stage, item_id)
            if record is not None and record["status"] == "failed":
                failures[item_id] = f"{stage}: {record.get('error', 'failed')}"
                break
        else:
            record = reader.get(stages[-1], item_id)
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
    reader: RecordReader | None = None,
) -> dict[str, Any]:
    """Aggregate the final stage's records in manifest order and write ``results.json``.

    ``items``: the run's expected items (or their ids): the manifest's, which includes items whose data
    has gone since the run started (they count as missing unless they were finished). ``reader``: the records
    as this process read them, when no other process has written since (a single process's own run).
    """
    spec, stages = resolved.spec, resolved.stages
    ids = [item if isinstance(item, str) else item.id for item in items]
    fingerprints = {stage: resolved.stage_fingerprint(stage, model) for stage in stages}
    reader = reader or RecordReader(bench_dir)
    status = stage_status(bench_dir, stages, ids, fingerprints, reader=reader)
    records, failures = counted_records(bench_dir, stages, ids, fingerprints[stages[-1]], reader=reader)
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
    reader.save_index()  # every record has been read: the next look at this run reads one file per stage
    return results
