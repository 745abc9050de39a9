"""The distillation study's results: one Markdown table, one CSV and one figure of each metric against λ.

Rows are plain dicts, one per model (see :func:`validate_rows` for the exact schema):

- ``role="reference"``: a fixed model such as the teacher or the stage-1 tokenizer, drawn as a dashed
  horizontal line;
- ``role="control"``: the positive control (a deliberately damaged model), in its own marked row and drawn
  as a red dash-dotted line;
- ``role="variant"``: a stage-2 model at distillation weight λ (``distill_weight``), each metric the mean
  over ``seeds`` seeds with its standard error, drawn as points with ± SE error bars against λ.

Which metrics, in which order, with which label, unit, direction, decimals and plot range, is a list of
:class:`MetricSpec` (the study's is :data:`STUDY_METRICS`). Texts meant for people (table headers, axis
labels) use ``MetricSpec.heading`` (the label with its unit and ↑ or ↓), never the internal key; the CSV,
meant for further analysis, names its columns by key (``psnr_mean``, ``psnr_se``, ``psnr_n``).

The y axes are chosen so that a small difference does not look like a trend: every metric with a natural
range is drawn on all of it (percentages on 0–100, cosine similarity and SSIM on 0–1, PSNR from 0 dB), and
every plotted value is written beside its point or line with the metric's decimals, so differences too
small to see at that range can still be read. The output depends only on the rows: no timestamps.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

NOT_COMPUTED = "not computed"
ROLES = ("reference", "control", "variant")
CONTROL_MARK = "(control)"
PLOT_HEADING = "## Metrics against λ"
DEFAULT_TITLE = "Tiny distillation study: metrics against the distillation weight λ"
_ROLE_ORDER = {"reference": 0, "control": 1, "variant": 2}
_CONTROL_COLOR = "#c0392b"
_VARIANT_COLOR = "#1f5fa8"
_REFERENCE_COLORS = ("#2e8b57", "#8e44ad", "#d4880f", "#555555", "#17becf", "#7f6d3a")
_REFERENCE_DASHES = ((0, (6, 3)), (3, (2, 4)), (0, (8, 2, 2, 2)), (0, (1, 2)))


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is shown.

    Attributes:
        key: the key of the metric in each row's ``metrics``; used only in the CSV's column names.
        label: what people read, with its unit, e.g. ``"PSNR (dB)"``.
        higher_is_better: shown as ↑ (True) or ↓ (False) after the label.
        decimals: decimals of the mean and of its standard error in the table and on the plot.
        scale: the plot's y range ``(low, high)``; ``None`` for either end fits the data on that side
            (``(0.0, None)``: from 0 to just above the largest value). ``None`` fits both ends.
    """

    key: str
    label: str
    higher_is_better: bool = True
    decimals: int = 2
    scale: tuple[float | None, float | None] | None = None

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def heading(self) -> str:
        """The label with its unit and direction, e.g. ``"PSNR (dB) ↑"``."""
        return f"{self.label} {self.arrow}"

    def format(self, value: float) -> str:
        return f"{float(value):.{self.decimals}f}"


PERCENT = (0.0, 100.0)
UNIT_INTERVAL = (0.0, 1.0)

STUDY_METRICS: list[MetricSpec] = [
    MetricSpec("token_cosine", "token cosine to teacher", True, 4, UNIT_INTERVAL),
    MetricSpec("mcq", "digits MCQ circular accuracy (%)", True, 1, PERCENT),
    MetricSpec("yes_no", "digits yes/no acc+ (%)", True, 1, PERCENT),
    MetricSpec("pairs", "digits pair accuracy (%)", True, 1, PERCENT),
    MetricSpec("psnr", "PSNR (dB)", True, 2, (0.0, None)),
    MetricSpec("ssim", "SSIM", True, 4, UNIT_INTERVAL),
]
"""The distillation study's metrics, in the order of the table's columns and the figure's panels."""


# ------------------------------------------------------------------ rows


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but a flag is not a measurement.
    return isinstance(value, Real) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    # Values often arrive as 0-d tensors or numpy scalars; use their Python value.
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _row_label(index: int, row: Any) -> str:
    name = row.get("name") if isinstance(row, dict) else None
    return f"row {index} ({name!r})" if name is not None else f"row {index}"


