"""The run directory as a whole: one writer at a time, whose model it holds, and leftovers of killed writes.

* **One writer.** Every process of a run takes an exclusive ``flock`` (released by the kernel on any
  death, ``SIGKILL`` included): the main process on ``RUN/.lock``, which also names the holder (PID,
  host, command), and each process on ``RUN/.locks/rank-<r>.lock``. A second run into the same
  directory is refused while any of them is held, so killing only torchrun's agent, which leaves its
  workers writing, cannot let a resume start beside them.
* **Independent shards** (``--shard I/N``, no process group) run side by side: each takes ``RUN/.lock``
  *shared* (so a whole-run writer, which takes it exclusive, is refused while any shard runs, and the
  other way round) and ``RUN/.locks/shard-I-of-N.lock`` exclusive (which also names its holder): a second
  process on the same shard is refused, and so is a shard of another layout (another ``N``) while shards
  of this one run, since their items overlap. Taking them is serialized by ``RUN/.locks/claim.lock``
  (:func:`serialized`), which also serializes what the shards write once for the whole run (``run.json``,
  the manifests). A layout that has finished holds nothing: any layout resumes it.
* **Whose run.** ``run.json`` records the identity of the model the directory holds (adapter, weights
  digest, configuration, sampler settings, seed). Another model or seed is refused (``--fresh``
  discards the directory's runs); a model moved to another path is the same model.
* **Leftovers.** Temporary files of atomic writes interrupted by a kill are removed when a run starts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evals.runtime.records import TMP_SUFFIX, atomic_write_json, canonical_hash

logger = logging.getLogger(__name__)

RUN_JSON = "run.json"
LOCK_FILE = ".lock"
RANK_LOCKS = ".locks"
CLAIM_LOCK = "claim.lock"


class RunDirectoryError(ValueError):
    """The run directory holds something incompatible with what was asked, or another run is writing it."""


# ------------------------------------------------------------------------------------------ the lock
def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "an unknown process"
    command = " ".join(info.get("argv") or []) or "?"
    return f"PID {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}: {command}"


def _holder_info() -> str:
    return (
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "argv": sys.argv,
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )
        + "\n"
    )


def _flock(path: Path, shared: bool = False, wait: bool = False) -> Any | None:
    """An open handle on ``path`` holding its ``flock`` (exclusive, or ``shared``), or None when another holds it
    (never None with ``wait``: it waits)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(handle.fileno(), mode)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextmanager
