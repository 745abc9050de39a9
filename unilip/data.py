"""Image loading and the evaluation transform (upstream's eval preprocessing), plus built-in photos."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

# RGB photographs that ship inside scikit-image (no download): public domain or CC licensed.
BUILTIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina")


class ImageReadError(ValueError):
    """An image file that cannot be decoded."""


def read_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB, or raise ``ImageReadError`` saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None


def builtin_photos(names: tuple[str, ...] = BUILTIN_PHOTOS) -> dict[str, Image.Image]:
    """The real RGB photographs that scikit-image ships, by name."""
    from skimage import data as skdata

    photos = {}
    for name in names:
        if name not in BUILTIN_PHOTOS:
            raise ValueError(f"unknown built-in photo {name!r}; choose from {', '.join(BUILTIN_PHOTOS)}")
        photos[name] = Image.fromarray(getattr(skdata, name)()).convert("RGB")
    return photos


def eval_transform(image: Image.Image, size: int) -> torch.Tensor:
    """Upstream's evaluation preprocessing: shorter side to ``size`` (bicubic, antialias), centre crop.

    Returns a ``3 x size x size`` float tensor in [0, 1].
    """
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    resized = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.to_tensor(TF.center_crop(resized, size))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images -> uint8 by rounding (``B x 3 x H x W`` -> ``B x H x W x 3``)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