def _check_metrics(metrics: Sequence[MetricSpec]) -> list[MetricSpec]:
    metrics = list(metrics)
    if not metrics:
        raise ValueError("the report needs at least one metric")
    keys = [m.key for m in metrics]
    for spec in metrics:
        if not isinstance(spec, MetricSpec):
            raise ValueError(f"metrics must be MetricSpec instances; got {spec!r}")
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"metric keys appear more than once: {duplicates}")
    return metrics


def _normalise_cell(where: str, key: str, cell: Any) -> dict[str, Any]:
    if not isinstance(cell, dict) or "mean" not in cell:
        raise ValueError(f"{where}: metric {key!r} must be a dict with a 'mean' (None when not computed); got {cell!r}")
    mean, se = _plain(cell.get("mean")), _plain(cell.get("se"))
    values = [_plain(v) for v in (cell.get("values") or [])]
    for field, value in (("mean", mean), ("se", se)):
        if value is not None and not _is_number(value):
            raise ValueError(f"{where}: metric {key!r} has a non-numeric {field}: {value!r}")
    if any(not _is_number(v) for v in values):
        raise ValueError(f"{where}: metric {key!r} has a non-numeric value in 'values': {values!r}")
    n = _plain(cell.get("n", len(values) if values else int(mean is not None)))
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"{where}: metric {key!r} has an invalid 'n': {n!r}")
    normalised = {
        "mean": None if mean is None else float(mean),
        "se": None if se is None else float(se),
        "n": n,
        "values": [float(v) for v in values],
    }
    if cell.get("reason") is not None:
        normalised["reason"] = str(cell["reason"])
    return normalised


def validate_rows(rows: Sequence[dict[str, Any]], metrics: Sequence[MetricSpec] = STUDY_METRICS) -> list[dict]:
    """Check the rows and return normalised copies (plain floats; ``se``, ``n``, ``values`` filled in).

    Each row needs ``name`` (str), ``role`` (one of :data:`ROLES`), ``seeds`` (int ≥ 1), ``metrics`` with a
    cell for every key of ``metrics``, and, for a variant, a numeric ``distill_weight`` (λ). A cell is
    ``{"mean": float | None, "se": float | None, "n": int, "values": [float, ...]}`` with an optional
    ``"reason"`` when ``mean`` is None (not computed). Metrics the specs do not name are ignored.

    Raises:
        ValueError: naming the row (index and name) and the field at fault.
    """
    metrics = _check_metrics(metrics)
    if not rows:
        raise ValueError("the report needs at least one row")
    normalised = []
    for index, row in enumerate(rows):
        where = _row_label(index, row)
        if not isinstance(row, dict):
            raise ValueError(f"{where} must be a dict; got {type(row).__name__}")
        missing = [field for field in ("name", "role", "seeds", "metrics") if field not in row]
        if row.get("role") == "variant" and "distill_weight" not in row:
            missing.append("distill_weight")
        if missing:
            raise ValueError(f"{where} is missing required field(s): {', '.join(missing)}")
        if not isinstance(row["name"], str) or not row["name"]:
            raise ValueError(f"{where}: 'name' must be a non-empty string")
        if row["role"] not in ROLES:
            raise ValueError(f"{where}: role must be one of {ROLES}; got {row['role']!r}")
        seeds = _plain(row["seeds"])
        if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
            raise ValueError(f"{where}: 'seeds' must be an int of at least 1; got {seeds!r}")
        weight = _plain(row.get("distill_weight"))
        if row["role"] == "variant" and not (_is_number(weight) and math.isfinite(float(weight))):
            raise ValueError(f"{where}: a variant needs a finite numeric 'distill_weight' (λ); got {weight!r}")
        if weight is not None and not _is_number(weight):
            raise ValueError(f"{where}: 'distill_weight' must be a number or None; got {weight!r}")
        cells = row["metrics"]
        if not isinstance(cells, dict):
            raise ValueError(f"{where}: 'metrics' must be a dict of metric cells")
        absent = [spec.key for spec in metrics if spec.key not in cells]
        if absent:
            raise ValueError(f"{where}: 'metrics' is missing {', '.join(absent)} (give mean None if not computed)")
        normalised.append(
            {
                "name": row["name"],
                "role": row["role"],
                "distill_weight": None if weight is None else float(weight),
                "seeds": seeds,
                "metrics": {spec.key: _normalise_cell(where, spec.key, cells[spec.key]) for spec in metrics},
            }
        )
    return normalised


