"""LPIPS (Zhang et al. 2018) from the ``lpips`` package, with its ImageNet backbone read from local disk.

The one builder of LPIPS in the project: the training loss (``unilip.training.losses.LPIPSLoss``) and the
evaluation metric (``evals.metrics.LPIPSMetric``) both call :func:`build_lpips`.

The ``lpips`` package ships its learned linear heads (``lpips/weights/v0.1/{alex,vgg}.pth``) but would
download the backbone through torchvision (``pretrained=True``). We build the model with a random backbone
(``pnet_rand=True``; nothing is downloaded) and load torchvision's own backbone state dict from a local file
(found by :func:`unilip.weights.resolve_weights`) into the backbone slices, strictly. The numbers are then
exactly those of ``lpips.LPIPS(net=...)`` with torchvision's ImageNet backbone.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from unilip.checkpoints import CheckpointKeyError
from unilip.weights import WeightsUnavailable, load_weights_state_dict, resolve_weights

__all__ = ["LPIPS_BACKBONES", "build_lpips", "check_lpips_heads", "lpips_backbone_state"]

#: Backbone files: torchvision's ImageNet weights that ``lpips`` would download (torchvision's own file
#: names, hash prefix included, so a file torchvision fetched can be copied over unchanged), and the
#: environment variable naming each.
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


def lpips_backbone_state(
    backbone: nn.Module,
    source: Mapping[str, torch.Tensor],
    path: Path,
    what: str,
    error: type[CheckpointKeyError] = CheckpointKeyError,
) -> dict[str, torch.Tensor]:
    """torchvision's AlexNet / VGG16 state dict (``features.<i>.*``) -> lpips' backbone slices (``slice<k>.<i>.*``).

    lpips keeps torchvision's layer indices inside its slices (``slice1`` = features 0..3, ...), so the
    index -> slice table is read off the module instead of being hard coded. The ImageNet classifier
    (``classifier.*``) is not part of LPIPS and is skipped; every other key must fill the backbone exactly.

    Args:
        backbone: ``lpips.LPIPS(...).net``.
        source: The torchvision state dict read from ``path``.
        path: The file, for the messages.
        what: What the file should be, for the messages.
        error: The ``CheckpointKeyError`` subclass to raise.

    Raises:
        CheckpointKeyError: (``error``) backbone parameters the file does not set, or keys with no
            place (a different architecture), named.
    """
    index_to_slice: dict[str, str] = {}
    for slice_name, slice_module in backbone.named_children():
        for index in slice_module._modules:
            index_to_slice[index] = slice_name
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "classifier":
            continue  # the ImageNet classifier head is not part of LPIPS
        if parts[0] == "features" and len(parts) == 3 and parts[1] in index_to_slice:
            mapped[f"{index_to_slice[parts[1]]}.{parts[1]}.{parts[2]}"] = value
        else:
            unexpected.append(key)
    expected = backbone.state_dict()
    missing = sorted(f"features.{k.split('.', 1)[1]}" for k in set(expected) - set(mapped))
    unexpected += sorted(f"features.{k.split('.', 1)[1]}" for k in set(mapped) - set(expected))
    misshapen = sorted(
        f"features.{k.split('.', 1)[1]}: file {tuple(mapped[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(mapped) & set(expected)
        if mapped[k].shape != expected[k].shape
    )
    if missing or unexpected or misshapen:
        raise error(
            f"{path} does not fit lpips' backbone: it should be {what}; backbone parameters not set: "
            f"{missing}; unexpected keys: {sorted(unexpected)}; shape mismatches: {misshapen}"
        )
    return mapped


def check_lpips_heads(model: nn.Module, net: str) -> Path:
    """Verify every LPIPS linear head holds the lpips package's v0.1 weights for ``net``; returns that file.

    ``lpips.LPIPS`` loads its heads non-strictly, which would silently leave a head random if the
    packaged file ever changed; each head is compared with the file read independently.

    Raises:
        RuntimeError: a head differs from, or is missing in, the packaged file (a broken lpips install).
    """
    import lpips

    heads_file = Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"
    expected = load_weights_state_dict(
        heads_file, f"the lpips package's v0.1 {net} heads", "It ships with the lpips package: reinstall lpips."
    )
    state = model.state_dict()
    # lpips registers each head twice (``lin<k>.*`` and ``lins.<k>.*``, the same tensors).
    head_keys = {k for k in state if k.startswith("lin") and not k.startswith("lins.")}
    problems = sorted(head_keys ^ set(expected))
    problems += [
        k for k in sorted(head_keys & set(expected)) if not torch.equal(state[k], expected[k].to(state[k].dtype))
    ]
    if problems:
        raise RuntimeError(f"LPIPS heads were not all loaded from {heads_file} (a broken lpips install?): {problems}")
    return heads_file


def build_lpips(
    net: str,
    backbone_weights: str | os.PathLike[str] | None = None,
    *,
    setting: str | None = None,
    switch_off: str | None = None,
    unavailable: type[WeightsUnavailable] = WeightsUnavailable,
    key_error: type[CheckpointKeyError] = CheckpointKeyError,
) -> tuple[nn.Module, Path, Path]:
    """``lpips.LPIPS(net=net)`` with the packaged v0.1 heads and torchvision's ImageNet backbone from a local file.

    The model is frozen (no parameter requires grad) and in eval mode, on the CPU, in float32.

    Args:
        net: ``"alex"`` or ``"vgg"`` (:data:`LPIPS_BACKBONES`).
        backbone_weights: torchvision's state dict of the backbone (``alexnet-owt-7be5be79.pth`` /
            ``vgg16-397923af.pth``) or a folder holding it; when ``None``: the backbone's environment
            variable (``$UNILIP_LPIPS_ALEX_WEIGHTS`` / ``$UNILIP_LPIPS_VGG_WEIGHTS``), then the torch hub
            cache (the rule of :func:`unilip.weights.resolve_weights`).
        setting: How the caller's user names the path (``"losses.lpips_vgg_weights"``), for the messages.
        switch_off: How to go without LPIPS (``"losses.lpips_weight: 0"``), for the messages.
        unavailable: The :class:`WeightsUnavailable` subclass raised when nothing is found.
        key_error: The :class:`CheckpointKeyError` subclass raised when the file does not fit the backbone.

    Returns:
        ``(model, backbone file, packaged heads file)``; the two paths are what fingerprints hash.

    Raises:
        ValueError: an unknown ``net``.
        WeightsNotFoundError: ``backbone_weights`` (or the environment variable) names no file.
        WeightsUnavailable: (``unavailable``) nothing named, and the torch hub cache lacks the file.
        CheckpointError: the file is not a readable flat state dict of tensors (pickled objects, damaged).
        CheckpointKeyError: (``key_error``) the file does not fill every backbone parameter exactly (named).
        RuntimeError: the packaged heads did not load (a broken lpips install).
    """
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    spec = LPIPS_BACKBONES[net]
    path = resolve_weights(
        backbone_weights,
        spec["env_var"],
        (spec["filename"],),
        spec["what"],
        spec["source"],
        setting=setting,
        switch_off=switch_off,
        unavailable=unavailable,
    )
    what = f"{spec['what']} (torchvision's state dict, file {spec['filename']})"
    # Read first: an unusable file fails before any network is built.
    state = load_weights_state_dict(path, what, spec["source"])

    import lpips  # imported here: only LPIPS users need the package

    with warnings.catch_warnings():
        # pnet_rand=True makes lpips call torchvision's alexnet/vgg16(pretrained=False); torchvision warns
        # that the `pretrained` argument is deprecated. That is lpips' call, not ours, and it downloads
        # nothing (the random backbone is overwritten below); silence only these two warnings.
        warnings.filterwarnings("ignore", message=r".*'pretrained' is deprecated.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*Arguments other than a weight enum.*", category=UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    # strict=True after the named check: every backbone parameter is set and every shape agrees.
    model.net.load_state_dict(lpips_backbone_state(model.net, state, path, what, key_error), strict=True)
    heads = check_lpips_heads(model, net)
    model.requires_grad_(False)
    model.eval()
    return model, path, heads
