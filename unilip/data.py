"""Image loading and the evaluation transform (upstream's eval preprocessing), plus built-in photos."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

# RGB photographs that ship inside scikit-image (no download): public domain or CC licensed.
BUILTIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".JPEG", ".JPG", ".PNG")


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


# ----------------------------------------------------------------------------------- image sources
# A source is a tuple: ("builtin", name), ("file", path) or ("tar", shard path, member name).

def tar_shards(root: Path) -> list[Path]:
    """A .tar file itself, or the sorted .tar files of a folder (webdataset-style shards)."""
    if root.is_file() and root.suffix == ".tar":
        return [root]
    return sorted(root.glob("*.tar")) if root.is_dir() else []


def list_image_sources(kind: str, path: str | Path | None) -> list[tuple[str, tuple, int]]:
    """(id, source, byte size) of every image of a ``folder`` (recursive), ``tar`` shard set or ``builtin``.

    Ids are stable and sorted: relative paths for folders, ``shard.tar/member`` for tar shards.
    """
    if kind == "builtin":
        return [(name, ("builtin", name), 0) for name in BUILTIN_PHOTOS]
    if not path:
        raise ValueError(f"image source kind {kind!r} needs a path")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"image source path {root} does not exist")
    if kind == "tar":
        shards = tar_shards(root)
        if not shards:
            raise ValueError(f"{root}: no .tar shards found")
        entries = []
        for shard in shards:
            with tarfile.open(shard) as archive:
                for member in sorted(archive.getmembers(), key=lambda m: m.name):
                    if member.isfile() and Path(member.name).suffix in IMAGE_EXTENSIONS:
                        entries.append((f"{shard.name}/{member.name}", ("tar", str(shard), member.name), member.size))
        return entries
    if kind != "folder":
        raise ValueError(f"unknown image source kind {kind!r}; choose folder, tar or builtin")
    files = sorted(p for p in root.rglob("*") if p.suffix in IMAGE_EXTENSIONS and p.is_file())
    return [(p.relative_to(root).as_posix(), ("file", str(p)), p.stat().st_size) for p in files]


class ImageLoader:
    """Reads image sources as (RGB image, raw bytes); keeps tar shards open while in use."""

    def __init__(self) -> None:
        self._tars: dict[str, tarfile.TarFile] = {}
        self._builtin: dict[str, Image.Image] | None = None

    def load(self, source: tuple[Any, ...]) -> tuple[Image.Image, bytes]:
        kind = source[0]
        if kind == "builtin":
            if self._builtin is None:
                self._builtin = builtin_photos()
            image = self._builtin[source[1]]
            return image, image.tobytes()
        if kind == "file":
            raw = Path(source[1]).read_bytes()
            return read_image(source[1]), raw
        archive = self._tars.get(source[1]) or self._tars.setdefault(source[1], tarfile.open(source[1]))
        raw = archive.extractfile(source[2]).read()
        try:
            with Image.open(io.BytesIO(raw)) as image:
                image.load()
                return image.convert("RGB"), raw
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageReadError(f"{source[1]}:{source[2]}: not a readable image "
                                 f"({type(error).__name__}: {error})") from None

    def close(self) -> None:
        for archive in self._tars.values():
            archive.close()
        self._tars.clear()
