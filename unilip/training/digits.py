"""A real labelled image set that ships with scikit-learn: the 1,797 8 x 8 handwritten digits.

It is the CPU stand-in for the data behind the paper's "understanding preservation" study: small enough
to train a tiny encoder on in seconds, real enough that the encoder's features carry something (the
digit class) worth preserving while the encoder is later fine-tuned for reconstruction.

The split is fixed (stratified, 20 % test, by ``seed``), so the teacher, the frozen head and every
fine-tuned variant are trained and measured on the same images.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

TEST_FRACTION = 0.2
# scikit-learn's digits are integer intensities 0..16 (counts of set pixels in 4 x 4 blocks).
_DIGITS_MAX = 16.0
_NATIVE = 8

Split = Literal["train", "test"]


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    # load_digits reads a small bundled file; cached because every caller wants the same arrays.
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)  # 1797 x 8 x 8
    labels = digits.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@lru_cache(maxsize=8)
def _split_indices(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, labels = _raw_digits()
    index = np.arange(len(labels))
    # Stratified so that both halves keep the ~10 % per-class balance of the full set.
    train, test = train_test_split(index, test_size=TEST_FRACTION, random_state=seed, stratify=labels)
    return train, test


def load_digits_split(split: Split, size: int = 56, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One half of the fixed stratified split of scikit-learn's handwritten digits, as RGB images.

    Args:
        split: ``"train"`` (1,437 images) or ``"test"`` (360 images).
        size: output side in pixels (>= 8); the 8 x 8 digits are upscaled bicubically and clamped to
            [0, 1]. Use a multiple of the token stride (14 for ``tiny``) to feed a tokenizer.
        seed: seed of the split (``train_test_split``'s ``random_state``); the same seed always gives
            the same images in the same order.

    Returns:
        ``(images, labels)``: float32 ``N x 3 x size x size`` in [0, 1] (grey replicated to RGB) and
        int64 ``N`` class indices 0..9 (names in ``DIGIT_NAMES``).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if size < _NATIVE:
        raise ValueError(
            f"size must be >= {_NATIVE} (the digits are {_NATIVE} x {_NATIVE} and are only upscaled); got {size}"
        )
    images, labels = _raw_digits()
    train, test = _split_indices(int(seed))
    index = train if split == "train" else test
    x = torch.from_numpy(images[index] / _DIGITS_MAX).float().unsqueeze(1)  # N x 1 x 8 x 8
    if size != _NATIVE:
        # Plain bicubic (a = -0.75, torch's default) overshoots near strokes, hence the clamp.
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    x = x.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
    return x, torch.from_numpy(labels[index].copy())


# The size the held-out digits are served at as an image dataset (``--dataset digits``): the tiny
# variants' native resolution, so the evaluation transform leaves them as they are.
DATASET_SIZE = 56


def digit_labels(split: Split, seed: int = 0) -> list[int]:
    """The labels of a split, in order (cheap: no image is resized)."""
    _, labels = _raw_digits()
    train, test = _split_indices(int(seed))
    return [int(label) for label in labels[train if split == "train" else test]]


def digit_images_uint8(split: Split, size: int = DATASET_SIZE, seed: int = 0) -> np.ndarray:
    """A split as ``N x size x size x 3`` uint8 RGB: ``load_digits_split`` rounded, as PNGs would hold it."""
    from unilip.pixels import to_uint8

    images, _ = load_digits_split(split, size=size, seed=seed)
    return to_uint8(images).numpy()


def export_digits_folder(split: Split, folder: str | Path, size: int = 56, seed: int = 0) -> list[Path]:
    """Write a split as an image folder, ``folder/<label>/<index:04d>.png``, for image-folder evaluators.

    Each image is the ``load_digits_split`` tensor rounded to uint8 RGB, so reading it back gives the
    tensor to within 1/255. ``index`` is the image's position in the split. Files are rewritten with
    identical bytes on a second call, so calling it again is harmless.

    Args:
        split: ``"train"`` or ``"test"``.
        folder: destination directory (created if needed).
        size: image side in pixels, as for ``load_digits_split``.
        seed: split seed, as for ``load_digits_split``.

    Returns:
        The written PNG paths, sorted.
    """
    from PIL import Image

    folder = Path(folder)
    pixels = digit_images_uint8(split, size=size, seed=seed)  # N x S x S x 3
    paths = []
    for index, (image, label) in enumerate(zip(pixels, digit_labels(split, seed=seed), strict=True)):
        path = folder / str(label) / f"{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        paths.append(path)
    return sorted(paths)