def ordered_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """References in their given order, then the control(s), then the variants by λ (stable)."""
    return sorted(
        rows,
        key=lambda r: (_ROLE_ORDER[r["role"]], r["distill_weight"] if r["role"] == "variant" else 0.0),
    )


# ------------------------------------------------------------------ text


def format_cell(cell: dict[str, Any], spec: MetricSpec, seeds: int | None = None) -> str:
    """``mean ± se`` with the metric's decimals; ``mean`` alone without an SE; "not computed" without a mean.

    When fewer seeds than the row's ``seeds`` gave a value, ``(n=k)`` follows.
    """
    mean = cell.get("mean")
    if mean is None:
        return NOT_COMPUTED
    text = spec.format(mean)
    if cell.get("se") is not None:
        text += f" ± {spec.format(cell['se'])}"
    n = cell.get("n")
    if seeds is not None and seeds > 1 and isinstance(n, int) and n != seeds:
        text += f" (n={n})"
    return text


def format_lambda(row: dict[str, Any]) -> str:
    weight = row.get("distill_weight")
    return "—" if weight is None else f"{weight:g}"


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown_name(row: dict[str, Any]) -> str:
    name = _markdown_cell(row["name"]).replace("*", "\\*").replace("_", "\\_")
    return f"**{name}** {CONTROL_MARK}" if row["role"] == "control" else name


def not_computed_notes(rows: list[dict[str, Any]], metrics: Sequence[MetricSpec]) -> list[str]:
    """One line per row that has not-computed metrics: which, and why (when the row says)."""
    notes = []
    for row in rows:
        by_reason: dict[str, list[str]] = {}
        for spec in metrics:
            cell = row["metrics"][spec.key]
            if cell["mean"] is None:
                by_reason.setdefault(cell.get("reason") or "no reason given", []).append(spec.label)
        for reason, labels in by_reason.items():
            lam = "" if row["distill_weight"] is None else f", λ={row['distill_weight']:g}"
            notes.append(f"{row['name']}{lam}: {', '.join(labels)} — {reason}")
    return notes


def markdown_table(rows: Sequence[dict[str, Any]], metrics: Sequence[MetricSpec] = STUDY_METRICS) -> str:
    """The results table in Markdown, with a legend line and the not-computed notes under it (no heading)."""
    metrics = _check_metrics(metrics)
    rows = ordered_rows(validate_rows(rows, metrics))
    headers = ["model", "λ", "seeds", *(spec.heading for spec in metrics)]
    lines = [
        "| " + " | ".join(_markdown_cell(h) for h in headers) + " |",
        "|:---|---:|---:|" + "---:|" * len(metrics),
    ]
    for row in rows:
        cells = [_markdown_name(row), format_lambda(row), str(row["seeds"])]
        cells += [format_cell(row["metrics"][spec.key], spec, row["seeds"]) for spec in metrics]
        lines.append("| " + " | ".join(_markdown_cell(c) if i else c for i, c in enumerate(cells)) + " |")
    lines += ["", table_legend(rows)]
    notes = not_computed_notes(rows, metrics)
    if notes:
        lines += ["", f"{NOT_COMPUTED.capitalize()}:", ""] + [f"- {_markdown_cell(note)}" for note in notes]
    return "\n".join(lines)


PAIRED_HEADERS = ("λ", "metric", "difference", "95% CI", "p", "units", "test")


def paired_cells(paired: Sequence[dict[str, Any]], metrics: Sequence[MetricSpec] = STUDY_METRICS) -> list[list[str]]:
    """The paired tests' rows as text cells (:data:`PAIRED_HEADERS`): differences and intervals with one decimal
    more than the metric's, a p-value, the units both arms scored and the test; a row without a test says why."""
    by_key = {spec.key: spec for spec in metrics}
    cells = []
    for entry in paired:
        spec = by_key.get(entry["column"])
        label = spec.heading if spec is not None else entry["column"]
        lam = f"{entry['distill_weight']:g} vs {entry['baseline']:g}"
        if "note" in entry:
            cells.append([lam, label, "", "", "", "", entry["note"]])
            continue
        decimals = (spec.decimals if spec is not None else 3) + 1
        low, high = entry["ci"]
        p_value = "<0.0001" if entry["p"] < 1e-4 else f"{entry['p']:.4f}"
        cells.append(
            [
                lam,
                label,
                f"{entry['difference']:+.{decimals}f}",
                f"[{low:+.{decimals}f}, {high:+.{decimals}f}]",
                p_value,
                f"{entry['n']} {entry['unit']}s",
                entry["test"],
            ]
        )
    return cells


