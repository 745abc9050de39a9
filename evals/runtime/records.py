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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    return f"{readable}-{hashlib.sha1(item_id.encode()).hexdigest()[:10]}"


def canonical_hash(payload: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able payload (sorted keys), for fingerprints."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def item_seed(run_seed: int, item_id: str) -> int:
    """A per-item seed from the run seed and the item id: the same whatever the batching or sharding."""
    return int(canonical_hash({"seed": int(run_seed), "item": item_id}), 16) % (2 ** 31)
