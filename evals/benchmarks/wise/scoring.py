"""WISE scoring: reading the judge's answer, WiScore, category means and the weighted overall.

Legacy protocol (``WISE_legacy/gpt_eval.py`` and ``Calculate.py``, see docs/benchmarks.md 2.2-2.3):
three scores 0-2; WiScore = (0.7 C + 0.2 R + 0.1 A) / 2; the category comes from the prompt id
range; Overall = 0.4 Culture + 0.167 Time + 0.133 Space + 0.1 (Biology + Physics + Chemistry).
Verified protocol (2.6): one binary score; new id ranges; Overall = 0.4 Culture + 0.12 x the other five.
The mid-2025 script (current when UniLIP was evaluated) read the same three scores but counted a score
missing from the answer as 0: :func:`parse_legacy_missing_zero`, for reproducing such numbers only.
"""

from __future__ import annotations

import math
import re
from typing import Any

from evals.benchmarks.kit import mean_se, not_computed
from evals.judges.states import ParseError

AXES = ("consistency", "realism", "aesthetic_quality")
WISCORE_WEIGHTS = {"consistency": 0.7, "realism": 0.2, "aesthetic_quality": 0.1}

# (category, first id, last id), in the order results list them.
LEGACY_RANGES = (
    ("culture", 1, 400),
    ("time", 401, 567),
    ("space", 568, 700),
    ("biology", 701, 800),
    ("physics", 801, 900),
    ("chemistry", 901, 1000),
)
LEGACY_WEIGHTS = {"culture": 0.4, "time": 0.167, "space": 0.133, "biology": 0.1, "physics": 0.1, "chemistry": 0.1}
VERIFIED_RANGES = (
    ("culture", 1, 400),
    ("time", 401, 520),
    ("space", 521, 640),
    ("biology", 641, 760),
    ("physics", 761, 880),
    ("chemistry", 881, 1000),
)
VERIFIED_WEIGHTS = {"culture": 0.4, "time": 0.12, "space": 0.12, "biology": 0.12, "physics": 0.12, "chemistry": 0.12}

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
# The pinned official pattern: optional ** around the name, an optional ASCII colon, one digit. (Only the
# March 2025 release also took the full-width colon U+FF1A.) ``\d`` is Python's: any Unicode decimal digit.
_LEGACY_SCORE = re.compile(r"\*{0,2}(consistency|realism|aesthetic quality)\*{0,2}\s*:?\s*(\d)", re.I)
_DIGIT_LINE = re.compile(r"[0-2]")
_VERIFIED_SCORE = re.compile(r"Score:\s*([01])(?!\d)")
_BINARY_LINE = re.compile(r"[01]")


def strip_thinking(text: str) -> str:
    """Drop ``<think>...</think>`` blocks (reasoning judges), whose scratch text must not be parsed."""
    return _THINK.sub("", text)


def parse_legacy(text: str) -> dict[str, int]:
    """``{consistency, realism, aesthetic_quality}`` from a legacy judge answer.

    As the pinned official script: every ``Name: d`` match counts (``**`` around the name, an ASCII
    colon or none, any case; a later one for the same name wins); if there is none, lines (split at
    ``\n``) holding only one digit 0-2 are read in order as C, R, A. Unlike it, a score outside 0-2 is
    a parse failure rather than a value that would push WiScore past 1.

    Raises:
        ParseError: a score is missing or out of range.
    """
    text = strip_thinking(text)
    scores = _named_scores(text)
    if not scores:
        # Lines end at "\n" only, as in the official script (not at "\r" or U+2028 as str.splitlines
        # would have it); strip() then drops a "\r" of a CRLF line end.
        digits = [int(line.strip()) for line in text.split("\n") if _DIGIT_LINE.fullmatch(line.strip())]
        if len(digits) >= 3:
            scores = dict(zip(AXES, digits[:3], strict=True))
    missing = [axis for axis in AXES if axis not in scores]
    if missing:
        raise ParseError(f"no score for {', '.join(missing)}")
    outside = {axis: value for axis, value in scores.items() if not 0 <= value <= 2}
    if outside:
        raise ParseError(f"scores outside 0-2: {outside}")
    return {axis: scores[axis] for axis in AXES}


