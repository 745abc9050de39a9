"""Saving and loading UniLIP models: one directory format, one mixin, and Hugging Face repo ids from the cache.

A saved model is a directory holding

* ``config.json``: ``{"model_type": ..., **the model's config}``, indented JSON in the model's own key order;
* ``model.safetensors``: the state dict in our key layout, metadata ``{"format": "pt", "layout": "unilip"}``;

plus whatever its writer adds next to them (a trainer's ``training.json``, a text tokenizer). Both
``UniLIPTokenizer`` and ``UniLIPGenerator`` get ``save_pretrained`` / ``from_pretrained`` from
:class:`PretrainedMixin`; each says only what its config is and how to rebuild itself strictly.

huggingface_hub's ``ModelHubMixin`` is not used: its ``save_pretrained`` always adds a ``README.md``
model card and writes ``config.json`` with sorted keys from the constructor's arguments, and its
``from_pretrained`` passes the config back as constructor arguments; the saved directories (and the
shipped ``unilip/pretrained/tiny-digits``) would change format. What it would add, loading a repo id
(``kanashi6/UniLIP-1B``) from the local Hugging Face cache, is :func:`resolve_pretrained` here.

Nothing is downloaded at run time: a repo id is looked up in the local cache only
(``snapshot_download(..., local_files_only=True)``), and a repo that is not there is an error naming
the repo and the command that downloads it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from unilip.checkpoints import CheckpointNotFoundError

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "cached_snapshot",
    "check_config_keys",
    "hf_hub_cache",
    "is_repo_id",
    "read_saved_config",
    "resolve_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# "namespace/name" as the Hub spells it (huggingface_hub's REPO_ID_REGEX, with the namespace required: a
# bare name is a variant name here, and a mistyped one must say "unknown variant", not "not in the cache").
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# A reference with one of these endings names a local file, never a repo.
_FILE_SUFFIXES = (".yaml", ".yml", ".pth", ".pt", ".bin", ".safetensors", ".json", ".git")

M = TypeVar("M", bound="PretrainedMixin")


def is_repo_id(reference: str | os.PathLike[str]) -> bool:
    """Whether ``reference`` reads as a Hugging Face repo id (``namespace/name``), e.g. ``kanashi6/UniLIP-1B``.

    Only the spelling is checked; a local path of the same spelling takes precedence wherever both could be
    meant (:func:`resolve_pretrained`).
    """
    text = os.fspath(reference)
    return (
        bool(_REPO_ID.match(text))
        and "--" not in text
        and ".." not in text
        and not text.lower().endswith(_FILE_SUFFIXES)
    )


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``,
    else ``~/.cache/huggingface/hub``.

    It mirrors ``huggingface_hub.constants.HF_HUB_CACHE`` but reads the environment at each call: that
    constant is fixed when huggingface_hub is first imported, and tests and users set the variables later.
    """
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second is huggingface_hub's legacy name
        value = os.environ.get(name)
        if value:
            return Path(os.path.expandvars(value)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path("~/.cache").expanduser()) / "huggingface" / "hub"


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot directory of a Hugging Face model repo, from the cache only (never the network).

    Args:
        repo_id: ``namespace/name``, e.g. ``kanashi6/UniLIP-1B``.
        revision: A branch, tag or commit (default: ``main``, the revision ``hf download`` fetches).

    Raises:
        CheckpointNotFoundError: the repo (or that revision) is not in the cache, or its snapshot is
            incomplete; the message names the repo, the cache searched and the download command.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    cache = hf_hub_cache()
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError) as error:
        at = f" at revision {revision}" if revision else ""
        found = "is incomplete" if "incomplete" in str(error) else "is not there"
        raise CheckpointNotFoundError(
            f"{repo_id} is not a local path, and the Hugging Face repo {repo_id}{at} {found} in the local cache "
            f"{cache}. Download it on a machine with internet access (`hf download {repo_id}`; "
            f"`huggingface-cli download {repo_id}` with huggingface_hub < 1.0), then copy that cache here (or "
            "point HF_HUB_CACHE / HF_HOME at it), or pass the downloaded directory's path. Nothing is downloaded "
            "at run time."
        ) from None


