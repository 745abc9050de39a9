"""The GenEval protocol as data: the 553 prompt records, the 80 class names, the colour classifier and thresholds.

The two data files are byte-identical copies of the official repository's (MIT, see ``data/LICENSE-NOTE.md``)
and are checked against pinned sha256 values every time they are read, so a changed prompt set can never be
scored as if it were the official one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
METADATA_FILE = "evaluation_metadata.jsonl"
OBJECT_NAMES_FILE = "object_names.txt"
COLOR_FILE = "color_classifier.json"

# Pinned digests of the official files (djghosh13/geneval, unchanged since the 2023-08-22 release).
METADATA_SHA256 = "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13"
OBJECT_NAMES_SHA256 = "608f6a0e5c8ca1c7a92b818430141fe268c85b7930b50f4160f1d65893b5bacd"

# The six tasks, in the order the metadata file lists them.
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")


class ProtocolDataError(RuntimeError):
    """A shipped protocol file is missing or differs from the official one."""


@dataclass(frozen=True)
class ScoringRules:
    """The thresholds of ``evaluate_images.py`` (each one a ``--options`` override there; these are its defaults).

    Attributes:
        threshold: keep detections with score strictly above this (all tags but counting), both in float32.
        counting_threshold: the same for prompts tagged ``counting``, applied to every class.
        max_objects: at most this many detections per class, the most confident ones.
        max_overlap: same-class box-IoU suppression threshold; 1.0 disables it (the default).
        position_threshold: fraction of the two boxes' summed sizes removed from the centre offset.
    """

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    position_threshold: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ColorProtocol:
    """The CLIP colour classifier's class set, prompt templates and crop background.

    Templates use ``{color}`` and ``{object}`` placeholders.
    """

    colors: tuple[str, ...]
    templates: tuple[str, ...]
    background: str
    logit_scale: float

    def texts(self, color: str, object_name: str) -> list[str]:
        """The zero-shot prompts for one colour of one object class."""
        return [template.format(color=color, object=object_name) for template in self.templates]

    def to_dict(self) -> dict[str, Any]:
        return {
            "colors": list(self.colors),
            "templates": list(self.templates),
            "background": self.background,
            "logit_scale": self.logit_scale,
        }


def _read_pinned(name: str, sha256: str | None) -> bytes:
    path = DATA_DIR / name
    if not path.is_file():
        raise ProtocolDataError(
            f"{path} is missing: the GenEval data files ship inside the package "
            "(reinstall unilip, or check the package-data settings of pyproject.toml)"
        )
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ProtocolDataError(
            f"{path} differs from the official GenEval file (sha256 "
            f"{hashlib.sha256(data).hexdigest()}, expected {sha256})"
        )
    return data


@lru_cache(maxsize=1)
def load_prompts() -> tuple[dict[str, Any], ...]:
    """The 553 official prompt records, in file order (record i is prompt index i)."""
    lines = _read_pinned(METADATA_FILE, METADATA_SHA256).decode("utf-8").splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


@lru_cache(maxsize=1)
def load_object_names() -> tuple[str, ...]:
    """The 80 COCO class names; name i is detector class index i."""
    text = _read_pinned(OBJECT_NAMES_FILE, OBJECT_NAMES_SHA256).decode("utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=1)
def load_color_protocol() -> ColorProtocol:
    """The colour list, templates and background fill from ``data/color_classifier.json``."""
    payload = json.loads(_read_pinned(COLOR_FILE, None))
    return ColorProtocol(
        colors=tuple(payload["colors"]),
        templates=tuple(payload["templates"]),
        background=payload["background"],
        logit_scale=float(payload["logit_scale"]),
    )


def prompts_identity(limit: int | None) -> dict[str, Any]:
    """What identifies the prompt set of a run: the official file's digest and how many prompts are used."""
    total = len(load_prompts())
    return {
        "file": METADATA_FILE,
        "sha256": METADATA_SHA256,
        "total": total,
        "num_prompts": total if limit is None else min(limit, total),
    }
