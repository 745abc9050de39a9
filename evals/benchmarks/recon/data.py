"""Image sources for the reconstruction benchmark: folders, tar shards, ImageNet-val, built-in photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.benchmark import Item
from unilip.data import IMAGE_EXTENSIONS, ImageLoader, list_image_sources, tar_shards

IMAGENET_VAL_SIZE = 50_000
DATASET_KINDS = ("folder", "tar", "imagenet-val", "builtin")

__all__ = ["DATASET_KINDS", "IMAGENET_VAL_SIZE", "ImageLoader", "list_images"]


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
    if kind != "builtin" and not path:
        raise ValueError(f"dataset kind {kind} needs --data PATH")
    source_kind = kind
    if kind == "imagenet-val":
        source_kind = "tar" if tar_shards(Path(path)) else "folder"
    entries = list_image_sources(source_kind, path)
    if not entries:
        extensions = ", ".join(sorted(set(e.lower() for e in IMAGE_EXTENSIONS)))
        raise ValueError(f"no images found in {path or kind} (extensions: {extensions})")
    if kind == "imagenet-val" and num_images is None:
        if len(entries) < IMAGENET_VAL_SIZE:
            raise ValueError(f"{path}: found {len(entries)} images; the imagenet-val protocol uses all "
                             f"{IMAGENET_VAL_SIZE:,}. Pass --num-images N to evaluate a subset on purpose.")
        num_images = IMAGENET_VAL_SIZE
    if num_images is not None:
        if num_images > len(entries):
            raise ValueError(f"--num-images {num_images} but the dataset has only {len(entries)} images")
        entries = entries[:num_images]
    items = [Item(id=item_id, source=source) for item_id, source, _ in entries]
    return items, [[item_id, size] for item_id, _, size in entries]
