"""Released key layouts <-> ours, strict loading, and safe file reading.

Layouts handled for the tokenizer:

* ``official``: the released tokenizer checkpoints ``1b_unilip.pth`` / ``2b_unilip.pth`` (Hugging Face
  repo ``kanashi6/UniLIP``): a flat ``torch.save``d state dict with the *original* InternViT names
  (fused ``attn.qkv``, ``attn.proj``, ``mlp.fc1/fc2``, ``norm1/2``, ``ls1/ls2``, ``embeddings.*``),
  ``mlp1.{0,1,3}``, ``down_blocks.i.mlp.{0,1,3}``, ``down_mlp.{0,1,3}`` and ``decoder.*``.
* ``model_dir``: the tokenizer part of a released UniLIP-1B / UniLIP-3B model directory (Hugging
  Face repos ``kanashi6/UniLIP-1B`` / ``kanashi6/UniLIP-3B``): ``model.vision_tower.*`` (original
  InternViT names), ``model.multi_modal_projector.{0,1,3}.*`` and ``model.vae_decoder.*``; the legacy
  prefixes without ``model.`` are accepted too, each part's on its own (a newer transformers writes
  ``vision_tower.*`` next to ``model.vae_decoder.*``).

Loading is strict: every parameter must be filled and every key of the file must be used or belong to
an explicitly ignorable group; otherwise ``CheckpointKeyError`` lists the offending keys.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

TOKENIZER_SOURCES = (
    "The released tokenizer checkpoints are `1b_unilip.pth` (UniLIP-1B) and `2b_unilip.pth` (UniLIP-3B) in "
    "the Hugging Face repo kanashi6/UniLIP; whole models are the repos kanashi6/UniLIP-1B and "
    "kanashi6/UniLIP-3B. Download them on a machine with internet access and pass the local path."
)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used as asked."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A weights file or directory that does not exist."""


class CheckpointKeyError(CheckpointError, KeyError):
    """Missing or unexpected keys: the message lists them."""

    def __str__(self) -> str:  # KeyError quotes its message; print it as written
        return str(self.args[0])


def missing_file_error(path: Path, what: str, source: str = TOKENIZER_SOURCES) -> CheckpointNotFoundError:
    """The error for a weights file or directory that is not there: what it should be and where to get it."""
    return CheckpointNotFoundError(f"{path} does not exist. Expected {what}. {source}")


# --------------------------------------------------------------------------------------- reading files
# torch.save's two formats: a zip archive (torch >= 1.6, the default) and the legacy one, a pickle stream
# that starts with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2 unless asked otherwise).
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
# What weights_only=True says when the stream names a class or function: "GLOBAL module.name".
_PICKLED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([A-Za-z_][\w.]*) was not an allowed global")
_FLAT_DICT = "a .pth file holding a flat state dict of tensors (the released UniLIP tokenizer files are)"


def torch_save_format(path: Path) -> str:
    """``"zip"``, ``"legacy"`` (pre-1.6 ``torch.save``), ``"pickle"`` (a plain Python pickle) or ``"unknown"``,
    from the file's first bytes."""
    with path.open("rb") as handle:
        head = handle.read(64)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(b"\x80") and _LEGACY_MAGIC in head[:32]:
        return "legacy"
    return "pickle" if head.startswith(b"\x80") else "unknown"