PAIRED_LEGEND = (
    "Each λ against λ = 0 (no distillation) on the same held-out units: difference = λ minus λ = 0 on the metric's "
    "scale, its 95% interval and two-sided p. Several seeds: each unit's value averaged over the seeds of each λ "
    "(seed k of every λ starts from the same stage-1 checkpoint and data order), then a paired bootstrap over units; "
    "the interval covers the sampling of the units, not the spread between seeds (the results table's ±)."
)


def paired_markdown(paired: Sequence[dict[str, Any]], metrics: Sequence[MetricSpec] = STUDY_METRICS) -> str:
    """The paired tests as a Markdown table with its legend (no heading); empty when there are none."""
    if not paired:
        return ""
    lines = ["| " + " | ".join(PAIRED_HEADERS) + " |", "|:---|:---|---:|---:|---:|---:|:---|"]
    lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in paired_cells(paired, metrics)]
    return "\n".join([*lines, "", PAIRED_LEGEND])


def table_legend(rows: Sequence[dict[str, Any]]) -> str:
    text = (
        "Each cell is mean ± standard error with the metric's decimals (a value without ± has no standard error); "
        "seeds: how many seeds a row averages; ↑: higher is better, ↓: lower is better; "
        f'"{NOT_COMPUTED}": the metric was not measured for that row.'
    )
    if any(row["role"] == "control" for row in rows):
        text += f" {CONTROL_MARK}: the positive control, a deliberately damaged model that the metrics should flag."
    return text


def plot_caption(metrics: Sequence[MetricSpec]) -> str:
    """What the figure shows and how its y axes were chosen (generated from the specs)."""
    ranges: dict[str, list[str]] = {}
    for spec in metrics:
        low, high = spec.scale if spec.scale is not None else (None, None)
        if low is not None and high is not None:
            where = f"{low:g}–{high:g}"
        elif low is not None:
            where = f"from {low:g} up"
        elif high is not None:
            where = f"up to {high:g}"
        else:
            where = "fitted to the data"
        ranges.setdefault(where, []).append(spec.label)
    axes = "; ".join(f"{', '.join(labels)}: {where}" for where, labels in ranges.items())
    return (
        "Points: stage-2 means over seeds against λ (symmetric-log axis, so λ = 0 is shown), bars ± 1 standard "
        "error, small dots the individual seeds; dashed lines: references; red dash-dotted line: the positive "
        "control; shaded bands ± their standard errors. The y axes span each metric's natural range so that small "
        f"differences look small ({axes}); every value is written beside its point or line."
    )


# ------------------------------------------------------------------ CSV


def _csv_number(value: float | None) -> str:
    # Empty is what pandas and spreadsheets read as missing; repr keeps full precision for analysis.
    return "" if value is None else repr(float(value))