def serialized(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN/.locks/claim.lock`` (waiting for it): what independent shards do once for the whole run (take
    their locks, write ``run.json`` and the manifests, aggregate) happens one shard at a time."""
    handle = _flock(Path(run_dir) / RANK_LOCKS / CLAIM_LOCK, wait=True)
    try:
        yield
    finally:
        handle.close()


def held_shard_locks(run_dir: Path) -> list[str]:
    """The shard locks (``shard-I-of-N.lock``) some process holds now, described with their holders."""
    held = []
    for path in sorted((Path(run_dir) / RANK_LOCKS).glob("shard-*-of-*.lock")):
        probe = _flock(path)
        if probe is None:
            held.append(f"shard {_shard_of(path)} ({_holder(path)})")
        else:
            probe.close()
    return held


def _shard_of(path: Path) -> str:
    """``"I/N"`` of a lock file named ``shard-I-of-N.lock``."""
    index, _, count = path.name[len("shard-") : -len(".lock")].partition("-of-")
    return f"{index}/{count}"


class RunLock:
    """The lock of one run (all its processes) on a run directory; see the module docstring.

    Use as a context manager around everything a run writes. ``world`` (``evals.runtime.distributed``)
    carries the main process's verdict to the others, so a refused run stops every process. ``part``: the
    ``ShardSpec`` of an independent ``--shard I/N`` process (``world`` is then that process alone); after
    :meth:`acquire`, :attr:`alone` says whether no other shard was running (only then may it remove the
    leftovers of interrupted writes, which could be another shard's writes in progress).
    """

    def __init__(self, run_dir: Path, world: Any, part: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.world = world
        self.part = part
        self.alone = True
        self._handles: list[Any] = []

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _lock(self, path: Path) -> Any | None:
        return _flock(path)

    def acquire(self) -> None:
        """Take the run's locks, or raise ``RunDirectoryError`` naming the process that holds them."""
        if self.part is not None:
            with serialized(self.run_dir):
                failure = self._acquire_shard()
            if failure is not None:
                self.release()
                raise RunDirectoryError(failure)
            return
        failure = self._acquire_main() if self.world.is_main else None
        failure = self.world.broadcast(failure)
        if failure is not None:
            self.release()
            raise RunDirectoryError(failure)
        handle = self._lock(self.run_dir / RANK_LOCKS / f"rank-{self.world.rank}.lock")
        failure = None if handle is not None else f"{self.run_dir}: another process holds rank {self.world.rank}'s lock"
        if handle is not None:
            self._handles.append(handle)
        self.world.barrier()
        if failure is not None:
            self.release()
            raise RunDirectoryError(failure)

    def _acquire_main(self) -> str | None:
        lock_path = self.run_dir / LOCK_FILE
        handle = self._lock(lock_path)
        if handle is None:
            shards = held_shard_locks(self.run_dir)
            if shards:
                return (
                    f"{self.run_dir} is being written by {len(shards)} --shard process(es) ({'; '.join(shards[:3])}); "
                    "wait for them to finish (then any layout resumes the run), or choose another --out"
                )
            return (
                f"{self.run_dir} is being written by another run ({_holder(lock_path)}); wait for it to "
                "finish or stop it, or choose another --out"
            )
        # A process of an earlier run may still hold its rank lock (its launcher was killed, not it).
        for rank_lock in sorted((self.run_dir / RANK_LOCKS).glob("rank-*.lock")):
            probe = self._lock(rank_lock)
            if probe is None:
                handle.close()
                return (
                    f"{self.run_dir}: a process of an earlier run still holds {rank_lock.name} (its launcher may "
                    f"have been killed, not its workers; last holder: {_holder(lock_path)}); stop it first"
                )
            probe.close()
        handle.seek(0)
        handle.truncate()
        handle.write(_holder_info())
        handle.flush()
        self._handles.append(handle)
        return None

    def _acquire_shard(self) -> str | None:
        """Shard I of N: ``RUN/.lock`` shared, ``shard-I-of-N.lock`` exclusive (see the module docstring).
        Called under :func:`serialized`, so two shards never check and take their locks at once."""
        index, count = self.part.index, self.part.count
        lock_path = self.run_dir / LOCK_FILE
        shared = _flock(lock_path, shared=True)
        if shared is None:
            return (
                f"{self.run_dir} is being written by a run that is not sharded with --shard ({_holder(lock_path)}); "
                "wait for it to finish (then shards resume it), or choose another --out"
            )
        self._handles.append(shared)
        mine = self.run_dir / RANK_LOCKS / f"shard-{index}-of-{count}.lock"
        others = 0
        for path in sorted((self.run_dir / RANK_LOCKS).glob("*.lock")):
            if path.name == CLAIM_LOCK or path == mine:
                continue
            probe = _flock(path)
            if probe is not None:
                probe.close()
                continue
            if path.name.startswith("rank-"):
                return (
                    f"{self.run_dir}: a process of an earlier run still holds {path.name} (its launcher may have been "
                    f"killed, not its workers; last holder: {_holder(lock_path)}); stop it first"
                )
            if not path.name.endswith(f"-of-{count}.lock"):
                running = _shard_of(path)
                return (
                    f"{self.run_dir}: shard {running} of another layout is running ({_holder(path)}); shards that "
                    f"run at the same time must split the run the same way: use --shard I/{running.split('/')[1]}, "
                    "or wait for them to finish (a finished layout resumes under any other)"
                )
            others += 1
        handle = _flock(mine)
        if handle is None:
            return (
                f"{self.run_dir}: shard {index}/{count} is already being run ({_holder(mine)}); each shard runs in "
                "one process at a time: wait for it to finish, or stop it"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(_holder_info())
        handle.flush()
        self._handles.append(handle)
        self.alone = others == 0
        return None

    def release(self) -> None:
        """Let go of the locks (the kernel does the same when the process dies)."""
        for handle in self._handles:
            handle.close()
        self._handles.clear()


# ------------------------------------------------------------------------------------------ leftovers
def remove_stale_temporaries(root: Path) -> int:
    """Delete the temporary files of atomic writes that never finished (``.<name>.<random>.tmp``).

    Only call this while holding the run's lock: then no write is in progress. Returns how many went.
    """
    removed = 0
    if not root.is_dir():
        return 0
    for path in root.rglob(f".*{TMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("%s: removed %d temporary file(s) left by an interrupted write", root, removed)
    return removed


# ------------------------------------------------------------------------------------------ identity
IDENTITY_FIELDS = ("adapter", "weights_sha256", "config", "sampler", "seed")


def run_identity(model: dict[str, Any], seed: int) -> dict[str, Any]:
    """What makes two runs the same run: the model's adapter, weights, configuration, sampler; the seed.

    Where the weights were read from and how the model was named are left out: a checkpoint moved to
    another path is the same model.
    """
    return {
        "adapter": model.get("adapter"),
        "weights_sha256": model.get("weights_sha256"),
        "config": model.get("config"),
        "sampler": model.get("sampler"),
        "seed": int(seed),
    }


def recorded_identity(run_dir: Path) -> dict[str, Any] | None:
    """The identity ``run.json`` records (reconstructed for run directories made before it was recorded),
    with the model reference it was run with under ``model_ref`` (for messages only)."""
    path = run_dir / RUN_JSON
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except ValueError as error:
        raise RunDirectoryError(
            f"{path} is not readable JSON ({error}); it says which model the directory "
            "holds: restore it, or pass --fresh to discard the directory's runs"
        ) from None
    identity = run.get("identity") or run_identity(
        run.get("model") or {}, int((run.get("options") or {}).get("seed") or 0)
    )
    return {**identity, "model_ref": run.get("model_ref")}


def _describe(identity: dict[str, Any], model_ref: str | None = None) -> str:
    digest = f", weights {identity['weights_sha256'][:12]}" if identity.get("weights_sha256") else ""
    sampler = f", sampler {identity['sampler']}" if identity.get("sampler") else ""
    named = f"{model_ref} " if model_ref else ""
    return f"{named}({identity.get('adapter')}{digest}{sampler}, seed {identity.get('seed')})"


def check_identity(
    run_dir: Path,
    wanted: dict[str, Any],
    fields: tuple[str, ...] = IDENTITY_FIELDS,
    model_ref: str | None = None,
    weights_changed: str = "",
) -> bool:
    """Raise ``RunDirectoryError`` when ``run_dir`` holds another run than ``wanted`` (compared on ``fields``).

    ``weights_changed``: what it means, for this adapter, that only the weights digest differs (the adapter's
    ``weights_changed``: a folder of outputs whose files changed), said in the refusal.

    Returns whether the directory already holds runs (False for a new or empty directory). A directory
    holding files but no ``run.json`` is not a run directory and is refused too.
    """
    existing = recorded_identity(run_dir)
    if existing is None:
        others = (
            [p.name for p in run_dir.iterdir() if p.name not in (LOCK_FILE, RANK_LOCKS)] if run_dir.is_dir() else []
        )
        if others:
            raise RunDirectoryError(
                f"{run_dir} is not empty and holds no {RUN_JSON} (so it is not a run directory: "
                f"{', '.join(sorted(others)[:5])}); choose a new or empty --out"
            )
        return False
    # Compared as JSON values (what run.json holds: tuples come back as lists).
    changed = [name for name in fields if canonical_hash(existing.get(name)) != canonical_hash(wanted.get(name))]
    if changed:
        held = existing.get("model_ref")
        # A folder of outputs is identified by its content: files added, removed or edited make another model.
        why = f" ({weights_changed})" if weights_changed and changed == ["weights_sha256"] else ""
        raise RunDirectoryError(
            f"{run_dir} holds the run of another model or seed ({', '.join(changed)} "
            f"differ{'s' if len(changed) == 1 else ''}{why}): it holds "
            f"{_describe(existing, held)}, this command asks for {_describe(wanted, model_ref)}; use another --out, "
            "or --fresh to discard the runs it holds"
        )
    return True


def discard_runs(run_dir: Path) -> None:
    """Delete everything a run directory holds except its locks (which this process holds)."""
    for path in run_dir.iterdir():
        if path.name in (LOCK_FILE, RANK_LOCKS):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_run_json(run_dir: Path, identity: dict[str, Any], payload: dict[str, Any]) -> None:
    """Write ``run.json``: the run's identity (with the model reference for messages) and what the command was."""
    atomic_write_json(
        run_dir / RUN_JSON, {**payload, "identity": identity, "identity_sha256": canonical_hash(identity)}
    )
