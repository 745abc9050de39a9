"""The distillation-weight sweep report: one Markdown table, one CSV and one figure of metrics against λ.

Rows are plain dicts, one per model: the fine-tuned variants of the sweep (``role="variant"``, with
their λ under ``x_key``) and fixed references such as the teacher or the stage-1 tokenizer
(``role="reference"``, drawn as horizontal lines). Metric keys vary between studies; any key other
than the row's name, role and λ is a column, and any column holding numbers is plotted. A metric a
row lacks (or holds as ``None``) is written "not computed" in the table and left empty in the CSV.
"""

from __future__ import annotations

import csv
import math
from numbers import Real
from pathlib import Path
from typing import Any

NOT_COMPUTED = "not computed"
ROLES = ("reference", "variant")
_FIXED_KEYS = ("name", "role")


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but a flag is not a metric to plot.
    return isinstance(value, Real) and not isinstance(value, bool)


def _format(value: Any) -> str:
    if value is None:
        return NOT_COMPUTED
    if _is_number(value):
        if isinstance(value, int):
            return str(value)
        value = float(value)
        if math.isnan(value):
            return "nan"
        # Fixed decimals by magnitude so a column lines up: PSNR 23.46, SSIM 0.8123, cosine 1.0000.
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 10:
            return f"{value:.2f}"
        return f"{value:.4f}"
    return str(value)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _ordered_rows(rows: list[dict[str, Any]], x_key: str) -> list[dict[str, Any]]:
    """Reference rows in their given order, then variants by λ (variants without a λ last)."""
    references = [r for r in rows if r.get("role", "variant") == "reference"]
    variants = [r for r in rows if r.get("role", "variant") == "variant"]
    variants.sort(key=lambda r: (not _is_number(r.get(x_key)), float(r[x_key]) if _is_number(r.get(x_key)) else 0.0))
    return references + variants


def _columns(rows: list[dict[str, Any]], x_key: str) -> list[str]:
    """name, role, λ, then every other key in the order it first appears across the rows."""
    columns = [*_FIXED_KEYS, x_key]
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def _plain(value: Any) -> Any:
    # Metrics often arrive as 0-d tensors or numpy scalars; report their Python value.
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _validate(rows: list[dict[str, Any]]) -> None:
    if not rows:
        raise ValueError("write_sweep_report needs at least one row")
    for index, row in enumerate(rows):
        if "name" not in row:
            raise ValueError(f"row {index} has no 'name': {row}")
        role = row.get("role", "variant")
        if role not in ROLES:
            raise ValueError(f"row {row['name']!r}: role must be one of {ROLES}; got {role!r}")


def _write_markdown(
    path: Path, rows: list[dict[str, Any]], columns: list[str], title: str, x_key: str, plot_name: str
) -> None:
    lines = [
        f"# {title}",
        "",
        f'λ = `{x_key}`. Reference rows first, then the variants by λ; "{NOT_COMPUTED}" marks a '
        "metric that was not measured for that row.",
        "",
        "| " + " | ".join(_markdown_cell(c) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [_format(row.get(column)) for column in columns]
        if _is_number(row.get(x_key)):
            cells[columns.index(x_key)] = f"{float(row[x_key]):g}"  # λ as written: 0, 0.1, 1, 10
        if row.get(x_key) is None and row.get("role", "variant") == "reference":
            cells[columns.index(x_key)] = "—"  # a reference has no λ: that is not a missing measurement
        lines.append("| " + " | ".join(_markdown_cell(c) for c in cells) + " |")
    lines += ["", f"![metrics against λ]({plot_name})", ""]
    path.write_text("\n".join(lines))


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""  # an empty cell is what pandas and spreadsheets read as missing (NaN)
    if _is_number(value) and not isinstance(value, int):
        return repr(float(value))  # full precision: the CSV is for further analysis
    return str(value)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])


