"""Model variants as data: ``unilip/configs/*.yaml`` -> typed specs, and the tokenizer factory.

A variant file holds the architecture (``tokenizer:``, validated into ``TokenizerConfig``) and, for
variants with released weights, where those weights come from (``weights:``). Adding a variant is
adding one YAML file here, or passing the path of one anywhere a variant name is accepted.

Wherever a model directory is accepted, a Hugging Face repo id (``kanashi6/UniLIP-1B``) that is not a local
path is read from the local Hugging Face cache (``unilip.persistence.cached_snapshot``; never downloaded).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from unilip import checkpoints
from unilip.persistence import CONFIG_NAME, cached_snapshot, is_repo_id
from unilip.tokenizer import TokenizerConfig, UniLIPTokenizer, build_tokenizer, load_strict, saved_tokenizer_config

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_ENV = "UNILIP_WEIGHTS"


@dataclass(frozen=True)
class VariantSpec:
    """One model variant: its name, architecture and the provenance of its released weights."""

    name: str
    description: str
    tokenizer: TokenizerConfig
    weights: dict[str, Any] | None
    path: Path
    generator: dict[str, Any] | None = None  # validated by unilip.generator.GeneratorConfig when used
    text_tokenizer: Path | None = None  # a shipped text tokenizer (tiny variants); real ones use the model dir's

    @property
    def has_released_weights(self) -> bool:
        return bool(self.weights)


def _read_variant(path: Path) -> VariantSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict) or "tokenizer" not in data or "name" not in data:
        raise ValueError(f"{path} is not a variant file: it needs top-level 'name' and 'tokenizer' keys")
    try:
        tokenizer = TokenizerConfig.from_dict(data["tokenizer"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: invalid tokenizer section: {error}") from None
    unknown = sorted(set(data) - {"name", "description", "weights", "tokenizer", "generator", "text_tokenizer"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}")
    return VariantSpec(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        tokenizer=tokenizer,
        weights=data.get("weights"),
        path=path,
        generator=data.get("generator"),
        text_tokenizer=(path.parent / data["text_tokenizer"]) if data.get("text_tokenizer") else None,
    )


def _from_hub_cache(name_or_path: str | Path) -> str | Path:
    """A Hugging Face repo id that is not a local path -> its snapshot in the local cache; anything else unchanged.

    Raises:
        CheckpointNotFoundError: a repo id that is not in the cache (naming the download command).
    """
    if is_repo_id(name_or_path) and not Path(name_or_path).exists():
        return cached_snapshot(str(name_or_path))
    return name_or_path


def _reads_as_path(reference: str) -> bool:
    """Whether a reference that names nothing on disk was meant as a path: a separator, a leading ``.`` or ``~``,
    or a file suffix. (``namespace/name`` repo ids are looked up in the Hugging Face cache before this.)"""
    return (
        "/" in reference
        or os.sep in reference
        or reference.startswith((".", "~"))
        or Path(reference).suffix.lower() in (".yaml", ".yml", ".pth", ".pt", ".bin", ".safetensors", ".json")
    )


def _builtin_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def list_variants() -> list[str]:
    """Names of the built-in variants."""
    return sorted(_builtin_paths())


def get_variant(name_or_path: str | Path) -> VariantSpec:
    """A built-in variant by name, or a variant YAML file by path.

    Raises:
        ValueError: unknown name (with the closest names and the full list).
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _read_variant(path)
    builtin = _builtin_paths()
    if str(name_or_path) not in builtin and _reads_as_path(str(name_or_path)):
        raise FileNotFoundError(f"{name_or_path} does not exist (it reads as a path, not as a variant name)")
    if str(name_or_path) not in builtin:
        close = difflib.get_close_matches(str(name_or_path), builtin, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model variant {str(name_or_path)!r}.{hint} Known variants: "
            f"{', '.join(builtin)}; or give a variant .yaml file, a saved tokenizer directory, "
            "a released UniLIP model directory or a released tokenizer .pth file."
        )
    return _read_variant(builtin[str(name_or_path)])


def _variant_for_width(width: int, source: str) -> VariantSpec:
    # The released checkpoints differ only in H (the LLM width), so it identifies the variant.
    for name in list_variants():
        spec = get_variant(name)
        if spec.has_released_weights and spec.tokenizer.llm_hidden_size == width:
            return spec
    raise checkpoints.CheckpointError(
        f"{source}: mlp1 output width {width} matches no released variant; pass the variant explicitly "
        "(load_tokenizer(VARIANT, weights=PATH)) or a variant .yaml describing this architecture"
    )


