"""The object detector of ``geneval@hf-mask2former``: Mask2Former (Swin-S, COCO instance) through transformers.

The official scorer runs mmdetection 2.x's Mask2Former. This module gets as close as transformers allows
and returns *every* candidate instance, unfiltered, so that the official rules (:mod:`.rules`) do all the
thresholding:

* ``post_process_instance_segmentation(threshold=0.0, return_binary_maps=True)``: its top-k over
  queries x classes (k = number of queries, 100) and its score (class probability x mean mask probability
  inside the mask) are those of mmdet's ``instance_postprocess`` (``max_per_image=100``); a threshold of 0
  switches its own score filter off, and it applies no NMS. It drops candidates whose mask is empty; mmdet
  keeps them with score 0 (the mask-probability mean over an empty mask), which no threshold of the
  protocol lets through, so the kept detections are the same.
* Input size: shorter side 800, longer side at most 1333, as mmdet's test pipeline (``img_scale=(1333,
  800)``, keep ratio). This is set here whatever the directory's ``preprocessor_config.json`` says.
* Boxes: the tight box of each binary mask, ``[x_min, y_min, x_max + 1, y_max + 1]``, as mmdet's
  ``mask2bbox`` (Mask2Former predicts no boxes).
* Classes: detector class index i is line i of ``object_names.txt``, as in the official scorer.

Differences that remain (documented in the benchmark's results through its spec):

1. Weights: the transformers checkpoints (``facebook/mask2former-swin-small-coco-instance``) are the
   detectron2-trained Mask2Former release converted to transformers; the official scorer uses OpenMMLab's
   own training (``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth``). Same
   architecture and data, different weights: detections, and so scores, differ.
2. Mask resolution: transformers resizes the mask logits to a fixed 384 x 384 grid, binarises there and
   scales the binary mask to the image with nearest-neighbour; mmdet upsamples the logits bilinearly to
   the padded input, crops the padding, resizes bilinearly to the image and binarises at full resolution.
   Mask edges (so boxes, positions and colour crops) can differ by about image_size / 384 pixels, and the
   mask-probability part of each score is averaged on the 384 grid.
3. Resizing: transformers resizes with torchvision (antialiased bilinear) and, for a size that is not a
   multiple of 32, stretches the image to the next multiple of 32; mmdet resizes with OpenCV bilinear and
   pads to a multiple of 32. Square images (800 x 800 after resizing) need neither.
4. Scores are rounded to 6 decimals by transformers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .rules import Detection
from .weights import directory_fingerprint, require_dir

logger = logging.getLogger(__name__)

DETECTOR_HUB_ID = "facebook/mask2former-swin-small-coco-instance"
DETECTOR_SOURCE = (
    f"the transformers Mask2Former Swin-S COCO-instance model, e.g. "
    f"`hf download {DETECTOR_HUB_ID} --local-dir PATH` on a machine with internet"
)
# mmdet's test pipeline for the official config: keep-ratio resize into (1333, 800), multiple of 32.
DETECTOR_INPUT = {"shortest_edge": 800, "longest_edge": 1333}
SIZE_DIVISOR = 32


def mask_to_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight box of a boolean mask, ``(x_min, y_min, x_max + 1, y_max + 1)``; ``(0, 0, 0, 0)`` when empty."""
    columns = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if columns.size == 0 or rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(columns[0]), float(rows[0]), float(columns[-1] + 1), float(rows[-1] + 1))


def detector_knobs() -> dict[str, Any]:
    """How detections are produced, for the spec (what moves scores besides the weights)."""
    return {
        "implementation": "transformers Mask2FormerForUniversalSegmentation",
        "input": {**DETECTOR_INPUT, "size_divisor": SIZE_DIVISOR},
        "postprocess": "post_process_instance_segmentation(threshold=0.0, return_binary_maps=True), "
        "boxes = tight mask boxes [x_min, y_min, x_max+1, y_max+1]",
        "dtype": "float32",
    }


class Mask2FormerDetector:
    """Mask2Former from a local transformers directory; returns all candidate instances per class name.

    Args:
        directory: a directory saved by transformers (config.json, weights, preprocessor_config.json).
        object_names: class name per detector class index (the official ``object_names.txt``).
        device: torch device for the model.
    """

    def __init__(self, directory: str | Path, object_names: Sequence[str], device: str = "cpu") -> None:
        from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

        self.directory = require_dir(directory, "detector", "Mask2Former weights", DETECTOR_SOURCE)
        self.object_names = tuple(object_names)
        self.device = torch.device(device)
        self.model = Mask2FormerForUniversalSegmentation.from_pretrained(self.directory).to(self.device).eval()
        num_labels = self.model.config.num_labels
        if num_labels != len(self.object_names):
            raise ValueError(
                f"{self.directory}: the detector has {num_labels} classes, GenEval's class list has "
                f"{len(self.object_names)}; use a COCO *instance* Mask2Former ({DETECTOR_HUB_ID})"
            )
        renamed = [
            (i, self.model.config.id2label.get(i), name)
            for i, name in enumerate(self.object_names)
            if self.model.config.id2label.get(i) != name
        ]
        if renamed:  # GenEval maps by index (e.g. its 'computer mouse' is COCO's 'mouse'); say so, once
            logger.info(
                "detector class names differ from GenEval's at %d indices (mapped by index, as the "
                "official scorer does): %s",
                len(renamed),
                renamed[:5],
            )
        # Set the protocol's input size explicitly: the directory's own processor settings may differ.
        self.processor = Mask2FormerImageProcessor.from_pretrained(
            self.directory, size=dict(DETECTOR_INPUT), size_divisor=SIZE_DIVISOR
        )

    def fingerprint(self) -> dict[str, Any]:
        """Weights and config digests plus how detections are produced."""
        return {**directory_fingerprint(self.directory), **detector_knobs()}

    @torch.inference_mode()
    def detect(self, image: Image.Image) -> dict[str, list[Detection]]:
        """Every candidate instance of one image, by class name (unsorted, unthresholded), with full-size masks.

        One image per forward pass: a batch would pad images to a common size, which changes the result.
        """
        image = image.convert("RGB")
        width, height = image.size
        inputs = self.processor(images=[image], return_tensors="pt")
        if not bool(inputs["pixel_mask"].all()):
            # The post-processing maps the whole (padded) input onto the image; padding would shift the masks.
            raise RuntimeError("the Mask2Former processor padded a single image; cannot map masks back exactly")
        outputs = self.model(
            pixel_values=inputs["pixel_values"].to(self.device), pixel_mask=inputs["pixel_mask"].to(self.device)
        )
        result = self.processor.post_process_instance_segmentation(
            outputs, threshold=0.0, target_sizes=[(height, width)], return_binary_maps=True
        )[0]
        detections: dict[str, list[Detection]] = {}
        segments = result["segments_info"]
        if not segments:
            return detections
        masks = result["segmentation"].detach().to("cpu").numpy() > 0.5
        if masks.shape != (len(segments), height, width):
            raise RuntimeError(
                f"unexpected mask array {masks.shape} for {len(segments)} instances of a {width} x {height} image"
            )
        for segment, mask in zip(segments, masks, strict=True):
            name = self.object_names[int(segment["label_id"])]
            detections.setdefault(name, []).append(
                Detection(box=mask_to_box(mask), score=float(segment["score"]), mask=mask)
            )
        return detections
