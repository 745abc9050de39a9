"""GenEval's per-image correctness rules, as pure functions over detections.

These follow ``evaluation/evaluate_images.py`` of djghosh13/geneval (see ``shared/docs/benchmarks.md`` 1.3-1.5):

* per class: keep detections scoring strictly above the threshold (0.3; 0.9 for every class of a
  ``counting`` prompt), compared in float32 as the official scorer compares mmdet's float32 scores,
  most confident first with ties in the official numpy 1.23 order (:mod:`.argsort`), at most 16,
  optional same-class IoU suppression (off by default), and drop classes left empty;
* per ``include`` item, in order: the first ``count`` kept detections must exist; if a colour is asked, at
  least ``count`` of them must be classified that colour; if a position is asked (and the item passed so
  far), every one of them must stand in the relation to every object of the earlier item it refers to,
  and that earlier item must itself have passed;
* per ``exclude`` item: fail when ``count`` or more detections of the class are kept.

The ``reason`` texts are the official ones, word for word, except that when a pair of objects stands in
two wrong relations at once they are listed alphabetically (the official text joins a Python ``set``,
whose order changes from one process to the next with string hashing).

Nothing here needs a model: the colour classifier is a callable the caller passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .argsort import numpy123_argsort
from .protocol import ScoringRules, load_color_protocol

# The official rules (a frozen dataclass): the default of every scoring function.
DEFAULT_RULES = ScoringRules()

# (class name, its selected detections) -> one colour name per detection.
ColorClassifier = Callable[[str, Sequence["Detection"]], list[str]]


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected instance.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in image pixels (y points down).
        score: detector confidence in [0, 1].
        mask: optional boolean ``H x W`` instance mask of the whole image (used for the colour crop).
    """

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = None

    def to_list(self) -> list[float]:
        """``[x1, y1, x2, y2, score]``, the form the official ``details`` field uses."""
        return [float(v) for v in self.box] + [float(self.score)]


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU of two ``x1, y1, x2, y2`` boxes with the official +1-pixel area convention (used only by NMS)."""

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def confidence_threshold(tag: str, rules: ScoringRules) -> float:
    """The score a detection must exceed for a prompt of this tag."""
    return rules.counting_threshold if tag == "counting" else rules.threshold


def keep_detections(
    detections: Mapping[str, Sequence[Detection]], tag: str, rules: ScoringRules = DEFAULT_RULES
) -> dict[str, list[Detection]]:
    """Filter raw per-class detections the official way.

    Args:
        detections: class name -> every detection of that class, in the detector's order (equal scores
            keep the official order only when this is the order the detector listed them in).
        tag: the prompt's tag (``counting`` raises the threshold for every class).
        rules: thresholds (the official defaults unless overridden).

    Returns:
        class name -> kept detections, most confident first; classes with none kept are absent.
    """
    # mmdet returns float32 scores, and numpy compares a float32 array with the Python float threshold in
    # float32: a score of exactly float32(0.3) (0.30000001...) is *not* above 0.3 there, as here.
    threshold = np.float32(confidence_threshold(tag, rules))
    kept: dict[str, list[Detection]] = {}
    for name, candidates in detections.items():
        if not candidates:
            continue
        scores = np.asarray([d.score for d in candidates], dtype=np.float32)
        above = scores > threshold
        # The official ``np.argsort(scores)[::-1]`` over all candidates (numpy 1.23's tie order), then the
        # threshold, then the first max_objects.
        descending = numpy123_argsort(scores.tolist())[::-1]
        order = [i for i in descending if above[i]][: rules.max_objects]
        chosen: list[Detection] = []
        while order:
            best = order.pop(0)
            chosen.append(candidates[best])
            if rules.max_overlap < 1:
                order = [i for i in order if box_iou(candidates[best].box, candidates[i].box) < rules.max_overlap]
        if chosen:
            kept[name] = chosen
    return kept


def relative_position(box_a: Sequence[float], box_b: Sequence[float], position_threshold: float = 0.1) -> set[str]:
    """Where box A lies relative to box B: a subset of ``left of``, ``right of``, ``above``, ``below``.

    The centre offset is shrunk on each axis by ``position_threshold`` times the two boxes' summed size
    (never past zero); a direction holds when its shrunk component exceeds half the *unshrunk* offset's
    length. Overlapping boxes (both shrunk components below 1e-3) have no relation.
    """
    a = np.asarray(box_a[:4], dtype=np.float64).reshape(2, 2)
    b = np.asarray(box_b[:4], dtype=np.float64).reshape(2, 2)
    offset = a.mean(axis=0) - b.mean(axis=0)
    sizes = np.abs(a[1] - a[0]) + np.abs(b[1] - b[0])
    revised = np.maximum(np.abs(offset) - position_threshold * sizes, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def pick_colors(logits: np.ndarray, colors: Sequence[str]) -> list[str]:
    """Colour name per row of ``N x len(colors)`` logits; a tie goes to the colour listed first (argmax)."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != len(colors):
        raise ValueError(f"expected N x {len(colors)} colour logits, got shape {logits.shape}")
    return [colors[int(i)] for i in np.argmax(logits, axis=1)]


