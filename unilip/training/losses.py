"""Tokenizer training losses: L2, LPIPS (VGG16), ConvNeXt-S logit MSE, self-distillation and the patch GAN.

These follow the UniLIP tokenizer training, which reuses TiTok's (bytedance/1d-tokenizer,
``modeling/modules/{losses,perceptual_loss,discriminator}.py``) reconstruction losses:

* ``l2_loss``: pixel MSE.
* ``LPIPSLoss``: LPIPS on a VGG16 backbone (built by ``unilip.lpips.build_lpips``, as the LPIPS metric is).
* ``ConvNeXtLogitLoss``: MSE between the 1000-way ImageNet logits of a frozen ConvNeXt-S.
* ``FeatureTeacher`` / ``self_distillation_loss``: UniLIP's self-distillation, the MSE of the
  understanding features (post-``mlp1`` tokens) to those of a frozen copy of the encoder.
* ``PatchDiscriminator``: TiTok's ``NLayerDiscriminator`` (MaskGIT style, blur downsampling).
* ``hinge_d_loss`` / ``generator_adversarial_loss``: the hinge GAN objective.
* ``LeCamEMA``: the LeCam regulariser of the discriminator and its running logit means.

Every public function and module takes images in **[0, 1]** (B x 3 x H x W). The tokenizer decodes
to [-1, 1]; the caller maps reconstructions with ``(r + 1) / 2`` before calling these, exactly like
upstream (whose loss module documents "Both inputs and reconstructions are in range [0, 1]").
Loss forwards run in float32 with autocast disabled, as upstream does (``@autocast(enabled=False)``).

No weights are downloaded: the two frozen ImageNet backbones are read from local torchvision state
dict files (``vgg16-397923af.pth``, ``convnext_small-0c510722.pth``) found by the one rule of
``unilip.weights.resolve_weights`` (a path named in the config or the environment must exist, else
``WeightsNotFoundError``; with nothing named and nothing in the torch hub cache,
``LossWeightsUnavailable`` explains where to get the file and how to switch that loss off).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from unilip.lpips import LPIPS_BACKBONES, build_lpips
from unilip.pixels import IMAGENET_MEAN, IMAGENET_STD
from unilip.weights import WeightsUnavailable, check_weights_keys, load_weights_state_dict, resolve_weights

if TYPE_CHECKING:
    from unilip.tokenizer import UniLIPTokenizer

__all__ = [
    "CONVNEXT_S_ENV",
    "CONVNEXT_S_FILENAME",
    "ConvNeXtLogitLoss",
    "BlurPool2d",
    "FeatureTeacher",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LPIPSLoss",
    "LPIPS_VGG_ENV",
    "LPIPS_VGG_FILENAME",
    "LeCamEMA",
    "LossWeightsUnavailable",
    "PatchDiscriminator",
    "discriminator_loss",
    "generator_adversarial_loss",
    "hinge_d_loss",
    "l2_loss",
    "resolve_loss_weights",
    "self_distillation_loss",
]

# torchvision's own file names (hash prefix included), so a file fetched by torchvision on a machine
# with internet can be copied over unchanged. LPIPS' come from the one LPIPS table (unilip.lpips).
LPIPS_VGG_FILENAME = LPIPS_BACKBONES["vgg"]["filename"]
LPIPS_VGG_ENV = LPIPS_BACKBONES["vgg"]["env_var"]
CONVNEXT_S_FILENAME = "convnext_small-0c510722.pth"
CONVNEXT_S_ENV = "UNILIP_CONVNEXT_S_WEIGHTS"
_DOWNLOAD_BASE = "https://download.pytorch.org/models/"

_CONVNEXT_WHAT = (
    "torchvision's ConvNeXt_Small_Weights.IMAGENET1K_V1 (the ImageNet ConvNeXt-S of the ConvNeXt logit loss)"
)


# ------------------------------------------------------------------------------------- weight files


class LossWeightsUnavailable(WeightsUnavailable):
    """A frozen loss network's weights file was not named and is not in the torch hub cache."""


