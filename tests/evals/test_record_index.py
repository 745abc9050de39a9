"""The per-stage record index: a resume reads one file per stage, and never trusts an entry its record outgrew.

The run directories are made by ``benchmarks/resume_scan.py``'s ``build`` (records as the harness writes them, a
stand-in benchmark whose stages raise if asked to redo an item), so what is tested is the runner itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import resume_scan  # noqa: E402

from evals.runtime import runner  # noqa: E402
from evals.runtime.records import atomic_write_json  # noqa: E402
from evals.runtime.runner import RecordReader, index_path, load_record, record_path  # noqa: E402

ITEMS = 40


@pytest.fixture()
def finished(tmp_path):
    resolved, bench_dir = resume_scan.build(tmp_path, ITEMS)
    return resolved, bench_dir


def _count_file_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    original = runner._read_record

    def counting(path):
        reads.append(str(path))
        return original(path)

    monkeypatch.setattr(runner, "_read_record", counting)
    return reads


def test_a_finished_run_is_rescanned_from_its_index_alone(finished, monkeypatch):
    resolved, bench_dir = finished
    for stage in resolved.stages:
        assert index_path(bench_dir, stage).is_file()
    reads = _count_file_reads(monkeypatch)
    resume_scan.decide(resolved, bench_dir)  # both stages scanned; a stage asked to redo an item raises
    assert reads == []
    reader = RecordReader(bench_dir)
    for stage in resolved.stages:
        for item in resolved.items:
            assert reader.get(stage, item.id) == load_record(bench_dir, stage, item.id)
    assert len(reads) == ITEMS * len(resolved.stages)  # load_record's own reads, not the reader's


def test_a_rewritten_record_is_read_again_not_taken_from_the_index(finished, monkeypatch):
    resolved, bench_dir = finished
    item = resolved.items[3].id
    path = record_path(bench_dir, "score", item)
    record = json.loads(path.read_text())
    record["value"] = 8.0
    old = path.stat()
    atomic_write_json(path, record)  # a new file (inode) in place of the indexed one
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # same size, same mtime: only the inode tells
    assert path.stat().st_size == old.st_size and path.stat().st_ino != old.st_ino
    in_place = resolved.items[5].id
    other = record_path(bench_dir, "score", in_place)
    text = other.read_text()
    changed = text.replace('"value": 5.0', '"value": 6.0')
    assert changed != text and len(changed) == len(text)
    stat = other.stat()
    other.write_text(changed)  # same inode, same size: only the mtime tells
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000))
    grown = resolved.items[6].id
    third = record_path(bench_dir, "score", grown)
    stat = third.stat()
    third.write_text(third.read_text().replace('"value": 6.0', '"value": 60.0'))
    os.utime(third, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same inode, same mtime: only the size tells
    reads = _count_file_reads(monkeypatch)
    reader = RecordReader(bench_dir)
    assert reader.get("score", item)["value"] == 8.0
    assert reader.get("score", in_place)["value"] == 6.0
    assert reader.get("score", grown)["value"] == 60.0
    assert reader.get("score", resolved.items[4].id)["value"] == 4.0
    assert sorted(reads) == sorted([str(path), str(other), str(third)])
    # The aggregate counts the new values and refreshes the index: nothing is read from files afterwards.
    resume_scan.rerun(resolved, bench_dir)
    written = json.loads((bench_dir / "results.json").read_text())
    expected = (sum(i % 7 for i in range(ITEMS)) - 3 + 8 - 5 + 6 - 6 + 60) / ITEMS
    assert written["metrics"]["value"]["value"] == pytest.approx(expected, rel=1e-12)
    reads.clear()
    fresh = RecordReader(bench_dir)
    assert fresh.get("score", item)["value"] == 8.0 and fresh.get("score", in_place)["value"] == 6.0
    assert reads == []


def test_a_deleted_record_is_missing_whatever_the_index_says(finished):
    resolved, bench_dir = finished
    item = resolved.items[0].id
    record_path(bench_dir, "score", item).unlink()
    assert RecordReader(bench_dir).get("score", item) is None


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"format": 99, "entries": {}}', b"[1, 2]"])
def test_a_damaged_or_foreign_index_is_ignored_and_rewritten(finished, monkeypatch, content):
    resolved, bench_dir = finished
    index = index_path(bench_dir, "produce")
    index.write_bytes(content)
    reads = _count_file_reads(monkeypatch)
    resume_scan.decide(resolved, bench_dir)
    assert len([r for r in reads if "/produce/" in r]) == ITEMS and not [r for r in reads if "/score/" in r]
    resume_scan.rerun(resolved, bench_dir)  # its aggregate writes the index again
    assert json.loads(index.read_text())["format"] == runner.INDEX_FORMAT
    reads.clear()
    resume_scan.decide(resolved, bench_dir)
    assert reads == []


def test_a_shard_keeps_the_entries_of_records_it_did_not_read(finished):
    resolved, bench_dir = finished
    index = index_path(bench_dir, "score")
    before = json.loads(index.read_text())["entries"]
    assert len(before) == ITEMS
    mine = resolved.items[::3]
    rewritten = mine[0].id
    path = record_path(bench_dir, "score", rewritten)
    atomic_write_json(path, {**json.loads(path.read_text()), "value": -1.0})
    reader = RecordReader(bench_dir)
    for item in mine:
        reader.get("score", item.id)
    reader.save_index()
    after = json.loads(index.read_text())["entries"]
    assert after.keys() == before.keys()
    name = path.name
    assert after[name][3]["value"] == -1.0 and after[name][0] == path.stat().st_ino
    assert {n: e for n, e in after.items() if n != name} == {n: e for n, e in before.items() if n != name}


def test_records_this_process_writes_or_deletes_are_indexed_as_the_files_are(finished):
    resolved, bench_dir = finished
    item = resolved.items[1].id
    path = record_path(bench_dir, "score", item)
    reader = RecordReader(bench_dir)
    assert reader.get("score", item)["value"] == 1.0
    atomic_write_json(path, {**json.loads(path.read_text()), "value": 9.0})
    reader.wrote("score", item)
    other = resolved.items[2].id
    record_path(bench_dir, "score", other).unlink()
    reader.dropped("score", other)
    reader.save_index()
    entries = json.loads(index_path(bench_dir, "score").read_text())["entries"]
    assert record_path(bench_dir, "score", other).name not in entries
    assert entries[path.name][3]["value"] == 9.0 and entries[path.name][0] == path.stat().st_ino
    assert RecordReader(bench_dir).get("score", item)["value"] == 9.0


class _StopsAfterFive(resume_scan.ScanBenchmark):
    """Produces five items, then the user presses Ctrl-C."""

    def produce(self, resolved, items, ctx):
        for item in items[:5]:
            yield item, runner.StageResult("ok", payload={"value": float(item.source)})
        raise KeyboardInterrupt

    def score(self, resolved, items, ctx):
        raise AssertionError("not reached")


def test_an_interrupted_run_indexes_what_it_wrote(tmp_path, monkeypatch):
    from evals.runtime.distributed import World
    from unilip.errors import Interrupted

    resolved = _StopsAfterFive(12).resolve("default", {})
    bench_dir = tmp_path / "scan@default"
    with pytest.raises(Interrupted, match="0/12 items finished"):
        runner.run_benchmark(
            resolved, resume_scan.StubAdapter(), bench_dir, World(0, 1), 4, tmp_path / "cache", progress=False
        )
    entries = json.loads(index_path(bench_dir, "produce").read_text())["entries"]
    assert sorted(entries) == sorted(record_path(bench_dir, "produce", i.id).name for i in resolved.items[:5])
    reads = _count_file_reads(monkeypatch)
    reader = RecordReader(bench_dir)
    assert [reader.get("produce", i.id)["value"] for i in resolved.items[:5]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert reads == []