def _write_csv(path: Path, rows: list[dict[str, Any]], metrics: Sequence[MetricSpec]) -> None:
    header = ["name", "role", "distill_weight", "seeds"]
    for spec in metrics:
        header += [f"{spec.key}_mean", f"{spec.key}_se", f"{spec.key}_n"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            line = [row["name"], row["role"], _csv_number(row["distill_weight"]), str(row["seeds"])]
            for spec in metrics:
                cell = row["metrics"][spec.key]
                line += [_csv_number(cell["mean"]), _csv_number(cell["se"]), str(cell["n"])]
            writer.writerow(line)


# ------------------------------------------------------------------ figure


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _y_limits(spec: MetricSpec, values: list[float]) -> tuple[float, float]:
    low, high = spec.scale if spec.scale is not None else (None, None)
    data_low, data_high = (min(values), max(values)) if values else (0.0, 1.0)
    span = data_high - data_low or abs(data_high) or 1.0
    if low is None:
        low = data_low - 0.15 * span
    if high is None:
        high = data_high + 0.15 * span
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


def _label_right(axis, items: list[tuple[float, str, str]], limits: tuple[float, float]) -> None:
    """Write each (value, text, colour) just right of the panel at its height, nudged apart so none overlap."""
    low, high = limits
    gap = 0.075  # in axes fractions: about one line of 7-pt text on a 3-inch panel
    placed: list[list[Any]] = []
    for value, text, color in sorted(items):
        position = min(max((value - low) / (high - low), 0.0), 1.0)
        if placed and position - placed[-1][0] < gap:
            position = placed[-1][0] + gap
        placed.append([position, text, color])
    overflow = placed[-1][0] - 1.0 if placed else 0.0
    if overflow > 0:  # shift the stack down to keep it beside the panel, keeping the gaps
        for item in placed:
            item[0] -= overflow
    for position, text, color in placed:
        axis.text(1.02, position, text, transform=axis.transAxes, color=color, fontsize=7, va="center", clip_on=False)


def _write_plot(path: Path, rows: list[dict[str, Any]], metrics: Sequence[MetricSpec], title: str) -> None:
    # The object-oriented API with an explicit Agg canvas: no pyplot, so the caller's global backend
    # and figure state are untouched and no display is ever needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    variants = [r for r in rows if r["role"] == "variant"]
    lines = [r for r in rows if r["role"] != "variant"]  # references and controls: horizontal lines
    # A reference keeps its colour and dash pattern in every panel; the patterns differ so that two
    # references at the same value (the teacher and stage 1 often are) still both show.
    reference_styles = {}
    for row in lines:
        if row["role"] == "reference":
            index = len(reference_styles)
            reference_styles[row["name"]] = (
                _REFERENCE_COLORS[index % len(_REFERENCE_COLORS)],
                _REFERENCE_DASHES[index % len(_REFERENCE_DASHES)],
            )

    def line_style(row: dict[str, Any]) -> dict[str, Any]:
        if row["role"] == "control":
            return {"color": _CONTROL_COLOR, "linestyle": "-.", "linewidth": 1.6}
        color, dashes = reference_styles[row["name"]]
        return {"color": color, "linestyle": dashes, "linewidth": 1.3}

    panels = len(metrics)
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    figure = Figure(figsize=(max(7.5, 4.9 * ncols), 3.3 * nrows + 1.2), layout="constrained")
    FigureCanvasAgg(figure)
    figure.get_layout_engine().set(w_pad=0.12, h_pad=0.12, wspace=0.06, hspace=0.06)  # margins, in inches
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    lambdas = sorted({r["distill_weight"] for r in variants})
    positive = [x for x in lambdas if x > 0]
    # symlog: λ = 0 (no distillation) sits on the axis; the linear region reaches the smallest λ > 0.
    linthresh = min(positive) if positive else 1.0
    variant_names = sorted({r["name"] for r in variants})
    variant_label = variant_names[0] if len(variant_names) == 1 else "variants"
    for axis, spec in zip(axes[:panels], metrics, strict=True):
        points = []  # (λ, mean, se, seed values)
        for row in variants:
            cell = row["metrics"][spec.key]
            if _finite(cell["mean"]):
                se = cell["se"] if _finite(cell["se"]) else 0.0
                points.append((row["distill_weight"], cell["mean"], se, [v for v in cell["values"] if _finite(v)]))
        horizontal = [(row, row["metrics"][spec.key]) for row in lines if _finite(row["metrics"][spec.key]["mean"])]
        shown = [m + s for _, m, s, _ in points] + [m - s for _, m, s, _ in points]
        shown += [v for *_, seeds in points for v in seeds]
        shown += [c["mean"] + (c["se"] or 0.0) for _, c in horizontal] + [
            c["mean"] - (c["se"] or 0.0) for _, c in horizontal
        ]
        limits = _y_limits(spec, [v for v in shown if math.isfinite(v)])
        labels: list[tuple[float, str, str]] = []
        for row, cell in horizontal:
            style = line_style(row)
            axis.axhline(cell["mean"], **style, zorder=2)
            if _finite(cell["se"]) and cell["se"] > 0:
                axis.axhspan(
                    cell["mean"] - cell["se"], cell["mean"] + cell["se"], color=style["color"], alpha=0.12, lw=0
                )
            labels.append((cell["mean"], spec.format(cell["mean"]), style["color"]))
        if points:
            xs = [p[0] for p in points]
            means = [p[1] for p in points]
            errors = [p[2] for p in points]
            for x, _, _, seeds in points:
                if len(seeds) > 1:
                    axis.plot([x] * len(seeds), seeds, ".", color=_VARIANT_COLOR, alpha=0.3, markersize=4, zorder=3)
            axis.errorbar(xs, means, yerr=errors, fmt="o-", color=_VARIANT_COLOR, capsize=4, markersize=5, zorder=4)
            for x, mean, error in zip(xs, means, errors, strict=True):
                # Above the error bar, or below it when that would run into the top of the panel.
                below = (mean + error - limits[0]) / (limits[1] - limits[0]) > 0.88
                axis.annotate(
                    spec.format(mean),
                    (x, mean - error if below else mean + error),
                    xytext=(0, -5 if below else 4),
                    textcoords="offset points",
                    ha="center",
                    va="top" if below else "bottom",
                    fontsize=7,
                    color=_VARIANT_COLOR,
                    # Readable where it crosses a reference line.
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.6},
                    zorder=5,
                )
        if not points and not horizontal:
            axis.text(0.5, 0.5, NOT_COMPUTED, ha="center", va="center", transform=axis.transAxes, color="#777777")
        axis.set_ylim(*limits)
        _label_right(axis, labels, limits)
        axis.set_xscale("symlog", linthresh=linthresh)
        if lambdas:
            axis.set_xticks(lambdas, [f"{x:g}" for x in lambdas])
            axis.minorticks_off()
            # Autoscaling a symlog axis pads far into negative λ; keep a small margin instead.
            low, high = lambdas[0], lambdas[-1]
            axis.set_xlim(
                low - 0.3 * linthresh if low <= 0 else low / 1.6, high * 1.6 if high > 0 else high + 0.3 * linthresh
            )
        else:
            axis.set_xticks([])
        axis.set_ylabel(spec.heading)
        axis.set_xlabel("distillation weight λ")
        axis.grid(True, alpha=0.3)
    for axis in axes[panels:]:
        axis.set_visible(False)
    handles: list[Any] = []
    if variants:
        handles.append(Line2D([], [], color=_VARIANT_COLOR, marker="o", label=f"{variant_label}: mean ± SE over seeds"))
        if any(len(c["values"]) > 1 for r in variants for c in r["metrics"].values()):
            handles.append(
                Line2D([], [], color=_VARIANT_COLOR, marker=".", linestyle="", alpha=0.3, label="individual seeds")
            )
    handles += [Line2D([], [], **line_style(row), label=row["name"]) for row in lines]
    if any(_finite(c["se"]) and c["se"] > 0 for r in lines for c in r["metrics"].values()):
        handles.append(Patch(color="#888888", alpha=0.25, label="± SE of a line"))
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize="small")
    figure.suptitle(title)
    figure.savefig(path, dpi=110, metadata={"Software": None})