def _write_plot(path: Path, rows: list[dict[str, Any]], metrics: list[str], x_key: str, title: str) -> None:
    # The object-oriented API with an explicit Agg canvas: no pyplot, so the caller's global backend
    # and figure state are untouched and no display is ever needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    variants = [r for r in rows if r.get("role", "variant") == "variant" and _is_number(r.get(x_key))]
    references = [r for r in rows if r.get("role", "variant") == "reference"]
    panels = max(1, len(metrics))
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    # At least 7.5 in wide so that a one-panel figure still fits the title.
    figure = Figure(figsize=(max(7.5, 4.6 * ncols), 3.6 * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    lambdas = sorted({float(r[x_key]) for r in variants})
    positive = [x for x in lambdas if x > 0]
    # symlog: λ = 0 (no distillation) sits on the axis; the linear region reaches the smallest λ > 0.
    linthresh = min(positive) if positive else 1.0
    colors = [f"C{i}" for i in range(1, 10)]
    # The grid may have more cells than metrics: the spare cells stay empty.
    for axis, metric in zip(axes[: len(metrics)], metrics, strict=True):
        points = sorted((float(r[x_key]), float(r[metric])) for r in variants if _is_number(r.get(metric)))
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, "o-", color="C0", label="variants")
        # A reference keeps its colour in every panel (indexed over all references, not this panel's).
        for index, row in enumerate(references):
            if _is_number(row.get(metric)):
                axis.axhline(
                    float(row[metric]),
                    linestyle="--",
                    linewidth=1.2,
                    color=colors[index % len(colors)],
                    label=str(row["name"]),
                )
        if not points and not any(_is_number(r.get(metric)) for r in references):
            axis.text(0.5, 0.5, NOT_COMPUTED, ha="center", va="center", transform=axis.transAxes)
        axis.set_xscale("symlog", linthresh=linthresh)
        if lambdas:
            axis.set_xticks(lambdas, [f"{x:g}" for x in lambdas])
            # Autoscaling a symlog axis pads far into negative λ; keep a small margin instead.
            low, high = lambdas[0], lambdas[-1]
            axis.set_xlim(
                low - 0.25 * linthresh if low <= 0 else low / 1.5, high * 1.5 if high > 0 else high + 0.25 * linthresh
            )
        axis.set_title(metric)
        axis.set_xlabel(f"λ ({x_key})")
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    for axis in axes[len(metrics) :]:
        axis.set_visible(False)
    figure.suptitle(title)
    figure.savefig(path, dpi=120)


def write_sweep_report(
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    *,
    x_key: str = "distill_weight",
    title: str = "Self-distillation sweep: reconstruction and understanding against λ",
) -> dict[str, Path]:
    """Write the sweep's table (Markdown and CSV) and its metrics-against-λ figure.

    Args:
        rows: one dict per model, e.g. ``{"name": "stage2 λ=1", "role": "variant", "distill_weight": 1.0,
            "psnr": 24.1, "ssim": 0.81, "token_cosine": 0.97, "head_accuracy": 0.95}``. ``role`` is
            ``"variant"`` (the default; plotted against λ) or ``"reference"`` (a dashed horizontal line
            labelled with its name). Missing or ``None`` metrics are "not computed".
        out_dir: directory to write into (created if needed).
        x_key: the row key holding λ.
        title: heading of the Markdown file and the figure.

    Returns:
        ``{"markdown": results.md, "csv": results.csv, "plot": metrics_vs_lambda.png}``.
    """
    _validate(rows)
    rows = [{key: _plain(value) for key, value in row.items()} for row in rows]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = _ordered_rows(rows, x_key)
    columns = _columns(rows, x_key)  # the caller's key order, not the sorted rows'
    metrics = [c for c in columns[len(_FIXED_KEYS) + 1 :] if any(_is_number(r.get(c)) for r in ordered)]
    paths = {
        "markdown": out_dir / "results.md",
        "csv": out_dir / "results.csv",
        "plot": out_dir / "metrics_vs_lambda.png",
    }
    _write_markdown(paths["markdown"], ordered, columns, title, x_key, paths["plot"].name)
    _write_csv(paths["csv"], ordered, columns)
    _write_plot(paths["plot"], ordered, metrics, x_key, title)
    return paths
