"""The UniLIP tokenizer: a CLIP-like encoder that also reconstructs pixels.

Reads top to bottom like the official model (`tokenizer/modeling/dc_ae_vit*.py` upstream):

1. encoder: InternViT (transformers' ``InternVLVisionModel``), last layer, CLS dropped;
2. InternVL pixel shuffle (scale 0.5) and the ``mlp1`` projector: the *understanding feature*
   (``encode_features``), exactly what InternVL3 feeds its LLM and what self-distillation targets;
3. bridge: three residual MLP blocks at the LLM width H, then LN -> Linear(H, 32) -> GELU ->
   Linear(32, 32); tokens reshaped row-major to a ``B x 32 x h x w`` latent (``encode``);
4. pixel decoder: the decoder of diffusers' ``AutoencoderDC``; its output (nominally [-1, 1]) is
   resized from the decoder's stride (32 for the real model) back to the token stride (28), e.g.
   512 -> 448; sizes that are not a multiple of the token stride (256) are reflect-padded first and
   cropped back, as the official 256 px evaluator does.

Image inputs of ``encode_features`` / ``encode`` / ``reconstruct`` (see :func:`as_unit_images`):
``B x 3 x H x W`` RGB tensors, either floating point in [0, 1] or ``uint8`` in 0..255 (divided by 255);
anything else is refused with what was expected. The ImageNet normalisation the encoder expects
happens inside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_dc import Decoder as DCAEDecoder
from torch import nn
from transformers import InternVLConfig, InternVLVisionConfig, InternVLVisionModel
from transformers.models.internvl.modeling_internvl import InternVLMultiModalProjector, InternVLVisionEmbeddings

from unilip.persistence import PretrainedMixin, check_config_keys, read_saved_config
from unilip.pixels import IMAGENET_MEAN, IMAGENET_STD

# Float inputs may leave [0, 1] by this much (half an 8-bit grey level): rounding in resizes and in
# normalise / un-normalise round trips, never a different convention ([-1, 1], 0..255, ImageNet-normalised).
UNIT_RANGE_TOLERANCE = 0.5 / 255
IMAGE_CONTRACT = (
    "pass a B x 3 x H x W float tensor in [0, 1] (or uint8 in 0..255); "
    "torchvision.transforms.functional.to_tensor converts a PIL image"
)


def as_unit_images(images: Any) -> torch.Tensor:
    """Check an image batch against the tokenizer's input contract and return it as floats in [0, 1].

    Contract: a ``torch.Tensor`` of shape ``B x 3 x H x W``, RGB, either floating point with values in
    [0, 1] (up to ``UNIT_RANGE_TOLERANCE``; returned unchanged, any float dtype) or ``uint8`` in 0..255
    (returned as ``float32 / 255``).

    Raises:
        TypeError: not a tensor (a PIL image, a numpy array), or a dtype other than float / uint8.
        ValueError: the wrong shape, or floats outside [0, 1] ([-1, 1], 0..255 or ImageNet-normalised
            inputs), or NaN; the message gives the range found and the one expected.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor, got {type(images).__module__}.{type(images).__name__}: {IMAGE_CONTRACT}"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B x 3 x H x W; got shape {tuple(images.shape)}: {IMAGE_CONTRACT}")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise TypeError(f"images have dtype {images.dtype}: {IMAGE_CONTRACT}")
    if images.numel() and not images.is_meta:
        low, high = (float(v) for v in torch.aminmax(images.detach()))
        if not (low >= -UNIT_RANGE_TOLERANCE and high <= 1 + UNIT_RANGE_TOLERANCE):  # NaN fails too
            hint = (
                " ([-1, 1] or ImageNet-normalised? the tokenizer normalises inside)"
                if low < -0.1
                else " (0..255 floats? divide by 255)"
                if high > 2
                else ""
            )
            raise ValueError(f"image values span [{low:.4g}, {high:.4g}], outside [0, 1]{hint}: {IMAGE_CONTRACT}")
    return images


