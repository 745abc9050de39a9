"""ImgEdit scoring: reading ``Axis: n`` lines, per-sample means, per-type means and the overall.

As the official ``step1_get_avgscore.py``: the text split into lines by ``str.splitlines``, each
stripped line split on ": "; two parts whose second ``isdigit()`` give a score, ``int()`` of it (so
Arabic-Indic, full-width and other Unicode decimal digits count, as there); the sample's score is
their mean, rounded to 2 decimals; a sample without any is dropped (here: ``parse_failed``, counted).
Then (``step2_typescore.py``) the type score is the mean of its samples; the overall, which no
official script computes, is the unweighted mean of the type scores (the paper's "average over
tasks"). UGE: the mean of the sample scores.
"""

from __future__ import annotations

import math
import re
from typing import Any

from evals.benchmarks.kit import mean_se, not_computed
from evals.judges.states import ParseError

SCALE = (1, 5)
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)


def parse_axis_scores(text: str) -> dict[str, Any]:
    """``{axes: [[name, value], ...], mean, score}`` from a judge answer (``score`` = mean rounded to 2).

    Values are read as the official step reads them: ``isdigit()`` then ``int()``, so "Axis: ٤" (an
    Arabic-Indic four) or "Axis: ４" (full-width) is a 4. Unlike the official step, a value outside 1-5
    is a parse failure rather than part of the mean, and so is a value ``isdigit()`` accepts but
    ``int()`` cannot read (a superscript "²"), on which the official step stops with an error.

    Raises:
        ParseError: no ``Name: n`` line, a value outside the 1-5 scale, or an unreadable digit.
    """
    axes = []
    for line in _THINK.sub("", text).splitlines():
        parts = line.strip().split(": ")
        if len(parts) == 2 and parts[1].isdigit():
            if not parts[1].isdecimal():  # isdigit() but not a decimal digit: int() raises there
                raise ParseError(
                    f"{line.strip()!r}: {parts[1]!r} passes the official isdigit() test but int() "
                    "cannot read it (the official step1 would stop with an error)"
                )
            axes.append([parts[0], int(parts[1])])
    if not axes:
        raise ParseError("no 'Axis name: n' line")
    outside = [pair for pair in axes if not SCALE[0] <= pair[1] <= SCALE[1]]
    if outside:
        raise ParseError(f"scores outside {SCALE[0]}-{SCALE[1]}: {outside}")
    mean = sum(value for _, value in axes) / len(axes)
    return {"axes": axes, "mean": mean, "score": round(mean, 2)}


def aggregate_types(sample_scores: dict[str, list[float]], types: list[str]) -> dict[str, Any]:
    """``overall`` (unweighted mean of the type means) and each type's mean, with standard errors.

    ``overall`` needs every type of the data to have a judged sample; its standard error is
    sqrt(sum of se_t^2) / T (independent samples per type). ``value_rounded`` repeats each number as the
    official scripts print it (type means rounded to 2 decimals; the overall from those).
    """
    per_type: dict[str, Any] = {}
    for edit_type in types:
        values = sample_scores.get(edit_type, [])
        if values:
            per_type[edit_type] = {**mean_se(values), "value_rounded": round(sum(values) / len(values), 2)}
        else:
            per_type[edit_type] = not_computed("no judged sample of this type")
    empty = [t for t in types if "value" not in per_type[t]]
    if empty:
        overall: dict[str, Any] = not_computed(f"edit types without a judged sample: {', '.join(empty)}")
    else:
        ses = [per_type[t]["se"] for t in types]
        overall = {
            "value": sum(per_type[t]["value"] for t in types) / len(types),
            "se": math.sqrt(sum(s * s for s in ses)) / len(types) if None not in ses else None,
            "n": sum(per_type[t]["n"] for t in types),
            "value_rounded": round(sum(per_type[t]["value_rounded"] for t in types) / len(types), 2),
        }
    return {"overall": overall, **per_type}
