"""The colour classifier of ``geneval@hf-mask2former``: CLIP ViT-L/14 zero-shot over 10 colours, via transformers.

As the official scorer (open_clip ``ViT-L-14``/``openai`` with clip_benchmark's zero-shot classifier):

* crop: keep the pixels inside the instance mask, paint the rest flat ``#999999``, then crop to the
  detection box with PIL (which rounds the box coordinates);
* image preprocessing: open_clip's eval transform, reproduced with torchvision on the PIL crop (bicubic
  resize of the shorter side, centre crop, OpenAI mean/std). Sizes and mean/std come from the weights
  directory's ``preprocessor_config.json``. transformers' own CLIP image processor is not used because its
  centre crop floors the offset where torchvision rounds it (a one-pixel shift on some crops);
* per object class, 3 templates x 10 colours: each text embedding L2-normalised, averaged over the
  templates, normalised again; logits = 100 x normalised image embedding . class matrix; argmax (the first
  colour wins a tie).

Difference: the official classifier runs under fp16 autocast on CUDA; this one computes in float32, so a
near-tie between two colours can resolve differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .protocol import ColorProtocol
from .rules import Detection, pick_colors
from .weights import directory_fingerprint, require_dir

CLIP_HUB_ID = "openai/clip-vit-large-patch14"
CLIP_SOURCE = (
    f"the transformers CLIP ViT-L/14 model, e.g. `hf download {CLIP_HUB_ID} "
    "--local-dir PATH` on a machine with internet"
)


def masked_crop(image: Image.Image, box: Sequence[float], mask: np.ndarray | None, background: str) -> Image.Image:
    """The official colour crop: outside-mask pixels set to ``background``, then the box cut out.

    Args:
        image: the generated image.
        box: ``(x1, y1, x2, y2)``; PIL rounds the coordinates.
        mask: boolean ``H x W`` instance mask, or None to keep the background.
        background: a PIL colour (``"#999999"`` in the protocol).

    Raises:
        ValueError: when the mask does not match the image, or the crop is empty.
    """
    rgb = image.convert("RGB")
    if mask is not None:
        if tuple(mask.shape) != (rgb.height, rgb.width):
            raise ValueError(f"mask of shape {mask.shape} for a {rgb.width} x {rgb.height} image")
        blank = Image.new("RGB", rgb.size, color=background)
        rgb = Image.composite(rgb, blank, Image.fromarray(np.asarray(mask, dtype=bool)))
    crop = rgb.crop(tuple(float(v) for v in box[:4]))
    if crop.width == 0 or crop.height == 0:
        raise ValueError(f"empty colour crop for box {list(box[:4])}")
    return crop


def _pooled(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected embedding; 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class CLIPColorClassifier:
    """Zero-shot colour classification of detected objects with a local transformers CLIP.

    Args:
        directory: a directory saved by transformers (CLIP weights, tokenizer, preprocessor_config.json).
        protocol: colours, templates and crop background.
        device: torch device for the model.
    """

    def __init__(self, directory: str | Path, protocol: ColorProtocol, device: str = "cpu") -> None:
        from torchvision import transforms
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.directory = require_dir(directory, "clip", "CLIP ViT-L/14 weights", CLIP_SOURCE)
        self.protocol = protocol
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(self.directory).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
        config = CLIPImageProcessor.from_pretrained(self.directory)
        resize = config.size.get("shortest_edge") or min(config.size["height"], config.size["width"])
        crop = (config.crop_size["height"], config.crop_size["width"])
        self.preprocess = {
            "resize_shorter_side": int(resize),
            "center_crop": list(crop),
            "mean": [float(v) for v in config.image_mean],
            "std": [float(v) for v in config.image_std],
            "interpolation": "bicubic (PIL, via torchvision)",
        }
        self.transform = transforms.Compose(
            [
                transforms.Resize(int(resize), interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(crop),
                transforms.ToTensor(),
                transforms.Normalize(self.preprocess["mean"], self.preprocess["std"]),
            ]
        )
        self._classifiers: dict[str, torch.Tensor] = {}

    def fingerprint(self) -> dict[str, Any]:
        """Weights and config digests plus the preprocessing used."""
        return {**directory_fingerprint(self.directory), "preprocess": self.preprocess, "dtype": "float32"}

    @torch.inference_mode()
    def text_classifier(self, object_name: str) -> torch.Tensor:
        """``D x num_colors`` matrix of template-averaged, normalised colour embeddings for one class (cached)."""
        if object_name not in self._classifiers:
            columns = []
            for color in self.protocol.colors:
                tokens = self.tokenizer(
                    self.protocol.texts(color, object_name), padding=True, truncation=True, return_tensors="pt"
                ).to(self.device)
                embeddings = _pooled(self.model.get_text_features(**tokens)).float()
                mean = torch.nn.functional.normalize(embeddings, dim=-1).mean(dim=0)
                columns.append(mean / mean.norm())
            self._classifiers[object_name] = torch.stack(columns, dim=1)
        return self._classifiers[object_name]

    @torch.inference_mode()
    def logits(self, crops: Sequence[Image.Image], object_name: str) -> np.ndarray:
        """``N x num_colors`` zero-shot logits of the crops for ``object_name``."""
        pixels = torch.stack([self.transform(crop.convert("RGB")) for crop in crops]).to(self.device)
        features = torch.nn.functional.normalize(
            _pooled(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1
        )
        return (self.protocol.logit_scale * features @ self.text_classifier(object_name)).cpu().numpy()

    def classify(self, image: Image.Image, object_name: str, detections: Sequence[Detection]) -> list[str]:
        """The colour of each detection of ``object_name`` in ``image`` (masked, gray-filled crop)."""
        if not detections:
            return []
        crops = [masked_crop(image, d.box, d.mask, self.protocol.background) for d in detections]
        return pick_colors(self.logits(crops, object_name), self.protocol.colors)