def _named_scores(text: str) -> dict[str, int]:
    """Every ``Name: d`` match of the official pattern, a later one for the same name winning."""
    return {name.lower().replace(" ", "_"): int(value) for name, value in _LEGACY_SCORE.findall(text)}


MISSING_SCORED_ZERO = "missing_scored_zero"


def parse_legacy_missing_zero(text: str) -> dict[str, Any]:
    """The legacy scores as the mid-2025 official script read them: a score it cannot find counts as 0.

    That script (current when UniLIP was evaluated) took every ``Name: d`` match (ASCII colon, any digit
    as written) with no line fallback and no re-ask, and scored each missing name 0, so an answer
    without any score became WiScore 0. Reproduced here on purpose, for comparing with numbers made
    that way; ``missing_scored_zero`` lists the names that were absent, so results can count them.
    Never raises :class:`ParseError`: every answer yields scores.
    """
    scores = _named_scores(strip_thinking(text))
    missing = [axis for axis in AXES if axis not in scores]
    return {**{axis: scores.get(axis, 0) for axis in AXES}, MISSING_SCORED_ZERO: missing}


def parse_verified(text: str) -> dict[str, int]:
    """``{score}`` (0 or 1) from a WISE-Verified answer: ``Score: d``, else the first line that is 0 or 1.

    Raises:
        ParseError: neither is there.
    """
    text = strip_thinking(text)
    match = _VERIFIED_SCORE.search(text)
    if match:
        return {"score": int(match.group(1))}
    for line in text.splitlines():
        if _BINARY_LINE.fullmatch(line.strip()):
            return {"score": int(line.strip())}
    raise ParseError("no 'Score: 0/1' line and no line holding only 0 or 1")


def wiscore(consistency: float, realism: float, aesthetic_quality: float) -> float:
    """The normalised WiScore in [0, 1]: (0.7 C + 0.2 R + 0.1 A) / 2."""
    return (
        WISCORE_WEIGHTS["consistency"] * consistency
        + WISCORE_WEIGHTS["realism"] * realism
        + WISCORE_WEIGHTS["aesthetic_quality"] * aesthetic_quality
    ) / 2


def category_of(prompt_id: int, ranges: tuple[tuple[str, int, int], ...]) -> str:
    """The category of a prompt id by id range (as the official scripts; not the ``Category`` field)."""
    for category, first, last in ranges:
        if first <= prompt_id <= last:
            return category
    raise ValueError(f"prompt_id {prompt_id} lies outside every WISE category range {ranges}")


def aggregate_wise(
    item_scores: dict[int, float], ranges: tuple[tuple[str, int, int], ...], weights: dict[str, float]
) -> dict[str, Any]:
    """``overall`` (the weighted sum of category means) and each category's mean, with standard errors.

    ``overall`` needs every category to have at least one judged item; its standard error combines the
    category ones (independent samples): sqrt(sum of w^2 se^2).
    """
    by_category: dict[str, list[float]] = {category: [] for category, _, _ in ranges}
    for prompt_id, value in item_scores.items():
        by_category[category_of(prompt_id, ranges)].append(value)
    categories = {
        category: mean_se(values) if values else not_computed("no judged item in this category")
        for category, values in by_category.items()
    }
    empty = [category for category, values in by_category.items() if not values]
    if empty:
        overall: dict[str, Any] = not_computed(f"categories without a judged item: {', '.join(empty)}")
    else:
        value = sum(weights[c] * categories[c]["value"] for c in categories)
        ses = [categories[c]["se"] for c in categories]
        se = (
            math.sqrt(sum((weights[c] * s) ** 2 for c, s in zip(categories, ses, strict=True)))
            if None not in ses
            else None
        )
        overall = {"value": value, "se": se, "n": len(item_scores)}
    return {"overall": overall, **categories}