class InternViTEmbeddings(InternVLVisionEmbeddings):
    """transformers' InternViT embeddings, with the position table interpolated in float32 as the original.

    The original InternViT (``_get_pos_embed``) interpolates the position table in float32 and casts the
    result back; transformers interpolates in the weights' dtype, which in bfloat16 moves about a fifth
    of the entries by one bf16 unit at 280 px. Same parameters, same keys.
    """

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The ``1 x (1 + h*w) x D`` position embeddings for a ``height x width`` input (CLS row first)."""
        table = self.position_embeddings
        num_positions = table.shape[1] - 1
        if embeddings.shape[1] - 1 == num_positions and height == width:
            return table  # the native grid: the original's interpolation is the identity there
        side = int(round(num_positions**0.5))
        dim = table.shape[-1]
        grid = table[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, size=(height // self.patch_size[0], width // self.patch_size[1]), mode="bicubic", align_corners=False
        )
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(table.dtype)
        return torch.cat((table[:, :1], grid), dim=1)


class Float32DCAEDecoder(DCAEDecoder):
    """diffusers' DC-AE decoder that stays float32 whatever dtype its model is cast to (same keys).

    Upstream decodes in float32 while the rest of the generator runs in bfloat16 (its ``vae_decoder``
    is built in float32 and transformers keeps that dtype when loading); decoding in bfloat16 moves
    pixels by 3-5 levels of 255 instead of 1. A ``.to(dtype)`` / ``.half()`` / ``.bfloat16()`` on any
    enclosing module moves this decoder's tensors but never changes their float32 dtype or values.
    """

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        def keep_float32(tensor: torch.Tensor) -> torch.Tensor:
            moved = fn(tensor)
            if tensor.dtype == torch.float32 and moved.dtype != torch.float32:
                # A dtype cast: keep the device and layout fn chose, but the original float32 values.
                return torch.empty_like(moved, dtype=torch.float32).copy_(tensor)
            return moved

        return super()._apply(keep_float32, recurse)


@dataclass(frozen=True)
class TokenizerConfig:
    """Everything that defines a tokenizer's architecture and its preprocessing contract.

    Args:
        vision: keyword arguments of ``transformers.InternVLVisionConfig`` (the InternViT).
        llm_hidden_size: H, the width of the ``mlp1`` output (the LLM width: 896 for 1B, 1536 for 3B).
        decoder: keyword arguments of diffusers' DC-AE ``Decoder`` (``in_channels`` is always 3).
        latent_channels: width of the bridge output and of the decoder input (32 for UniLIP).
        bridge_blocks: number of residual MLP blocks in the bridge (3 for UniLIP).
        downsample_ratio: InternVL pixel-shuffle scale (0.5: 2 x 2 patches become one token).
        image_size: the native resolution (448 for the real variants).
        image_mean, image_std: normalisation applied to [0, 1] inputs before the encoder.
    """

    vision: dict[str, Any]
    llm_hidden_size: int
    decoder: dict[str, Any]
    latent_channels: int = 32
    bridge_blocks: int = 3
    downsample_ratio: float = 0.5
    image_size: int = 448
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        """Validate a plain mapping (from YAML or ``config.json``) into a config."""
        check_config_keys(cls, data, "tokenizer")
        missing = [k for k in ("vision", "llm_hidden_size", "decoder") if k not in data]
        if missing:
            raise ValueError(f"tokenizer config lacks required keys {missing}")
        values = dict(data)
        for key in ("image_mean", "image_std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def patch_size(self) -> int:
        patch = self.vision.get("patch_size", 14)
        return int(patch[0] if isinstance(patch, (list, tuple)) else patch)

    @property
    def token_stride(self) -> int:
        """Input pixels covered by one latent token along each axis (14 x 2 = 28 for UniLIP)."""
        return int(round(self.patch_size / self.downsample_ratio))

    @property
    def decoder_stride(self) -> int:
        """Spatial up-sampling factor of the pixel decoder (32 for DC-AE f32c32)."""
        return 2 ** (len(self.decoder["block_out_channels"]) - 1)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent setting."""
        if self.downsample_ratio != 0.5:
            raise ValueError(f"downsample_ratio must be 0.5 (InternVL's pixel shuffle); got {self.downsample_ratio}")
        block_out = self.decoder["block_out_channels"]
        if block_out[-1] % self.latent_channels:
            raise ValueError(
                f"decoder block_out_channels[-1]={block_out[-1]} must be a multiple of "
                f"latent_channels={self.latent_channels} (DC-AE input shortcut)"
            )
        if self.image_size % self.token_stride:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the token stride {self.token_stride}")


