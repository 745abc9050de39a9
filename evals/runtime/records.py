"""Atomic files and per-item records: a record on disk means that item's stage is finished."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# The process umask, read once (reading it means setting it): atomic writes give files the mode a plain
# open() would (mkstemp makes them 0600, unreadable to the rest of a team sharing a run directory).
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# Suffix of the temporary files atomic writes make beside their target (``.<name>.<random>.tmp``); a
# leftover one (the writer was killed) is never read, and a resumed run removes it.
TMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        os.fchmod(handle, 0o666 & ~_UMASK)
    except OSError as error:
        raise _naming(error, path) from error
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _naming(error, path) from error
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """The same error naming the file being written (a failed ``write`` on a full disk names none; a
    failed ``mkdir`` names the folder, which is kept in the reason)."""
    if error.filename is not None and str(error.filename) == str(path):
        return error
    reason = error.strerror or str(error)
    if error.filename is not None:
        reason = f"{reason} ({error.filename})"
    return type(error)(error.errno, reason, str(path))


def write_output(bench_dir: Path, relative: str, data: bytes) -> tuple[str, str]:
    """Write one output file of an item atomically under ``bench_dir``.

    Returns ``(relative, sha256)``: the pair a stage puts in ``StageResult.outputs`` so that the runner
    can tell, on a resume, whether the file is still the one the record describes.
    """
    atomic_write_bytes(Path(bench_dir) / relative, data)
    return relative, hashlib.sha256(data).hexdigest()


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def safe_item_name(item_id: str) -> str:
    """A file name for an item id: readable, unique (hash suffix), no path separators."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id)[-80:].lstrip(".")
    # surrogateescape: an id made from a file name that is not UTF-8 (Linux allows any bytes) still hashes.
    return f"{readable}-{hashlib.sha1(item_id.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def canonical_hash(payload: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able payload (sorted keys), for fingerprints."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def item_seed(run_seed: int, item_id: str) -> int:
    """A per-item seed from the run seed and the item id: the same whatever the batching or sharding."""
    return int(canonical_hash({"seed": int(run_seed), "item": item_id}), 16) % (2 ** 31)
