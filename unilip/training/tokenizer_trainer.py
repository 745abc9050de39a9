"""Training the UniLIP tokenizer: stage 1 (frozen encoder), stages 2-3 (everything, self-distillation).

Upstream recipe (``tokenizer/utils/train_utils_stage{1,2}.py``): AdamW with weight decay only on
weights of dimension >= 2 that are not norms, biases or embeddings; encoder and ``mlp1`` at 0.1 x the
base rate in stages 2-3; gradient clipping 1.0; linear warm-up then cosine to ``end_lr`` (each group
scaled from its own rate); an EMA of all parameters, which is what a stage saves. Losses: L2,
LPIPS (VGG), the ConvNeXt-S logit term, self-distillation (MSE of the post-``mlp1`` tokens to a frozen
copy of the encoder as it was when the stage began, times lambda) and, from ``discriminator_start``,
a hinge GAN with LeCam regularisation.

Differences from upstream, on purpose: stage 1 runs the frozen encoder without stochastic depth
(transformers' InternViT has none; upstream leaves InternVL3's 0.1 drop-path active by accident), and
the discriminator's schedule counts steps in one unit (upstream mixes per-process and global steps).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unilip.tokenizer import UniLIPTokenizer
from unilip.training.checkpointing import (check_or_write_config, interruption_reported, list_checkpoints,
                                           load_optimizer, rng_state, save_optimizer, set_rng_state, trim_log,
                                           write_checkpoint)
from unilip.training.config import OptimConfig, TrainConfig
from unilip.training.data import TrainImages, make_batch

logger = logging.getLogger(__name__)

ENCODER_PREFIXES = ("encoder.", "mlp1.")
# Upstream's no-decay rule: parameters of dimension < 2, and names containing any of these.
NO_DECAY_SUBSTRINGS = ("ln", "bias", "embedding", "norm", "gamma", "embed")


# ----------------------------------------------------------------------------------- model set-up
def load_initial_model(config: TrainConfig, device: str | torch.device = "cpu") -> UniLIPTokenizer:
    """The tokenizer a stage starts from: ``config.init`` (a saved directory or weights for the
    variant), else the variant built with random weights from ``config.seed``."""
    from unilip.variants import get_variant, load_tokenizer

    spec = get_variant(config.variant)
    if config.init is None:
        if spec.has_released_weights:
            raise ValueError(f"{config.source}: stage {config.stage} of {spec.name} needs 'init' (the weights to start "
                             "from: a saved tokenizer directory or released weights); random init of a real-size "
                             "tokenizer is not a recipe")
        return load_tokenizer(config.variant, random_init=True, seed=config.seed, device=device)
    init = Path(config.init)
    if init.is_dir() and (init / "config.json").is_file() and "unilip_tokenizer" in (init / "config.json").read_text():
        model = UniLIPTokenizer.from_pretrained(init, device=device)
        if model.config != spec.tokenizer:
            raise ValueError(f"init {init} has another architecture than variant {spec.name}")
        return model
    return load_tokenizer(config.variant, weights=init, device=device)


def configure_trainable(model: UniLIPTokenizer, stage: int) -> None:
    """Stage 1 freezes the encoder and ``mlp1`` (no gradients, hence no optimizer state); 2-3 train all."""
    model.requires_grad_(True)
    if stage == 1:
        model.encoder.requires_grad_(False)
        model.mlp1.requires_grad_(False)


class FeatureTeacher(nn.Module):
    """A frozen copy of the encoder and ``mlp1`` as they were when the stage began (eval, no gradients)."""

    def __init__(self, model: UniLIPTokenizer) -> None:
        super().__init__()
        # Copy only the understanding path: the teacher never needs the bridge or the decoder.
        parts = {name: getattr(model, name) for name in ("down_blocks", "down_mlp", "decoder")}
        for name in parts:
            setattr(model, name, None)
        try:
            self.tokenizer = copy.deepcopy(model)
        finally:
            for name, module in parts.items():
                setattr(model, name, module)
        self.tokenizer.requires_grad_(False)
        self.tokenizer.eval()
        self.calls = 0  # counted so tests can check that lambda = 0 never runs the teacher

    def train(self, mode: bool = True) -> "FeatureTeacher":
        return super().train(False)  # always eval: no drop-path, fixed statistics

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.tokenizer.encode_features(images)


class _TrainForward(nn.Module):
    """The training forward as one ``forward`` (so DDP sees it): reconstruction and, if asked, features."""

    def __init__(self, tokenizer: UniLIPTokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, images: torch.Tensor, with_features: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if with_features:
            latent, features = self.tokenizer.encode_with_features(images)
        else:
            latent, features = self.tokenizer.encode(images), None
        return self.tokenizer.decode(latent), features


# ----------------------------------------------------------------------------------- optimisation
def uses_weight_decay(name: str, parameter: torch.Tensor) -> bool:
    """Upstream's rule: decay only weights of dimension >= 2 that are not norms, biases or embeddings."""
    return parameter.ndim >= 2 and not any(part in name for part in NO_DECAY_SUBSTRINGS)


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: (encoder part or not) x (decay or not); frozen parameters are left out entirely."""
    groups: dict[tuple[bool, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_encoder = config.stage >= 2 and name.startswith(ENCODER_PREFIXES)
        decay = uses_weight_decay(name, parameter)
        group = groups.setdefault((is_encoder, decay), {
            "params": [], "names": [], "weight_decay": config.optim.weight_decay if decay else 0.0,
            "lr": config.optim.lr * (config.optim.encoder_lr_scale if is_encoder else 1.0),
            "group_name": f"{'encoder' if is_encoder else 'base'}{'' if decay else '_no_decay'}"})
        group["params"].append(parameter)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def lr_factor(step: int, optim: OptimConfig) -> float:
    """Linear warm-up to 1, then cosine down to ``end_lr / lr`` at ``max_steps``."""
    if step < optim.warmup_steps:
        return step / max(1, optim.warmup_steps)
    end = optim.end_lr / optim.lr
    progress = min(1.0, (step - optim.warmup_steps) / max(1, optim.max_steps - optim.warmup_steps))
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters with the upstream groups, and its warm-up + cosine schedule."""
    groups = parameter_groups(model, config)
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(groups, lr=config.optim.lr, betas=tuple(config.optim.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config.optim))
    return optimizer, scheduler


