"""Training configuration: YAML validated once, at the edge, into typed objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


def _build(cls, data: dict[str, Any] | None, where: str):
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    return cls(**data)


@dataclass
class DataConfig:
    """Training images: a list of sources, the resolution and the per-step batch."""

    sources: list[dict[str, Any]] = field(default_factory=lambda: [{"kind": "builtin"}])
    size: int = 224
    batch_size: int = 16          # global batch (split over processes)
    hflip: bool = True            # upstream flips every image with p = 0.5


@dataclass
class OptimConfig:
    lr: float = 1e-4
    end_lr: float = 1e-5
    warmup_steps: int = 10_000
    max_steps: int = 300_000
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    encoder_lr_scale: float = 0.1     # stages 2 and 3: encoder and mlp1 at 0.1 x the base rate
    ema_decay: float = 0.999


@dataclass
class LossConfig:
    """Weights of each loss term (0 switches a term off; a term whose weights file is absent must be 0)."""

    l2_weight: float = 1.0
    lpips_weight: float = 1.0        # LPIPS (VGG): needs torchvision's vgg16-397923af.pth
    convnext_weight: float = 0.1     # ConvNeXt-S logit MSE: needs convnext_small-0c510722.pth
    distill_weight: float = 1.0      # lambda of the self-distillation loss (stages 2, 3)
    gan_weight: float = 0.1
    discriminator_start: int = 200_000
    lecam_weight: float = 0.001
    discriminator_base: int = 128
    discriminator_lr: float = 1e-4
    lpips_vgg_weights: str | None = None
    convnext_weights: str | None = None


@dataclass
class TrainConfig:
    """One stage of tokenizer training."""

    name: str
    variant: str                      # architecture (a variant name or YAML)
    stage: int = 1
    init: str | None = None           # tokenizer to start from: a saved directory, or released weights
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    mixed_precision: str = "no"       # "no" on CPU; "bf16" as upstream on GPUs
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    source: str | None = None         # the YAML it was read from

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3; got {self.stage}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16; got {self.mixed_precision!r}")
        if self.optim.warmup_steps < 0 or self.optim.max_steps <= 0:
            raise ValueError("optim.max_steps must be > 0 and optim.warmup_steps >= 0")
        if self.data.batch_size <= 0:
            raise ValueError("data.batch_size must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def distills(self) -> bool:
        """Whether this stage runs the self-distillation teacher at all (never in stage 1, never at lambda 0)."""
        return self.stage >= 2 and self.losses.distill_weight > 0


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a training YAML; ``overrides`` (stage, distill_weight, init, max_steps) replace its values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist; the recipes are in unilip/configs/train/")
    raw = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    raw = dict(raw)
    data = _build(DataConfig, raw.pop("data", None), f"{path}: data")
    optim = _build(OptimConfig, raw.pop("optim", None), f"{path}: optim")
    optim.betas = tuple(optim.betas)
    losses = _build(LossConfig, raw.pop("losses", None), f"{path}: losses")
    if "name" not in raw or "variant" not in raw:
        raise ValueError(f"{path}: needs 'name' and 'variant'")
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "distill_weight":
            losses.distill_weight = float(value)
        elif key == "max_steps":
            optim.max_steps = int(value)
        elif key in ("stage", "init", "seed"):
            raw[key] = value
        else:
            raise ValueError(f"unknown override {key!r}")
    return TrainConfig(**raw, data=data, optim=optim, losses=losses, source=str(path))