# ------------------------------------------------------------------ entry point


def write_sweep_report(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    metrics: Sequence[MetricSpec] = STUDY_METRICS,
    *,
    title: str = DEFAULT_TITLE,
) -> dict[str, Path]:
    """Write the sweep's table (Markdown and CSV) and its metrics-against-λ figure.

    Args:
        rows: one dict per model (schema in :func:`validate_rows`), e.g. ``{"name": "stage 2", "role":
            "variant", "distill_weight": 1.0, "seeds": 3, "metrics": {"psnr": {"mean": 24.1, "se": 0.2,
            "n": 3, "values": [23.9, 24.0, 24.4]}, ...}}``.
        out_dir: directory to write into (created if needed).
        metrics: the columns and panels, in order.
        title: heading of the Markdown file and of the figure.

    Returns:
        ``{"markdown": results.md, "csv": results.csv, "plot": metrics_vs_lambda.png}``.

    Raises:
        ValueError: a row lacks a required field or has an invalid one (the message names the row).
    """
    metrics = _check_metrics(metrics)
    ordered = ordered_rows(validate_rows(rows, metrics))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "results.md",
        "csv": out_dir / "results.csv",
        "plot": out_dir / "metrics_vs_lambda.png",
    }
    paths["markdown"].write_text(
        f"# {title}\n\n{markdown_table(ordered, metrics)}\n\n{PLOT_HEADING}\n\n"
        f"![metrics against λ]({paths['plot'].name})\n\n{plot_caption(metrics)}\n"
    )
    _write_csv(paths["csv"], ordered, metrics)
    _write_plot(paths["plot"], ordered, metrics, title)
    return paths