def evaluate_image(
    metadata: Mapping[str, Any],
    kept: Mapping[str, Sequence[Detection]],
    classify_colors: ColorClassifier,
    rules: ScoringRules = DEFAULT_RULES,
) -> tuple[bool, str]:
    """Whether one image satisfies its prompt record, and why not.

    Args:
        metadata: the prompt record (``tag``, ``include`` and optionally ``exclude``).
        kept: the output of :func:`keep_detections` for this image.
        classify_colors: called only for items with a colour, on the top-``count`` detections of the class.
        rules: thresholds (``position_threshold`` is used here).

    Returns:
        ``(correct, reason)``: reason lists every failed check, one per line (empty when correct).
    """
    correct = True
    reasons: list[str] = []
    # The detections each include item matched (None when the item failed), for later position checks.
    matched_groups: list[list[Detection] | None] = []
    for item in metadata.get("include", []):
        name, count = item["class"], item["count"]
        found = list(kept.get(name, []))[:count]
        passed = True
        if len(found) < count:
            passed = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in item:
                colors = classify_colors(name, found)
                if len(colors) != len(found):
                    raise ValueError(f"the colour classifier returned {len(colors)} colours for {len(found)} objects")
                hits = colors.count(item["color"])
                if hits < count:
                    passed = False
                    # The official text lists the colours seen in the protocol's colour order.
                    seen = ", ".join(f"{colors.count(c)} {c}" for c in load_color_protocol().colors if c in colors)
                    reasons.append(
                        f"expected {item['color']} {name}>={count}, found {hits} {item['color']}; and {seen}"
                    )
            if "position" in item and passed:
                relation, target_index = item["position"]
                targets = matched_groups[target_index]
                if targets is None:
                    passed = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for obj in found:
                        for target in targets:
                            actual = relative_position(obj.box, target.box, rules.position_threshold)
                            if relation not in actual:
                                passed = False
                                # No relation at all reads "found  target" (two spaces), as officially.
                                reasons.append(
                                    f"expected {name} {relation} target, found {' and '.join(sorted(actual))} target"
                                )
                                break
                        if not passed:
                            break
        correct = correct and passed
        matched_groups.append(found if passed else None)
    for item in metadata.get("exclude", []):
        name, count = item["class"], item["count"]
        present = len(kept.get(name, []))
        if present >= count:
            correct = False
            reasons.append(f"expected {name}<{count}, found {present}")
    return correct, "\n".join(reasons)


def score_image(
    metadata: Mapping[str, Any],
    detections: Mapping[str, Sequence[Detection]],
    classify_colors: ColorClassifier,
    rules: ScoringRules = DEFAULT_RULES,
) -> dict[str, Any]:
    """Filter raw detections and evaluate one image; the official per-image fields (without file names).

    Returns:
        ``{"correct", "reason", "details"}`` where details maps each kept class to its
        ``[x1, y1, x2, y2, score]`` lists, most confident first.
    """
    kept = keep_detections(detections, metadata["tag"], rules)
    correct, reason = evaluate_image(metadata, kept, classify_colors, rules)
    return {
        "correct": bool(correct),
        "reason": reason,
        "details": {name: [d.to_list() for d in objects] for name, objects in kept.items()},
    }
