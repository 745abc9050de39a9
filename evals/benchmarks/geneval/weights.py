"""Local weight directories of the GenEval scorers: checks with useful errors, and fingerprints.

Nothing is downloaded: the user passes directories saved by transformers (``save_pretrained`` or a hub
snapshot). A directory's fingerprint hashes the weight files transformers would load plus its configs,
so results name exactly which scorer weights produced them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from unilip.weights import file_sha256

_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_CONFIG_FILES = (
    "config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "special_tokens_map.json",
)


class ScorerWeightsMissing(ValueError):
    """A scorer's local weights are not where the options say; the message says where to get them."""


def require_dir(path: str | Path | None, option: str, what: str, source: str) -> Path:
    """The directory named by a benchmark option, or an error naming the option and where to get it.

    Args:
        path: the option's value (None when not given).
        option: the option name, e.g. ``detector``.
        what: human description of what the directory must hold.
        source: where users obtain it (hub id and how to save it locally).
    """
    hint = f"pass it with --opt {option}=PATH. {what}: {source}. Nothing is downloaded at run time."
    if path is None or str(path).strip() == "":
        raise ScorerWeightsMissing(f"geneval: no '{option}' directory given; {hint}")
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ScorerWeightsMissing(f"geneval: '{option}' directory {directory} does not exist; {hint}")
    return directory


def weight_files(directory: Path) -> list[Path]:
    """The weight files transformers loads from ``directory`` (safetensors preferred, shards via the index)."""
    for name in _SINGLE_FILES:
        if (directory / name).is_file():
            return [directory / name]
    for name in _INDEX_FILES:
        index = directory / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [shard for shard in shards if not (directory / shard).is_file()]
            if missing:
                raise ScorerWeightsMissing(f"{directory}: {name} lists shards that are absent: {', '.join(missing)}")
            return [directory / shard for shard in shards]
    raise ScorerWeightsMissing(
        f"{directory} holds no transformers weights (looked for {', '.join(_SINGLE_FILES + _INDEX_FILES)})"
    )


def directory_fingerprint(directory: Path) -> dict[str, Any]:
    """sha256 of each weight file and one digest over the config files present (paths left out: a copy matches)."""
    configs = hashlib.sha256()
    for name in _CONFIG_FILES:
        if (directory / name).is_file():
            configs.update(name.encode() + b"\0" + (directory / name).read_bytes() + b"\0")
    return {
        "weights_sha256": {path.name: file_sha256(path) for path in weight_files(directory)},
        "configs_sha256": configs.hexdigest(),
    }
