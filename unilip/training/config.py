"""Training configuration: YAML validated once, at the edge, into typed objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


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
    batch_size: int = 16  # global batch (split over processes)
    hflip: bool = True  # upstream flips every image with p = 0.5


@dataclass
class OptimConfig:
    lr: float = 1e-4
    end_lr: float = 1e-5
    warmup_steps: int = 10_000
    max_steps: int = 300_000
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    encoder_lr_scale: float = 0.1  # stages 2 and 3: encoder and mlp1 at 0.1 x the base rate
    ema_decay: float = 0.999


@dataclass
class LossConfig:
    """Weights of each loss term (0 switches a term off; a term whose weights file is absent must be 0)."""

    l2_weight: float = 1.0
    lpips_weight: float = 1.0  # LPIPS (VGG): needs torchvision's vgg16-397923af.pth
    convnext_weight: float = 0.1  # ConvNeXt-S logit MSE: needs convnext_small-0c510722.pth
    distill_weight: float = 1.0  # lambda of the self-distillation loss (stages 2, 3)
    gan_weight: float = 0.1
    discriminator_start: int = 200_000
    lecam_weight: float = 0.001
    discriminator_base: int = 128
    discriminator_lr: float = 1e-4
    # Paths (a file, or the folder holding it); one given here must exist, else the run refuses to start
    # (unilip.weights). Unset: $UNILIP_LPIPS_VGG_WEIGHTS / $UNILIP_CONVNEXT_S_WEIGHTS, then the torch hub cache.
    lpips_vgg_weights: str | None = None
    convnext_weights: str | None = None


@dataclass
class TrainConfig:
    """One stage of tokenizer training."""

    name: str
    variant: str  # architecture (a variant name or YAML)
    stage: int = 1
    init: str | None = None  # tokenizer to start from: a saved directory, or released weights
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    mixed_precision: str = "no"  # "no" on CPU; "bf16" as upstream on GPUs
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    source: str | None = None  # the YAML it was read from

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


RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"


def list_recipes() -> list[str]:
    """The names of the built-in training recipes (``unilip/configs/train/NAME.yaml``), sorted.

    Each is accepted by ``unilip train tokenizer --config NAME`` / ``unilip train generator --config NAME``
    and resolved by :func:`recipe_path`; it is the counterpart of :func:`unilip.list_variants`.
    """
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if p.is_file())


def recipe_path(value: str | Path) -> Path:
    """A training YAML: a file's path, or the name of a built-in recipe (:func:`list_recipes`)."""
    path = Path(value)
    if path.is_file():
        return path
    builtin = RECIPES_DIR / f"{value}.yaml"
    if builtin.is_file():
        return builtin
    raise FileNotFoundError(
        f"training config {str(value)!r} is neither a file nor a built-in recipe ({', '.join(list_recipes())})"
    )


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a training YAML; ``overrides`` (stage, distill_weight, init, max_steps) replace its values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist; the recipes are in unilip/configs/train/")
    import yaml

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


# ----------------------------------------------------------------------------------- the generator
@dataclass
class GeneratorDataConfig:
    """Generator training data: single-task batches (all text-to-image or all edit), as upstream."""

    dataset: str = "digits"  # "digits" (scikit-learn's, captions from labels) or "jsonl"
    path: str | None = None  # jsonl: lines {"image", "caption"} or {"image", "source", "instruction"}
    size: int = 448  # image side the tokenizer reads (448 for the real models)
    batch_size: int = 32  # global batch
    edit_fraction: float | None = 0.0  # share of edit batches; null: the edit examples' share of the data
    null_prompt_prob: float = 0.1  # upstream replaces 10 % of prompts by the CFG null prompt
    max_caption_chars: int = 1000  # upstream resamples longer captions


@dataclass
class GeneratorOptimConfig:
    """AdamW (torch), warm-up then cosine to ``end_lr``, clipping 1.0: upstream's HF Trainer settings."""

    lr: float = 1e-4
    end_lr: float = 1e-5
    warmup_steps: int = 100
    max_steps: int = 10_000
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    # Upstream counts in epochs (5) with a warm-up ratio (0.003); when set, these replace max_steps and
    # warmup_steps once the data is read (steps = ceil(epochs x examples / batch)).
    epochs: float | None = None
    warmup_ratio: float | None = None


