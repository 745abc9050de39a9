"""Finding metric weights on local disk, and fingerprinting them: the metrics' names for :mod:`unilip.weights`.

No metric downloads anything at run time. Every network a metric needs (Inception-v3 for FID/IS, the
AlexNet/VGG16 backbone of LPIPS) is found by the one resolver of the project,
:func:`unilip.weights.resolve_weights`, shared with the training losses:

1. a path the caller names (``--inception-weights``, ``--lpips-alex-weights`` ...), else the file's
   environment variable when it is set. A named path must exist: when it does not,
   :class:`unilip.weights.WeightsNotFoundError` (a ``FileNotFoundError``) names it and says what file it
   should be. It is an error, never "not computed" and never replaced by another place;
2. ``$TORCH_HOME/hub/checkpoints/<filename>``, where ``torch.hub`` / torchvision / torch-fidelity put these
   files when they *do* download them, so a machine that ever ran them online already has the files there.

When nothing was named and the cache lacks the file, :class:`MetricUnavailable` says which places were
searched, what the file is and where to get it: the metric is then reported as not computed, never silently
skipped or replaced by random weights. Files are fingerprinted with :func:`unilip.weights.file_sha256`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from unilip.checkpoints import CheckpointKeyError
from unilip.weights import WeightsNotFoundError, WeightsUnavailable, file_sha256, hub_checkpoints_dir, torch_home
from unilip.weights import resolve_weights as _resolve_weights

__all__ = [
    "MetricUnavailable",
    "WeightsKeyError",
    "WeightsNotFoundError",
    "file_sha256",
    "hub_checkpoints_dir",
    "resolve_weights",
    "torch_home",
]


class MetricUnavailable(WeightsUnavailable):
    """A metric cannot run because its weights file was not named and is not in the torch hub cache; the
    message says where to get it. The metric is reported as not computed."""


class WeightsKeyError(CheckpointKeyError):
    """A metric weights file whose keys do not fill the network exactly; the message lists the keys.

    A ``CheckpointKeyError`` (hence a ``KeyError`` and a ``unilip.checkpoints.CheckpointError``), so the
    command line reports it in one line like any other unusable weights file.
    """


def resolve_weights(
    explicit_path: str | os.PathLike[str] | None,
    env_var: str,
    filenames: Sequence[str],
    what: str,
    source: str,
) -> Path:
    """:func:`unilip.weights.resolve_weights` for a metric: nothing found raises :class:`MetricUnavailable`.

    Args:
        explicit_path: A path given by the caller (a file, or a folder holding one of ``filenames``). When
            set it is the only candidate, and it must exist.
        env_var: Name of an environment variable that may hold the path (used when no explicit path).
        filenames: Canonical file names to look for under ``$TORCH_HOME/hub/checkpoints``.
        what: Human description of the file (e.g. ``"Inception-v3 FID weights"``), used in the errors.
        source: Where users obtain the file, used in the errors.

    Returns:
        The path of an existing file.

    Raises:
        WeightsNotFoundError: The explicit path, or the environment variable's, does not exist.
        MetricUnavailable: Nothing was named and the hub cache lacks the file; the message lists every
            location tried.
    """
    return _resolve_weights(explicit_path, env_var, filenames, what, source, unavailable=MetricUnavailable)
