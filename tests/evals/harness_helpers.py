"""Helpers shared by the harness tests."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env_extra: dict | None = None, launcher: list[str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m unilip ARGS`` (or under a launcher such as torchrun) and capture its output."""
    env = {**os.environ, **(env_extra or {})}
    command = (launcher or [sys.executable]) + ["-m", "unilip", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


class DeleteBeforeStage:
    """Wraps a resolved benchmark: deletes one output file when ``stage`` starts (gone between two stages)."""

    def __init__(self, bench, stage, relative):
        self.bench, self.stage, self.relative = bench, stage, relative

    def __getattr__(self, name):
        return getattr(self.bench, name)

    def run_stage(self, stage, items, ctx):
        if stage == self.stage:
            (ctx.bench_dir / self.relative).unlink()
        yield from self.bench.run_stage(stage, items, ctx)


def run_tiny_recon(out: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    """``recon@standard`` of the shipped tiny generator on 2 built-in images: a run to compare others beside."""
    return run_cli(
        "eval",
        "run",
        "--model",
        "tiny-digits",
        "--bench",
        "recon@standard",
        "--data",
        "builtin",
        "--num-images",
        "2",
        "--out",
        str(out),
        "--cache-dir",
        str(cache_dir),
        "--no-progress",
    )
