"""Training the UniLIP generator: flow matching in the tokenizer's latent space (spec 4.7, 4.8).

Objective (upstream ``language_model/unilip_internvl.py`` L136-159): u ~ sigmoid(N(0, 1)),
idx = floor(1000 u), t = 1000 - idx, sigma = t / 1000 (SANA's scheduler at shift 1);
x_t = (1 - sigma) x0 + sigma eps; the DiT, given the dual condition, predicts v = eps - x0; loss =
MSE, unweighted. 10 % of prompts are the null prompt (classifier-free guidance). The LLM, encoder,
``mlp1``, bridge and pixel decoder never train; stage 1 trains queries, connector and projector with
the DiT frozen, stages 2-3 the DiT too.

Differences from upstream, on purpose: stage 2 loads the UniLIP tokenizer strictly from ``tokenizer``
(upstream's hand-off never loads it, spec 4.8); no EMA (upstream's HF Trainer keeps none).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unilip.generator import UniLIPGenerator
from unilip.training.config import GeneratorTrainConfig
from unilip.training.generator_data import GenerationBatch, GenerationData
from unilip.training.loop import (
    TrainingLoop,
    clear_out_dir,
    start_accelerator,
    uses_weight_decay,
    warmup_cosine_schedule,
)

logger = logging.getLogger(__name__)

NUM_TRAIN_TIMESTEPS = 1000
TRAINED_ALWAYS = ("latent_queries", "llm_connector.", "projector.")


# ----------------------------------------------------------------------------------- model set-up
def _load_component(module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str) -> None:
    from unilip.checkpoints import check_state_matches

    check_state_matches(module.state_dict(), state, source, what)
    module.load_state_dict(state, strict=True)


def load_llm_init(model: UniLIPGenerator, directory: str | Path) -> None:
    """The frozen LLM from an InternVL3-xB-hf directory (``model.language_model.*`` or legacy
    ``language_model.model.*`` keys), strictly; the file's other parts are not the LLM and are skipped."""
    from unilip.checkpoints import load_safetensors_state_dict

    raw = load_safetensors_state_dict(
        directory, keep=lambda k: k.startswith(("model.language_model.", "language_model.model."))
    )
    state = {k.split("language_model.", 1)[1].removeprefix("model."): v for k, v in raw.items()}
    _load_component(model.language_model, state, str(directory), "language model")
    if not model.ties_lm_head:
        head = load_safetensors_state_dict(
            directory, keep=lambda k: k in ("lm_head.weight", "language_model.lm_head.weight")
        )
        _load_component(model.lm_head, {"weight": next(iter(head.values()))} if head else {}, str(directory), "lm_head")


def load_dit_init(model: UniLIPGenerator, directory: str | Path) -> None:
    """The DiT's start from a SANA diffusers directory (``transformer/``), strictly."""
    from unilip.checkpoints import load_safetensors_state_dict

    root = Path(directory)
    root = root / "transformer" if (root / "transformer").is_dir() else root
    _load_component(
        model.dit,
        load_safetensors_state_dict(
            root / "diffusion_pytorch_model.safetensors"
            if (root / "diffusion_pytorch_model.safetensors").is_file()
            else root
        ),
        str(root),
        "SANA transformer",
    )


def load_tokenizer_weights(model: UniLIPGenerator, reference: str | Path) -> None:
    """Stage 2's explicit, strict load of the UniLIP tokenizer (encoder, ``mlp1``, bridge, decoder)."""
    from unilip.tokenizer import UniLIPTokenizer
    from unilip.variants import load_tokenizer

    path = Path(reference)
    tokenizer = (
        UniLIPTokenizer.from_pretrained(path)
        if (path / "config.json").is_file() and "unilip_tokenizer" in (path / "config.json").read_text()
        else load_tokenizer(path)
    )
    if tokenizer.config != model.tokenizer.config:
        raise ValueError(f"tokenizer {reference} has another architecture than the generator's tokenizer")
    _load_component(model.tokenizer, tokenizer.state_dict(), str(reference), "tokenizer")


