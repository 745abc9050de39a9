"""WISE prompt files from the user's local copy of the official repository, checked against pinned sha256.

The prompts have no license, so they are not shipped: the user clones
https://github.com/PKU-YuanGroup/WISE and points ``data=PATH`` at the clone (or at its data folder).
The sha256 values are those of commit eb51174483a5 (the legacy files are byte-identical to the
2025-03-10 release); a copy that differs is evaluated, and reported as differing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evals.benchmarks.kit import find_release_files

WISE_REPOSITORY = "https://github.com/PKU-YuanGroup/WISE"
WISE_COMMIT = "eb51174483a5de2e34e8614cf9dfb3319ee7fcd0"

# Path in the repository at WISE_COMMIT -> sha256 (shared/benchmarks/wise/LICENSE-NOTE.md).
LEGACY_FILES = {
    "WISE_legacy/data/cultural_common_sense.json": "7a59216c768698280cea37caa574b52f3faf054d73b398b9bb6b3161baf8e3aa",
    "WISE_legacy/data/spatio-temporal_reasoning.json": (
        "e27d797885ad86e64d857d0cc93d33e04be572a8dcae95692a2c7e7876233f9a"
    ),
    "WISE_legacy/data/natural_science.json": "b262fae58e413c7a4bd3c3d5a089f8c6529feac227e4b6606be261a949035544",
}
VERIFIED_FILES = {
    "data_verified/merge.json": "10f2690624ed8f03f21bd3e9c535e26f791da8bab67ac857903bede65985b82d",
}
REQUIRED_FIELDS = ("prompt_id", "Prompt", "Explanation")


@dataclass(frozen=True)
class WisePrompt:
    """One WISE prompt: its id, the prompt, the explanation the judge reads, and its labels."""

    prompt_id: int
    prompt: str
    explanation: str
    category: str | None = None
    subcategory: str | None = None


def _candidates(root: Path, relative: str) -> list[Path]:
    name = Path(relative).name
    # The repository root, the folder holding the files, or the pre-2026 release layout (data/ at the root).
    return [root / relative, root / name, root / "data" / name]


def locate_files(root: str | Path, files: list[str]) -> dict[str, Path]:
    """Find each file of ``files`` (repository paths) under ``root``; explain what is missing."""
    return find_release_files(root, files, _candidates, "WISE", WISE_REPOSITORY, WISE_COMMIT)


def read_prompts(found: dict[str, Path]) -> list[WisePrompt]:
    """The prompts of the located files, sorted by id; ids must be unique and fields present."""
    prompts: dict[int, WisePrompt] = {}
    for relative, path in found.items():
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"WISE data {path}: not JSON ({error})") from None
        if not isinstance(records, list):
            raise ValueError(f"WISE data {path}: want a JSON array of prompt records")
        for index, record in enumerate(records):
            absent = [name for name in REQUIRED_FIELDS if not isinstance(record, dict) or name not in record]
            if absent:
                raise ValueError(f"WISE data {path}: record {index} lacks {', '.join(absent)}")
            try:
                prompt_id = int(record["prompt_id"])
            except (TypeError, ValueError):
                raise ValueError(f"WISE data {path}: record {index} has prompt_id {record['prompt_id']!r}") from None
            if prompt_id in prompts:
                raise ValueError(f"WISE data {relative}: prompt_id {prompt_id} appears twice")
            prompts[prompt_id] = WisePrompt(
                prompt_id,
                str(record["Prompt"]),
                str(record["Explanation"]),
                record.get("Category"),
                record.get("Subcategory"),
            )
    return [prompts[key] for key in sorted(prompts)]
