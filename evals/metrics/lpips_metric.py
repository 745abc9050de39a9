"""LPIPS (Zhang et al. 2018) as a metric: the ``lpips`` package with its ImageNet backbone read from local disk.

The network is built by :func:`unilip.lpips.build_lpips`, the project's one LPIPS builder (the training
loss uses it too): a random backbone (``pnet_rand=True``; nothing is downloaded) filled strictly from
torchvision's own backbone state dict on local disk, and the packaged v0.1 heads, verified. The numbers
are exactly those of ``lpips.LPIPS(net=...)``.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

import torch

from unilip.lpips import LPIPS_BACKBONES, build_lpips

from .weights import MetricUnavailable, WeightsKeyError, file_sha256

__all__ = ["LPIPSMetric", "LPIPS_BACKBONES"]


class LPIPSMetric:
    """Per-image LPIPS distance on images in [0, 1].

    Input contract: float tensors ``B x 3 x H x W`` with values in [0, 1] (checked); they are mapped to
    [-1, 1] inside, which is what ``lpips`` expects. The network runs in float32, as ``lpips`` does.
    """

    def __init__(
        self,
        net: str = "alex",
        backbone_weights_path: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        """Build ``lpips.LPIPS(net=net)`` from the packaged heads and a local backbone file.

        Args:
            net: ``"alex"`` or ``"vgg"``.
            backbone_weights_path: torchvision state dict of the backbone (``alexnet-owt-7be5be79.pth`` or
                ``vgg16-397923af.pth``). When ``None``: ``$UNILIP_LPIPS_ALEX_WEIGHTS`` /
                ``$UNILIP_LPIPS_VGG_WEIGHTS``, then ``$TORCH_HOME/hub/checkpoints``.
            device: Device to run on.

        Raises:
            WeightsNotFoundError: ``backbone_weights_path`` (or the environment variable) names no file.
            MetricUnavailable: Nothing named, and the torch hub cache lacks the backbone file.
            CheckpointError: The file is not a readable flat state dict of tensors (pickled objects, damaged).
            WeightsKeyError: If the file does not fill every backbone parameter exactly (the message lists
                the keys).
            RuntimeError: The packaged heads did not load (a broken lpips install).
            ValueError: For an unknown ``net``.
        """
        self.net_name = net
        self.device = torch.device(device)
        model, self.backbone_path, self.head_path = build_lpips(
            net, backbone_weights_path, unavailable=MetricUnavailable, key_error=WeightsKeyError
        )
        self.model = model.to(self.device)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What determines the numbers: net, lpips version, backbone and head file hashes."""
        return {
            "metric": "lpips",
            "net": self.net_name,
            "lpips_version": importlib.metadata.version("lpips"),
            "lpips_head_version": "0.1",
            "backbone_file": self.backbone_path.name,
            "backbone_sha256": file_sha256(self.backbone_path),
            "head_sha256": file_sha256(self.head_path),
            "compute_dtype": "float32",
        }

    def __call__(self, preds01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
        """LPIPS distance of each image pair.

        Args:
            preds01: Float tensor ``B x 3 x H x W`` with values in [0, 1].
            target01: Float tensor of the same shape, values in [0, 1].

        Returns:
            float64 tensor of shape ``(B,)`` on the CPU.

        Raises:
            ValueError: On non-float inputs, bad or mismatched shapes, or values outside [0, 1].
        """
        for name, value in (("preds01", preds01), ("target01", target01)):
            if not torch.is_tensor(value) or not value.is_floating_point():
                raise ValueError(f"{name} must be a floating-point torch.Tensor")
            if value.dim() != 4 or value.shape[1] != 3:
                raise ValueError(f"{name} must have shape B x 3 x H x W, got {tuple(value.shape)}")
            if value.numel() and (value.min() < 0 or value.max() > 1):
                raise ValueError(
                    f"{name} has values in [{value.min().item():.4g}, {value.max().item():.4g}], outside [0, 1]; "
                    "clamp images to [0, 1] first (LPIPS is defined on [-1, 1] inputs mapped from [0, 1])"
                )
        if preds01.shape != target01.shape:
            raise ValueError(f"shapes differ: {tuple(preds01.shape)} vs {tuple(target01.shape)}")
        with torch.inference_mode():
            a = preds01.to(device=self.device, dtype=torch.float32) * 2 - 1
            b = target01.to(device=self.device, dtype=torch.float32) * 2 - 1
            out = self.model(a, b)
        return out.reshape(out.shape[0]).to(device="cpu", dtype=torch.float64)
