"""The evaluation harness: benchmarks, metrics, run directories, tables and the regression gate.

It reaches models only through its adapter protocol and may import ``unilip``; ``unilip`` never
imports or runs it. :func:`run` is its public entry point for code (the studies use it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(model: str, bench: str, out: str | Path, **flags: Any) -> list[dict[str, Any]]:
    """Evaluate ``model`` on ``bench`` (``NAME@VARIANT``, comma-separated) into the run directory ``out``.

    Exactly what ``unilip eval run --model MODEL --bench BENCH --out OUT`` does (checks, lock, resume),
    in this process. ``flags`` are the command's other options by their Python names, with its
    defaults: ``data="DIR"``, ``batch_size=32``, ``no_progress=True``, ``opt=["limit=5"]`` ...

    Returns:
        Each benchmark's results (what its ``results.json`` holds); items that failed show in their
        ``coverage`` (the command would exit 1).

    Raises:
        TypeError: a flag ``unilip eval run`` does not have.
        ValueError, OSError: what the command reports with exit 2 (a refused or invalid request).
    """
    import argparse

    from evals.launch import add_run_arguments, execute_run

    parser = argparse.ArgumentParser(prog="evals.run")
    add_run_arguments(parser)
    args = parser.parse_args(["--model", str(model), "--bench", bench, "--out", str(out)])
    unknown = sorted(set(flags) - set(vars(args)))
    if unknown:
        raise TypeError(f"evals.run: unknown flags {unknown}; it takes those of `unilip eval run`")
    for name, value in flags.items():
        setattr(args, name, value)
    return execute_run(args)[1]