def pixel_shuffle(features: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
    """InternVL's pixel shuffle, with its exact permute order.

    Args:
        features: ``B x rows x cols x C`` grid of patch tokens.
        scale_factor: 0.5 merges each 2 x 2 neighbourhood into one token of width ``4C``.

    Returns:
        ``B x rows*s x cols*s x C/s^2``.
    """
    n, rows, cols, channels = features.shape
    if (rows * scale_factor) % 1 or (cols * scale_factor) % 1:
        raise ValueError(f"pixel shuffle needs a patch grid divisible by {1 / scale_factor}; got {rows}x{cols}")
    x = features.reshape(n, rows, int(cols * scale_factor), int(channels / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.reshape(n, int(cols * scale_factor), int(rows * scale_factor), int(channels / scale_factor**2))
    return x.permute(0, 2, 1, 3).contiguous()


class BridgeResBlock(nn.Module):
    """``x + MLP(x)`` with MLP = LN(eps 1e-6) -> Linear -> GELU -> Linear (keys ``mlp.{0,1,3}``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(width, eps=1e-6), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


def _projector_config(config: TokenizerConfig) -> InternVLConfig:
    # InternVLMultiModalProjector reads its widths from a full InternVL config.
    return InternVLConfig(
        vision_config=config.vision,
        text_config={"model_type": "qwen2", "hidden_size": config.llm_hidden_size},
        downsample_ratio=config.downsample_ratio,
        projector_hidden_act="gelu",
    )


class UniLIPTokenizer(nn.Module, PretrainedMixin):
    """Encoder (InternViT + pixel shuffle + ``mlp1``), bridge and DC-AE pixel decoder.

    State-dict prefixes: ``encoder.`` (transformers InternViT names), ``mlp1.`` (transformers
    projector names), ``down_blocks.`` / ``down_mlp.`` (the bridge, official names) and ``decoder.``
    (diffusers DC-AE decoder names). ``unilip.checkpoints`` converts to and from the released layouts.
    ``save_pretrained`` / ``from_pretrained`` come from :class:`unilip.persistence.PretrainedMixin`.

    Args:
        config: the architecture.
        decoder_float32: keep the pixel decoder in float32 whatever dtype the model is cast to (the
            generator's decoder, as upstream; see :class:`Float32DCAEDecoder`).
    """

    model_type = "unilip_tokenizer"
    model_kind = "tokenizer"

    def __init__(self, config: TokenizerConfig, *, decoder_float32: bool = False) -> None:
        super().__init__()
        self.config = config
        # Where the weights came from ("random init" until a loader fills them); recorded in results.
        self.weights_source = "random init"
        width = config.llm_hidden_size
        vision_config = InternVLVisionConfig(**config.vision)
        self.encoder = InternVLVisionModel(vision_config)
        # Swapping the class (it adds no state) instead of building new embeddings keeps the random
        # initialisation, its RNG stream and the parameter names exactly as transformers makes them.
        self.encoder.embeddings.__class__ = InternViTEmbeddings
        self.mlp1 = InternVLMultiModalProjector(_projector_config(config))
        self.down_blocks = nn.ModuleList(BridgeResBlock(width) for _ in range(config.bridge_blocks))
        self.down_mlp = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, config.latent_channels),
            nn.GELU(),
            nn.Linear(config.latent_channels, config.latent_channels),
        )
        decoder_class = Float32DCAEDecoder if decoder_float32 else DCAEDecoder
        self.decoder = decoder_class(in_channels=3, latent_channels=config.latent_channels, **config.decoder)
        self.reset_buffers()
        self._init_bridge()

    def reset_buffers(self, device: str | torch.device | None = None) -> None:
        """(Re)create the non-persistent normalisation buffers, e.g. after loading onto a meta model.

        They are always float32 (see :meth:`_apply`), whatever the default dtype or the model's dtype.
        """
        kwargs = {} if device is None else {"device": device}
        for name in ("image_mean", "image_std"):
            values = torch.tensor(getattr(self.config, name), dtype=torch.float32, **kwargs).view(1, 3, 1, 1)
            self.register_buffer(name, values, persistent=False)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        # InternVL3 normalises in float32 (its image processor, on the CPU) before casting to the model's
        # dtype; rounding the ImageNet constants to bfloat16 (0.485 -> 0.484375) moves the encoder's input
        # by up to ~4e-3. So a ``.to(dtype)`` / ``.half()`` / ``.bfloat16()`` (also via an enclosing
        # module) moves these buffers but leaves them float32: they are non-persistent and derived from
        # the config, so re-creating them on the new device is exact and changes no saved format.
        # ``normalize`` then runs in float32 (type promotion) and ``_features`` casts its result.
        super()._apply(fn, recurse)
        mean, std = self._buffers.get("image_mean"), self._buffers.get("image_std")
        if mean is not None and std is not None and {mean.dtype, std.dtype} != {torch.float32}:
            self.reset_buffers(mean.device)
        return self

    def _init_bridge(self) -> None:
        # Upstream initialises the bridge with trunc-normal(0.02) linears and unit LayerNorms.
        for module in [*self.down_blocks.modules(), *self.down_mlp.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ encoder
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] RGB to the encoder's normalised input, in float32 (or wider) as InternVL3 does."""
        return (images - self.image_mean) / self.image_std

    def _check_grid(self, images: torch.Tensor) -> None:
        stride = self.config.token_stride
        height, width = images.shape[-2:]
        if height % stride or width % stride:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the token stride {stride}; "
                "use reconstruct(), which pads such sizes, or resize first"
            )

    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """The understanding feature: post-``mlp1`` tokens, ``B x N x H`` with N = (S/stride)^2.

        This is what InternVL3 feeds its LLM and what the self-distillation loss compares.

        Args:
            images: ``B x 3 x H x W`` RGB, float in [0, 1] or uint8 (:func:`as_unit_images`); H and W
                multiples of the token stride (28 for the real models).

        Raises:
            TypeError, ValueError: inputs outside that contract, saying what was expected.
        """
        return self._features(as_unit_images(images))

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        self._check_grid(images)
        pixel_values = self.normalize(images).to(self.encoder.embeddings.patch_embeddings.projection.weight.dtype)
        hidden = self.encoder(pixel_values=pixel_values).last_hidden_state[:, 1:]
        rows = images.shape[-2] // self.config.patch_size
        cols = images.shape[-1] // self.config.patch_size
        grid = hidden.float().reshape(hidden.shape[0], rows, cols, hidden.shape[-1])
        shuffled = pixel_shuffle(grid, self.config.downsample_ratio)
        tokens = shuffled.reshape(shuffled.shape[0], -1, shuffled.shape[-1])
        return self.mlp1(tokens.to(self.mlp1.linear_1.weight.dtype))

    def bridge(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Bridge ``B x N x H`` features to the ``B x latent x rows x cols`` latent (row-major)."""
        x = features
        for block in self.down_blocks:
            x = block(x)
        x = self.down_mlp(x)
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[-1], *grid)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latent ``B x latent_channels x H/stride x W/stride`` of images (same contract as
        :meth:`encode_features`: float in [0, 1] or uint8, sides multiples of the token stride)."""
        return self._latent(as_unit_images(images))

    def _latent(self, images: torch.Tensor) -> torch.Tensor:
        return self.bridge(self._features(images), self._token_grid(images))

    def _token_grid(self, images: torch.Tensor) -> tuple[int, int]:
        stride = self.config.token_stride
        return images.shape[-2] // stride, images.shape[-1] // stride

    def encode_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both the latent and the understanding feature, computed once (for distillation); same
        contract as :meth:`encode_features`."""
        images = as_unit_images(images)
        features = self._features(images)
        return self.bridge(features, self._token_grid(images)), features

    # ------------------------------------------------------------------ decoder
    def decode(self, latent: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
        """Decode a latent to pixels in (nominally) [-1, 1] at ``token_stride`` px per latent cell.

        The decoder produces ``decoder_stride`` px per cell (512 for a 16 x 16 latent); the result is
        resized bilinearly, without antialiasing, to ``token_stride`` px per cell (448), as upstream.
        """
        pixels = self.decoder(latent.to(self.decoder.conv_in.weight.dtype))
        stride = self.config.token_stride
        target = (latent.shape[-2] * stride, latent.shape[-1] * stride)
        if tuple(pixels.shape[-2:]) != target:
            pixels = F.interpolate(pixels.float(), size=target, mode="bilinear", align_corners=align_corners)
        return pixels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruct [0, 1] images whose sides are multiples of the token stride; output in ~[-1, 1]."""
        return self.decode(self.encode(images))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruct images of any size >= one token; returns float images in [0, 1] of the same size.

        Args:
            images: ``B x 3 x H x W`` RGB, float in [0, 1] or uint8 in 0..255 (:func:`as_unit_images`).
                A PIL image is refused: ``torchvision.transforms.functional.to_tensor`` converts one.

        Sizes that are not a multiple of the token stride take the official padded path: reflect-pad
        to the next multiple, encode, decode, resize with ``align_corners=True`` and crop back.

        Raises:
            TypeError, ValueError: inputs outside that contract, saying what was expected.
        """
        images = as_unit_images(images)
        stride = self.config.token_stride
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % stride, (-width) % stride
        if pad_h or pad_w:
            top, left = pad_h // 2, pad_w // 2
            padded = F.pad(images, (left, pad_w - left, top, pad_h - top), mode="reflect")
            pixels = self.decode(self.encode(padded), align_corners=True)
            pixels = pixels[..., top : top + height, left : left + width]
        else:
            pixels = self.decode(self.encode(images))
        return (pixels.float().clamp(-1, 1) + 1) / 2

    def latent_shape(self, height: int, width: int | None = None) -> tuple[int, int, int]:
        """Latent shape (C, h, w) for an input of the given size (after padding, if needed)."""
        width = height if width is None else width
        stride = self.config.token_stride
        return (self.config.latent_channels, math.ceil(height / stride), math.ceil(width / stride))

    # ------------------------------------------------------------------ persistence
    def pretrained_config(self) -> dict[str, Any]:
        """``config.json`` after ``model_type``: a format version, then the architecture."""
        return {"format_version": 1, **self.config.to_dict()}

    @classmethod
    def config_from_saved(cls, payload: dict[str, Any]) -> TokenizerConfig:
        """The architecture a saved ``config.json`` describes (validated)."""
        payload = dict(payload)
        payload.pop("format_version", None)
        return TokenizerConfig.from_dict(payload)

    @classmethod
    def from_saved(
        cls,
        config: TokenizerConfig,
        state: dict[str, torch.Tensor],
        *,
        dtype: torch.dtype,
        device: str | torch.device,
        source: str,
    ) -> UniLIPTokenizer:
        """A tokenizer of ``config`` with every parameter from ``state`` (our layout), strictly."""
        return load_strict(config, state, dtype=dtype, device=device, source=source)


def saved_tokenizer_config(directory: str | Path) -> TokenizerConfig:
    """The architecture of a directory written by ``UniLIPTokenizer.save_pretrained`` (its weights unread)."""
    return UniLIPTokenizer.config_from_saved(
        read_saved_config(Path(directory), UniLIPTokenizer.model_type, UniLIPTokenizer.model_kind)
    )


def build_tokenizer(
    config: TokenizerConfig, device: str | torch.device = "cpu", seed: int | None = None
) -> UniLIPTokenizer:
    """Build a randomly initialised tokenizer (``device="meta"`` builds it without memory)."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device):
        return UniLIPTokenizer(config)


def load_strict(
    config: TokenizerConfig,
    state: Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    source: str = "state dict",
) -> UniLIPTokenizer:
    """Build a tokenizer of ``config`` without initialising it and fill every parameter from ``state``.

    Raises:
        CheckpointKeyError: listing missing and unexpected keys, or shape mismatches.
    """
    from unilip.checkpoints import check_all_loaded, check_state_matches

    model = build_tokenizer(config, device="meta")
    check_state_matches(model.state_dict(), state, source, "tokenizer")
    converted = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in state.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    model.reset_buffers(device)
    model.weights_source = source
    check_all_loaded(model, source)
    return model.eval()
