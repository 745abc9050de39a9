"""The reconstruction benchmark's dataset listing: what it reads, what it skips (and says so), and the
identity of what it lists, including file names that are not UTF-8."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from evals.benchmarks.recon.data import list_images
from evals.runtime.records import canonical_hash


def _image(path: Path, size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 80, 120)).save(
        path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    )


def test_images_in_any_letter_case_are_items_and_skipped_files_are_listed_and_warned_once(tmp_path, caplog):
    """Point 5: upper-case extensions are read; other image formats are returned as skipped, with one
    WARNING line giving the count and the first names."""
    for name in ("a/1.JPEG", "a/2.jpeg", "b/3.Jpg", "b/4.PNG", "5.png"):
        _image(tmp_path / name)
    for index in range(7):
        Image.new("RGB", (8, 8)).save(tmp_path / f"t{index}.tif")
    (tmp_path / "labels.json").write_text("{}")

    with caplog.at_level(logging.WARNING, logger="evals.benchmarks.recon.data"):
        listing = list_images("folder", str(tmp_path), None)
    assert [item.id for item in listing.items] == ["5.png", "a/1.JPEG", "a/2.jpeg", "b/3.Jpg", "b/4.PNG"]
    assert [s.id for s in listing.skipped] == [f"t{i}.tif" for i in range(7)]
    assert all("TIFF" in s.reason for s in listing.skipped)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "7 file(s) skipped" in message and "t0.tif" in message and "t4.tif" in message
    assert "t5.tif" not in message and "2 more" in message


def test_identity_is_ids_and_sizes_and_sources_name_absolute_files(tmp_path, monkeypatch):
    """Point 7: the fingerprint identity keeps its form; each source names the absolute file to re-check."""
    _image(tmp_path / "x.png")
    _image(tmp_path / "y.jpg")
    monkeypatch.chdir(tmp_path)
    listing = list_images("folder", ".", None)
    assert listing.identity == [
        ["x.png", (tmp_path / "x.png").stat().st_size],
        ["y.jpg", (tmp_path / "y.jpg").stat().st_size],
    ]
    assert [item.source for item in listing.items] == [
        ("file", str(tmp_path / "x.png")),
        ("file", str(tmp_path / "y.jpg")),
    ]


def test_only_skipped_files_is_no_images_and_says_how_many_were_skipped(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "only.gif")
    with pytest.raises(ValueError, match=r"no images found .*1 file\(s\) skipped"):
        list_images("folder", str(tmp_path), None)


def test_non_utf8_names_list_hash_and_warn_printably(tmp_path, caplog):
    """Point 6: a dataset with a non-UTF-8 file name lists, its identity hashes, and the skip warning
    shows the name escaped (a lone surrogate in a log line fails to write as UTF-8)."""
    directory = os.fsencode(tmp_path)
    _image(Path(os.fsdecode(os.path.join(directory, b"caf\xe9.png"))))
    Image.new("RGB", (8, 8)).save(os.fsdecode(os.path.join(directory, b"na\xefve.tif")))
    with caplog.at_level(logging.WARNING, logger="evals.benchmarks.recon.data"):
        listing = list_images("folder", str(tmp_path), None)
    assert [item.id for item in listing.items] == ["caf\udce9.png"]
    assert len(canonical_hash(listing.identity)) == 16
    message = caplog.records[-1].getMessage()
    message.encode("utf-8")
    assert "na\\xefve.tif" in message