def load_pth_state_dict(path: str | Path, *, what: str = _FLAT_DICT, source: str = TOKENIZER_SOURCES) -> StateDict:
    """Read a ``torch.save``d flat state dict without unpickling arbitrary objects.

    Both ``torch.save`` formats are read with ``weights_only=True``: the zip format memory-mapped, the
    legacy (pre-1.6) one without (torch can map only the zip format).

    Args:
        path: The file.
        what: What the file should be, for the error messages.
        source: Where to get the right file, for the error messages.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        CheckpointError: anything else that makes it unusable (pickled objects, a damaged or foreign
            file, not a flat dict of tensors); one line naming the file, what it should be and the source.
    """
    path = Path(path)
    if not path.is_file():
        raise missing_file_error(path, what, source)
    expected = f"It should be {what}. {source}"
    kind = torch_save_format(path)
    if kind == "pickle":
        raise CheckpointError(
            f"{path} is a plain Python pickle, not a torch.save checkpoint; it was not unpickled "
            f"(that could run arbitrary code). {expected}"
        )
    if kind == "unknown":
        raise CheckpointError(
            f"{path} is not a torch.save checkpoint (neither its zip nor its legacy format: "
            f"{'an empty file' if path.stat().st_size == 0 else 'unknown leading bytes'}). {expected}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except OSError:
        raise  # an I/O error (permissions, a failing disk) is reported as one by the caller
    except Exception as error:  # noqa: BLE001 - a damaged file raises anything the unpickler meets; name the file
        pickled = _PICKLED_GLOBAL.search(str(error))
        if pickled:
            raise CheckpointError(
                f"{path} holds pickled Python objects ({pickled.group(1)}), not only tensors; they were not unpickled "
                "(torch.load weights_only=True). Re-save the state dict alone: torch.save(model.state_dict(), "
                f"path). {expected}"
            ) from error
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (truncated or damaged? {type(error).__name__}: "
            f"{reason[:200]}). {expected}"
        ) from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kinds = sorted({type(v).__name__ for v in state.values()}) if isinstance(state, Mapping) else []
        raise CheckpointError(
            f"{path} is not a flat state dict of tensors (top level: {type(state).__name__}"
            f"{', values: ' + ', '.join(kinds) if kinds else ''}). {expected}"
        )
    return dict(state)


def _read_safetensors(
    path: Path, keys: Iterable[str] | None, keep: Callable[[str], bool] | None, expected: str
) -> StateDict:
    """The tensors ``keys`` (all, filtered by ``keep``, when None) of one safetensors file; a damaged file
    raises ``CheckpointError`` naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            names = handle.keys() if keys is None else keys
            return {key: handle.get_tensor(key) for key in names if keep is None or keep(key)}
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError (not exported stably)
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or damaged? "
            f"{' '.join(str(error).split())[:200]}). {expected}"
        ) from error


_SAFETENSORS = "a safetensors weights file (or model.safetensors.index.json with shards)"


def load_safetensors_state_dict(
    path: str | Path,
    keep: Callable[[str], bool] | None = None,
    *,
    what: str = _SAFETENSORS,
    source: str = TOKENIZER_SOURCES,
) -> StateDict:
    """Read a ``.safetensors`` file, or a sharded set through its ``.index.json``.

    Only keys for which ``keep(key)`` is true are read (the header is read first, then only those tensors).
    ``what`` and ``source`` (what the file should be, where to get it) go into the error messages.

    Raises:
        CheckpointNotFoundError: the file, a directory's weights or a shard the index names is missing.
        CheckpointError: a damaged file or index, one line naming it.
    """
    path = Path(path)
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        path = index if index.is_file() else path / "model.safetensors"
    if not path.is_file():
        raise missing_file_error(path, what, source)
    expected = f"It should be {what}. {source}"
    if not path.name.endswith(".index.json"):
        return _read_safetensors(path, None, keep, expected)
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError(f"weight_map is a {type(weight_map).__name__}")
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{path} is not a safetensors index (a JSON object with a 'weight_map' of key -> "
            f"shard file; {type(error).__name__}: {error}). {expected}"
        ) from None
    shards: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        if keep is None or keep(key):
            shards.setdefault(shard, []).append(key)
    state: StateDict = {}
    for shard, keys in shards.items():
        shard_path = path.parent / shard
        if not shard_path.is_file():
            raise missing_file_error(shard_path, f"the shard named by {path.name}", source)
        state.update(_read_safetensors(shard_path, keys, None, expected))
    return state


# --------------------------------------------------------------------------------------- key mapping
# Original InternViT names <-> transformers InternVLVisionModel names (qkv is fused/split separately).
# A name ending in "." is a prefix (weight and bias follow); "{i}" is the layer index.
_VIT_NAME_PAIRS = (
    ("embeddings.class_embedding", "embeddings.cls_token"),
    ("embeddings.patch_embedding.", "embeddings.patch_embeddings.projection."),
    ("embeddings.position_embedding", "embeddings.position_embeddings"),
    ("encoder.layers.{i}.attn.proj.", "encoder.layer.{i}.attention.projection_layer."),
    ("encoder.layers.{i}.mlp.", "encoder.layer.{i}.mlp."),
    ("encoder.layers.{i}.norm1.", "encoder.layer.{i}.layernorm_before."),
    ("encoder.layers.{i}.norm2.", "encoder.layer.{i}.layernorm_after."),
    ("encoder.layers.{i}.ls1", "encoder.layer.{i}.lambda_1"),
    ("encoder.layers.{i}.ls2", "encoder.layer.{i}.lambda_2"),
)


def _rename_rules(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    rules = []
    for source, target in pairs:
        pattern = "^" + re.escape(source).replace(r"\{i\}", r"(\d+)") + ("" if source.endswith(".") else "$")
        rules.append((pattern, target.replace("{i}", r"\1")))
    return tuple(rules)


_VIT_RENAMES = _rename_rules(_VIT_NAME_PAIRS)
_VIT_RENAMES_BACK = _rename_rules((ours, original) for original, ours in _VIT_NAME_PAIRS)
_QKV = re.compile(r"^encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$")
_QKV_OURS = re.compile(r"^encoder\.layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")
_MLP1 = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}
_MLP1_BACK = {v: k for k, v in _MLP1.items()}


def _rename(key: str, rules: Iterable[tuple[str, str]]) -> str | None:
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return None


def internvit_to_ours(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, list[str]]:
    """Original InternViT keys (no prefix) -> ``InternVLVisionModel`` keys; returns (mapped, unused keys)."""
    mapped: StateDict = {}
    unused: list[str] = []
    for key, value in state.items():
        match = _QKV.match(key)
        if match:
            layer, kind = match.groups()
            for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):  # rows are ordered q, k, v
                mapped[f"encoder.layer.{layer}.attention.{name}_proj.{kind}"] = part.clone()
            continue
        new = _rename(key, _VIT_RENAMES)
        if new is None:
            unused.append(key)
        else:
            mapped[new] = value
    return mapped, unused


def internvit_from_ours(state: Mapping[str, torch.Tensor]) -> StateDict:
    """``InternVLVisionModel`` keys (no prefix) -> original InternViT keys, fusing q, k, v."""
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _QKV_OURS.match(key)
        if match:
            layer, name, kind = match.groups()
            qkv.setdefault((layer, kind), {})[name] = value
            continue
        new = _rename(key, _VIT_RENAMES_BACK)
        if new is None:
            raise CheckpointKeyError(f"no original InternViT name for encoder key {key!r}")
        out[new] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) != set("qkv"):
            raise CheckpointKeyError(f"layer {layer} {kind}: need q, k and v projections, got {sorted(parts)}")
        out[f"encoder.layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in "qkv"], dim=0)
    return out


def _mlp1_to_ours(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, list[str]]:
    mapped: StateDict = {}
    unused: list[str] = []
    for key, value in state.items():
        index, _, rest = key.partition(".")
        if index in _MLP1 and rest in ("weight", "bias"):
            mapped[f"{_MLP1[index]}.{rest}"] = value
        else:
            unused.append(key)
    return mapped, unused


def _split_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _add_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {prefix + k: v for k, v in state.items()}


@dataclass(frozen=True)
class LayoutPrefixes:
    """Where the three tokenizer parts live in a file's key space."""

    encoder: str
    mlp1: str
    bridge_and_decoder: str


OFFICIAL_PREFIXES = LayoutPrefixes(encoder="encoder.", mlp1="mlp1.", bridge_and_decoder="")
MODEL_DIR_PREFIXES = LayoutPrefixes(
    encoder="model.vision_tower.", mlp1="model.multi_modal_projector.", bridge_and_decoder="model.vae_decoder."
)
LEGACY_MODEL_DIR_PREFIXES = LayoutPrefixes(
    encoder="vision_tower.", mlp1="multi_modal_projector.", bridge_and_decoder="vae_decoder."
)

# Keys that belong to a file but not to the tokenizer, and are skipped on purpose.
# ``regressor*``: an old head the upstream generation code also drops (unilip_internvl.py L134-136).
OFFICIAL_IGNORABLE = (re.compile(r"^regressor"),)
# The generator's parts of a released model directory (loaded by the generator, not the tokenizer).
MODEL_DIR_IGNORABLE = tuple(
    re.compile(p)
    for p in (
        r"^(model\.)?language_model\.",
        r"^(model\.)?latent_queries$",
        r"^(model\.)?dit\.",
        r"^(model\.)?llm_connector\.",
        r"^(model\.)?projector\.",
        r"^lm_head\.",
    )
)
_BRIDGE_DECODER = ("down_blocks.", "down_mlp.", "decoder.")


def tokenizer_state_from_layout(
    state: Mapping[str, torch.Tensor], prefixes: LayoutPrefixes, ignorable: Iterable[re.Pattern[str]] = ()
) -> tuple[StateDict, list[str], list[str]]:
    """Convert a released-layout state dict to ours.

    Returns:
        (our state dict, keys the conversion could not place, keys skipped as ignorable).
    """
    ignorable = tuple(ignorable)
    ignored = sorted(k for k in state if any(p.search(k) for p in ignorable))
    remaining = {k: v for k, v in state.items() if k not in set(ignored)}

    encoder_part = _split_prefix(remaining, prefixes.encoder)
    mlp1_part = _split_prefix(remaining, prefixes.mlp1)
    rest_part = {
        k[len(prefixes.bridge_and_decoder) :]: v
        for k, v in remaining.items()
        if k.startswith(prefixes.bridge_and_decoder) and not k.startswith((prefixes.encoder, prefixes.mlp1))
    }

    ours: StateDict = {}
    unused = [k for k in remaining if not k.startswith((prefixes.encoder, prefixes.mlp1, prefixes.bridge_and_decoder))]
    encoder_ours, encoder_unused = internvit_to_ours(encoder_part)
    ours.update(_add_prefix(encoder_ours, "encoder."))
    unused += [prefixes.encoder + k for k in encoder_unused]
    mlp1_ours, mlp1_unused = _mlp1_to_ours(mlp1_part)
    ours.update(_add_prefix(mlp1_ours, "mlp1."))
    unused += [prefixes.mlp1 + k for k in mlp1_unused]
    for key, value in rest_part.items():
        if key.startswith(_BRIDGE_DECODER):
            ours[key] = value
        else:
            unused.append(prefixes.bridge_and_decoder + key)
    return ours, sorted(unused), ignored


def tokenizer_state_to_layout(state: Mapping[str, torch.Tensor], prefixes: LayoutPrefixes) -> StateDict:
    """Convert our state dict to a released layout (the inverse of ``tokenizer_state_from_layout``)."""
    out: StateDict = {}
    out.update(_add_prefix(internvit_from_ours(_split_prefix(state, "encoder.")), prefixes.encoder))
    for key, value in _split_prefix(state, "mlp1.").items():
        name, _, kind = key.partition(".")
        out[f"{prefixes.mlp1}{_MLP1_BACK[name]}.{kind}"] = value
    for key, value in state.items():
        if key.startswith(_BRIDGE_DECODER):
            out[prefixes.bridge_and_decoder + key] = value
    return out


def to_official_tokenizer_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Our tokenizer state dict -> the layout of ``1b_unilip.pth`` / ``2b_unilip.pth``."""
    return tokenizer_state_to_layout(state, OFFICIAL_PREFIXES)


def to_model_dir_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Our tokenizer state dict -> its keys inside a released UniLIP model directory."""
    return tokenizer_state_to_layout(state, MODEL_DIR_PREFIXES)


def from_official_tokenizer_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """The layout of ``1b_unilip.pth`` -> ours; raises ``CheckpointKeyError`` on keys it cannot place."""
    ours, unused, ignored = tokenizer_state_from_layout(state, OFFICIAL_PREFIXES, OFFICIAL_IGNORABLE)
    _raise_on_unused(unused, "official tokenizer checkpoint")
    _log_ignored(ignored)
    return ours


# Each part of a released model directory under its current InternVL prefix, then the legacy one. The
# transformers version that saved a directory decides each part's prefix separately (a newer one writes
# ``vision_tower.*`` and ``language_model.model.*`` but still ``model.vae_decoder.*``), and the official
# loader reads any mix, so each part's prefix is chosen on its own.
_MODEL_DIR_PART_PREFIXES = (
    ("encoder (vision_tower)", (MODEL_DIR_PREFIXES.encoder, LEGACY_MODEL_DIR_PREFIXES.encoder)),
    ("mlp1 (multi_modal_projector)", (MODEL_DIR_PREFIXES.mlp1, LEGACY_MODEL_DIR_PREFIXES.mlp1)),
    (
        "bridge and pixel decoder (vae_decoder)",
        (MODEL_DIR_PREFIXES.bridge_and_decoder, LEGACY_MODEL_DIR_PREFIXES.bridge_and_decoder),
    ),
)


def _twice_error(part: str, prefixes: Iterable[str]) -> CheckpointKeyError:
    shown = " and ".join(f"{p}*" for p in sorted(prefixes))
    return CheckpointKeyError(
        f"the model directory holds its {part} twice, under {shown}: a UniLIP model directory "
        "holds each part once (under either prefix); remove one copy, or re-save the model"
    )


def model_dir_prefixes(keys: Iterable[str]) -> LayoutPrefixes:
    """Where a model directory keeps each tokenizer part, chosen per part (current or legacy prefix).

    Raises:
        CheckpointKeyError: a part appears under both prefixes (naming the part).
    """
    keys = list(keys)
    chosen = []
    for part, candidates in _MODEL_DIR_PART_PREFIXES:
        present = [prefix for prefix in candidates if any(k.startswith(prefix) for k in keys)]
        if len(present) > 1:
            raise _twice_error(part, present)
        chosen.append(present[0] if present else candidates[0])
    return LayoutPrefixes(*chosen)


def from_model_dir_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Tokenizer keys of a released model directory (current, legacy or mixed prefixes) -> ours."""
    ours, unused, ignored = tokenizer_state_from_layout(state, model_dir_prefixes(state), MODEL_DIR_IGNORABLE)
    _raise_on_unused(unused, "UniLIP model directory")
    _log_ignored(ignored)
    return ours


# The generator's own parts of a released model directory, by our module name.
GENERATOR_PARTS = ("language_model.", "latent_queries", "llm_connector.", "projector.", "dit.")
# (part, ((released prefix, our prefix), ...)): the current layout first, then the legacy InternVL one
# (``language_model.model.*``, ``language_model.lm_head.*``, no ``model.``), then the inner InternVLModel's
# own (``language_model.*``). A prefix without a trailing dot is a whole key.
_GENERATOR_PART_PREFIXES = (
    ("lm_head", (("lm_head.", "lm_head."), ("language_model.lm_head.", "lm_head."))),
    (
        "language model (language_model)",
        (
            ("model.language_model.", "language_model."),
            ("language_model.model.", "language_model."),
            ("language_model.", "language_model."),
        ),
    ),
    *(
        (name.rstrip("."), ((f"model.{name}", name), (name, name)))
        for name in ("latent_queries", "llm_connector.", "projector.", "dit.")
    ),
)


def _generator_key(key: str) -> tuple[str, str, str] | None:
    """A released key of the generator's own parts -> (part, released prefix, our key), or None."""
    for part, candidates in _GENERATOR_PART_PREFIXES:
        for released, ours in candidates:
            if key.startswith(released) if released.endswith(".") else key == released:
                return part, released, ours + key[len(released) :]
    return None


def from_released_generator_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A released UniLIP-1B/3B model directory's state dict -> our generator layout.

    The tokenizer parts (``vision_tower``, ``multi_modal_projector``, ``vae_decoder``) go under
    ``tokenizer.`` through the tokenizer conversion; the LLM, queries, connector, projector, DiT and
    ``lm_head`` keep their names without ``model.``. Each part may use the current
    (``model.language_model.*``) or the legacy InternVL prefix (``language_model.model.*``),
    independently of the others. Keys that fit nowhere, or a part present twice, raise.
    """
    tokenizer_part, unused, generator_keys = tokenizer_state_from_layout(
        state, model_dir_prefixes(state), MODEL_DIR_IGNORABLE
    )
    ours: StateDict = {f"tokenizer.{k}": v for k, v in tokenizer_part.items()}
    used: dict[str, set[str]] = {}
    mapped: dict[str, str] = {}
    for key in generator_keys:
        found = _generator_key(key)
        if found is None:
            unused.append(key)
            continue
        part, prefix, name = found
        used.setdefault(part, set()).add(prefix)
        mapped[key] = name
    for part, prefixes in used.items():
        if len(prefixes) > 1:
            raise _twice_error(part, prefixes)
    _raise_on_unused(sorted(unused), "UniLIP model directory")
    for key, name in mapped.items():
        if name in ours:  # a guard: no two prefixes of one part survive the check above
            raise CheckpointKeyError(f"two keys of the file map to {name} (one is {key})")
        ours[name] = state[key]
    return ours


def to_released_generator_state_dict(state: Mapping[str, torch.Tensor], legacy: bool = False) -> StateDict:
    """Our generator state dict -> the released model-directory layout (the inverse of the above)."""
    prefixes = LEGACY_MODEL_DIR_PREFIXES if legacy else MODEL_DIR_PREFIXES
    out = tokenizer_state_to_layout(_split_prefix(state, "tokenizer."), prefixes)
    for key, value in state.items():
        if key == "lm_head.weight":
            out["language_model.lm_head.weight" if legacy else "lm_head.weight"] = value
        elif legacy and key.startswith("language_model."):
            out["language_model.model." + key[len("language_model.") :]] = value
        elif key.startswith(GENERATOR_PARTS):
            out[("" if legacy else "model.") + key] = value
    return out


def _raise_on_unused(unused: list[str], what: str) -> None:
    if unused:
        raise CheckpointKeyError(
            f"{len(unused)} key(s) of the {what} have no place in the tokenizer: {preview(unused)}"
        )


def _log_ignored(ignored: list[str]) -> None:
    if ignored:
        logger.info("skipped %d key(s) that are not tokenizer weights: %s", len(ignored), preview(ignored))


def preview(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def is_model_dir_key(key: str) -> bool:
    """True for keys the tokenizer needs from a released model directory (any prefix generation)."""
    return key.startswith(
        (
            "model.vision_tower.",
            "model.multi_modal_projector.",
            "model.vae_decoder.",
            "vision_tower.",
            "multi_modal_projector.",
            "vae_decoder.",
        )
    )


# --------------------------------------------------------------------------------------- strict loading
def check_state_matches(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str, what: str
) -> None:
    """Raise ``CheckpointKeyError`` listing missing, unexpected and misshapen keys of ``state``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [f"cannot load {source} into a {what} of this configuration:"]
        if missing:
            parts.append(f"missing {len(missing)} key(s): {preview(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {preview(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch in {len(mismatched)} key(s): {preview(mismatched)}")
        raise CheckpointKeyError("\n  ".join(parts))


def check_all_loaded(model: torch.nn.Module, source: str) -> None:
    """After a strict ``assign=True`` load into a model built on the meta device: every parameter and buffer
    is real (none left at a placeholder).

    Raises:
        CheckpointError: naming the tensors left on the meta device.
    """
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"tensors left uninitialised after loading {source}: {preview(leftover)}")
