"""Inference pipelines: preprocessing, the model call, postprocessing.

For now: reconstruction (``reconstruct_files``), used by ``unilip reconstruct``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from unilip.data import ImageReadError, eval_transform, read_image, to_uint8
from unilip.tokenizer import UniLIPTokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructionRecord:
    """What happened to one input image."""

    image: str
    status: str  # "ok" or "failed"
    psnr_db: float | None = None
    input_path: str | None = None
    output_path: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if v is not None})


def psnr_uint8(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (data range 255); inf when they are identical."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(reference, reconstruction, data_range=255))


def reconstruct_image(model: UniLIPTokenizer, image: Image.Image, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess (shorter-side resize, centre crop), reconstruct; returns (input, reconstruction) uint8 HWC."""
    parameter = next(model.parameters())
    pixels = eval_transform(image, size).unsqueeze(0).to(parameter.device, parameter.dtype)
    with torch.inference_mode():
        recon = model.reconstruct(pixels)
    return to_uint8(pixels.float())[0].cpu().numpy(), to_uint8(recon.float())[0].cpu().numpy()


def _unique_stem(name: str, used: set[str]) -> str:
    stem, index = name, 1
    while stem in used:
        index += 1
        stem = f"{name}-{index}"
    used.add(stem)
    return stem


def reconstruct_files(model: UniLIPTokenizer, sources: Iterable[tuple[str, Path | Image.Image]], out_dir: Path,
                      size: int, progress: bool = True) -> list[ReconstructionRecord]:
    """Reconstruct each source (a file path or an in-memory image, with a display name) into ``out_dir``.

    Writes ``<stem>.input.png`` (the preprocessed input) and ``<stem>.recon.png``; an unreadable file
    becomes a ``failed`` record with its reason, and the rest go on.
    """
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[ReconstructionRecord] = []
    used: set[str] = set()
    for name, source in tqdm(list(sources), desc="reconstruct", unit="img", disable=not progress):
        try:
            image = source if isinstance(source, Image.Image) else read_image(source)
        except ImageReadError as error:
            logger.error("skipping %s", error)
            records.append(ReconstructionRecord(image=name, status="failed", error=str(error)))
            continue
        original, recon = reconstruct_image(model, image, size)
        stem = _unique_stem(Path(name).stem, used)
        input_path, output_path = out_dir / f"{stem}.input.png", out_dir / f"{stem}.recon.png"
        Image.fromarray(original).save(input_path)
        Image.fromarray(recon).save(output_path)
        records.append(ReconstructionRecord(image=name, status="ok", psnr_db=psnr_uint8(original, recon),
                                            input_path=str(input_path), output_path=str(output_path)))
    return records
