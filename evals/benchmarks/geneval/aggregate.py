"""GenEval's aggregation (``evaluation/summary_scores.py``): per-task means over images, overall = mean of tasks.

* task score = fraction of correct *images* among all images of that tag;
* overall = unweighted mean of the task scores present (the headline, printed with 5 decimals there);
* also reported there: the fraction of correct images over all images, and the fraction of prompts
  with at least one correct image.

Standard errors are ours (the official script prints none): images of one prompt share the prompt, so a
task's SE is clustered by prompt; tasks hold disjoint prompts, so the overall SE combines them as independent.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol import TAGS


@dataclass(frozen=True)
class ImageOutcome:
    """One scored image: its task, its prompt (any key identifying the prompt) and whether it was correct."""

    tag: str
    prompt_key: str
    correct: bool


def _clustered_mean(outcomes: list[ImageOutcome]) -> dict[str, Any]:
    """Mean of ``correct`` with a cluster-robust (by prompt) standard error."""
    n = len(outcomes)
    mean = sum(o.correct for o in outcomes) / n
    residuals: dict[str, float] = defaultdict(float)
    for o in outcomes:
        residuals[o.prompt_key] += float(o.correct) - mean
    clusters = len(residuals)
    se = None
    if clusters > 1:
        se = math.sqrt(clusters / (clusters - 1) * sum(r * r for r in residuals.values())) / n
    return {"value": mean, "se": se, "n": n, "prompts": clusters}


def summarize(outcomes: Iterable[ImageOutcome]) -> dict[str, dict[str, Any]]:
    """The official summary of scored images, as metric entries (``value``, ``se``, ``n``).

    Returns:
        ``overall`` (mean of the task means present, with the tags it covers), one entry per task present
        (in the official task order), ``correct_images`` and ``correct_prompts``.

    Raises:
        ValueError: when there is no image, or an unknown tag.
    """
    outcomes = list(outcomes)
    if not outcomes:
        raise ValueError("no scored image to summarize")
    by_tag: dict[str, list[ImageOutcome]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.tag not in TAGS:
            raise ValueError(f"unknown GenEval tag {outcome.tag!r}; known: {', '.join(TAGS)}")
        by_tag[outcome.tag].append(outcome)
    tasks = {tag: _clustered_mean(by_tag[tag]) for tag in TAGS if tag in by_tag}
    ses = [entry["se"] for entry in tasks.values()]
    overall_se = math.sqrt(sum(se * se for se in ses)) / len(tasks) if all(se is not None for se in ses) else None
    overall = {
        "value": sum(entry["value"] for entry in tasks.values()) / len(tasks),
        "se": overall_se,
        "n": len(outcomes),
        "tags": list(tasks),
        "all_tags": len(tasks) == len(TAGS),
    }
    prompts: dict[str, bool] = defaultdict(bool)
    for outcome in outcomes:
        prompts[outcome.prompt_key] |= outcome.correct
    return {
        "overall": overall,
        **tasks,
        "correct_images": _clustered_mean(outcomes),
        "correct_prompts": {"value": sum(prompts.values()) / len(prompts), "se": None, "n": len(prompts)},
    }


def read_results_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an official ``results.jsonl`` (one JSON object per line)."""
    rows = []
    with Path(path).open() as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not a JSON line ({error})") from None
    return rows


def outcomes_from_official_rows(rows: Iterable[dict[str, Any]]) -> list[ImageOutcome]:
    """Official result rows -> outcomes; a prompt is identified by its ``metadata`` string, as summary_scores does."""
    outcomes = []
    for row in rows:
        missing = {"tag", "correct", "metadata"} - set(row)
        if missing:
            raise ValueError(f"official result row lacks {sorted(missing)}: {str(row)[:200]}")
        if not isinstance(row["correct"], bool):  # a string "false" must not count as correct
            raise ValueError(f"official result row has a non-boolean 'correct': {row['correct']!r}")
        outcomes.append(ImageOutcome(tag=row["tag"], prompt_key=str(row["metadata"]), correct=row["correct"]))
    return outcomes
