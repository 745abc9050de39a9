"""Sharded runs: a process group launched by torchrun or accelerate (env://, gloo on CPU), or independent
``--shard I/N`` processes (Slurm array jobs, any scheduler) that never meet.

Both split the manifest the same way: process ``I`` of ``N`` takes ``items[I::N]``, so the records a shard
writes are the records rank ``I`` of an ``N``-process torchrun would write, and a run started under one
layout resumes under any other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def _dist() -> Any:
    """``torch.distributed``, imported when a run has more than one process (a single-process run, and
    the commands that only read run directories, never import torch for it)."""
    import torch.distributed

    return torch.distributed


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            _dist().barrier()

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value``, on every process (a decision only the main process can make,
        such as whether the run directory may be written, reaches the others instead of a hang)."""
        if self.size == 1:
            return value
        box = [value if self.is_main else None]
        _dist().broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the main process only; its result, or the exception it raised, reaches every
        process (so a refusal stops the whole run instead of leaving the others waiting at a barrier)."""
        outcome: tuple[bool, Any] = (True, None)
        if self.is_main:
            try:
                outcome = (True, work())
            except Exception as error:  # handed to every process, then raised there
                outcome = (False, error)
        ok, value = self.broadcast(outcome)
        if not ok:
            raise value
        return value


def init_world() -> World:
    """Join the process group the launcher describes (``WORLD_SIZE``/``RANK``); a single process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if size > 1 and not _dist().is_initialized():
        backend = "nccl" if os.environ.get("UNILIP_DIST_BACKEND") == "nccl" else "gloo"
        _dist().init_process_group(backend=backend, init_method="env://")
    return World(rank=rank, size=size)


def shard(items: list, world: World) -> list:
    """This process's items: every ``size``-th item of the manifest, starting at ``rank``."""
    return shard_items(items, world.rank, world.size)


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` of ``count`` (0-based) of an independent ``--shard I/N`` process: no process group."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> ShardSpec:
    """``"I/N"`` (``0 <= I < N``) as a :class:`ShardSpec`.

    Raises:
        ValueError: not of the form I/N, or I out of range (the message names the fix).
    """
    head, slash, tail = str(text).strip().partition("/")
    if not slash or not head.strip().isdigit() or not tail.strip().isdigit():
        raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. --shard 0/8 (0-based)")
    index, count = int(head), int(tail)
    if count < 1 or index >= count:
        raise ValueError(
            f"--shard {text}: shard index {index} is not below the shard count {count}; shards are 0-based: "
            f"0/{max(count, 1)} ... {max(count, 1) - 1}/{max(count, 1)}"
        )
    return ShardSpec(index, count)


def shard_items(items: list, index: int, count: int) -> list:
    """Shard ``index`` of ``count``: every ``count``-th item, starting at ``index`` (what rank ``index`` of a
    ``count``-process world takes, :func:`shard`)."""
    return items[index::count]
