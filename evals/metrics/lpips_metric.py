"""LPIPS (Zhang et al. 2018) from the ``lpips`` package, with its ImageNet backbone read from local disk.

The ``lpips`` package ships its learned linear heads (``lpips/weights/v0.1/{alex,vgg}.pth``) but would
download the backbone through torchvision (``pretrained=True``). We build the model with a random backbone
(``pnet_rand=True``; nothing is downloaded) and load torchvision's own backbone state dict from a local file
into the backbone slices, strictly. The numbers are then exactly those of ``lpips.LPIPS(net=...)``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .weights import WeightsKeyError, file_sha256, resolve_weights

__all__ = ["LPIPSMetric", "LPIPS_BACKBONES"]

#: Backbone files: torchvision's ImageNet weights that ``lpips`` would download, and the env var naming them.
LPIPS_BACKBONES: dict[str, dict[str, str]] = {
    "alex": {
        "filename": "alexnet-owt-7be5be79.pth",
        "env_var": "UNILIP_LPIPS_ALEX_WEIGHTS",
        "what": "AlexNet ImageNet backbone weights for LPIPS(net='alex')",
        "source": (
            "They are torchvision's AlexNet_Weights.IMAGENET1K_V1, "
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth."
        ),
    },
    "vgg": {
        "filename": "vgg16-397923af.pth",
        "env_var": "UNILIP_LPIPS_VGG_WEIGHTS",
        "what": "VGG16 ImageNet backbone weights for LPIPS(net='vgg')",
        "source": (
            "They are torchvision's VGG16_Weights.IMAGENET1K_V1, "
            "https://download.pytorch.org/models/vgg16-397923af.pth."
        ),
    },
}

# lpips' backbone keeps torchvision's `features` indices as module names inside its slices
# (e.g. `slice2.3.weight` is torchvision's `features.3.weight`).
_SLICE_KEY = re.compile(r"^slice\d+\.(\d+)\.(.+)$")


def _lpips_head_file(net: str) -> Path:
    """The linear-head weights file the lpips package loads for ``net`` (version 0.1)."""
    import lpips

    return Path(inspect.getfile(lpips.LPIPS)).resolve().parent / "weights" / "v0.1" / f"{net}.pth"


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
            MetricUnavailable: If the backbone file is not on local disk.
            WeightsKeyError: If the file does not fill every backbone parameter exactly (the message lists
                the keys), or the packaged heads did not load.
            ValueError: For an unknown ``net``.
        """
        if net not in LPIPS_BACKBONES:
            raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
        spec = LPIPS_BACKBONES[net]
        self.net_name = net
        self.device = torch.device(device)
        self.backbone_path = resolve_weights(
            backbone_weights_path, spec["env_var"], (spec["filename"],), spec["what"], spec["source"]
        )
        self.head_path = _lpips_head_file(net)

        import lpips

        with warnings.catch_warnings():
            # pnet_rand=True makes lpips call torchvision's alexnet/vgg16(pretrained=False); torchvision warns
            # that the `pretrained` argument is deprecated. That is lpips' call, not ours, and it downloads
            # nothing; silence only these two warnings.
            warnings.filterwarnings("ignore", message=r".*'pretrained' is deprecated.*", category=UserWarning)
            warnings.filterwarnings("ignore", message=r".*Arguments other than a weight enum.*", category=UserWarning)
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        self._check_heads(model)
        self._load_backbone(model)
        model.requires_grad_(False)
        model.eval()
        self.model = model.to(self.device)

    def _check_heads(self, model: torch.nn.Module) -> None:
        """Verify every linear head was filled from the packaged file.

        lpips loads its heads non-strictly, which would let a missing head stay random; we re-read
        the file and compare, so a broken install fails loudly instead.
        """
        heads = torch.load(self.head_path, map_location="cpu", weights_only=True)
        model_state = model.state_dict()
        expected = {k for k in model_state if re.match(r"^lin\d+\.model\.1\.weight$", k)}
        if set(heads) != expected:
            raise WeightsKeyError(
                f"{self.head_path}: LPIPS head keys {sorted(set(heads))} do not match the model's {sorted(expected)}"
            )
        wrong = [k for k in expected if not torch.equal(model_state[k], heads[k].to(model_state[k].dtype))]
        if wrong:
            raise WeightsKeyError(f"LPIPS heads were not loaded from {self.head_path}: {sorted(wrong)}")

    def _load_backbone(self, model: torch.nn.Module) -> None:
        """Load torchvision's ``features.*`` tensors into lpips' backbone slices, strictly."""
        state = torch.load(self.backbone_path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise WeightsKeyError(f"{self.backbone_path} is not a state dict (got {type(state).__name__})")
        backbone = model.net
        sources: dict[str, str] = {}
        for name in backbone.state_dict():
            match = _SLICE_KEY.match(name)
            if match is None:
                raise WeightsKeyError(f"unexpected lpips backbone parameter name {name!r}")
            sources[name] = f"features.{match.group(1)}.{match.group(2)}"
        used = set(sources.values())
        missing = sorted(key for key in used if key not in state)
        # The classifier of the ImageNet net is not part of LPIPS; any other unused key would mean a different
        # architecture than the one lpips builds.
        unused = sorted(key for key in state if key.startswith("features.") and key not in used)
        unexpected = sorted(key for key in state if not key.startswith(("features.", "classifier.")))
        if missing or unused or unexpected:
            raise WeightsKeyError(
                f"{self.backbone_path} does not match lpips' {self.net_name} backbone: missing {missing}, "
                f"unused features keys {unused}, unexpected keys {unexpected}"
            )
        # strict=True: every backbone parameter must be set, and shapes must agree.
        backbone.load_state_dict({name: state[key] for name, key in sources.items()}, strict=True)

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
