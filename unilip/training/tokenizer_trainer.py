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

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unilip.tokenizer import UniLIPTokenizer
from unilip.training.checkpointing import load_optimizer, save_optimizer
from unilip.training.config import TrainConfig
from unilip.training.data import TrainImages, make_batch
from unilip.training.loop import (
    TrainingLoop,
    clear_out_dir,
    start_accelerator,
    uses_weight_decay,
    warmup_cosine_schedule,
)
from unilip.training.losses import FeatureTeacher, self_distillation_loss

ENCODER_PREFIXES = ("encoder.", "mlp1.")


# ----------------------------------------------------------------------------------- model set-up
def load_initial_model(config: TrainConfig, device: str | torch.device = "cpu") -> UniLIPTokenizer:
    """The tokenizer a stage starts from: ``config.init`` (a saved directory or weights for the
    variant), else the variant built with random weights from ``config.seed``."""
    from unilip.variants import get_variant, load_tokenizer

    spec = get_variant(config.variant)
    if config.init is None:
        if spec.has_released_weights:
            raise ValueError(
                f"{config.source}: stage {config.stage} of {spec.name} needs 'init' (the weights to start "
                "from: a saved tokenizer directory or released weights); random init of a real-size "
                "tokenizer is not a recipe"
            )
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
def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: (encoder part or not) x (decay or not); frozen parameters are left out entirely."""
    groups: dict[tuple[bool, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_encoder = config.stage >= 2 and name.startswith(ENCODER_PREFIXES)
        decay = uses_weight_decay(name, parameter)
        group = groups.setdefault(
            (is_encoder, decay),
            {
                "params": [],
                "names": [],
                "weight_decay": config.optim.weight_decay if decay else 0.0,
                "lr": config.optim.lr * (config.optim.encoder_lr_scale if is_encoder else 1.0),
                "group_name": f"{'encoder' if is_encoder else 'base'}{'' if decay else '_no_decay'}",
            },
        )
        group["params"].append(parameter)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(
    model: nn.Module, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters with the upstream groups, and its warm-up + cosine schedule."""
    groups = parameter_groups(model, config)
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(groups, lr=config.optim.lr, betas=tuple(config.optim.betas))
    return optimizer, warmup_cosine_schedule(optimizer, config.optim)


# ----------------------------------------------------------------------------------- the trainer
class TokenizerTrainer(TrainingLoop):
    """One stage of tokenizer training into ``out_dir`` (resumes from its last checkpoint; the loop, logging,
    checkpoints and resume are :class:`unilip.training.loop.TrainingLoop`'s)."""

    kind = "tokenizer"
    loss_key = "loss/total"

    def __init__(self, config: TrainConfig, out_dir: str | Path, progress: bool = True) -> None:
        from diffusers.training_utils import EMAModel

        self.config, self.out_dir, self.progress = config, Path(out_dir), progress
        self.accelerator = start_accelerator(config.mixed_precision, config.seed)
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
        self.disc_optimizer = torch.optim.AdamW(
            self.discriminator.parameters(),
            lr=losses.discriminator_lr,
            betas=tuple(self.config.optim.betas),
            weight_decay=self.config.optim.weight_decay,
        )
        self.lecam = LeCamEMA(decay=0.999).to(self.accelerator.device)
        self.discriminator, self.disc_optimizer = self.accelerator.prepare(self.discriminator, self.disc_optimizer)

    # ------------------------------------------------------------------ one step
    def prepare_data(self) -> None:
        """Open the training images (after the resume: a finished run re-saves without reading them twice)."""
        if self.images is None:
            self.images = TrainImages(self.config.data.sources, self.config.data.size, self.config.data.hflip)

    def next_batch(self, step: int) -> torch.Tensor:
        """This process' images of ``step`` (``make_batch``: a function of seed, step and rank only)."""
        images = make_batch(
            self.images,
            step,
            self.config.data.batch_size,
            self.config.seed,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )
        return images.to(self.accelerator.device)

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
            terms["distill"] = self_distillation_loss(features, self.teacher, images)
            total = total + losses_cfg.distill_weight * terms["distill"]
        if gan_on:
            terms["gan_g"] = generator_adversarial_loss(self.discriminator(recon01))
            total = total + losses_cfg.gan_weight * terms["gan_g"]
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(total)
        grad_norm = self.accelerator.clip_grad_norm_(
            [p for group in self.optimizer.param_groups for p in group["params"]], self.config.optim.grad_clip
        )
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

    # ------------------------------------------------------------------ persistence
    def write_weights(self, directory: Path) -> None:
        """Model and EMA weights, and the discriminator (with the LeCam EMAs) and its optimizer when there is one."""
        from safetensors.torch import save_file

        names = [name for name, _ in self.model.named_parameters()]
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()},
            str(directory / "model.safetensors"),
        )
        save_file(
            {n: s.detach().contiguous().cpu() for n, s in zip(names, self.ema.shadow_params, strict=True)},
            str(directory / "ema.safetensors"),
        )
        if self.discriminator is not None:
            unwrapped = self.accelerator.unwrap_model(self.discriminator)
            save_file(
                {
                    k: v.detach().contiguous().cpu()
                    for k, v in {
                        **unwrapped.state_dict(),
                        **{f"lecam.{k}": v for k, v in self.lecam.state_dict().items()},
                    }.items()
                },
                str(directory / "discriminator.safetensors"),
            )
            save_optimizer(self.disc_optimizer, directory, "disc_optimizer")

    def checkpoint_state(self) -> dict[str, Any]:
        """The EMA's update count (its warm-up decay depends on it)."""
        return {"ema_optimization_step": self.ema.optimization_step}

    def read_weights(self, directory: Path, state: dict[str, Any]) -> None:
        """Restore what :meth:`write_weights` wrote, and the EMA's update count."""
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
        ema = load_file(str(directory / "ema.safetensors"))
        names = [name for name, _ in self.model.named_parameters()]
        if set(ema) != set(names):
            raise ValueError(f"{directory}: EMA weights do not match the model's parameters")
        self.ema.shadow_params = [ema[n].to(self.accelerator.device) for n in names]
        self.ema.optimization_step = state["ema_optimization_step"]
        if self.discriminator is not None:
            saved = load_file(str(directory / "discriminator.safetensors"))
            lecam = {k[len("lecam.") :]: v for k, v in saved.items() if k.startswith("lecam.")}
            self.accelerator.unwrap_model(self.discriminator).load_state_dict(
                {k: v for k, v in saved.items() if not k.startswith("lecam.")}, strict=True
            )
            self.lecam.load_state_dict(lecam, strict=True)
            load_optimizer(self.disc_optimizer, directory, "disc_optimizer")

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
            (final / "training.json").write_text(
                json.dumps(
                    {
                        "config": self.config.to_dict(),
                        "steps": self.step,
                        "weights": "EMA",
                        "environment": environment_report(),
                    },
                    indent=2,
                )
            )
        self.accelerator.wait_for_everyone()
        return final


def train_tokenizer(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    max_steps: int | None = None,
    progress: bool = True,
    fresh: bool = False,
) -> Path:
    """Run one training stage into ``out_dir``; returns the directory of the saved EMA tokenizer.

    An interrupted stage resumes from its last checkpoint; a finished one only re-saves ``final``.
    """
    return TokenizerTrainer(config, clear_out_dir(out_dir, fresh), progress=progress).train(max_steps)