def _load_weights_file(
    spec: VariantSpec | None, weights: Path, dtype: torch.dtype, device: str | torch.device
) -> UniLIPTokenizer:
    """Load an official ``.pth`` tokenizer checkpoint or a released model directory/safetensors file."""
    if weights.is_dir() or weights.suffix == ".safetensors" or weights.name.endswith(".index.json"):
        raw = checkpoints.load_safetensors_state_dict(weights, keep=checkpoints.is_model_dir_key)
        if not raw:
            raise checkpoints.CheckpointError(
                f"{weights} holds no UniLIP tokenizer weights (no model.vision_tower.*, "
                "model.multi_modal_projector.* or model.vae_decoder.* keys)"
            )
        state = checkpoints.from_model_dir_state_dict(raw)
    else:
        state = checkpoints.from_official_tokenizer_state_dict(checkpoints.load_pth_state_dict(weights))
    if spec is None:
        width_key = "mlp1.linear_1.weight"
        if width_key not in state:
            raise checkpoints.CheckpointKeyError(f"{weights}: no mlp1 weights found (key mlp1.1.weight)")
        spec = _variant_for_width(int(state[width_key].shape[0]), str(weights))
        logger.info("%s: identified as variant %s", weights, spec.name)
    return load_strict(spec.tokenizer, state, dtype=dtype, device=device, source=str(weights))


def _under_weights_root(name: str) -> Path:
    """Where a released file or directory is looked for: under ``$UNILIP_WEIGHTS``, else the working directory."""
    root = os.environ.get(WEIGHTS_ENV)
    return Path(root) / name if root else Path(name)


def _default_weights(spec: VariantSpec) -> Path:
    filename = spec.weights["tokenizer_file"]
    candidate = _under_weights_root(filename)
    if not candidate.exists():
        raise checkpoints.CheckpointNotFoundError(
            f"variant {spec.name} needs its released weights, file {filename} (from the "
            f"{spec.weights['tokenizer_source']}); looked for {candidate.resolve()}. Pass weights=PATH "
            f"(CLI: --weights PATH), a released model directory ({spec.weights['model_dir_source']}), or set "
            f"{WEIGHTS_ENV} to the folder holding {filename}. Nothing is downloaded at run time."
        )
    return candidate


