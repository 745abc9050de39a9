"""One device rule for every command: ``--device`` resolved once, checked before any model loads.

* No ``--device`` (or ``auto``): ``cuda`` when a CUDA device is available, else ``cpu``.
* ``cuda`` under a launcher (torchrun, accelerate: ``LOCAL_RANK`` set) means *this process's own GPU*,
  ``cuda:LOCAL_RANK``; an explicit ``cuda:N`` is kept as given.
* Asking for ``cuda`` on a machine without one is a usage error, said in one line before anything
  loads (otherwise the first ``.to("cuda")`` fails minutes later with a long traceback).
"""

from __future__ import annotations

import os

DEVICE_HELP = (
    "torch device: cpu, cuda or cuda:N (default: cuda when available, else cpu; under torchrun or "
    "accelerate, cuda means each process's own GPU, cuda:LOCAL_RANK)"
)


def resolve_device(requested: str | None, env: dict[str, str] | None = None) -> str:
    """The device a command should use for ``requested`` (``--device``), checked against this machine.

    Args:
        requested: ``None``/``"auto"`` (the default rule), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or another
            torch device string (``"mps"``), which is passed through.
        env: the environment (default ``os.environ``), read for ``LOCAL_RANK``.

    Raises:
        ValueError: CUDA is asked for but not available, or ``cuda:N`` names a device that does not exist.
    """
    import torch

    env = os.environ if env is None else env
    local_rank = env.get("LOCAL_RANK")
    wanted = (requested or "auto").strip().lower()
    if wanted == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        wanted = "cuda"
    if not wanted.startswith("cuda"):
        return wanted
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        raise ValueError(
            f"--device {requested} but no CUDA device is available (torch {torch.__version__}, "
            f"{build}); use --device cpu, or run on a machine with a GPU"
        )
    count = torch.cuda.device_count()
    if wanted == "cuda":
        index = int(local_rank) if local_rank is not None else 0
        if index >= count:
            raise ValueError(
                f"this process is LOCAL_RANK {index} but only {count} CUDA device(s) are visible; "
                "launch at most one process per GPU (torchrun --nproc_per_node)"
            )
        return f"cuda:{index}" if local_rank is not None else "cuda"
    index_text = wanted.partition(":")[2]
    if not index_text.isdigit():
        raise ValueError(f"--device {requested}: want cpu, cuda or cuda:N")
    if int(index_text) >= count:
        raise ValueError(f"--device {requested} but only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1})")
    return wanted