def require_directory(path: str | Path, what: str, source: str) -> Path:
    """``path`` as a Path, or a FileNotFoundError naming what it should be and where to get it."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} {path} is not a directory; download {source} on a machine with internet "
            "access and give its local path (nothing is downloaded at run time)"
        )
    return path


def check_local_inputs(config: GeneratorTrainConfig) -> None:
    """Every directory the recipe names exists, before anything is built (errors say where to get them)."""
    if config.llm_init:
        require_directory(config.llm_init, "llm_init", "OpenGVLab/InternVL3-1B-hf (or -2B-hf for 3B)")
    if config.dit_init:
        require_directory(
            config.dit_init,
            "dit_init",
            "Efficient-Large-Model/Sana_600M_512px_diffusers (or Sana_1600M_512px_diffusers for 3B)",
        )
    if config.stage == 1 and config.dcae:
        require_directory(config.dcae, "dcae", "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")


def build_initial_generator(config: GeneratorTrainConfig) -> tuple[UniLIPGenerator, Path]:
    """The generator a stage starts from, and the directory of its text tokenizer."""
    from unilip.variants import get_variant, load_generator

    check_local_inputs(config)

    if config.init is not None:
        model, text_dir = load_generator(config.init)
    else:
        spec = get_variant(config.variant)
        if spec.has_released_weights and not (config.llm_init and config.dit_init):
            raise ValueError(
                f"{config.source}: stage {config.stage} of {spec.name} from scratch needs llm_init "
                "(InternVL3-xB-hf) and dit_init (SANA 512 px), or init (a saved generator)"
            )
        model, text_dir = load_generator(config.variant, random_init=True, seed=config.seed)
        if config.llm_init:
            load_llm_init(model, config.llm_init)
            model.init_connector_from_llm()  # upstream copies the *pretrained* LLM's last layers
        if config.dit_init:
            load_dit_init(model, config.dit_init)
    if config.stage >= 2:
        if config.tokenizer is None and config.init is None:
            raise ValueError(
                f"{config.source}: stage {config.stage} needs 'tokenizer' (the UniLIP tokenizer whose "
                "latent space the DiT learns) when it does not start from a saved generator"
            )
        if config.tokenizer is not None:
            load_tokenizer_weights(model, config.tokenizer)
    return model, text_dir


def configure_trainable(model: UniLIPGenerator, stage: int) -> list[str]:
    """Queries, connector and projector always; the DiT from stage 2; nothing else ever. Returns names."""
    model.requires_grad_(False)
    names = []
    for name, parameter in model.named_parameters():
        if name.startswith(TRAINED_ALWAYS) or (stage >= 2 and name.startswith("dit.")):
            parameter.requires_grad_(True)
            names.append(name)
    return names


class DCAETargets(nn.Module):
    """Stage 1 targets: the original DC-AE encoder's latent of a 512 px image times 0.41407."""

    def __init__(self, directory: str | Path, scale: float, size: int) -> None:
        super().__init__()
        from diffusers import AutoencoderDC

        path = require_directory(directory, "dcae", "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")
        self.encoder = (
            AutoencoderDC.from_pretrained(str(path), local_files_only=True).encoder.eval().requires_grad_(False)
        )
        self.scale, self.size = scale, size

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = F.interpolate(images, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(0, 1)
        return self.encoder(images * 2 - 1) * self.scale  # upstream normalises with mean = std = 0.5


@torch.no_grad()
def latent_scale(model: UniLIPGenerator, images: torch.Tensor, limit: int = 1024, batch_size: int = 128) -> float:
    """1 / std of the tokenizer's latents over the first ``limit`` images: puts the DiT's data at unit scale,
    what ``unilip_factor`` (10.6, 9.5) does for the released tokenizers. Deterministic for given images."""
    device = next(model.parameters()).device
    latents = [
        model.tokenizer.encode(images[start : start + batch_size].to(device)).float().cpu()
        for start in range(0, min(limit, len(images)), batch_size)
    ]
    return float(1.0 / torch.cat(latents).std())


# ----------------------------------------------------------------------------------- the objective
def sample_sigmas(batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logit-normal timesteps on SANA's 1000-step grid at shift 1: sigma = (1000 - floor(1000 u)) / 1000."""
    u = torch.sigmoid(torch.randn(batch, generator=generator))
    index = (u * NUM_TRAIN_TIMESTEPS).long().clamp(max=NUM_TRAIN_TIMESTEPS - 1)
    return (NUM_TRAIN_TIMESTEPS - index).float() / NUM_TRAIN_TIMESTEPS


def flow_matching_loss(
    dit: nn.Module,
    x0: torch.Tensor,
    condition: torch.Tensor,
    mask: torch.Tensor,
    sigmas: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """MSE between the DiT's velocity at x_t = (1 - sigma) x0 + sigma eps and the target eps - x0."""
    s = sigmas.view(-1, 1, 1, 1).to(x0)
    noisy = (1 - s) * x0 + s * noise
    prediction = dit(
        noisy.to(condition.dtype),
        encoder_hidden_states=condition,
        timestep=(sigmas * NUM_TRAIN_TIMESTEPS).to(x0),
        encoder_attention_mask=mask,
        return_dict=False,
    )[0]
    return F.mse_loss(prediction.float(), (noise - x0).float())


class _TrainForward(nn.Module):
    """The training forward as one ``forward`` (so DDP sees it): condition, noise, loss."""

    def __init__(self, model: UniLIPGenerator) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, sources, x0, sigmas, noise) -> torch.Tensor:
        condition, mask = self.model.condition(input_ids, attention_mask, sources)
        return flow_matching_loss(self.model.dit, x0, condition, mask, sigmas, noise)


# ----------------------------------------------------------------------------------- the trainer
class GeneratorTrainer(TrainingLoop):
    """One stage of generator training into ``out_dir`` (resumes from its last checkpoint; the loop, logging,
    checkpoints and resume are :class:`unilip.training.loop.TrainingLoop`'s)."""

    kind = "generator"
    loss_key = "loss"

    def __init__(self, config: GeneratorTrainConfig, out_dir: str | Path, progress: bool = True) -> None:
        from unilip.prompts import load_text_tokenizer

        self.config, self.out_dir, self.progress = config, Path(out_dir), progress
        check_local_inputs(config)
        self.accelerator = start_accelerator(config.mixed_precision, config.seed)
        self.model, self.text_dir = build_initial_generator(config)
        self.model.to(self.accelerator.device)
        if self.model.tokenizer.config.image_size != config.data.size and config.stage >= 2:
            raise ValueError(
                f"data.size {config.data.size} differs from the tokenizer's image size "
                f"{self.model.tokenizer.config.image_size}: the latent grid would not match the DiT's"
            )
        self.data = GenerationData(config.data)
        if config.optim.epochs is not None:  # upstream's epochs and warm-up ratio, in steps of this data
            steps = math.ceil(config.optim.epochs * len(self.data) / config.data.batch_size)
            warmup = math.ceil((config.optim.warmup_ratio or 0.0) * steps)
            config = self.config = dataclasses.replace(
                config, optim=dataclasses.replace(config.optim, max_steps=steps, warmup_steps=warmup)
            )
            logger.info(
                "%s epochs of %d examples: %d steps, %d warm-up", config.optim.epochs, len(self.data), steps, warmup
            )
        if config.unilip_factor is not None:
            factor = (
                latent_scale(self.model, self.data.scale_images())
                if config.unilip_factor == "auto"
                else float(config.unilip_factor)
            )
            self.model.config = dataclasses.replace(self.model.config, unilip_factor=factor)
            logger.info("unilip_factor = %.4f (%s)", factor, config.unilip_factor)
        self.text_tokenizer = load_text_tokenizer(self.text_dir)
        self.trainable = configure_trainable(self.model, config.stage)
        # Frozen parts run in eval mode (no dropout); the trained ones have none either.
        self.model.eval()
        self.targets = (
            DCAETargets(config.dcae, config.dcae_scale, config.dcae_size).to(self.accelerator.device)
            if config.stage == 1
            else None
        )
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                (decay if uses_weight_decay(name, parameter) else no_decay).append(parameter)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.optim.lr,
            betas=tuple(config.optim.betas),
        )
        self.scheduler = warmup_cosine_schedule(self.optimizer, config.optim)
        self.forward_model, self.optimizer = self.accelerator.prepare(_TrainForward(self.model), self.optimizer)
        self.step = 0

    # ------------------------------------------------------------------ one step
    def _latents(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.targets is not None:
                return self.targets(images).float()
            return self.model.image_to_latent(images).float()

    def next_batch(self, step: int) -> GenerationBatch:
        """This process' examples of ``step`` (a function of seed, step and rank only)."""
        return self.data.batch(
            step,
            self.config.data.batch_size,
            self.config.seed,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )

    def training_step(self, batch: GenerationBatch) -> dict[str, Any]:
        """One flow-matching step on ``batch``; returns the logged loss, gradient norm, task and rate."""
        from unilip.prompts import generation_prompt, tokenize

        device = self.accelerator.device
        prompts = [generation_prompt(text, self.model.config.image_tokens) for text in batch.texts]
        tokens = tokenize(self.text_tokenizer, prompts).to(device)
        x0 = self._latents(batch.targets.to(device))
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
        sigmas = sample_sigmas(len(prompts), generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        sources = batch.sources.to(device) if batch.sources is not None else None
        with self.accelerator.autocast():
            loss = self.forward_model(tokens.input_ids, tokens.attention_mask, sources, x0, sigmas, noise)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        grad_norm = self.accelerator.clip_grad_norm_(
            [p for g in self.optimizer.param_groups for p in g["params"]], self.config.optim.grad_clip
        )
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "task": batch.task,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    # ------------------------------------------------------------------ persistence
    def _trained_state(self) -> dict[str, torch.Tensor]:
        parameters = dict(self.model.named_parameters())
        return {name: parameters[name].detach().contiguous().cpu() for name in self.trainable}

    def write_weights(self, directory: Path) -> None:
        """Only what trains: the frozen parts are the start's, rebuilt from the same config on resume."""
        from safetensors.torch import save_file

        save_file(self._trained_state(), str(directory / "trained.safetensors"))

    def read_weights(self, directory: Path, state: dict[str, Any]) -> None:
        """Copy the trained parameters of a checkpoint into the model (they must be exactly this stage's)."""
        from safetensors.torch import load_file

        trained = load_file(str(directory / "trained.safetensors"))
        if set(trained) != set(self.trainable):
            raise ValueError(f"{directory}: its trained parameters differ from this stage's")
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in trained.items():
                parameters[name].copy_(value)

    def save_final(self) -> Path:
        """The whole generator (``save_pretrained``) plus its text tokenizer, in ``out_dir/final``."""
        from unilip.provenance import environment_report

        final = self.out_dir / "final"
        if self.accelerator.is_main_process:
            self.model.save_pretrained(final)
            self.text_tokenizer.save_pretrained(str(final))
            (final / "training.json").write_text(
                json.dumps(
                    {
                        "config": self.config.to_dict(),
                        "steps": self.step,
                        "trained": sorted({n.split(".")[0] for n in self.trainable}),
                        "environment": environment_report(),
                    },
                    indent=2,
                )
            )
        self.accelerator.wait_for_everyone()
        return final


def train_generator(
    config: GeneratorTrainConfig,
    out_dir: str | Path,
    *,
    max_steps: int | None = None,
    progress: bool = True,
    fresh: bool = False,
) -> Path:
    """Run one generator training stage into ``out_dir``; returns the saved generator directory."""
    return GeneratorTrainer(config, clear_out_dir(out_dir, fresh), progress=progress).train(max_steps)