def load_tokenizer(
    name_or_path: str | Path,
    weights: str | Path | None = None,
    *,
    random_init: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> UniLIPTokenizer:
    """Build or load a UniLIP tokenizer.

    Args:
        name_or_path: a variant name (``list_variants()``), a variant ``.yaml``, a directory written by
            ``save_pretrained``, a released UniLIP model directory (or its Hugging Face repo id, from the
            local cache), or a released tokenizer ``.pth``.
        weights: for a variant name or YAML, the weights to load (``.pth``, model directory or
            safetensors). Real variants without it look for their file under ``$UNILIP_WEIGHTS``.
        random_init: build a variant with random weights instead (tests, training from scratch); the
            only choice for variants without released weights, such as ``tiny``.
        seed: seed of the random initialisation.
        dtype, device: where the weights end up.

    Raises:
        CheckpointNotFoundError: a named file is missing (the message says where to get it).
        CheckpointKeyError: the file's keys do not fill the model exactly.
    """
    name_or_path = _from_hub_cache(name_or_path)
    path = Path(name_or_path)
    is_variant_ref = path.suffix in (".yaml", ".yml") or not path.exists()
    if is_variant_ref:
        spec = get_variant(name_or_path)
        if weights is not None:
            weights_path = Path(weights)
            if not weights_path.exists():
                raise checkpoints.missing_file_error(weights_path, f"weights for variant {spec.name}")
            return _load_weights_file(spec, weights_path, dtype, device)
        if random_init or not spec.has_released_weights:
            if not random_init:
                logger.warning(
                    "variant %s has no released weights: building it with random weights (seed %d)", spec.name, seed
                )
            model = build_tokenizer(spec.tokenizer, device=device, seed=seed).to(dtype).eval()
            model.weights_source = f"random init (seed {seed})"
            return model
        return _load_weights_file(spec, _default_weights(spec), dtype, device)
    if weights is not None:
        raise ValueError(f"weights= is only for a variant name or YAML; {path} already names the weights")
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        config = json.loads((path / CONFIG_NAME).read_text())
        if config.get("model_type") == "unilip_tokenizer":
            return UniLIPTokenizer.from_pretrained(path, dtype=dtype, device=device)
    return _load_weights_file(None, path, dtype, device)


@dataclass(frozen=True)
class ReferenceInfo:
    """What a model reference is, learned from configs and file headers only (no weights are read).

    Attributes:
        kind: ``tokenizer`` (reconstruction) or ``generator`` (generation, editing, chat, reconstruction).
        tokenizer: the tokenizer's architecture (its ``image_size`` is the native resolution).
    """

    kind: str
    tokenizer: TokenizerConfig


def _width_from_weights(path: Path) -> int:
    """The mlp1 output width (the LLM width, which tells the released variants apart) from a file's header."""
    if path.is_dir() or path.suffix == ".safetensors" or path.name.endswith(".index.json"):
        from safetensors import safe_open

        index = path / "model.safetensors.index.json" if path.is_dir() else path
        if index.name.endswith(".index.json") and index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = {key: index.parent / name for key, name in weight_map.items()}
        else:
            single = path / "model.safetensors" if path.is_dir() else path
            if not single.is_file():
                raise checkpoints.missing_file_error(single, "a safetensors weights file")
            files = {}
            try:
                with safe_open(str(single), framework="pt") as handle:
                    files = {key: single for key in handle.keys()}
            except Exception as error:  # safetensors raises its own error type for a damaged header
                raise checkpoints.CheckpointError(f"{single} is not a readable safetensors file ({error})") from None
        for key in ("model.multi_modal_projector.1.weight", "multi_modal_projector.1.weight"):
            if key in files:
                with safe_open(str(files[key]), framework="pt") as handle:
                    return int(handle.get_slice(key).get_shape()[0])
        raise checkpoints.CheckpointKeyError(
            f"{path}: no multi_modal_projector.1.weight among the weights: not a UniLIP tokenizer or model directory"
        )
    state = checkpoints.load_pth_state_dict(path)
    if "mlp1.1.weight" not in state:
        raise checkpoints.CheckpointKeyError(f"{path}: no mlp1 weights found (key mlp1.1.weight)")
    return int(state["mlp1.1.weight"].shape[0])


def probe_reference(
    name_or_path: str | Path, weights: str | Path | None = None, *, random_init: bool = False
) -> ReferenceInfo:
    """Resolve a model reference as ``load_generator``/``load_tokenizer`` would, without loading weights.

    It raises the same errors for a missing file or an unknown variant, so commands can check a
    reference in a second and only then spend minutes loading it.
    """
    name_or_path = _from_hub_cache(name_or_path)
    if is_generator_reference(name_or_path):
        directory = PRETRAINED_DIR / str(name_or_path) if str(name_or_path) in list_pretrained() else Path(name_or_path)
        payload = json.loads((directory / CONFIG_NAME).read_text())
        if payload.get("model_type") == "unilip_generator":
            return ReferenceInfo("generator", TokenizerConfig.from_dict(payload["tokenizer"]))
        return ReferenceInfo("generator", _variant_for_width(_width_from_weights(directory), str(directory)).tokenizer)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or not path.exists():
        spec = get_variant(name_or_path)
        if weights is not None:
            if not Path(weights).exists():
                raise checkpoints.missing_file_error(Path(weights), f"weights for variant {spec.name}")
        elif spec.has_released_weights and not random_init:
            _default_weights(spec)  # raises, naming the file and where to get it, when it is absent
        return ReferenceInfo("tokenizer", spec.tokenizer)
    if weights is not None:
        raise ValueError(f"weights= is only for a variant name or YAML; {path} already names the weights")
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        if json.loads((path / CONFIG_NAME).read_text()).get("model_type") == "unilip_tokenizer":
            return ReferenceInfo("tokenizer", saved_tokenizer_config(path))
    return ReferenceInfo("tokenizer", _variant_for_width(_width_from_weights(path), str(path)).tokenizer)


def is_generator_reference(model: str | Path) -> bool:
    """A shipped generator, a saved generator directory or a released UniLIP model directory (also as a
    Hugging Face repo id in the local cache; one that is not cached is no generator reference here, and
    the loader then says how to download it)."""
    if str(model) in list_pretrained():
        return True
    try:
        model = _from_hub_cache(model)
    except checkpoints.CheckpointNotFoundError:
        return False
    config = Path(model) / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except ValueError:
        return False
    return model_type in ("unilip_generator", "unilip_internvl")


# ----------------------------------------------------------------------------------- generators
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def list_pretrained() -> list[str]:
    """Names of the small generators trained by this project's own commands and shipped with it."""
    return (
        sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_NAME).is_file())
        if PRETRAINED_DIR.is_dir()
        else []
    )


def _default_model_dir(spec: VariantSpec) -> Path:
    name = spec.weights["model_dir_source"].rsplit("/", 1)[-1]  # "UniLIP-1B"
    candidate = _under_weights_root(name)
    if not candidate.is_dir():
        raise checkpoints.CheckpointNotFoundError(
            f"variant {spec.name} generates with its released model directory {name} (the "
            f"{spec.weights['model_dir_source']}); looked for {candidate.resolve()}. Pass the directory "
            f"(--model PATH), or set {WEIGHTS_ENV} to the folder holding {name}. Nothing is downloaded at run time."
        )
    return candidate


