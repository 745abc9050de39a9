"""Output folders of the model commands (``reconstruct``, ``generate``, ``edit``): never two runs mixed in one.

A command writes ``OUT/run.json`` recording its invocation (the arguments that decide the outputs) and
the files it wrote. Run again with the same invocation, it rewrites the same files (a rerun). Into a
folder that holds files of another invocation it is refused, unless ``--overwrite``: then the files the
earlier invocation recorded are removed first, so the folder never mixes two runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
# Arguments that do not change what a command writes.
_NOT_INVOCATION = ("func", "overwrite", "no_progress", "verbose", "batch_size")

OVERWRITE_HELP = "replace the outputs an earlier, different invocation left in --out (otherwise refused)"


def ensure_writable(directory: Path, what: str = "output directory", flag: str = "--out") -> None:
    """Create ``directory`` if needed and prove a file can be written there; one-line ``ValueError`` otherwise."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe.", suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"cannot write to the {what} {directory} ({reason}); choose a writable {flag}") from None


def invocation_of(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a command that decide its outputs (progress bars, batch size and the like left out)."""
    return {k: v for k, v in sorted(arguments.items()) if k not in _NOT_INVOCATION}


def invocation_digest(invocation: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(invocation, sort_keys=True, default=str).encode()).hexdigest()


def claim_output_dir(out: Path, invocation: dict[str, Any], overwrite: bool) -> None:
    """Make ``out`` ready for a command's outputs, or refuse (``ValueError``) to mix them with another run's.

    Args:
        out: the ``--out`` folder.
        invocation: :func:`invocation_of` the command's arguments.
        overwrite: ``--overwrite``: remove the earlier invocation's recorded outputs first.
    """
    ensure_writable(out)
    entries = [p for p in out.iterdir() if not p.name.startswith(".write-probe.")]
    if not entries:
        return
    previous = _read_run(out)
    if previous is not None and previous.get("invocation_sha256") == invocation_digest(invocation):
        return  # the same command again: it rewrites its own files
    if not overwrite:
        if previous is None:
            held = f"{len(entries)} file(s) not written by a unilip command (no {RUN_JSON})"
        else:
            held = f"the outputs of another invocation ({' '.join(previous.get('command') or []) or 'unknown command'})"
        raise ValueError(f"{out} already holds {held}; pass --overwrite to replace them, or choose a new --out")
    if previous is not None:
        for recorded in previous.get("written") or []:
            path = Path(recorded)
            path = path if path.is_absolute() else out / path
            if path.is_file() and out.resolve() in path.resolve().parents:
                path.unlink()
        (out / RUN_JSON).unlink(missing_ok=True)


def _read_run(out: Path) -> dict[str, Any] | None:
    path = out / RUN_JSON
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except ValueError:
        return None
    return run if isinstance(run, dict) else None


def write_run(out: Path, invocation: dict[str, Any], written: list[Path], payload: dict[str, Any]) -> None:
    """Write ``OUT/run.json``: the invocation, the files written (relative to ``out``), and ``payload``."""
    import sys

    relative = [
        str(Path(p).resolve().relative_to(out.resolve())) if out.resolve() in Path(p).resolve().parents else str(p)
        for p in written
    ]
    record = {
        **payload,
        "command": sys.argv,
        "invocation": invocation,
        "invocation_sha256": invocation_digest(invocation),
        "written": relative,
    }
    (out / RUN_JSON).write_text(json.dumps(record, indent=2, default=str) + "\n")
