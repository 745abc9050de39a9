"""Training images and their deterministic order.

A batch is a pure function of (seed, step, rank): the epoch's permutation comes from ``seed + epoch``
and each sample's crop and flip from ``(seed, step, position)``. A resumed run therefore sees exactly
the images, crops and flips an uninterrupted one would, and runs with the same seed see the same data
order whatever else differs (the distillation sweep relies on this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from unilip.data import ImageLoader, list_image_sources

SOURCE_KINDS = ("builtin", "folder", "tar", "digits")


def train_transform(
    image: Image.Image | torch.Tensor, size: int, generator: torch.Generator, hflip: bool
) -> torch.Tensor:
    """Shorter side to ``size`` (bicubic, antialias), random ``size`` crop, random horizontal flip.

    Returns a ``3 x size x size`` float tensor in [0, 1].
    """
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    pixels = image if isinstance(image, torch.Tensor) else TF.to_tensor(image)
    height, width = pixels.shape[-2:]
    if min(height, width) != size:
        pixels = TF.resize(pixels, size, interpolation=InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
        height, width = pixels.shape[-2:]
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    pixels = pixels[:, top : top + size, left : left + size]
    if hflip and bool(torch.rand((), generator=generator) < 0.5):
        pixels = pixels.flip(-1)
    return pixels


@dataclass(frozen=True)
class _Entry:
    source: Any  # an image source tuple, or ("tensor", index into the digits tensor)


class TrainImages:
    """The images of every configured source, concatenated (each repeated ``repeat`` times)."""

    def __init__(self, sources: list[dict[str, Any]], size: int, hflip: bool = True) -> None:
        self.size, self.hflip = size, hflip
        self.entries: list[_Entry] = []
        self._tensors: list[torch.Tensor] = []
        self._loader = ImageLoader()
        for source in sources:
            kind = source.get("kind")
            if kind not in SOURCE_KINDS:
                raise ValueError(f"unknown training source {source!r}; kinds: {', '.join(SOURCE_KINDS)}")
            unknown = sorted(set(source) - {"kind", "path", "split", "repeat"})
            if unknown:
                raise ValueError(f"training source {source!r}: unknown keys {unknown}")
            if kind == "digits":
                from unilip.training.digits import load_digits_split

                images, _ = load_digits_split(source.get("split", "train"), size=size)
                offset = sum(len(t) for t in self._tensors)
                self._tensors.append(images)
                found = [_Entry(("tensor", offset + i)) for i in range(len(images))]
            else:
                found = [_Entry(entry.source) for entry in list_image_sources(kind, source.get("path")).entries]
            if not found:
                raise ValueError(f"training source {source!r} holds no images")
            self.entries += found * int(source.get("repeat", 1))
        self._stacked = torch.cat(self._tensors) if self._tensors else None

    def __len__(self) -> int:
        return len(self.entries)

    def sample(self, index: int, generator: torch.Generator) -> torch.Tensor:
        source = self.entries[index].source
        image = self._stacked[source[1]] if source[0] == "tensor" else self._loader.load(source)[0]
        return train_transform(image, self.size, generator, self.hflip)


def batch_indices(num_items: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Dataset indices of global batch ``step``: consecutive slices of a per-epoch seeded permutation."""
    indices: list[int] = []
    position = step * batch_size
    while len(indices) < batch_size:
        epoch, offset = divmod(position, num_items)
        permutation = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed + epoch))
        take = min(batch_size - len(indices), num_items - offset)
        indices += permutation[offset : offset + take].tolist()
        position += take
    return indices


def make_batch(
    images: TrainImages, step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """This process's share of global batch ``step`` (``B/world x 3 x S x S`` in [0, 1])."""
    chosen = batch_indices(len(images), step, batch_size, seed)
    samples = []
    for position, index in enumerate(chosen):
        if position % world_size != rank:
            continue
        generator = torch.Generator().manual_seed((seed * 1_000_003 + step * 8_191 + position) % (1 << 62))
        samples.append(images.sample(index, generator))
    return torch.stack(samples)
