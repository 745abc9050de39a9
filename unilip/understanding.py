"""InternVL3 for understanding, with its vision encoder optionally replaced by a UniLIP tokenizer's.

UniLIP evaluates understanding as stock InternVL3 whose InternViT and ``mlp1`` are replaced by the UniLIP
encoder (upstream ``tokenizer/extract_vit.py``); everything else (the LLM, its ``lm_head``, the chat
conventions of :mod:`unilip.internvl`) stays InternVL3's. This module is that model side:

- :func:`load_internvl`: a stock InternVL3 directory in transformers' format (the ``OpenGVLab/InternVL3-1B-hf``
  layout: ``config.json`` with ``model_type: internvl`` and ``model.safetensors`` or its shards), local only;
- :func:`swap_vision_encoder`: puts a :class:`~unilip.tokenizer.UniLIPTokenizer`'s InternViT (wrapped in
  :class:`UniLIPVisionTower`) and ``mlp1`` in InternVL3's ``vision_tower`` and ``multi_modal_projector`` slots,
  so that InternVL3's own ``get_image_features`` (and so ``forward`` / ``generate``) computes exactly
  ``tokenizer.encode_features``;
- :func:`load_understanding_model`: both, from a directory and a tokenizer reference;
- :class:`InternVLChat`: batched greedy answers to :class:`ChatRequest` s (InternVL3's chat conventions from
  :mod:`unilip.internvl`), each answer independent of the batch it ran in.

Pixel convention (converted once, in :class:`UniLIPVisionTower`): InternVL3's ``pixel_values`` are 448 px tiles
normalised with ImageNet's mean and std (:func:`unilip.internvl.tiles_to_tensor`), while ``encode_features`` takes
[0, 1] images and normalises them inside with the tokenizer's ``image_mean`` / ``image_std``. When those are
ImageNet's (every released variant, and ``tiny``), InternVL3's ``pixel_values`` already are the encoder's input
and pass through untouched, so ``get_image_features(tiles_to_tensor(tiles)).pooler_output`` equals
``encode_features(to_tensor(tiles))`` bit for bit in float32; otherwise the tower re-normalises them with one
affine map, ``x * std_in / std_tok + (mean_in - mean_tok) / std_tok`` per channel.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unilip.checkpoints import CheckpointError, CheckpointNotFoundError
from unilip.internvl import (
    DEFAULT_MAX_TILES,
    IM_END,
    IMAGE,
    INTERNVL3_SYSTEM_MESSAGE,
    build_chat_prompt,
    layout_question,
    max_tiles_for,
    preprocess_image,
    upscales_first_image,
)
from unilip.pixels import IMAGENET_MEAN, IMAGENET_STD
from unilip.tokenizer import TokenizerConfig, UniLIPTokenizer

if TYPE_CHECKING:
    from PIL import Image
    from transformers import InternVLConfig, InternVLForConditionalGeneration

__all__ = [
    "INTERNVL_INPUT_MEAN",
    "INTERNVL_INPUT_STD",
    "ChatBatch",
    "ChatRequest",
    "InternVLChat",
    "UniLIPVisionTower",
    "check_encoder_compatible",
    "load_internvl",
    "load_understanding_model",
    "probe_understanding",
    "swap_vision_encoder",
]

logger = logging.getLogger(__name__)

# The normalisation of InternVL3's ``pixel_values`` (``build_transform`` / :func:`unilip.internvl.tiles_to_tensor`).
INTERNVL_INPUT_MEAN = IMAGENET_MEAN
INTERNVL_INPUT_STD = IMAGENET_STD

_INTERNVL_LAYOUT = (
    "a stock InternVL3 directory in transformers' format (the OpenGVLab/InternVL3-1B-hf layout: config.json with "
    "model_type 'internvl', and model.safetensors or model.safetensors.index.json with its shards)"
)
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class UniLIPVisionTower(nn.Module):
    """InternVL3's ``vision_tower`` slot, filled by a UniLIP tokenizer's InternViT (shared, not copied).

    Takes InternVL3's ``pixel_values`` (ImageNet-normalised tiles) and returns the InternViT's output, as the
    stock tower does; the pixel shuffle and the projector (the tokenizer's ``mlp1``) stay InternVL3's code path.
    The pixels are re-normalised only when the tokenizer normalises differently from ImageNet (see the module
    docstring); for ImageNet-normalised tokenizers the input reaches the encoder untouched.

    Args:
        tokenizer: the tokenizer whose ``encoder`` this tower runs (registered here as ``encoder``).
    """

    def __init__(self, tokenizer: UniLIPTokenizer) -> None:
        super().__init__()
        self.encoder = tokenizer.encoder
        mean_in = torch.tensor(INTERNVL_INPUT_MEAN, dtype=torch.float64)
        std_in = torch.tensor(INTERNVL_INPUT_STD, dtype=torch.float64)
        mean_tok = torch.tensor(tokenizer.config.image_mean, dtype=torch.float64)
        std_tok = torch.tensor(tokenizer.config.image_std, dtype=torch.float64)
        self.renormalizes = not (torch.equal(mean_in, mean_tok) and torch.equal(std_in, std_tok))
        # Plain float32 tensors, not buffers: a cast of the model to bfloat16 must not round them.
        self._scale = (std_in / std_tok).float().view(1, 3, 1, 1)
        self._shift = ((mean_in - mean_tok) / std_tok).float().view(1, 3, 1, 1)

    @property
    def config(self):
        """The InternViT's ``InternVLVisionConfig`` (as the stock tower exposes its own)."""
        return self.encoder.config

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any):
        """The InternViT's output for ImageNet-normalised ``pixel_values`` (``N x 3 x S x S``)."""
        if self.renormalizes:
            dtype = pixel_values.dtype
            scale, shift = self._scale.to(pixel_values.device), self._shift.to(pixel_values.device)
            pixel_values = (pixel_values.float() * scale + shift).to(dtype)
        return self.encoder(pixel_values=pixel_values, **kwargs)


