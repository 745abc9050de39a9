"""Phases of the CPU studies: each is skipped when its result is already there, so a rerun resumes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


def say(message: str, tag: str = "sweep") -> None:
    """A one-line summary on stderr (results go to files and stdout)."""
    print(f"[{tag}] {message}", file=sys.stderr, flush=True)


def run_phase(
    name: str,
    done: bool,
    work: Callable[[], Any],
    summary: Callable[[], str],
    timings: dict[str, float],
    say: Callable[[str], None] = say,
) -> None:
    """Run one phase of a study unless its output is already there (then say it was reused)."""
    if done:
        say(f"{name}: reused (already done): {summary()}")
        return
    started = time.perf_counter()
    work()
    timings[name] = time.perf_counter() - started
    say(f"{name}: {summary()} ({timings[name]:.1f} s)")
