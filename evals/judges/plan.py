"""The judge dry run: how many judge calls scoring would make, and how many answers are cached.

``python -m evals.judges plan --bench wise@legacy --out RUN --opt data=PATH`` takes the same
``--bench``, ``--out``, ``--opt`` and ``--cache-dir`` as ``unilip eval run``; it makes no call and loads
no model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "unilip"


def plan(references: list[str], out: str | Path, options: dict[str, Any],
         cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One dry-run plan per judged benchmark of ``references`` for the run directory ``out``.

    Args:
        references: ``name@variant`` of judge-scored benchmarks.
        out: the run directory (need not exist yet: then every item awaits generation).
        options: benchmark options as ``unilip eval run`` takes them (each benchmark gets those it declares).
        cache_dir: the run's cache directory (``--cache-dir``; default ``~/.cache/unilip``).
    """
    from evals.benchmark import get_benchmark, select_options
    from evals.judges.bench import JudgedBenchmark

    plans = []
    for reference in references:
        bench, variant = get_benchmark(reference)
        if not isinstance(bench, JudgedBenchmark):
            raise ValueError(f"{reference} is not scored by a judge; nothing to plan")
        spec = bench.make_spec(variant, select_options(bench, options), adapter=None)
        plans.append(bench.judge_plan(spec, Path(out) / spec.name, Path(cache_dir or DEFAULT_CACHE_DIR)))
    return plans


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The dry run's arguments (the same names as ``unilip eval run``'s)."""
    parser.add_argument("--bench", required=True, help="comma-separated NAME@VARIANT")
    parser.add_argument("--out", required=True, help="run directory (as for `unilip eval run`)")
    parser.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE", help="a benchmark option")
    parser.add_argument("--data", help="the benchmark data path (as `unilip eval run --data`)")
    parser.add_argument("--cache-dir", default=None, help="the run's cache directory (default ~/.cache/unilip)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print the plan of each benchmark of ``args.bench``; raises ``ValueError`` for an invalid request."""
    from evals.cli import parse_opts

    options = {"data": args.data, **parse_opts(args.opt)}
    plans = plan([r.strip() for r in args.bench.split(",")], args.out, options, args.cache_dir)
    if args.json:
        print(json.dumps(plans, indent=2))
        return 0
    for entry in plans:
        print(f"{entry['benchmark']} (judge {entry['judge']} at {entry['endpoint']}; {entry['items']} items)")
        print(f"  judge calls to make   {entry['judge_calls']:6d}  (at most {entry['judge_calls_at_most']} "
              "with retries and re-asks)")
        for name in ("cached", "already_judged", "awaiting_generation", "generation_failed", "missing_image"):
            print(f"  {name.replace('_', ' '):21s} {entry[name]:6d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m evals.judges plan ...``."""
    parser = argparse.ArgumentParser(prog="python -m evals.judges", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("plan", help="count the judge calls a run would make (no call is made)"))
    try:
        return run(parser.parse_args(argv))
    except (ValueError, OSError) as error:  # the exit-code contract of `unilip eval plan` (unilip.errors)
        print(f"python -m evals.judges plan: error: {error}", file=sys.stderr)
        return 2