def resolve_pretrained(name_or_path: str | os.PathLike[str]) -> Path:
    """A model reference as a local path: the path itself when it exists, else a repo id's cached snapshot.

    Args:
        name_or_path: A local directory (or file), or a Hugging Face repo id (``kanashi6/UniLIP-1B``) whose
            snapshot is in the local cache (:func:`hf_hub_cache`).

    Returns:
        The path (possibly one that does not exist, when ``name_or_path`` is not a repo id: the caller's
        own "not found" error then names what it expected there).

    Raises:
        CheckpointNotFoundError: a repo id that is neither a local path nor in the cache.
    """
    path = Path(name_or_path).expanduser()
    if path.exists() or not is_repo_id(name_or_path):
        return path
    return cached_snapshot(os.fspath(name_or_path))


def read_saved_config(directory: Path, model_type: str, what: str) -> dict[str, Any]:
    """The ``config.json`` of a directory written by ``save_pretrained`` (``model_type`` removed), or a
    clear error when it is missing or belongs to another kind of model."""
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} not found: a saved UniLIP {what} directory holds "
            f"{CONFIG_NAME} and {WEIGHTS_NAME} (written by save_pretrained)"
        )
    payload = json.loads(config_path.read_text())
    if payload.pop("model_type", None) != model_type:
        raise ValueError(f"{config_path} is not a UniLIP {what} config (model_type != {model_type})")
    return payload


def check_config_keys(cls: type, data: dict[str, Any], what: str) -> None:
    """Refuse keys a config dataclass does not have, naming them and the known ones."""
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; known keys are {sorted(known)}")


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` saved as ``config.json`` + ``model.safetensors``.

    A model class sets :attr:`model_type` and :attr:`model_kind` and implements :meth:`pretrained_config`
    (what goes into ``config.json``), :meth:`config_from_saved` (its inverse, validated) and
    :meth:`from_saved` (a strict rebuild from that config and the weights); it may override
    :meth:`pretrained_state_dict` (what is saved).
    """

    #: ``config.json``'s ``model_type``; a directory of another type is refused.
    model_type: ClassVar[str]
    #: What the model is called in messages (``"tokenizer"``, ``"generator"``).
    model_kind: ClassVar[str]

    def pretrained_config(self) -> dict[str, Any]:
        """The JSON payload of ``config.json`` after ``model_type``, in the order it is written."""
        raise NotImplementedError

    def pretrained_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors ``model.safetensors`` holds (default: the whole state dict)."""
        return self.state_dict()  # type: ignore[attr-defined]  # the mixin goes on nn.Module subclasses

    @classmethod
    def config_from_saved(cls, payload: dict[str, Any]) -> Any:
        """Validate a saved ``config.json`` payload (``model_type`` removed) into the model's typed config."""
        raise NotImplementedError

    @classmethod
    def from_saved(
        cls: type[M],
        config: Any,
        state: dict[str, torch.Tensor],
        *,
        dtype: torch.dtype,
        device: str | torch.device,
        source: str,
    ) -> M:
        """Rebuild the model from its typed config (:meth:`config_from_saved`) and its weights, strictly
        (every parameter filled, no key left over)."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (our key layout) to ``directory``; returns it."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"model_type": self.model_type, **self.pretrained_config()}
        (directory / CONFIG_NAME).write_text(json.dumps(payload, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.pretrained_state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "layout": "unilip"})
        return directory

    @classmethod
    def from_pretrained(
        cls: type[M],
        name_or_path: str | os.PathLike[str],
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> M:
        """Load a directory written by :meth:`save_pretrained`, or such a Hugging Face repo from the local cache.

        Args:
            name_or_path: The directory, or a repo id (``namespace/name``) in the local Hugging Face cache.
            dtype, device: Where the weights end up.

        Raises:
            FileNotFoundError: no ``config.json`` there; ``CheckpointNotFoundError`` for a repo id that is
                not in the cache (naming the download command) or a missing weights file.
            ValueError: the directory holds another kind of model.
            CheckpointKeyError: the weights do not fill the model exactly (the keys are named).
        """
        from unilip.checkpoints import load_safetensors_state_dict

        directory = resolve_pretrained(name_or_path)
        # The config first: a foreign or invalid directory fails before its weights are read.
        config = cls.config_from_saved(read_saved_config(directory, cls.model_type, cls.model_kind))
        state = load_safetensors_state_dict(directory / WEIGHTS_NAME)
        return cls.from_saved(config, state, dtype=dtype, device=device, source=str(directory))
