"""Image sources for the reconstruction benchmark: folders, tar shards, ImageNet-val, built-in photos.

What is read, how, and what is skipped is the input contract of :mod:`unilip.data`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.benchmark import Item
from unilip.data import IMAGE_EXTENSIONS, ImageLoader, SkippedFile, list_image_sources, printable, tar_shards

IMAGENET_VAL_SIZE = 50_000
DATASET_KINDS = ("folder", "tar", "imagenet-val", "builtin", "digits")
# Kinds that need no --data path: they ship with the dependencies.
SHIPPED_KINDS = ("builtin", "digits")
# How many skipped names the warning line shows.
SKIPPED_SHOWN = 5

logger = logging.getLogger(__name__)

__all__ = ["DATASET_KINDS", "IMAGENET_VAL_SIZE", "ImageListing", "ImageLoader", "list_images"]


@dataclass(frozen=True)
class ImageListing:
    """A dataset's items in a stable order, a cheap identity of them, and the files left out.

    ``identity`` is ``[id, byte size]`` per item (for the spec fingerprint); ``skipped`` lists every
    file of the dataset not read as an image, with the reason (for the whole dataset, before
    ``num_images`` is applied). Each item's ``source`` names an absolute path (see
    :func:`unilip.data.source_file`).
    """

    items: list[Item]
    identity: list[list[Any]]
    skipped: list[SkippedFile]


def list_images(kind: str, path: str | None, num_images: int | None) -> ImageListing:
    """Items of a dataset in a stable order, their identity, and the files skipped (logged as one warning).

    Args:
        kind: ``folder`` (recursive), ``tar`` (webdataset-style shards: a .tar file or a folder of them),
            ``imagenet-val`` (a folder or shards of the 50,000 validation images; all of them unless
            ``num_images`` says otherwise), ``builtin`` (the photos scikit-image ships) or ``digits``
            (the 360 held-out handwritten digits of the tiny studies, 56 px: scikit-learn ships them).
        path: the folder or tar file (not for ``builtin``).
        num_images: keep the first N items of the sorted listing (None: all).
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}")
    if kind not in SHIPPED_KINDS and not path:
        raise ValueError(f"dataset kind {kind} needs --data PATH")
    source_kind = kind
    if kind == "imagenet-val":
        source_kind = "tar" if tar_shards(Path(path)) else "folder"
    listing = list_image_sources(source_kind, path)
    where = printable(str(path or kind))
    if listing.skipped:
        shown = ", ".join(f"{printable(s.id)} ({s.reason})" for s in listing.skipped[:SKIPPED_SHOWN])
        more = f", and {len(listing.skipped) - SKIPPED_SHOWN:,} more" if len(listing.skipped) > SKIPPED_SHOWN else ""
        logger.warning(
            "%s: %s file(s) skipped, not read as images: %s%s", where, f"{len(listing.skipped):,}", shown, more
        )
    entries = listing.entries
    if not entries:
        raise ValueError(
            f"no images found in {where} (read: {' '.join(IMAGE_EXTENSIONS)}, any letter case; "
            f"{len(listing.skipped)} file(s) skipped)"
        )
    if kind == "imagenet-val" and num_images is None:
        if len(entries) < IMAGENET_VAL_SIZE:
            raise ValueError(
                f"{where}: found {len(entries)} images; the imagenet-val protocol uses all "
                f"{IMAGENET_VAL_SIZE:,}. Pass --num-images N to evaluate a subset on purpose."
            )
        num_images = IMAGENET_VAL_SIZE
    if num_images is not None:
        if num_images > len(entries):
            raise ValueError(f"--num-images {num_images} but the dataset has only {len(entries)} images")
        entries = entries[:num_images]
    return ImageListing(
        items=[Item(id=e.id, source=e.source) for e in entries],
        identity=[[e.id, e.size] for e in entries],
        skipped=listing.skipped,
    )
