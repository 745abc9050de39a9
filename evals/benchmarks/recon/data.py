"""Image sources for the reconstruction benchmark: folders, tar shards, ImageNet-val, built-in photos."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from PIL import Image

from evals.benchmark import Item
from unilip.data import BUILTIN_PHOTOS, ImageReadError, builtin_photos, read_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".JPEG", ".JPG", ".PNG")
IMAGENET_VAL_SIZE = 50_000
DATASET_KINDS = ("folder", "tar", "imagenet-val", "builtin")


def list_images(kind: str, path: str | None, num_images: int | None) -> tuple[list[Item], list[list[Any]]]:
    """Items of a dataset in a stable order, and a cheap identity of each (id, byte size) for the fingerprint.

    Args:
        kind: ``folder`` (recursive), ``tar`` (webdataset-style shards: a .tar file or a folder of them),
            ``imagenet-val`` (a folder or shards of the 50,000 validation images; all of them unless
            ``num_images`` says otherwise) or ``builtin`` (the photos scikit-image ships).
        path: the folder or tar file (not for ``builtin``).
        num_images: keep the first N items of the sorted listing (None: all).
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")
    if kind == "builtin":
        items = [Item(id=name, source=("builtin", name)) for name in BUILTIN_PHOTOS]
        identity = [[name, 0] for name in BUILTIN_PHOTOS]
    else:
        if not path:
            raise ValueError(f"dataset kind {kind} needs --data PATH")
        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"dataset path {root} does not exist")
        shards = _tar_shards(root)
        if kind == "tar" or (kind == "imagenet-val" and shards):
            if not shards:
                raise ValueError(f"{root}: no .tar shards found")
            items, identity = _tar_items(shards)
        else:
            items, identity = _folder_items(root)
    if not items:
        raise ValueError(f"no images found in {path or kind} (extensions: {', '.join(sorted(set(e.lower() for e in IMAGE_EXTENSIONS)))})")
    if kind == "imagenet-val" and num_images is None:
        if len(items) < IMAGENET_VAL_SIZE:
            raise ValueError(f"{path}: found {len(items)} images; the imagenet-val protocol uses all "
                             f"{IMAGENET_VAL_SIZE:,}. Pass --num-images N to evaluate a subset on purpose.")
        num_images = IMAGENET_VAL_SIZE
    if num_images is not None:
        if num_images > len(items):
            raise ValueError(f"--num-images {num_images} but the dataset has only {len(items)} images")
        items, identity = items[:num_images], identity[:num_images]
    return items, identity


def _tar_shards(root: Path) -> list[Path]:
    if root.is_file() and root.suffix == ".tar":
        return [root]
    return sorted(root.glob("*.tar")) if root.is_dir() else []


def _folder_items(root: Path) -> tuple[list[Item], list[list[Any]]]:
    files = sorted(p for p in root.rglob("*") if p.suffix in IMAGE_EXTENSIONS and p.is_file())
    items = [Item(id=p.relative_to(root).as_posix(), source=("file", str(p))) for p in files]
    return items, [[item.id, p.stat().st_size] for item, p in zip(items, files)]


def _tar_items(shards: list[Path]) -> tuple[list[Item], list[list[Any]]]:
    items, identity = [], []
    for shard in shards:
        with tarfile.open(shard) as archive:
            for member in sorted(archive.getmembers(), key=lambda m: m.name):
                if member.isfile() and Path(member.name).suffix in IMAGE_EXTENSIONS:
                    item_id = f"{shard.name}/{member.name}"
                    items.append(Item(id=item_id, source=("tar", str(shard), member.name)))
                    identity.append([item_id, member.size])
    return items, identity


class ImageLoader:
    """Reads item sources as (RGB image, raw bytes); keeps tar shards open while in use."""

    def __init__(self) -> None:
        self._tars: dict[str, tarfile.TarFile] = {}
        self._builtin: dict[str, Image.Image] | None = None

    def load(self, source: tuple) -> tuple[Image.Image, bytes]:
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