def resolve_loss_weights(
    explicit: str | os.PathLike[str] | None,
    env_var: str,
    filename: str,
    what: str,
    *,
    config_switch: str | None = None,
    config_path_key: str | None = None,
) -> Path:
    """Find a frozen loss network's local weights file (the one rule of :func:`unilip.weights.resolve_weights`).

    ``explicit`` (a file, or a folder holding ``filename``) is the only candidate when given; else the
    environment variable ``env_var`` (same forms) when set; else the torch hub cache's ``filename``.

    Args:
        explicit: Path given by the caller (e.g. from the training config), or None.
        env_var: Name of the environment variable that may hold the path.
        filename: torchvision's file name, e.g. ``vgg16-397923af.pth``.
        what: Human description of the file, e.g. "torchvision's VGG16_Weights.IMAGENET1K_V1".
        config_switch: Config setting that switches the loss off, e.g. ``losses.lpips_weight: 0``.
        config_path_key: Config key that takes an explicit path, e.g. ``losses.lpips_vgg_weights``.

    Returns:
        The path of an existing file.

    Raises:
        WeightsNotFoundError: ``explicit`` or ``$env_var`` names a path that does not exist (a
            ``FileNotFoundError``; never replaced by another place).
        LossWeightsUnavailable: Nothing was named and the hub cache lacks the file; the message names
            the file, the places searched, where to get it and how to switch the loss off.
    """
    return resolve_weights(
        explicit,
        env_var,
        (filename,),
        what,
        _source(filename),
        setting=config_path_key,
        switch_off=config_switch,
        unavailable=LossWeightsUnavailable,
    )


def _source(filename: str) -> str:
    return (
        f"Get it from {_DOWNLOAD_BASE}{filename} (or let torchvision fetch it into its hub cache) on a machine "
        "with internet access."
    )


