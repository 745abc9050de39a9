"""Pixel conventions shared by the model, its pipelines and the datasets: ImageNet statistics and the
rounding of [0, 1] images to 8 bits. One home, so every path normalises and rounds alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torchvision's ImageNet channel statistics: the InternViT encoder's input normalisation and the ConvNeXt-S
# loss'. ``unilip.tokenizer`` and ``unilip.training.losses`` import them from here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images -> uint8 by rounding (``B x 3 x H x W`` -> ``B x H x W x 3``)."""
    import torch

    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