# ----------------------------------------------------------------------------------- the trainer
class TokenizerTrainer:
    """One stage of tokenizer training into ``out_dir`` (resumes from its last checkpoint)."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, progress: bool = True) -> None:
        from accelerate import Accelerator
        from diffusers.training_utils import EMAModel

        self.config, self.out_dir, self.progress = config, Path(out_dir), progress
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())
        torch.manual_seed(config.seed)
        self.model = load_initial_model(config, device=self.accelerator.device)
        configure_trainable(self.model, config.stage)
        self.model.train()
        # The teacher is the encoder as it is now, before this stage changes it; lambda = 0 builds none.
        self.teacher = FeatureTeacher(self.model) if config.distills else None
        self.optimizer, self.scheduler = build_optimizer(self.model, config)
        self.ema = EMAModel(self.model.parameters(), decay=config.optim.ema_decay)
        self.perceptual = self._build_perceptual_losses()
        self.discriminator = self.disc_optimizer = self.lecam = None
        if config.losses.gan_weight > 0 and config.losses.discriminator_start < config.optim.max_steps:
            self._build_discriminator()
        self.forward_model, self.optimizer = self.accelerator.prepare(_TrainForward(self.model), self.optimizer)
        self.step = 0
        self.images: TrainImages | None = None

    def _build_perceptual_losses(self) -> dict[str, nn.Module]:
        # Built at start-up so that a missing weights file stops the run before any step, not later.
        losses: dict[str, nn.Module] = {}
        if self.config.losses.lpips_weight > 0:
            from unilip.training.losses import LPIPSLoss

            losses["lpips"] = LPIPSLoss("vgg", self.config.losses.lpips_vgg_weights).to(self.accelerator.device)
        if self.config.losses.convnext_weight > 0:
            from unilip.training.losses import ConvNeXtLogitLoss

            losses["convnext"] = ConvNeXtLogitLoss(self.config.losses.convnext_weights).to(self.accelerator.device)
        return losses

    def _build_discriminator(self) -> None:
        from unilip.training.losses import LeCamEMA, PatchDiscriminator

        losses = self.config.losses
        self.discriminator = PatchDiscriminator(base=losses.discriminator_base).to(self.accelerator.device)
        self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=losses.discriminator_lr,
                                                betas=tuple(self.config.optim.betas),
                                                weight_decay=self.config.optim.weight_decay)
        self.lecam = LeCamEMA(decay=0.999).to(self.accelerator.device)
        self.discriminator, self.disc_optimizer = self.accelerator.prepare(self.discriminator, self.disc_optimizer)

    # ------------------------------------------------------------------ one step
    def training_step(self, images: torch.Tensor) -> dict[str, float]:
        """One optimisation step (and one discriminator step once the GAN is on); returns the logged terms."""
        losses_cfg = self.config.losses
        gan_on = self.discriminator is not None and self.step >= losses_cfg.discriminator_start
        if gan_on:
            from unilip.training.losses import generator_adversarial_loss, hinge_d_loss
        with self.accelerator.autocast():
            recon, features = self.forward_model(images, with_features=self.teacher is not None)
        recon01 = (recon.float() + 1) / 2
        terms: dict[str, torch.Tensor] = {"l2": F.mse_loss(recon01, images)}
        total = losses_cfg.l2_weight * terms["l2"]
        for name, module in self.perceptual.items():
            terms[name] = module(images, recon01)
            total = total + getattr(losses_cfg, f"{name}_weight") * terms[name]
        if self.teacher is not None:
            terms["distill"] = F.mse_loss(features.float(), self.teacher(images).float())
            total = total + losses_cfg.distill_weight * terms["distill"]
        if gan_on:
            terms["gan_g"] = generator_adversarial_loss(self.discriminator(recon01))
            total = total + losses_cfg.gan_weight * terms["gan_g"]
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(total)
        grad_norm = self.accelerator.clip_grad_norm_(
            [p for group in self.optimizer.param_groups for p in group["params"]], self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if gan_on:
            real_logits = self.discriminator(images)
            fake_logits = self.discriminator(recon01.detach())
            terms["gan_d"] = hinge_d_loss(real_logits, fake_logits)
            terms["lecam"] = self.lecam.regularizer(real_logits, fake_logits)
            self.disc_optimizer.zero_grad(set_to_none=True)
            self.accelerator.backward(terms["gan_d"] + losses_cfg.lecam_weight * terms["lecam"])
            self.disc_optimizer.step()
            self.lecam.update(real_logits.detach(), fake_logits.detach())
        self.ema.step(self.model.parameters())
        self.step += 1
        record = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        record.update({"loss/total": float(total.detach()), "grad_norm": float(grad_norm)})
        record.update({f"lr/{g['group_name']}": g["lr"] for g in self.optimizer.param_groups})
        return record

    # ------------------------------------------------------------------ loop
    def train(self, max_steps: int | None = None) -> Path:
        """Run (or resume) until ``max_steps`` (default: the config's); returns the saved EMA tokenizer.

        Raises:
            Interrupted: on Ctrl-C, saying the step reached and the checkpoint a rerun resumes from
                (checkpoints are written whole or not at all, so nothing partial is kept).
        """
        total = max_steps or self.config.optim.max_steps
        with interruption_reported(f"train tokenizer ({self.config.name}, stage {self.config.stage})", self.out_dir,
                                   total, lambda: self.step):
            return self._train(total)

    def _train(self, total: int) -> Path:
        from tqdm.auto import tqdm

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_or_write_config()
        self._resume()
        if self.accelerator.is_main_process:
            trim_log(self.out_dir, self.step)  # also without a checkpoint: a rerun from step 0 logs afresh
        if self.images is None:
            self.images = TrainImages(self.config.data.sources, self.config.data.size, self.config.data.hflip)
        log_path = self.out_dir / "log.jsonl"
        bar = tqdm(total=total, initial=self.step, desc=f"{self.config.name} stage {self.config.stage}", unit="step",
                   disable=not (self.progress and self.accelerator.is_main_process))
        with log_path.open("a") as log:
            while self.step < total:
                images = make_batch(self.images, self.step, self.config.data.batch_size, self.config.seed,
                                    self.accelerator.process_index, self.accelerator.num_processes)
                started = time.perf_counter()
                record = self.training_step(images.to(self.accelerator.device))
                record.update({"step": self.step, "seconds": time.perf_counter() - started})
                if self.accelerator.is_main_process:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss/total']:.4f}")
                if self.step % self.config.checkpoint_every == 0 or self.step == total:
                    self.save_checkpoint()
        bar.close()
        return self.save_final()

    # ------------------------------------------------------------------ persistence
    def _check_or_write_config(self) -> None:
        check_or_write_config(self.out_dir, {k: v for k, v in self.config.to_dict().items() if k != "source"})

    def save_checkpoint(self) -> Path:
        """Weights, EMA, optimizer(s), scheduler, step and RNG states: written whole or not at all."""
        if not self.accelerator.is_main_process:
            self.accelerator.wait_for_everyone()
            return self.out_dir
        final = write_checkpoint(self.out_dir, self.step, self.config.keep_checkpoints, self._write_checkpoint)
        self.accelerator.wait_for_everyone()
        return final

    def _write_checkpoint(self, tmp: Path) -> None:
        from safetensors.torch import save_file

        names = [name for name, _ in self.model.named_parameters()]
        save_file({k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()},
                  str(tmp / "model.safetensors"))
        save_file({n: s.detach().contiguous().cpu() for n, s in zip(names, self.ema.shadow_params)},
                  str(tmp / "ema.safetensors"))
        save_optimizer(self.optimizer, tmp, "optimizer")
        state = {"step": self.step, "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
                 "ema_optimization_step": self.ema.optimization_step}
        if self.discriminator is not None:
            unwrapped = self.accelerator.unwrap_model(self.discriminator)
            save_file({k: v.detach().contiguous().cpu() for k, v in
                       {**unwrapped.state_dict(), **{f"lecam.{k}": v for k, v in self.lecam.state_dict().items()}}.items()},
                      str(tmp / "discriminator.safetensors"))
            save_optimizer(self.disc_optimizer, tmp, "disc_optimizer")
        (tmp / "state.json").write_text(json.dumps(state))

    def _resume(self) -> None:
        from safetensors.torch import load_file

        checkpoints = list_checkpoints(self.out_dir)
        if not checkpoints:
            return
        latest = checkpoints[-1]
        state = json.loads((latest / "state.json").read_text())
        self.model.load_state_dict(load_file(str(latest / "model.safetensors")), strict=True)
        ema = load_file(str(latest / "ema.safetensors"))
        names = [name for name, _ in self.model.named_parameters()]
        if set(ema) != set(names):
            raise ValueError(f"{latest}: EMA weights do not match the model's parameters")
        self.ema.shadow_params = [ema[n].to(self.accelerator.device) for n in names]
        self.ema.optimization_step = state["ema_optimization_step"]
        load_optimizer(self.optimizer, latest, "optimizer")
        self.scheduler.load_state_dict(state["scheduler"])
        if self.discriminator is not None:
            saved = load_file(str(latest / "discriminator.safetensors"))
            lecam = {k[len("lecam."):]: v for k, v in saved.items() if k.startswith("lecam.")}
            self.accelerator.unwrap_model(self.discriminator).load_state_dict(
                {k: v for k, v in saved.items() if not k.startswith("lecam.")}, strict=True)
            self.lecam.load_state_dict(lecam, strict=True)
            load_optimizer(self.disc_optimizer, latest, "disc_optimizer")
        set_rng_state(state["rng"])
        self.step = state["step"]
        logger.info("resumed %s from %s (step %d)", self.config.name, latest, self.step)

    def save_final(self) -> Path:
        """Save the EMA weights as a tokenizer directory (``out_dir/final``) with the run's provenance."""
        from unilip.provenance import environment_report

        final = self.out_dir / "final"
        if self.accelerator.is_main_process:
            parameters = list(self.model.parameters())
            self.ema.store(parameters)
            self.ema.copy_to(parameters)
            self.model.save_pretrained(final)
            self.ema.restore(parameters)
            (final / "training.json").write_text(json.dumps({
                "config": self.config.to_dict(), "steps": self.step, "weights": "EMA",
                "environment": environment_report()}, indent=2))
        self.accelerator.wait_for_everyone()
        return final


def train_tokenizer(config: TrainConfig, out_dir: str | Path, *, max_steps: int | None = None,
                    progress: bool = True, fresh: bool = False) -> Path:
    """Run one training stage into ``out_dir``; returns the directory of the saved EMA tokenizer.

    An interrupted stage resumes from its last checkpoint; a finished one only re-saves ``final``.
    """
    out_dir = Path(out_dir)
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    trainer = TokenizerTrainer(config, out_dir, progress=progress)
    return trainer.train(max_steps)
