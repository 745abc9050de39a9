"""The UniLIP generator: InternVL3's LLM with learnable queries, a bidirectional connector, SANA.

Reads top to bottom like the official model (``unilip/model/unilip_internvl.py`` upstream):

1. the MLLM: the UniLIP tokenizer's encoder (``encode_features``, the same modules, not a copy) gives
   the reference image's tokens; a Qwen2 LLM (frozen) reads the prompt with those tokens at the
   ``<IMG_CONTEXT>`` positions and 256 learnable query embeddings appended after ``<img>``;
2. the dual condition: the LLM's last-layer hidden states over the *whole* sequence (prompt, reference
   image, queries), with the reference-image positions overwritten by the raw image features after the
   LLM, go through the connector (6 Qwen2 layers with a bidirectional, padding-aware mask, its own
   final norm) and a Linear(H, 2304) projector;
3. the SANA DiT (diffusers ``SanaTransformer2DModel``) denoises in UniLIP's latent space (the
   tokenizer's bridge output of a 448 px image times ``unilip_factor``), cross-attending to that
   condition with its token mask; the tokenizer's pixel decoder turns latents into images.

This file is the model only; sampling (the scheduler, initial noise, classifier-free guidance) lives in
``unilip.pipelines``, as in diffusers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers import SanaTransformer2DModel
from torch import nn
from transformers import Qwen2Config, Qwen2Model

from unilip.persistence import PretrainedMixin, check_config_keys
from unilip.tokenizer import TokenizerConfig, UniLIPTokenizer

# InternVL3 tokenizer ids (upstream unilip/constants.py); the defaults of GeneratorConfig.
IMG_START_ID = 151665  # <img>
IMG_END_ID = 151666  # </img>
IMG_CONTEXT_ID = 151667  # <IMG_CONTEXT>
MODEL_TYPE = "unilip_generator"
# Additive mask value upstream uses for the connector's bidirectional attention.
MASKED = -100000.0
# Parts kept in float32 whatever dtype the generator is loaded or cast in (upstream decodes in float32).
FLOAT32_PARTS = ("tokenizer.decoder.",)


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the generator (the tokenizer's comes from the variant's ``tokenizer`` section).

    Args:
        llm: keyword arguments of ``transformers.Qwen2Config`` (InternVL3's language model).
        dit: keyword arguments of ``diffusers.SanaTransformer2DModel``; ``interpolation_scale: 1``
            adds the 2-D sin-cos position embedding that diffusers 0.32 always added (the released
            checkpoints expect it), ``null`` leaves it out.
        n_query: learnable query embeddings appended after ``<img>`` (256).
        connector_layers: Qwen2 decoder layers in the connector, copied from the LLM's last ones (6).
        unilip_factor: scale of the tokenizer's latent in the DiT's space (10.6 for 1B, 9.5 for 3B).
        image_tokens: reference-image tokens in the prompt (256 for a 448 px image).
        image_start_id, image_end_id, image_context_id: ids of ``<img>``, ``</img>`` and
            ``<IMG_CONTEXT>`` in the text tokenizer (InternVL3's by default; checked against the
            tokenizer when a pipeline is built).
    """

    llm: dict[str, Any]
    dit: dict[str, Any]
    n_query: int = 256
    connector_layers: int = 6
    unilip_factor: float = 1.0
    image_tokens: int = 256
    image_start_id: int = IMG_START_ID
    image_end_id: int = IMG_END_ID
    image_context_id: int = IMG_CONTEXT_ID
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Validate a variant's ``generator`` section into a config."""
        check_config_keys(cls, data, "generator")
        config = cls(**data)
        if config.connector_layers > config.llm["num_hidden_layers"]:
            raise ValueError("connector_layers cannot exceed the LLM's num_hidden_layers")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def connector_attention_mask(token_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The connector's additive 4-D mask: 0 where both tokens are valid, ``-100000`` otherwise.

    Bidirectional (every valid token sees every valid token, before and after it) and padding-aware.

    Args:
        token_mask: ``B x L`` with 1 for real tokens and 0 for padding.

    Returns:
        ``B x 1 x L x L``.
    """
    valid = token_mask.bool()
    both = valid[:, None, :, None] & valid[:, None, None, :]
    return torch.where(both, torch.zeros((), dtype=dtype), torch.full((), MASKED, dtype=dtype))


def position_ids_from_mask(token_mask: torch.Tensor) -> torch.Tensor:
    """Upstream's position ids: ``cumsum(mask) - 1`` clamped at 0, so padding placement changes nothing."""
    return (token_mask.long().cumsum(-1) - 1).clamp(min=0)


class UniLIPGenerator(nn.Module, PretrainedMixin):
    """Tokenizer (vision path and latent space), LLM, queries, connector, projector and SANA DiT.

    State-dict prefixes follow the released model's inner names: ``language_model.``,
    ``latent_queries``, ``llm_connector.``, ``projector.``, ``dit.``, and ``tokenizer.`` (our tokenizer
    layout; ``unilip.checkpoints`` maps the released ``vision_tower`` / ``multi_modal_projector`` /
    ``vae_decoder`` onto it). ``save_pretrained`` / ``from_pretrained`` come from
    :class:`unilip.persistence.PretrainedMixin`.
    """

    model_type = MODEL_TYPE
    model_kind = "generator"

    def __init__(self, tokenizer_config: TokenizerConfig, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        llm_config = Qwen2Config(**config.llm)
        if llm_config.hidden_size != tokenizer_config.llm_hidden_size:
            raise ValueError(
                f"LLM width {llm_config.hidden_size} differs from the tokenizer's mlp1 output "
                f"{tokenizer_config.llm_hidden_size}"
            )
        # The pixel decoder stays float32 whatever the rest is cast to: upstream decodes in float32.
        self.tokenizer = UniLIPTokenizer(tokenizer_config, decoder_float32=True)
        self.language_model = Qwen2Model(llm_config)
        width = llm_config.hidden_size
        self.latent_queries = nn.Parameter(torch.randn(1, config.n_query, width))
        connector_config = Qwen2Config(**{**config.llm, "num_hidden_layers": config.connector_layers})
        connector_config._attn_implementation = "eager"  # upstream builds it eager; the 4-D mask is used as is
        self.llm_connector = Qwen2Model(connector_config)
        # The connector takes hidden states, never token ids: upstream deletes its embedding table.
        self.llm_connector.embed_tokens = None
        self.dit = SanaTransformer2DModel(**config.dit)
        self.projector = nn.Linear(width, self.dit.config.caption_channels)
        # Unused for generation; it makes the LLM a chat model for ``answer`` (tied when the LLM ties).
        self.lm_head = nn.Linear(width, llm_config.vocab_size, bias=False)
        if llm_config.tie_word_embeddings:
            self.lm_head.weight = self.language_model.embed_tokens.weight
        self.weights_source = "random init"

    @property
    def ties_lm_head(self) -> bool:
        return bool(self.config.llm.get("tie_word_embeddings", False))

    @property
    def mllm(self):
        """transformers' ``InternVLForConditionalGeneration`` over *this* model's modules.

        Its vision tower and projector are the tokenizer's ``encoder`` and ``mlp1``, its language model
        and ``lm_head`` are this model's: one set of weights, viewed as InternVL3 for chat
        (``generate``) and ``get_image_features``. It is not a registered sub-module, so state dicts
        name each tensor once.
        """
        cached = self.__dict__.get("_mllm")
        if cached is None:
            from transformers import InternVLConfig, InternVLForConditionalGeneration

            mllm_config = InternVLConfig(
                vision_config=self.tokenizer.encoder.config.to_dict(),
                text_config={"model_type": "qwen2", **self.config.llm},
                image_token_id=self.config.image_context_id,
                downsample_ratio=self.tokenizer.config.downsample_ratio,
                vision_feature_layer=-1,
                vision_feature_select_strategy="default",
                projector_hidden_act="gelu",
            )
            with torch.device("meta"):
                cached = InternVLForConditionalGeneration(mllm_config)
            cached.model.vision_tower = self.tokenizer.encoder
            cached.model.multi_modal_projector = self.tokenizer.mlp1
            cached.model.language_model = self.language_model
            cached.lm_head = self.lm_head
            cached.eval()
            self.__dict__["_mllm"] = cached
        return cached

    def init_connector_from_llm(self) -> None:
        """Copy the LLM's last ``connector_layers`` layers and final norm into the connector (upstream init)."""
        first = len(self.language_model.layers) - self.config.connector_layers
        for index, layer in enumerate(self.llm_connector.layers):
            layer.load_state_dict(self.language_model.layers[first + index].state_dict(), strict=True)
        self.llm_connector.norm.load_state_dict(self.language_model.norm.state_dict(), strict=True)

    # ------------------------------------------------------------------ the dual condition
    def embed_prompt(self, input_ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the reference image's features at its ``<IMG_CONTEXT>`` positions."""
        embeds = self.language_model.embed_tokens(input_ids)
        image_positions = input_ids == self.config.image_context_id
        if image_positions.any():
            if image_features is None:
                raise ValueError("the prompt holds <IMG_CONTEXT> tokens but no image was given")
            count = int(image_positions.sum())
            if count != image_features.shape[0] * image_features.shape[1]:
                raise ValueError(
                    f"{count} <IMG_CONTEXT> positions for {image_features.shape[0]} images of "
                    f"{image_features.shape[1]} tokens"
                )
            embeds = embeds.masked_scatter(image_positions[..., None], image_features.to(embeds.dtype))
        return embeds

    def condition(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The DiT's cross-attention condition and its token mask for a batch of prompts.

        Args:
            input_ids: ``B x L`` prompt ids ending in ``<img>`` (the queries are appended here).
            attention_mask: ``B x L``, 1 for tokens, 0 for padding.
            images: ``B x 3 x 448 x 448`` reference images in [0, 1] (editing), or None.

        Returns:
            (``B x (L + n_query) x caption_channels``, ``B x (L + n_query)`` mask).
        """
        image_features = self.tokenizer.encode_features(images) if images is not None else None
        embeds = self.embed_prompt(input_ids, image_features)
        batch = input_ids.shape[0]
        queries = self.latent_queries.expand(batch, -1, -1).to(embeds.dtype)
        embeds = torch.cat([embeds, queries], dim=1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(batch, self.config.n_query)], dim=1)
        positions = position_ids_from_mask(mask)
        hidden = self.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions
        ).last_hidden_state
        if image_features is not None:
            # After the LLM, the reference image's positions carry its raw features again (upstream L263-265).
            image_positions = torch.cat(
                [
                    input_ids == self.config.image_context_id,
                    torch.zeros_like(mask[:, -self.config.n_query :], dtype=torch.bool),
                ],
                dim=1,
            )
            hidden = hidden.masked_scatter(image_positions[..., None], image_features.to(hidden.dtype))
        bidirectional = connector_attention_mask(mask, hidden.dtype)
        connected = self.llm_connector(
            inputs_embeds=hidden, attention_mask={"full_attention": bidirectional}, position_ids=positions
        ).last_hidden_state
        return self.projector(connected), mask

    # ------------------------------------------------------------------ latent space
    def image_to_latent(self, images: torch.Tensor) -> torch.Tensor:
        """The DiT's target: the tokenizer's latent of [0, 1] 448 px images times ``unilip_factor``."""
        return self.tokenizer.encode(images) * self.config.unilip_factor

    def latent_to_image(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode DiT latents to [0, 1] images at the token stride (448 px for a 16 x 16 latent).

        As upstream: the pixel decoder's output (512 px) is clamped to [-1, 1] first, then resized
        bilinearly without antialiasing to 448 px (``cv2.INTER_LINEAR`` there).
        """
        decoder = self.tokenizer.decoder
        pixels = decoder(latent.to(decoder.conv_in.weight.dtype) / self.config.unilip_factor).float().clamp(-1, 1)
        stride = self.tokenizer.config.token_stride
        target = (latent.shape[-2] * stride, latent.shape[-1] * stride)
        if tuple(pixels.shape[-2:]) != target:
            pixels = torch.nn.functional.interpolate(pixels, size=target, mode="bilinear", align_corners=False)
        return ((pixels + 1) / 2).clamp(0, 1)

    # ------------------------------------------------------------------ persistence
    def weights_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict as saved: a tied ``lm_head.weight`` is left out (it is the embedding table)."""
        state = self.state_dict()
        if self.ties_lm_head:
            state.pop("lm_head.weight", None)
        return state

    def pretrained_state_dict(self) -> dict[str, torch.Tensor]:
        """What ``save_pretrained`` writes: :meth:`weights_state_dict`."""
        return self.weights_state_dict()

    def pretrained_config(self) -> dict[str, Any]:
        """``config.json`` after ``model_type``: the tokenizer's architecture, then the generator's."""
        return {"tokenizer": self.tokenizer.config.to_dict(), "generator": self.config.to_dict()}

    @classmethod
    def config_from_saved(cls, payload: dict[str, Any]) -> tuple[TokenizerConfig, GeneratorConfig]:
        """The (tokenizer, generator) architectures a saved ``config.json`` describes (validated)."""
        return TokenizerConfig.from_dict(payload["tokenizer"]), GeneratorConfig.from_dict(payload["generator"])

    @classmethod
    def from_saved(
        cls,
        config: tuple[TokenizerConfig, GeneratorConfig],
        state: dict[str, torch.Tensor],
        *,
        dtype: torch.dtype,
        device: str | torch.device,
        source: str,
    ) -> UniLIPGenerator:
        """A generator of ``config`` with every parameter from ``state`` (our layout): :func:`load_generator_strict`."""
        return load_generator_strict(*config, state, dtype=dtype, device=device, source=source)


def build_generator(
    tokenizer_config: TokenizerConfig,
    config: GeneratorConfig,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> UniLIPGenerator:
    """A randomly initialised generator (``device="meta"`` builds a real-size one without memory)."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device):
        model = UniLIPGenerator(tokenizer_config, config)
    if str(device) != "meta":
        model.init_connector_from_llm()
        model.weights_source = f"random init (seed {seed})" if seed is not None else "random init"
    return model


def load_generator_strict(
    tokenizer_config: TokenizerConfig,
    config: GeneratorConfig,
    state: dict[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    source: str = "state dict",
) -> UniLIPGenerator:
    """Build a generator without initialising its weights and fill every parameter from ``state``.

    ``state`` is in our layout (``unilip.checkpoints.from_released_generator_state_dict`` converts the
    released one). A tied ``lm_head.weight`` may be absent. Missing, unexpected or misshapen keys raise
    ``CheckpointKeyError`` naming them; nothing is left at its initial value. Floating tensors take
    ``dtype``, except the pixel decoder's (``FLOAT32_PARTS``), which stay float32 as upstream.
    """
    from accelerate import init_empty_weights

    from unilip.checkpoints import check_all_loaded, check_state_matches

    # Parameters on meta, buffers (rotary frequencies, SANA's sin-cos table, image statistics) real.
    with init_empty_weights(include_buffers=False):
        model = UniLIPGenerator(tokenizer_config, config)
    expected = model.weights_state_dict()
    check_state_matches(expected, state, source, "generator")
    converted = {
        k: v.to(dtype=(torch.float32 if k.startswith(FLOAT32_PARTS) else dtype) if v.is_floating_point() else v.dtype)
        for k, v in state.items()
    }
    if model.ties_lm_head:
        converted["lm_head.weight"] = converted["language_model.embed_tokens.weight"]
    model.load_state_dict(converted, strict=True, assign=True)
    if model.ties_lm_head:  # assign=True gave each its own Parameter: tie the head to the embedding again
        model.lm_head.weight = model.language_model.embed_tokens.weight
    check_all_loaded(model, source)
    model.weights_source = source
    return model.to(device).eval()
