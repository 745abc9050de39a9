"""What every trainer here saves to resume exactly: optimizer state, RNG states, the run's config,
checkpoint directories written whole or not at all, and a step log without repeated steps."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unilip.errors import Interrupted


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path, name: str) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: v for k, v in g.items() if k != "names"} for g in state["param_groups"]]
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps({"param_groups": groups, "scalars": scalars}))


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path, name: str) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(directory / f"{name}.safetensors"))
    meta = json.loads((directory / f"{name}.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in {**tensors, **meta["scalars"]}.items():
        index, _, field = key.partition(".")
        state.setdefault(int(index), {})[field] = value
    groups = optimizer.state_dict()["param_groups"]
    for saved, current in zip(meta["param_groups"], groups, strict=True):
        current.update({k: v for k, v in saved.items() if k != "params"})
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def check_or_write_config(out_dir: Path, config: dict[str, Any]) -> None:
    """Record a run's configuration, or refuse to resume a run that was started with another one."""
    path = out_dir / "train_config.json"
    current = json.loads(json.dumps(config))
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != current:
            changed = sorted(k for k in set(current) | set(saved) if current.get(k) != saved.get(k))
            raise ValueError(
                f"{out_dir} holds a run with another configuration (changed: {changed}); "
                "use another --out, or --fresh to start over"
            )
    else:
        path.write_text(json.dumps(current, indent=2))


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first (a half-written ``.tmp`` one is not listed)."""
    return sorted(c for c in (out_dir / "checkpoints").glob("step-*") if not c.name.endswith(".tmp"))


def write_checkpoint(out_dir: Path, step: int, keep: int, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then rename it to ``checkpoints/step-N``, keeping the newest ``keep``."""
    final = out_dir / "checkpoints" / f"step-{step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def checkpoint_step(checkpoint: Path) -> int:
    """The step a complete checkpoint directory (``step-00000300``) holds."""
    return int(checkpoint.name.removeprefix("step-"))


def last_checkpoint_step(out_dir: Path) -> int | None:
    """The step of the newest complete checkpoint in ``out_dir``, or None when there is none."""
    checkpoints = list_checkpoints(out_dir)
    return checkpoint_step(checkpoints[-1]) if checkpoints else None


def trim_log(out_dir: Path, step: int) -> None:
    """Keep only the ``log.jsonl`` lines of steps ``<= step``, the steps a resumed run does not redo.

    Call it on every start of a run, with the resumed checkpoint's step, or 0 when there is none (the
    log is then emptied): the steps logged after the last checkpoint run again, so without it a run
    killed before (or between) checkpoints logs them twice. A last line cut short by the kill is
    dropped; the file is replaced atomically, so a kill during the trim loses nothing.

    Raises:
        ValueError: a line other than the last is not a JSON record with a ``step`` (a damaged log).
    """
    path = out_dir / "log.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines):  # the write the kill interrupted
                break
            raise ValueError(
                f"{path} line {number} is not a JSON record with a 'step': the log is damaged; "
                "delete the file (the checkpoints are unaffected) and run again"
            ) from None
        if record_step <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def interrupted(what: str, step: int, total: int, out_dir: Path) -> Interrupted:
    """The ``Interrupted`` a trainer raises on Ctrl-C: the steps done and the checkpoint a rerun resumes from.

    Args:
        what: the run, e.g. ``"train tokenizer (name, stage 2)"``.
        step: steps completed when Ctrl-C came.
        total: the steps the run was asked for.
        out_dir: the run directory (its newest complete checkpoint is what a rerun resumes from).
    """
    last = last_checkpoint_step(out_dir)
    kept = f"last checkpoint step {last}" if last is not None else "no checkpoint yet (a rerun starts at step 0)"
    return Interrupted(f"{what}: interrupted at step {step} of {total}; {kept}")


@contextlib.contextmanager
def interruption_reported(what: str, out_dir: Path, total: int, step: Callable[[], int]) -> Iterator[None]:
    """Turn Ctrl-C inside the block into :func:`interrupted`'s ``Interrupted`` (one already raised passes).

    Args:
        what: the run, e.g. ``"train tokenizer (name, stage 2)"``.
        out_dir: the run directory.
        total: the steps the run was asked for.
        step: returns the steps completed so far (read when Ctrl-C comes).
    """
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise interrupted(what, step(), total, out_dir) from None
