"""ImgEdit-Bench edit lists, judge prompts and source images from the user's local copies.

Nothing ships here (no license): the JSON files come from a clone of
https://github.com/PKU-YuanGroup/ImgEdit (``data=PATH``: the clone, its ``Benchmark`` folder, or the
folder holding the files) and the source images from ``Benchmark.tar`` of the Hugging Face dataset
``sysuyy/ImgEdit`` (``imgedit_images=PATH``: the folder the edit list's image paths are relative to).
The JSON files are checked against the sha256 values of commit 547185d12c08.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from evals.benchmarks.kit import PathEscapesRoot, find_release_files, path_inside
from evals.runtime.records import canonical_hash, safe_item_name

IMGEDIT_REPOSITORY = "https://github.com/PKU-YuanGroup/ImgEdit"
IMGEDIT_COMMIT = "547185d12c08267a862b94248576e1746e479937"
IMAGES_SOURCE = "Benchmark.tar of https://huggingface.co/datasets/sysuyy/ImgEdit"

# Path in the repository at IMGEDIT_COMMIT -> sha256 (shared/benchmarks/imgedit/LICENSE-NOTE.md).
BASIC_EDITS = "Benchmark/Basic/basic_edit.json"
BASIC_PROMPTS = "Benchmark/Basic/prompts.json"
UGE_EDITS = "Benchmark/UGE/UGE_edit.json"
PINNED = {
    BASIC_EDITS: "5ee9b7d61e918692416f79896300f738598c83adff8de737b25be4aaff72dc69",
    BASIC_PROMPTS: "f9468dc848776ee0a6c2e2c31e678c7224e9cb61b013747c8c52d4a05627b5a0",
    UGE_EDITS: "807817d8765f8fc45397be9afbf638b00fad91e37c1d44fabd5103df73074d16",
}
PROMPT_PLACEHOLDER = "<edit_prompt>"
# An edit key used as is for its output file (the official layout <key>.png): the release's keys are numbers.
_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class EditItem:
    """One edit: its key (also the output file name), the source image path, the instruction, its type."""

    key: str
    image: str
    instruction: str
    edit_type: str | None = None


def _candidates(root: Path, relative: str) -> list[Path]:
    # The clone, its Benchmark/ folder, or the folder holding the file.
    return [root / relative, root / Path(relative).relative_to("Benchmark"), root / Path(relative).name]


def locate_files(root: str | Path, files: list[str]) -> dict[str, Path]:
    """Find each repository path of ``files`` under ``root`` (the clone, ``Benchmark/``, or the file's folder)."""
    return find_release_files(root, files, _candidates, "ImgEdit", IMGEDIT_REPOSITORY, IMGEDIT_COMMIT)


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"ImgEdit data {path}: not JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"ImgEdit data {path}: want a JSON object keyed by edit")
    return data


def _order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)


def read_edits(path: Path, typed: bool) -> list[EditItem]:
    """The edits of an edit list (``key -> {id, prompt[, edit_type]}``), sorted by numeric key."""
    data = _read_json_object(path)
    wanted = ("id", "prompt", "edit_type") if typed else ("id", "prompt")
    edits = []
    for key, entry in data.items():
        absent = [name for name in wanted if not isinstance(entry, dict) or name not in entry]
        if absent:
            raise ValueError(f"ImgEdit data {path}: edit {key!r} lacks {', '.join(absent)}")
        edits.append(
            EditItem(str(key), str(entry["id"]), str(entry["prompt"]), str(entry["edit_type"]) if typed else None)
        )
    return sorted(edits, key=lambda edit: _order(edit.key))


def read_judge_prompts(path: Path) -> dict[str, str]:
    """``prompts.json``: one judge prompt per edit type, each with the ``<edit_prompt>`` placeholder."""
    data = _read_json_object(path)
    for edit_type, text in data.items():
        if not isinstance(text, str):
            raise ValueError(f"ImgEdit judge prompts {path}: the prompt for {edit_type!r} is not text")
    return data


def output_name(key: str) -> str:
    """The file name (without ``.png``) of an edit's output: the key itself when it is a safe file name
    (the official layout), else a readable, hashed stand-in, so no key can become a path."""
    return key if _SAFE_KEY.fullmatch(key) else safe_item_name(key)


@dataclass(frozen=True)
class SourceImage:
    """Where an edit's source image is: a path inside the images folder, or why the data's path is refused."""

    path: Path | None
    refused: str | None = None


def locate_sources(images_root: Path, edits: list[EditItem]) -> dict[str, SourceImage]:
    """Each edit's source image under ``images_root``, by key; a path that leads outside it is refused."""
    sources = {}
    for edit in edits:
        try:
            sources[edit.key] = SourceImage(path_inside(images_root, edit.image, f"edit {edit.key!r}: source image"))
        except PathEscapesRoot as error:
            sources[edit.key] = SourceImage(path=None, refused=str(error))
    return sources


def source_identity(edits: list[EditItem], sources: dict[str, SourceImage]) -> tuple[dict[str, object], list[str]]:
    """A cheap identity of the source images (paths and byte sizes, hashed) and the edits whose image is
    absent (refused paths included: they are never looked at)."""
    entries, missing = [], []
    for edit in edits:
        path = sources[edit.key].path
        if path is not None and path.is_file():
            entries.append([edit.image, path.stat().st_size])
        else:
            missing.append(edit.key)
    return {"identity": canonical_hash(entries), "present": len(entries), "missing": len(missing)}, missing