def _side(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def check_encoder_compatible(internvl_config: InternVLConfig, tokenizer_config: TokenizerConfig, source: str) -> None:
    """Refuse a tokenizer whose encoder cannot stand in for this InternVL3's, naming the setting that differs.

    Checked: the feature width (``llm_hidden_size``) against the LLM's ``hidden_size``, the pixel-shuffle
    ``downsample_ratio``, the tile ``image_size`` and ``patch_size`` (which fix the 256 tokens per tile the
    prompts are built with), and that InternVL3 reads the last layer without its CLS token (what
    ``encode_features`` computes).

    Raises:
        ValueError: the first mismatch, with both values.
    """
    text_width = int(internvl_config.text_config.hidden_size)
    if tokenizer_config.llm_hidden_size != text_width:
        raise ValueError(
            f"tokenizer {source}: its feature width llm_hidden_size={tokenizer_config.llm_hidden_size} differs from "
            f"the InternVL3 language model's hidden_size={text_width}; pair UniLIP-1B (896) with InternVL3-1B and "
            "UniLIP-3B (1536) with InternVL3-2B"
        )
    if float(tokenizer_config.downsample_ratio) != float(internvl_config.downsample_ratio):
        raise ValueError(
            f"tokenizer {source}: downsample_ratio={tokenizer_config.downsample_ratio} differs from InternVL3's "
            f"downsample_ratio={internvl_config.downsample_ratio}"
        )
    vision = internvl_config.vision_config
    for name, ours, theirs in (
        ("image_size", tokenizer_config.image_size, _side(vision.image_size)),
        ("patch_size", tokenizer_config.patch_size, _side(vision.patch_size)),
    ):
        if int(ours) != theirs:
            raise ValueError(
                f"tokenizer {source}: {name}={ours} differs from InternVL3's vision_config.{name}={theirs} "
                "(the number of image tokens per tile would not match the prompt)"
            )
    layer = internvl_config.vision_feature_layer
    strategy = internvl_config.vision_feature_select_strategy
    if layer != -1 or strategy != "default":
        raise ValueError(
            f"this InternVL3 reads vision_feature_layer={layer} with vision_feature_select_strategy={strategy!r}; "
            "the UniLIP encoder's feature is the last layer without CLS (-1, 'default'), as stock InternVL3's"
        )


def swap_vision_encoder(
    internvl_model: InternVLForConditionalGeneration, tokenizer: UniLIPTokenizer
) -> InternVLForConditionalGeneration:
    """Replace InternVL3's vision tower and projector by ``tokenizer``'s InternViT and ``mlp1``, in place.

    Afterwards ``internvl_model.get_image_features(pixel_values).pooler_output`` is
    ``tokenizer.encode_features(images)`` for ``pixel_values`` the ImageNet-normalised ``images`` (see the
    module docstring for the pixel convention), and ``forward`` / ``generate`` feed those features to the LLM.
    The tokenizer's modules are shared, not copied: they are moved to the LLM's device and dtype (so the
    tokenizer moves too), and a later change to the tokenizer's weights shows in the model. InternVL3's own
    vision weights are dropped; ``config.vision_config`` becomes the tokenizer's. The result is for inference;
    its state dict no longer has InternVL3's layout (do not ``save_pretrained`` it as InternVL3).

    Args:
        internvl_model: a transformers ``InternVLForConditionalGeneration`` (e.g. from :func:`load_internvl`).
        tokenizer: a UniLIP tokenizer whose ``llm_hidden_size``, ``downsample_ratio``, ``image_size`` and
            ``patch_size`` match this InternVL3 (:func:`check_encoder_compatible`).

    Returns:
        ``internvl_model``, with ``vision_encoder_source`` set to the tokenizer's ``weights_source``.

    Raises:
        TypeError: not an InternVL model or not a UniLIP tokenizer.
        ValueError: an incompatible tokenizer, naming the setting.
    """
    from transformers import InternVLForConditionalGeneration

    if not isinstance(internvl_model, InternVLForConditionalGeneration):
        raise TypeError(
            f"expected a transformers InternVLForConditionalGeneration, got {type(internvl_model).__name__}"
        )
    if not isinstance(tokenizer, UniLIPTokenizer):
        raise TypeError(f"expected a unilip UniLIPTokenizer, got {type(tokenizer).__name__}")
    source = getattr(tokenizer, "weights_source", "tokenizer")
    check_encoder_compatible(internvl_model.config, tokenizer.config, source)
    embeddings = internvl_model.get_input_embeddings().weight
    tokenizer.encoder.to(device=embeddings.device, dtype=embeddings.dtype)
    tokenizer.mlp1.to(device=embeddings.device, dtype=embeddings.dtype)
    inner = internvl_model.model
    inner.vision_tower = UniLIPVisionTower(tokenizer)
    inner.multi_modal_projector = tokenizer.mlp1
    internvl_model.config.vision_config = tokenizer.encoder.config
    internvl_model.vision_encoder_source = source
    inner.vision_tower.train(internvl_model.training)  # the model's mode, whatever the tokenizer's was
    inner.multi_modal_projector.train(internvl_model.training)
    return internvl_model


def _check_internvl_dir(directory: Path) -> dict[str, Any]:
    """The directory's ``config.json``, after checking the files a stock InternVL3 needs are there."""
    if not directory.exists():
        raise CheckpointNotFoundError(
            f"{directory} does not exist. Expected {_INTERNVL_LAYOUT}. Only local paths are read: download "
            "the model on a machine with internet access (`hf download OpenGVLab/InternVL3-1B-hf`) and pass "
            "its directory. Nothing is downloaded at run time."
        )
    if not directory.is_dir():
        raise CheckpointNotFoundError(f"{directory} is not a directory. Expected {_INTERNVL_LAYOUT}.")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointNotFoundError(f"{config_path} not found. Expected {_INTERNVL_LAYOUT}.")
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type != "internvl":
        hint = (
            " This is the original remote-code InternVL layout; use its transformers conversion "
            "(OpenGVLab/InternVL3-1B-hf / InternVL3-2B-hf)."
            if model_type == "internvl_chat"
            else ""
        )
        raise CheckpointError(
            f"{config_path} has model_type {model_type!r}, not 'internvl'.{hint} Expected {_INTERNVL_LAYOUT}."
        )
    present = [name for name in _WEIGHT_FILES if (directory / name).is_file()]
    if not present:
        raise CheckpointNotFoundError(
            f"{directory / 'model.safetensors'} not found (nor {', '.join(_WEIGHT_FILES[1:])}). "
            f"Expected {_INTERNVL_LAYOUT}."
        )
    if present[0].endswith(".index.json"):
        index = json.loads((directory / present[0]).read_text())
        shards = sorted(set(index.get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (directory / shard).is_file()]
        if missing:
            raise CheckpointNotFoundError(
                f"{directory / missing[0]} not found: {present[0]} lists {len(shards)} shards, "
                f"{len(missing)} missing ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})."
            )
    return config


def load_internvl(
    directory: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> InternVLForConditionalGeneration:
    """Load a stock InternVL3 (``OpenGVLab/InternVL3-1B-hf`` layout) from a local directory, offline, in eval mode.

    Args:
        directory: the model directory (``config.json`` with ``model_type: internvl`` and its weights).
        dtype, device: where the weights end up.

    Raises:
        CheckpointNotFoundError: the directory, its ``config.json`` or its weights (a shard) are missing; the
            message names the missing file and the expected layout.
        CheckpointError: a ``config.json`` of another model type (the remote-code ``internvl_chat`` layout included).
    """
    from transformers import InternVLForConditionalGeneration

    path = Path(directory).expanduser()
    _check_internvl_dir(path)
    model = InternVLForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.vision_encoder_source = f"InternVL3 ({path})"
    return model.to(device).eval()


def load_understanding_model(
    internvl_dir: str | Path,
    tokenizer_ref: UniLIPTokenizer | str | Path | None = None,
    *,
    tokenizer_weights: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> InternVLForConditionalGeneration:
    """The InternVL3 chat model of an understanding evaluation: stock, or with a UniLIP encoder swapped in.

    Args:
        internvl_dir: a stock InternVL3 directory (:func:`load_internvl`).
        tokenizer_ref: ``None`` for stock InternVL3 (the baseline); else a loaded :class:`UniLIPTokenizer` or
            anything :func:`unilip.variants.load_tokenizer` accepts (a variant name, a saved tokenizer
            directory, a released ``1b_unilip.pth``, a released UniLIP model directory ...).
        tokenizer_weights: ``weights=`` for ``load_tokenizer`` when ``tokenizer_ref`` is a variant name or YAML.
        dtype, device: where both end up.

    Raises:
        ValueError: a tokenizer that does not fit this InternVL3 (checked before the InternVL3 weights are read).
        CheckpointNotFoundError, CheckpointError: as :func:`load_internvl` and ``load_tokenizer``.
    """
    path = Path(internvl_dir).expanduser()
    if tokenizer_ref is None:
        if tokenizer_weights is not None:
            raise ValueError("tokenizer_weights= needs a tokenizer_ref (a variant name or YAML)")
        return load_internvl(path, dtype=dtype, device=device)
    _check_internvl_dir(path)
    if isinstance(tokenizer_ref, UniLIPTokenizer):
        if tokenizer_weights is not None:
            raise ValueError("tokenizer_weights= is for a tokenizer reference, not a loaded tokenizer")
        tokenizer = tokenizer_ref
    else:
        from unilip.variants import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_ref, weights=tokenizer_weights, dtype=dtype, device=device)
    from transformers import InternVLConfig

    internvl_config = InternVLConfig.from_pretrained(path, local_files_only=True)
    check_encoder_compatible(
        internvl_config, tokenizer.config, getattr(tokenizer, "weights_source", str(tokenizer_ref))
    )
    return swap_vision_encoder(load_internvl(path, dtype=dtype, device=device), tokenizer)


def probe_understanding(
    internvl_dir: str | Path, tokenizer_ref: str | Path | None = None, *, tokenizer_weights: str | Path | None = None
) -> dict[str, Any]:
    """Check what :func:`load_understanding_model` would load, reading configs and file headers only.

    Raises the errors the load would raise (a missing file, another layout, a tokenizer that does not fit this
    InternVL3) in a second, before any weight is read; returns the InternVL3 ``config.json`` as a dict.
    """
    path = Path(internvl_dir).expanduser()
    config = _check_internvl_dir(path)
    if tokenizer_ref is None:
        if tokenizer_weights is not None:
            raise ValueError("tokenizer_weights= needs a tokenizer_ref (a variant name or YAML)")
        return config
    from transformers import InternVLConfig

    from unilip.variants import probe_reference

    info = probe_reference(tokenizer_ref, tokenizer_weights)
    check_encoder_compatible(
        InternVLConfig.from_pretrained(path, local_files_only=True), info.tokenizer, str(tokenizer_ref)
    )
    return config


# ------------------------------------------------------------------------------------------------------ chat


@dataclass(frozen=True)
class ChatRequest:
    """One question to InternVL3: its text, its images, their tile limit and the system message.

    Args:
        question: the user text, with one ``<image>`` tag per image where each goes (e.g. from
            :func:`unilip.internvl.layout_question`), or none: images without tags go first, as InternVL's
            ``chat`` puts them (:func:`unilip.internvl.build_chat_prompt`).
        images: PIL images, zero, one or several (stored as a tuple).
        max_num: ``dynamic_preprocess``'s tile limit per image (:func:`unilip.internvl.max_tiles_for`).
        system_message: InternVL3's default unless given.
        upscale_first: upscale the first image 2x before tiling (:func:`unilip.internvl.upscales_first_image`).
    """

    question: str
    images: Sequence[Image.Image] = ()
    max_num: int = DEFAULT_MAX_TILES
    system_message: str = INTERNVL3_SYSTEM_MESSAGE
    upscale_first: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        if self.max_num < 1:
            raise ValueError(f"max_num is at least 1; got {self.max_num}")

    @classmethod
    def from_parts(
        cls, parts: Sequence[str | Image.Image], benchmark: str | None = None, system_message: str | None = None
    ) -> ChatRequest:
        """A request as VLMEvalKit's InternVL wrapper makes one for ``benchmark`` (a VLMEvalKit dataset name).

        ``parts``: text and PIL images, interleaved as the benchmark's message has them; the question is laid out
        by :func:`unilip.internvl.layout_question`, each image gets :func:`unilip.internvl.max_tiles_for`'s limit,
        and the first one is upscaled when :func:`unilip.internvl.upscales_first_image` says so. ``system_message``:
        InternVL3's default when None.
        """
        images = [part for part in parts if not isinstance(part, str)]
        slots = [part if isinstance(part, str) else IMAGE for part in parts]
        return cls(
            question=layout_question(slots),
            images=images,
            max_num=max_tiles_for(benchmark, len(images)) if images else DEFAULT_MAX_TILES,
            system_message=INTERNVL3_SYSTEM_MESSAGE if system_message is None else system_message,
            upscale_first=bool(images) and upscales_first_image(benchmark),
        )


@dataclass
class ChatBatch:
    """What :meth:`InternVLChat.answer` feeds ``generate``: left-padded ids, their mask, every request's tiles
    concatenated in request order (``None`` when no request has an image), and each request's tile counts."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor | None
    tiles_per_request: list[list[int]]


class InternVLChat:
    """Greedy batched answers from an InternVL3 chat model (stock or with a UniLIP encoder swapped in).

    Prompts follow :func:`unilip.internvl.build_chat_prompt` (each ``<image>`` becomes ``<img>`` + tiles x
    tokens-per-tile ``<IMG_CONTEXT>`` + ``</img>``); pixels follow :func:`unilip.internvl.preprocess_image`
    (tiling at the model's tile size). A batch is left-padded with an attention mask, so the position ids
    ``generate`` derives from the mask, the padded keys it masks out and the KV cache leave every row as it
    would be alone: an answer does not depend on its batch (up to float rounding of differently shaped
    kernels, which the tests check does not change the greedy tokens in float32).

    Args:
        model: a transformers ``InternVLForConditionalGeneration`` (:func:`load_understanding_model`).
        text_tokenizer: InternVL3's text tokenizer, the one in its directory
            (:func:`unilip.prompts.load_text_tokenizer`).
        tile_size, tokens_per_tile: default from ``model.config``: the vision ``image_size`` and
            ``(image_size / patch_size * downsample_ratio)^2`` (448 and 256 for InternVL3).
    """

    def __init__(
        self,
        model: InternVLForConditionalGeneration,
        text_tokenizer: Any,
        *,
        tile_size: int | None = None,
        tokens_per_tile: int | None = None,
    ) -> None:
        from unilip.prompts import IMG_CONTEXT

        config = model.config
        vision = config.vision_config
        self.model = model
        self.text_tokenizer = text_tokenizer
        self.tile_size = int(tile_size) if tile_size is not None else _side(vision.image_size)
        if tokens_per_tile is None:
            side = self.tile_size // _side(vision.patch_size) * float(config.downsample_ratio)
            tokens_per_tile = int(round(side * side))
        self.tokens_per_tile = int(tokens_per_tile)
        self.image_token_id = self._token_id(IMG_CONTEXT)
        if self.image_token_id != int(config.image_token_id):
            raise ValueError(
                f"the text tokenizer's {IMG_CONTEXT} id {self.image_token_id} differs from the model's "
                f"image_token_id={config.image_token_id}: not this model's tokenizer"
            )
        self.eos_token_id = self._token_id(IM_END)
        pad = text_tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else self._token_id("<|endoftext|>")

    @classmethod
    def from_directory(
        cls,
        internvl_dir: str | Path,
        tokenizer_ref: UniLIPTokenizer | str | Path | None = None,
        **kwargs: Any,
    ) -> InternVLChat:
        """:func:`load_understanding_model` (same arguments) with the text tokenizer of ``internvl_dir``."""
        from unilip.prompts import load_text_tokenizer

        text_tokenizer = load_text_tokenizer(Path(internvl_dir).expanduser())
        return cls(load_understanding_model(internvl_dir, tokenizer_ref, **kwargs), text_tokenizer)

    def _token_id(self, token: str) -> int:
        token_id = self.text_tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.text_tokenizer.unk_token_id:
            raise ValueError(f"the text tokenizer has no {token} token: it is not an InternVL3 tokenizer")
        return int(token_id)

    def _tiles(self, image: Image.Image, max_num: int, upscale: bool = False) -> torch.Tensor:
        return preprocess_image(image, max_num=max_num, upscale=upscale, image_size=self.tile_size)

    def prompt(self, request: ChatRequest, tiles_per_image: Sequence[int]) -> str:
        """The chat text of ``request`` whose images make ``tiles_per_image`` tiles."""
        return build_chat_prompt(
            request.question, tiles_per_image, request.system_message, tokens_per_tile=self.tokens_per_tile
        )

    def prepare(self, requests: Sequence[ChatRequest]) -> ChatBatch:
        """Tokenise and tile ``requests`` (non-empty) into one left-padded batch."""
        if not requests:
            raise ValueError("no requests to prepare")
        rows, pixels, tiles_per_request = [], [], []
        for request in requests:
            tiles = [
                self._tiles(image, request.max_num, upscale=request.upscale_first and index == 0)
                for index, image in enumerate(request.images)
            ]
            counts = [int(t.shape[0]) for t in tiles]
            ids = self.text_tokenizer(self.prompt(request, counts), add_special_tokens=False)["input_ids"]
            rows.append(ids)
            pixels.extend(tiles)
            tiles_per_request.append(counts)
        length = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, length - len(ids) :] = 1
        pixel_values = torch.cat(pixels) if pixels else None
        return ChatBatch(input_ids, attention_mask, pixel_values, tiles_per_request)

    @torch.no_grad()
    def answer(self, requests: Sequence[ChatRequest], max_new_tokens: int = 64, **generate_kwargs: Any) -> list[str]:
        """Greedy answers to ``requests``, in order: generation stops at ``<|im_end|>`` (or ``max_new_tokens``);
        only the new tokens are decoded (special tokens skipped), stripped.

        ``generate_kwargs`` go to transformers' ``generate`` (e.g. ``repetition_penalty``); sampling is off.
        """
        if not requests:
            return []
        batch = self.prepare(requests)
        embeddings = self.model.get_input_embeddings().weight
        inputs = {
            "input_ids": batch.input_ids.to(embeddings.device),
            "attention_mask": batch.attention_mask.to(embeddings.device),
        }
        if batch.pixel_values is not None:
            inputs["pixel_values"] = batch.pixel_values.to(device=embeddings.device, dtype=embeddings.dtype)
        generated = self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            use_cache=True,
            **generate_kwargs,
        )
        answers = []
        for row in generated[:, batch.input_ids.shape[1] :].tolist():
            if self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id)]
            answers.append(self.text_tokenizer.decode(row, skip_special_tokens=True).strip())
        return answers
