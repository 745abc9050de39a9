"""What every trainer here saves to resume exactly: optimizer state, RNG states, the run's config,
checkpoint directories written whole or not at all, and a step log without repeated steps."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

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
    for saved, current in zip(meta["param_groups"], groups):
        current.update({k: v for k, v in saved.items() if k != "params"})
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "torch": torch.get_rng_state().tolist()}


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
            raise ValueError(f"{out_dir} holds a run with another configuration (changed: {changed}); "
                             "use another --out, or --fresh to start over")
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


def trim_log(out_dir: Path, step: int) -> None:
    """Drop log lines after ``step``: those steps run again after a resume, so each is logged once."""
    path = out_dir / "log.jsonl"
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))
