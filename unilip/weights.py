"""Frozen third-party networks' weights files on local disk: one rule for training losses and metrics.

Nothing is downloaded at run time. A weights file (torchvision's VGG16 / ConvNeXt-S / AlexNet,
torch-fidelity's Inception-v3) is looked up in this order:

1. a path the user named: an argument, a config key (``losses.lpips_vgg_weights``) or a flag
   (``--inception-weights``); or, when none was given, the environment variable of that file
   (``UNILIP_LPIPS_VGG_WEIGHTS`` ...). A named path, like a set variable, is a promise: when it does
   not exist, :class:`WeightsNotFoundError` (a ``FileNotFoundError``) names it and says what file it
   should be. It never falls through to another place, which could silently hold a different file;
2. ``$TORCH_HOME/hub/checkpoints/<canonical file name>``, where torch.hub, torchvision and
   torch-fidelity keep these files when they do download them, so a machine that ever ran them online
   already has them.

When nothing was named and the cache does not hold the file, :class:`WeightsUnavailable` says which
places were searched, what the file is and where to get it. Training refuses to start (or the loss is
switched off in the config); an evaluation reports the metric as not computed.

The files themselves are read with :func:`load_weights_state_dict` (``weights_only=True``, both
``torch.save`` formats, a one-line error naming the file for anything else), and fingerprinted with
:func:`file_sha256`.

This is the only resolver: the training losses (``unilip.training.losses``), LPIPS (``unilip.lpips``) and
the evaluation metrics (``evals.metrics``) all call :func:`resolve_weights`, each with its own
:class:`WeightsUnavailable` subclass and wording. ``unilip`` never imports ``evals``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from unilip.checkpoints import (
    CheckpointKeyError,
    CheckpointNotFoundError,
    StateDict,
    check_state_matches,
    load_pth_state_dict,
)

__all__ = [
    "WeightsNotFoundError",
    "WeightsUnavailable",
    "check_weights_keys",
    "file_sha256",
    "hub_checkpoints_dir",
    "load_weights_state_dict",
    "resolve_weights",
    "torch_home",
]


class WeightsUnavailable(RuntimeError):
    """No path was named and no default place holds the weights file; the message says where to get it."""


class WeightsNotFoundError(CheckpointNotFoundError):
    """A weights path the user named (argument, config key, flag or environment variable) does not exist."""


def torch_home() -> Path:
    """The torch hub root: ``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``.

    It mirrors ``torch.hub._get_torch_home`` without importing a private function, and reads the
    environment at each call (tests and users change ``TORCH_HOME`` at run time).
    """
    env = os.environ.get("TORCH_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path("~/.cache").expanduser()
    return base / "torch"


def hub_checkpoints_dir() -> Path:
    """``torch.hub.get_dir() / "checkpoints"`` (``$TORCH_HOME/hub/checkpoints`` unless ``torch.hub.set_dir``
    moved it): where torch.hub, torchvision and torch-fidelity cache the weights they download."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _named_file(candidate: str | os.PathLike[str], filenames: Sequence[str]) -> Path | None:
    """The file a named path designates: the path itself, or a canonical file inside a named folder."""
    path = Path(candidate).expanduser()
    if path.is_file():
        return path
    if path.is_dir():  # "the folder holding the file", so a config can name a weights folder
        for name in filenames:
            if (path / name).is_file():
                return path / name
    return None


def resolve_weights(
    explicit: str | os.PathLike[str] | None,
    env_var: str,
    filenames: Sequence[str],
    what: str,
    source: str,
    *,
    setting: str | None = None,
    switch_off: str | None = None,
    unavailable: type[WeightsUnavailable] = WeightsUnavailable,
) -> Path:
    """Find a weights file on local disk, never downloading.

    Args:
        explicit: A path the caller was given (a file, or a folder holding one of ``filenames``); ``None``
            or ``""`` when none was given. When set it is the only candidate.
        env_var: The environment variable that may name the file (used only when ``explicit`` is unset).
        filenames: Canonical file names, looked for in a named folder and in :func:`hub_checkpoints_dir`.
        what: What the file is, e.g. ``"torchvision's VGG16_Weights.IMAGENET1K_V1 (...)"``.
        source: Where to get it (a sentence, e.g. a download URL).
        setting: How the user names the path (``"losses.lpips_vgg_weights"``), for the messages.
        switch_off: How to go without this network (``"losses.lpips_weight: 0"``), for the messages.
        unavailable: The :class:`WeightsUnavailable` subclass to raise when nothing is found.

    Returns:
        The path of an existing file.

    Raises:
        WeightsNotFoundError: The named path or the environment variable's path does not exist.
        WeightsUnavailable: (``unavailable``) nothing was named and the hub cache lacks the file.
    """
    if not filenames:
        raise ValueError("resolve_weights needs at least one canonical file name")
    files = ", ".join(filenames)
    if explicit is not None and str(explicit) != "":
        found = _named_file(explicit, filenames)
        if found is None:
            named = f" (given as {setting})" if setting else ""
            raise WeightsNotFoundError(
                f"{Path(explicit).expanduser()}{named} does not exist: it should be {what}, file {files}. {source} "
                "Fix the path; it is used as given, never replaced by another place."
            )
        return found
    env_value = os.environ.get(env_var)
    if env_value:
        found = _named_file(env_value, filenames)
        if found is None:
            raise WeightsNotFoundError(
                f"{Path(env_value).expanduser()} (from ${env_var}) does not exist: it should be {what}, file {files}. "
                f"{source} Fix ${env_var}, or unset it to use {hub_checkpoints_dir()}."
            )
        return found
    for name in filenames:
        if (hub_checkpoints_dir() / name).is_file():
            return hub_checkpoints_dir() / name
    searched = [f"${env_var}: not set", *(f"torch hub cache: {hub_checkpoints_dir() / name}" for name in filenames)]
    how = f"pass its path{f' ({setting})' if setting else ''}, set ${env_var}, or put it in {hub_checkpoints_dir()}"
    message = (
        f"{what} not found (file {files}); searched: {'; '.join(searched)}. {source} Download it on a machine "
        f"with internet access, then {how}. Nothing is downloaded at run time."
    )
    if switch_off:
        message += f" To go without it, set `{switch_off}`."
    raise unavailable(message)


def load_weights_state_dict(path: str | os.PathLike[str], what: str, source: str) -> StateDict:
    """Read a ``torch.save``d flat state dict of a frozen network (zip or legacy format), safely.

    Raises:
        CheckpointError: the file holds pickled objects, is damaged or is not a flat dict of tensors; the
            one-line message names the file, what it should be and where to get it.
    """
    return load_pth_state_dict(path, what=what, source=source)


def check_weights_keys(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    path: Path,
    what: str,
    source: str,
    error: type[CheckpointKeyError] = CheckpointKeyError,
) -> None:
    """Refuse a state dict that does not fill a network exactly, naming the keys, the file and the right file.

    Raises:
        CheckpointKeyError: (``error``) missing, unexpected or misshapen keys.
    """
    try:
        check_state_matches(expected, state, str(path), what)
    except CheckpointKeyError as mismatch:
        raise error(f"{mismatch}\n  {path} should be {what}. {source}") from None


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks.

    Cached by (resolved path, mtime in ns, size): fingerprints ask for the same large weights file many
    times, and any rewrite of the file changes its mtime, so a stale digest is never returned.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it does not exist).
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
        digest = _SHA256_CACHE[key] = hasher.hexdigest()
    return digest