@dataclass
class GeneratorTrainConfig:
    """One stage of generator training (spec 4.8).

    Stage 1 trains queries, connector and projector against DC-AE latents (``dcae``) with the DiT
    frozen; stage 2 also trains the DiT, on UniLIP latents, and loads the UniLIP tokenizer
    (``tokenizer``) explicitly and strictly (upstream's stage-1 -> 2 hand-off skips it); stage 3 is
    supervised fine-tuning with the same objective. The LLM, encoder, ``mlp1`` and pixel decoder are
    frozen throughout.
    """

    name: str
    variant: str  # architecture: a variant name or YAML with a generator section
    stage: int = 2
    init: str | None = None  # a saved generator directory to start from (stage 1 -> 2 -> 3)
    tokenizer: str | None = None  # UniLIP tokenizer (saved directory or released weights) for stages 2-3
    llm_init: str | None = None  # InternVL3-xB-hf directory: the frozen LLM (stage 1 from scratch)
    dit_init: str | None = None  # SANA diffusers directory (with transformer/): the DiT's start
    dcae: str | None = None  # stage 1 targets: a diffusers AutoencoderDC directory
    dcae_scale: float = 0.41407  # DC-AE f32c32-sana-1.1 latent scale (upstream)
    dcae_size: int = 512  # stage 1 target images are 512 px
    # Latent scale in the DiT's space: null keeps the variant's (10.6 / 9.5, upstream's constants);
    # "auto" sets 1 / std of the tokenizer's latents over (up to 1024) training images, for a new
    # tokenizer (the tiny one), and the saved generator records the value.
    unilip_factor: float | str | None = None
    seed: int = 42
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    optim: GeneratorOptimConfig = field(default_factory=GeneratorOptimConfig)
    mixed_precision: str = "no"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    source: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3; got {self.stage}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16; got {self.mixed_precision!r}")
        if self.data.dataset not in ("digits", "jsonl"):
            raise ValueError(f"data.dataset must be digits or jsonl; got {self.data.dataset!r}")
        if self.data.dataset == "jsonl" and not self.data.path:
            raise ValueError("data.dataset jsonl needs data.path (a .jsonl file of examples)")
        if not 0 <= (self.data.edit_fraction or 0) <= 1 or not 0 <= self.data.null_prompt_prob <= 1:
            raise ValueError("data.edit_fraction and data.null_prompt_prob must be in [0, 1]")
        if self.stage == 1 and self.data.edit_fraction != 0:
            raise ValueError("stage 1 is text-to-image only (upstream): set data.edit_fraction to 0")
        if self.stage == 1 and not self.dcae:
            raise ValueError("stage 1 learns DC-AE latents: set dcae to a diffusers AutoencoderDC directory")
        if self.optim.max_steps <= 0 or self.optim.warmup_steps < 0 or self.data.batch_size <= 0:
            raise ValueError("optim.max_steps and data.batch_size must be > 0, optim.warmup_steps >= 0")
        if isinstance(self.unilip_factor, str) and self.unilip_factor != "auto":
            raise ValueError(f"unilip_factor must be a number, 'auto' or null; got {self.unilip_factor!r}")
        if self.unilip_factor == "auto" and self.stage == 1:
            raise ValueError(
                "unilip_factor scales UniLIP latents, which stage 1 does not use (it learns DC-AE latents)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_generator_train_config(path: str | Path, **overrides: Any) -> GeneratorTrainConfig:
    """Read a generator training YAML; ``overrides`` (stage, init, tokenizer, seed, max_steps, data_path)
    replace its values (``max_steps`` also replaces ``optim.epochs``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist; the recipes are in unilip/configs/train/")
    import yaml

    raw = dict(yaml.safe_load(path.read_text()) or {})
    known = {f.name for f in fields(GeneratorTrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    data = _build(GeneratorDataConfig, raw.pop("data", None), f"{path}: data")
    optim = _build(GeneratorOptimConfig, raw.pop("optim", None), f"{path}: optim")
    optim.betas = tuple(optim.betas)
    if "name" not in raw or "variant" not in raw:
        raise ValueError(f"{path}: needs 'name' and 'variant'")
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "max_steps":
            optim.max_steps, optim.epochs = int(value), None
        elif key == "data_path":
            data.path = str(value)
        elif key in ("stage", "init", "tokenizer", "seed"):
            raw[key] = value
        else:
            raise ValueError(f"unknown override {key!r}")
    return GeneratorTrainConfig(**raw, data=data, optim=optim, source=str(path))
