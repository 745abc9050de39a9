"""Files the harness writes and hashes: atomic writes, JSON, canonical hashes.

The lowest floor of ``evals``: it imports nothing from the harness, so the judge client, the runtime
and the benchmarks can all use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

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


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:  # a numpy scalar (no import)
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def canonical_hash(payload: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able payload (sorted keys), for fingerprints."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
