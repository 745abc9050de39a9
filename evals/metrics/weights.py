"""Finding metric weights on local disk, and fingerprinting them.

No metric downloads anything at run time: every network a metric needs (Inception-v3 for FID/IS, the
AlexNet/VGG16 backbone of LPIPS) is looked up on local disk, in this order:

1. an explicit path passed by the caller;
2. an environment variable naming the file;
3. ``$TORCH_HOME/hub/checkpoints/<filename>`` (``TORCH_HOME`` defaults to ``~/.cache/torch``), which is
   where ``torch.hub`` / torchvision / torch-fidelity put these files when they *do* download them, so a
   machine that ever ran them online already has the files there.

When none exists, :class:`MetricUnavailable` says which files were looked for, what they are and where to
get them. The metric is then unavailable; it is never silently skipped or replaced by random weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

__all__ = ["MetricUnavailable", "WeightsKeyError", "torch_home", "resolve_weights", "file_sha256"]


class MetricUnavailable(RuntimeError):
    """A metric cannot run because its weights file is not on local disk; the message says where to get it."""


class WeightsKeyError(KeyError):
    """A metric weights file whose keys do not fill the network exactly; the message lists the keys.

    Defined here rather than reusing ``unilip.checkpoints.CheckpointKeyError`` because importing ``unilip``
    pulls in the model stack (seconds), which the metrics do not need.
    """

    def __str__(self) -> str:  # KeyError quotes its message; print it as written
        return str(self.args[0])


def torch_home() -> Path:
    """The torch hub root: ``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``.

    Returns:
        The directory under which torch.hub keeps ``hub/checkpoints``. It mirrors
        ``torch.hub._get_torch_home`` without importing a private function.
    """
    env = os.environ.get("TORCH_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path("~/.cache").expanduser()
    return base / "torch"


def resolve_weights(
    explicit_path: str | os.PathLike[str] | None,
    env_var: str,
    filenames: Sequence[str],
    what: str,
    source: str,
) -> Path:
    """Find a weights file on local disk, never downloading.

    Args:
        explicit_path: A path given by the caller. When set it is the only candidate: a caller who names a
            file must not silently get a different one from the environment or the cache.
        env_var: Name of an environment variable that may hold the path (checked when no explicit path).
        filenames: Canonical file names to look for under ``$TORCH_HOME/hub/checkpoints``.
        what: Human description of the file (e.g. ``"Inception-v3 FID weights"``), used in the error.
        source: Where users obtain the file, used in the error.

    Returns:
        The path of an existing file.

    Raises:
        MetricUnavailable: If no candidate exists; the message lists every location tried.
    """
    if not filenames:
        raise ValueError("resolve_weights needs at least one canonical file name")
    tried: list[str] = []
    if explicit_path is not None:
        path = Path(explicit_path).expanduser()
        if path.is_file():
            return path
        tried.append(f"{path} (explicit path)")
    else:
        env_value = os.environ.get(env_var)
        if env_value:
            path = Path(env_value).expanduser()
            if path.is_file():
                return path
            tried.append(f"{path} (from ${env_var})")
        else:
            tried.append(f"${env_var} (not set)")
        checkpoints = torch_home() / "hub" / "checkpoints"
        for name in filenames:
            path = checkpoints / name
            if path.is_file():
                return path
            tried.append(f"{path} (torch hub cache)")
    raise MetricUnavailable(
        f"{what} not found; looked for: " + "; ".join(tried) + f". File name(s): {', '.join(filenames)}. "
        f"{source} Download it on a machine with internet access, then pass its path, set ${env_var}, or put it "
        f"in {torch_home() / 'hub' / 'checkpoints'}. Nothing is downloaded at run time."
    )


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, cached by (resolved path, mtime, size) so repeated fingerprints cost nothing.

    Args:
        path: The file to hash.

    Returns:
        The hex digest.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_mtime_ns, stat.st_size)
    digest = _SHA256_CACHE.get(key)
    if digest is None:
        hasher = hashlib.sha256()
        with resolved.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
        digest = hasher.hexdigest()
        _SHA256_CACHE[key] = digest
    return digest