def load_released_generator(
    directory: Path,
    spec: VariantSpec | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """A released UniLIP-1B/3B model directory -> ``UniLIPGenerator``, strictly.

    The architecture is the variant's (identified by the LLM width unless given), with what the
    directory says about itself: ``unilip_factor`` and ``n_query`` from its ``config.json``, the
    vocabulary size from the embedding in the weights, a tied ``lm_head`` when the weights have none,
    and the image-token id from the config.
    """
    from unilip.generator import GeneratorConfig, load_generator_strict

    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise checkpoints.missing_file_error(config_path, "the released model directory's config")
    released = json.loads(config_path.read_text())
    state = checkpoints.from_released_generator_state_dict(checkpoints.load_safetensors_state_dict(directory))
    for key in ("tokenizer.mlp1.linear_1.weight", "language_model.embed_tokens.weight", "latent_queries"):
        if key not in state:
            raise checkpoints.CheckpointKeyError(f"{directory}: no {key} among the weights: not a UniLIP generator")
    if spec is None:
        spec = _variant_for_width(int(state["tokenizer.mlp1.linear_1.weight"].shape[0]), str(directory))
    if spec.generator is None:
        raise ValueError(f"variant {spec.name} has no generator section")
    settings = dict(spec.generator)
    if "unilip_factor" in released:
        settings["unilip_factor"] = float(released["unilip_factor"])
    else:
        logger.warning(
            "%s: config.json has no unilip_factor; using variant %s's %s",
            directory,
            spec.name,
            settings["unilip_factor"],
        )
    settings["n_query"] = int(state["latent_queries"].shape[1])
    if "image_token_id" in released:
        settings["image_context_id"] = int(released["image_token_id"])
    settings["llm"] = {
        **settings["llm"],
        "vocab_size": int(state["language_model.embed_tokens.weight"].shape[0]),
        "tie_word_embeddings": "lm_head.weight" not in state,
    }
    return load_generator_strict(
        spec.tokenizer, GeneratorConfig.from_dict(settings), state, dtype=dtype, device=device, source=str(directory)
    )


def load_generator(
    name_or_path: str | Path,
    weights: str | Path | None = None,
    *,
    random_init: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """Build or load a UniLIP generator, and say where its text tokenizer is.

    Args:
        name_or_path: a shipped model (``list_pretrained()``, e.g. ``tiny-digits``), a directory written
            by ``UniLIPGenerator.save_pretrained``, a released UniLIP-1B/3B model directory (or its Hugging
            Face repo id, ``kanashi6/UniLIP-1B``, from the local cache), or a variant name / YAML with a
            ``generator`` section.
        weights: for a variant, its released model directory.
        random_init: build a variant with random weights (tests; a variant without released weights).
        seed, dtype, device: as for ``load_tokenizer``.

    Returns:
        ``(generator, text tokenizer directory)``.
    """
    from unilip.generator import MODEL_TYPE, GeneratorConfig, UniLIPGenerator, build_generator

    if str(name_or_path) in list_pretrained():
        name_or_path = PRETRAINED_DIR / str(name_or_path)
    path = Path(_from_hub_cache(name_or_path))
    if path.is_dir():
        if weights is not None:
            raise ValueError(f"weights= is only for a variant name or YAML; {path} already names the weights")
        config_path = path / CONFIG_NAME
        if not config_path.is_file():
            raise checkpoints.missing_file_error(config_path, "a generator directory's config")
        if json.loads(config_path.read_text()).get("model_type") == MODEL_TYPE:
            return UniLIPGenerator.from_pretrained(path, dtype=dtype, device=device), path
        return load_released_generator(path, None, dtype, device), path
    spec = get_variant(name_or_path)
    if spec.generator is None:
        raise ValueError(f"variant {spec.name} has no generator section")
    if weights is not None:
        return load_released_generator(Path(weights), spec, dtype, device), Path(weights)
    if random_init or not spec.has_released_weights:
        model = build_generator(spec.tokenizer, GeneratorConfig.from_dict(spec.generator), seed=seed)
        if spec.text_tokenizer is None:
            raise ValueError(f"variant {spec.name} ships no text tokenizer; pass its released model directory")
        return model.to(device=device, dtype=dtype).eval(), spec.text_tokenizer
    directory = _default_model_dir(spec)
    return load_released_generator(directory, spec, dtype, device), directory
