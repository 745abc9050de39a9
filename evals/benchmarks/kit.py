"""What benchmarks share: statistics, metric states, PNG outputs, release files, data limits, safe paths.

A new benchmark looks here first (and in :mod:`evals.benchmarks.judged` when a judge scores it); the
core protocol is :mod:`evals.benchmark`.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.files import write_output

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- statistics
def mean_se(values: Sequence[float]) -> dict[str, Any]:
    """Mean, standard error of the mean (None for one value) and count of ``values``, in float64.

    Raises:
        ValueError: ``values`` is empty (report :func:`not_computed` instead).
    """
    import numpy as np

    if len(values) == 0:
        raise ValueError("mean_se of no values")
    array = np.asarray(values, dtype=np.float64)
    se = float(array.std(ddof=1) / np.sqrt(len(array))) if len(array) > 1 else None
    return {"value": float(array.mean()), "se": se, "n": int(len(array))}


def not_computed(reason: str) -> dict[str, Any]:
    """A metric that could not be computed, with the reason (how result tables show it)."""
    return {"status": "not_computed", "reason": reason}


# ---------------------------------------------------------------------------------------- outputs
def png_bytes(image: Any) -> bytes:
    """The PNG encoding of a PIL image, in the image's own mode.

    Raises:
        TypeError: ``image`` is not a PIL image (an adapter returned something else).
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"the adapter returned a {type(image).__name__}, not a PIL image")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(bench_dir: Path, relative: str, image: Any) -> tuple[str, str]:
    """Write ``image`` as PNG atomically to ``bench_dir / relative``; ``(relative, sha256)`` for
    :attr:`evals.benchmark.StageResult.outputs`."""
    return write_output(bench_dir, relative, png_bytes(image))


# ---------------------------------------------------------------------------------------- release files
def find_release_files(
    root: str | Path,
    files: list[str],
    candidates: Callable[[Path, str], list[Path]],
    what: str,
    repository: str,
    commit: str,
) -> dict[str, Path]:
    """Find each repository path of ``files`` in a user's copy of a benchmark release.

    ``candidates(root, relative)`` lists where a file may be (the clone's layout, a sub-folder, the file
    alone); the first that exists wins. A missing folder or file raises, naming what to clone.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{what} data {root}: no such folder (clone {repository} and pass its path)")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for relative in files:
        hit = next((path for path in candidates(root, relative) if path.is_file()), None)
        if hit is None:
            missing.append(relative)
        else:
            found[relative] = hit
    if missing:
        tried = "; ".join(str(path) for relative in missing for path in candidates(root, relative))
        raise ValueError(
            f"{what} data {root}: cannot find {', '.join(missing)} (looked for {tried}). Clone "
            f"{repository} (commit {commit[:12]}) and pass the clone's path"
        )
    return found


def check_pinned(found: Mapping[str, Path], pinned: Mapping[str, str], what: str) -> tuple[dict[str, Any], list[str]]:
    """Compare user-supplied files with the sha256 values of the pinned release.

    Returns the spec's data identity (each file's sha256, the pinned one, whether they match) and one
    warning per file that differs: a different file is evaluated (and fingerprinted as such), but
    the results say plainly that it is not the release the published numbers used.
    """
    from unilip.weights import file_sha256

    files: dict[str, Any] = {}
    warnings: list[str] = []
    for name, path in found.items():
        actual = file_sha256(path)
        expected = pinned.get(name)
        files[name] = {"sha256": actual, "pinned_sha256": expected, "matches_pinned": actual == expected}
        if actual != expected:
            warnings.append(
                f"{what}: {name} differs from the pinned release (sha256 {actual[:16]}..., pinned "
                f"{(expected or 'none')[:16]}...); scores are not comparable with published ones"
            )
    for warning in warnings:
        logger.warning(warning)
    return {"files": files, "matches_pinned": not warnings}, warnings


def take_first(entries: list, limit: int | None, noun: str) -> tuple[list, int | None, list[str]]:
    """The first ``limit`` entries (all when ``limit`` is None), the limit, and a warning for results."""
    if limit is None:
        return entries, None, []
    count = int(limit)
    if not 1 <= count <= len(entries):
        raise ValueError(f"limit must be between 1 and {len(entries)} (the number of {noun}), got {limit!r}")
    return entries[:count], count, [f"only the first {count} of {len(entries)} {noun} are evaluated (limit)"]


# ---------------------------------------------------------------------------------------- paths
class PathEscapesRoot(ValueError):
    """A path named by benchmark data leads outside the folder it must stay in."""


def path_inside(root: str | Path, relative: str, what: str) -> Path:
    """``root / relative`` when it stays inside ``root``; raise :class:`PathEscapesRoot` otherwise.

    The check is on the normalised path (``..`` resolved, an absolute ``relative`` taken as it is), not
    through symbolic links: data cannot create links, and a link the user put inside ``root`` (a
    dataset kept on another disk) is the user's choice.

    Args:
        root: the folder the path must stay in.
        relative: the path as the data gives it.
        what: what the path is, for the message (``source image``, ``output``).
    """
    base = Path(os.path.normpath(Path(root).expanduser().absolute()))
    candidate = Path(os.path.normpath(base / relative))
    if candidate == base or not candidate.is_relative_to(base):
        raise PathEscapesRoot(
            f"{what} path {relative!r} escapes {base} (it leads to {candidate}); refused: "
            "data may only name files inside that folder"
        )
    return candidate
