"""Per-item records of a run: a record on disk means that item's stage is finished.

The atomic file writes it builds on are :mod:`evals.files` (re-exported here for the runtime's users).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from evals.files import TMP_SUFFIX, atomic_write_bytes, atomic_write_json, canonical_hash, read_json, write_output

__all__ = [
    "TMP_SUFFIX",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_npz",
    "canonical_hash",
    "item_seed",
    "read_json",
    "safe_item_name",
    "write_output",
]


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


def safe_item_name(item_id: str) -> str:
    """A file name for an item id: readable, unique (hash suffix), no path separators."""
    readable = _UNSAFE_IN_NAMES.sub("_", item_id)[-80:].lstrip(".")
    # surrogateescape: an id made from a file name that is not UTF-8 (Linux allows any bytes) still hashes.
    return f"{readable}-{hashlib.sha1(item_id.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def item_seed(run_seed: int, item_id: str) -> int:
    """A per-item seed from the run seed and the item id: the same whatever the batching or sharding."""
    return int(canonical_hash({"seed": int(run_seed), "item": item_id}), 16) % (2**31)