def _freeze(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(False)


# -------------------------------------------------------------------------------------------- L2


def l2_loss(x01: torch.Tensor, y01: torch.Tensor) -> torch.Tensor:
    """Mean squared error between two images.

    Args:
        x01: Target images in [0, 1], B x C x H x W.
        y01: Reconstructions in [0, 1], same shape.

    Returns:
        Scalar float32 tensor ``mean((y01 - x01) ** 2)``.
    """
    return F.mse_loss(y01.float(), x01.float(), reduction="mean")


# ------------------------------------------------------------------------------------------ LPIPS


class LPIPSLoss(nn.Module):
    """LPIPS perceptual loss (lpips package, v0.1 linear heads, VGG16 backbone), frozen.

    Upstream (TiTok) used taming-transformers' ``vgg_lpips.pth`` heads; those are the original LPIPS
    v0.1 VGG heads, which the ``lpips`` package ships as ``weights/v0.1/vgg.pth`` and which are used
    here. The VGG16 backbone carries torchvision's ImageNet weights (``VGG16_Weights.IMAGENET1K_V1``)
    read from a local file and copied strictly into lpips' slices (:func:`unilip.lpips.build_lpips`).

    The module is always in eval mode (``train()`` keeps it in eval, so lpips' dropout stays off) and
    no parameter requires grad; gradients still flow to both inputs.
    """

    def __init__(self, net: str = "vgg", backbone_weights: str | os.PathLike[str] | None = None) -> None:
        """Build LPIPS with a local VGG16 backbone.

        Args:
            net: Backbone; only ``"vgg"`` (as upstream).
            backbone_weights: Path to ``vgg16-397923af.pth`` (or its folder); else
                ``$UNILIP_LPIPS_VGG_WEIGHTS``, else the torch hub checkpoints folder.

        Raises:
            ValueError: ``net`` is not ``"vgg"``.
            WeightsNotFoundError: ``backbone_weights`` or ``$UNILIP_LPIPS_VGG_WEIGHTS`` names no file.
            LossWeightsUnavailable: Nothing named, and the torch hub cache lacks the file.
            CheckpointError: The file is not a readable flat state dict of tensors.
            CheckpointKeyError: The file's keys do not match VGG16.
            RuntimeError: An LPIPS head was not loaded (a broken lpips install).
        """
        super().__init__()
        if net != "vgg":
            raise ValueError(f"LPIPSLoss supports net='vgg' only (as upstream), got {net!r}")
        self.model, self.weights_path, _ = build_lpips(
            "vgg",
            backbone_weights,
            setting="losses.lpips_vgg_weights",
            switch_off="losses.lpips_weight: 0",
            unavailable=LossWeightsUnavailable,
        )
        self.eval()

    def train(self, mode: bool = True) -> LPIPSLoss:
        """Keep eval mode whatever ``mode`` is (the loss network is frozen)."""
        return super().train(False)

    def forward(self, x01: torch.Tensor, y01: torch.Tensor) -> torch.Tensor:
        """LPIPS distance averaged over the batch.

        Args:
            x01: Images in [0, 1], B x 3 x H x W.
            y01: Images in [0, 1], same shape.

        Returns:
            Scalar float32 tensor: mean over the batch of ``lpips(2 * x01 - 1, 2 * y01 - 1)``.
        """
        with torch.autocast(device_type=x01.device.type, enabled=False):
            # lpips' v0.1 heads expect [-1, 1] inputs.
            x = x01.float() * 2.0 - 1.0
            y = y01.float() * 2.0 - 1.0
            return self.model(x, y).mean()


# -------------------------------------------------------------------------------- ConvNeXt logits


class ConvNeXtLogitLoss(nn.Module):
    """MSE between the ImageNet logits of a frozen torchvision ConvNeXt-S for two images.

    Both images are resized to 224 x 224 (bilinear, antialias, as upstream), normalised with the
    ImageNet mean/std, and the 1000-way logits are compared with a mean squared error over all
    elements. Always in eval mode (stochastic depth off); no parameter requires grad.
    """

    def __init__(self, weights: str | os.PathLike[str] | None = None) -> None:
        """Build ConvNeXt-S and load local ImageNet weights strictly.

        Args:
            weights: Path to ``convnext_small-0c510722.pth`` (or its folder); else
                ``$UNILIP_CONVNEXT_S_WEIGHTS``, else the torch hub checkpoints folder.

        Raises:
            WeightsNotFoundError: ``weights`` or ``$UNILIP_CONVNEXT_S_WEIGHTS`` names no file.
            LossWeightsUnavailable: Nothing named, and the torch hub cache lacks the file.
            CheckpointError: The file is not a readable flat state dict of tensors.
            CheckpointKeyError: The file does not match torchvision's ``convnext_small`` exactly.
        """
        super().__init__()
        path = resolve_loss_weights(
            weights,
            CONVNEXT_S_ENV,
            CONVNEXT_S_FILENAME,
            _CONVNEXT_WHAT,
            config_switch="losses.convnext_weight: 0",
            config_path_key="losses.convnext_weights",
        )
        from torchvision.models import convnext_small

        # First: an unusable file fails before any build.
        state = load_weights_state_dict(path, _CONVNEXT_WHAT, _source(path.name))
        model = convnext_small()  # weights=None: architecture only, filled strictly below
        check_weights_keys(model.state_dict(), state, path, _CONVNEXT_WHAT, _source(path.name))
        model.load_state_dict(state, strict=True)
        _freeze(model)
        self.model = model
        self.weights_path = path
        # Non-persistent: the loss' state dict stays exactly torchvision's keys under ``model.``.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> ConvNeXtLogitLoss:
        """Keep eval mode whatever ``mode`` is (the loss network is frozen)."""
        return super().train(False)

    def _logits(self, images01: torch.Tensor) -> torch.Tensor:
        images = F.interpolate(images01.float(), size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return self.model((images - self.mean.float()) / self.std.float())

    def forward(self, x01: torch.Tensor, r01: torch.Tensor) -> torch.Tensor:
        """Logit MSE.

        Args:
            x01: Target images in [0, 1], B x 3 x H x W.
            r01: Reconstructions in [0, 1], B x 3 x H' x W' (any size; both are resized to 224).

        Returns:
            Scalar float32 tensor ``mean((logits(x01) - logits(r01)) ** 2)``.
        """
        with torch.autocast(device_type=x01.device.type, enabled=False):
            return F.mse_loss(self._logits(x01), self._logits(r01), reduction="mean")


# ------------------------------------------------------------------------------- self-distillation


class FeatureTeacher(nn.Module):
    """A frozen copy of a tokenizer's encoder and ``mlp1`` as they were when it was made (eval, no gradients).

    UniLIP's self-distillation target: stages 2-3 train the encoder for reconstruction while keeping its
    understanding features (what InternVL3's LLM reads) close to those of the encoder the stage began with.
    Only the understanding path is copied; the bridge and the pixel decoder are not (the teacher never
    needs them, and they would double the memory of the copy).
    """

    def __init__(self, model: UniLIPTokenizer) -> None:
        """Copy ``model``'s encoder and ``mlp1`` (its weights as they are now).

        Args:
            model: The tokenizer about to be trained; it is left unchanged.
        """
        super().__init__()
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

    def train(self, mode: bool = True) -> FeatureTeacher:
        """Keep eval mode whatever ``mode`` is: no drop-path, fixed statistics."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's understanding features (``B x N x H``) of [0, 1] images."""
        self.calls += 1
        return self.tokenizer.encode_features(images)


def self_distillation_loss(features: torch.Tensor, teacher: FeatureTeacher, images: torch.Tensor) -> torch.Tensor:
    """The self-distillation term, unweighted (the trainer multiplies it by ``distill_weight``, lambda).

    Args:
        features: The student's understanding features of ``images`` (``encode_with_features``), B x N x H.
        teacher: The frozen copy of the encoder the stage began with.
        images: The same images in [0, 1], B x 3 x H x W.

    Returns:
        Scalar float32 ``mean((features - teacher(images)) ** 2)``; gradients reach the student only.
    """
    return F.mse_loss(features.float(), teacher(images).float())


# ------------------------------------------------------------------------------------ discriminator


def _same_pad(size: int, kernel: int, stride: int) -> int:
    # TensorFlow "SAME" total padding, as upstream's Conv2dSame / BlurBlock compute it.
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


class BlurPool2d(nn.Module):
    """Depthwise blur then stride-2 subsampling (upstream ``BlurBlock``), TF "SAME" zero padding.

    The separable kernel (default ``(1, 3, 3, 1)``) is normalised to sum 1. Odd sizes are padded one
    more on the bottom/right, as TF does, so the output is ``ceil(H / 2) x ceil(W / 2)``. Upstream
    always computes the padding for a 4-tap kernel; this uses the kernel's length, which is the same
    for the 4-tap kernel the discriminator uses.
    """

    def __init__(self, kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        """Build the blur.

        Args:
            kernel: 1-D taps of the separable blur kernel.
        """
        super().__init__()
        taps = torch.tensor(kernel, dtype=torch.float32)
        kernel_2d = taps[None, :] * taps[:, None]
        kernel_2d = kernel_2d / kernel_2d.sum()
        # A persistent buffer, as upstream: discriminator checkpoints carry ``blocks.<i>.1.kernel``.
        self.register_buffer("kernel", kernel_2d[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur and subsample by 2.

        Args:
            x: Feature map, B x C x H x W.

        Returns:
            B x C x ceil(H/2) x ceil(W/2).
        """
        channels, height, width = x.shape[-3:]
        taps = self.kernel.shape[-1]
        pad_h, pad_w = _same_pad(height, taps, 2), _same_pad(width, taps, 2)
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        weight = self.kernel.to(x.dtype).expand(channels, -1, -1, -1)
        return F.conv2d(x, weight, stride=2, groups=channels)


class PatchDiscriminator(nn.Module):
    """TiTok / MaskGIT-style patch discriminator (upstream ``NLayerDiscriminator``), on [0, 1] images.

    Layout (``base`` = hidden channels, 128 upstream; stage channels follow upstream's
    ``in_channel_mult = (1, 1, 2, 4)``, i.e. base->base, base->2 base, 2 base->4 base):

    * ``block_in``: Conv 5x5 (in -> base) + LeakyReLU(0.1)
    * ``blocks[i]`` (3 stages): Conv 3x3 -> BlurPool (1,3,3,1), stride 2 -> GroupNorm -> LeakyReLU(0.1)
    * ``pool``: AdaptiveMaxPool2d(16)
    * ``to_logits``: Conv 1x1 (4 base -> 4 base) + LeakyReLU(0.1) + Conv 5x5 (4 base -> 1)

    Upstream's ``Conv2dSame`` with stride 1 and odd kernels equals symmetric ``padding=k // 2``, so
    plain ``nn.Conv2d`` is used; module names match upstream, so its state dicts load unchanged.
    GroupNorm uses ``min(32, channels)`` groups (32 upstream) so small ``base`` values work.
    Output: B x 1 x 16 x 16 logits for any input size.
    """

    def __init__(self, in_channels: int = 3, base: int = 128, num_stages: int = 3) -> None:
        """Build the discriminator (default PyTorch init, as upstream).

        Args:
            in_channels: Image channels.
            base: Hidden channels of the first conv (128 upstream; small values for tests/CPU runs).
            num_stages: Downsampling stages (3 upstream).
        """
        super().__init__()
        if num_stages < 1:
            raise ValueError("PatchDiscriminator needs at least one stage")
        multipliers = (1,) + tuple(2**i for i in range(num_stages))
        self.block_in = nn.Sequential(nn.Conv2d(in_channels, base, 5, padding=2), nn.LeakyReLU(0.1))
        blocks = []
        out_channels = base
        for stage in range(num_stages):
            in_ch, out_channels = base * multipliers[stage], base * multipliers[stage + 1]
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_channels, 3, padding=1),
                    BlurPool2d((1, 3, 3, 1)),
                    nn.GroupNorm(min(32, out_channels), out_channels),
                    nn.LeakyReLU(0.1),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveMaxPool2d((16, 16))
        self.to_logits = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels, 1, 5, padding=2),
        )

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        """Patch logits.

        Args:
            images01: Images in [0, 1] (fed as such upstream), B x C x H x W.

        Returns:
            B x 1 x 16 x 16 logits.
        """
        hidden = self.block_in(images01)
        for block in self.blocks:
            hidden = block(hidden)
        return self.to_logits(self.pool(hidden))


# ---------------------------------------------------------------------------------- GAN objectives


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss.

    Args:
        real_logits: Discriminator logits on real images (any shape).
        fake_logits: Discriminator logits on reconstructions (any shape).

    Returns:
        Scalar ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))`` in float32.
    """
    loss_real = F.relu(1.0 - real_logits.float()).mean()
    loss_fake = F.relu(1.0 + fake_logits.float()).mean()
    return 0.5 * (loss_real + loss_fake)


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator (tokenizer) adversarial loss.

    Args:
        fake_logits: Discriminator logits on reconstructions.

    Returns:
        Scalar ``-mean(fake_logits)`` in float32.
    """
    return -fake_logits.float().mean()


class LeCamEMA(nn.Module):
    """LeCam regulariser (Tseng et al. 2021) with EMAs of the mean real / fake logits.

    As upstream (TiTok ``compute_lecam_loss`` and its buffers): both EMAs start at 0, each step's
    *batch-mean* logit updates them as ``ema = decay * ema + (1 - decay) * mean``, and the regulariser
    compares the batch means against the EMAs **from before** that step's update::

        relu(mean(real) - ema_fake) ** 2 + relu(ema_real - mean(fake)) ** 2

    (upstream wraps each term in ``torch.mean`` of a scalar, which is the identity). The EMAs are
    buffers, so checkpoints keep them. They are per process; upstream does not synchronise them
    across ranks either.
    """

    ema_real_logits_mean: torch.Tensor
    ema_fake_logits_mean: torch.Tensor

    def __init__(self, decay: float = 0.999) -> None:
        """Start both EMAs at 0.

        Args:
            decay: EMA decay (0.999 upstream).
        """
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        # Buffer names and (1,) shapes as upstream's loss module.
        self.register_buffer("ema_real_logits_mean", torch.zeros(1))
        self.register_buffer("ema_fake_logits_mean", torch.zeros(1))

    def regularizer(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """LeCam regulariser against the current EMAs (call before ``update``).

        Args:
            real_logits: Discriminator logits on real images (any shape; their mean is used).
            fake_logits: Discriminator logits on reconstructions (any shape; their mean is used).

        Returns:
            Scalar float32 tensor; differentiable w.r.t. the logits, not the EMAs.
        """
        real_mean = real_logits.float().mean()
        fake_mean = fake_logits.float().mean()
        ema_real = self.ema_real_logits_mean.float()
        ema_fake = self.ema_fake_logits_mean.float()
        loss = torch.mean(torch.pow(F.relu(real_mean - ema_fake), 2))
        return loss + torch.mean(torch.pow(F.relu(ema_real - fake_mean), 2))

    @torch.no_grad()
    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        """Fold this step's batch-mean logits into the EMAs.

        Args:
            real_logits: Discriminator logits on real images.
            fake_logits: Discriminator logits on reconstructions.
        """
        decay = self.decay
        # Same expression as upstream (ema * decay + mean * (1 - decay)), written into the buffers.
        new_real = self.ema_real_logits_mean * decay + real_logits.detach().float().mean() * (1 - decay)
        new_fake = self.ema_fake_logits_mean * decay + fake_logits.detach().float().mean() * (1 - decay)
        self.ema_real_logits_mean.copy_(new_real)
        self.ema_fake_logits_mean.copy_(new_fake)

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Regulariser against the current EMAs, then update them (upstream's order).

        Args:
            real_logits: Discriminator logits on real images.
            fake_logits: Discriminator logits on reconstructions.

        Returns:
            The regulariser (unweighted), computed before the update.
        """
        loss = self.regularizer(real_logits, fake_logits)
        self.update(real_logits, fake_logits)
        return loss


def discriminator_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    lecam: LeCamEMA | None = None,
    lecam_weight: float = 0.001,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total discriminator loss: hinge + ``lecam_weight`` * LeCam (EMAs updated after use).

    Args:
        real_logits: Discriminator logits on (detached) real images.
        fake_logits: Discriminator logits on detached reconstructions.
        lecam: The LeCam EMA state, or None for no regulariser.
        lecam_weight: Weight of the regulariser (0.001 upstream); 0 skips it and leaves the EMAs alone.

    Returns:
        ``(total, parts)`` with ``parts = {"hinge": ..., "lecam": weighted regulariser}`` (detached).
    """
    hinge = hinge_d_loss(real_logits, fake_logits)
    weighted_lecam = torch.zeros((), device=hinge.device)
    if lecam is not None and lecam_weight > 0.0:
        weighted_lecam = lecam_weight * lecam(real_logits, fake_logits)
    total = hinge + weighted_lecam
    return total, {"hinge": hinge.detach(), "lecam": weighted_lecam.detach()}
