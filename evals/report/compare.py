"""``unilip eval compare``: one row per model, one column per (benchmark variant, metric).

A column is keyed by the benchmark's protocol variant *and* spec fingerprint, so runs of different
variants, resolutions or datasets never share a column; the header shows variant and fingerprint.
"""

from __future__ import annotations

import csv
import html
import io
import math
from typing import Any

from evals.report.results import model_label

FORMATS = ("md", "csv", "tex", "html")


def _cell(metric: dict[str, Any]) -> str:
    if metric.get("status") == "not_computed":
        return "not computed"
    value, se = metric["value"], metric.get("se")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    text = f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return f"{text} ± {se:.2g}" if se is not None else text


def build_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes) for the given results."""
    columns: dict[tuple[str, str, str], None] = {}
    rows: dict[str, dict[tuple[str, str, str], str]] = {}
    coverage: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    for result in results:
        bench, fingerprint = result["benchmark"], result["spec"]["fingerprint"][:8]
        label = model_label(result)
        cov = result["coverage"]
        coverage.setdefault(label, {})[f"{bench} {fingerprint}"] = f"{cov['ok']}/{cov['expected']}"
        for name, metric in result["metrics"].items():
            key = (bench, fingerprint, name)
            columns[key] = None
            if key in rows.get(label, {}):
                notes.append(f"{label}: several runs of {bench} ({fingerprint}); showing {result['_path']}")
            rows.setdefault(label, {})[key] = _cell(metric)
            if metric.get("status") == "not_computed":
                notes.append(f"{label} {bench} {name}: not computed: {metric['reason'].splitlines()[0]}")
            for warning in metric.get("warnings") or []:  # what the benchmark wants every reader to see
                notes.append(f"{label} {bench} {name}: {warning}")
    # Benchmarks and fingerprints sorted; metrics in the order the benchmark reports them.
    ordered = sorted(columns, key=lambda key: (key[0], key[1]))
    header = ["model"] + [f"{name} [{bench} {fp}]" for bench, fp, name in ordered] + ["coverage"]
    table = []
    for label, cells in rows.items():
        cov = "; ".join(f"{k}: {v}" for k, v in coverage[label].items())
        table.append([label] + [cells.get(key, "-") for key in ordered] + [cov])
    return header, table, sorted(set(notes))


def render(results: list[dict[str, Any]], fmt: str = "md") -> str:
    """The comparison table as Markdown, CSV, LaTeX or a self-contained HTML page."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    header, rows, notes = build_table(results)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "tex":

        def escape(text: str) -> str:
            return text.replace("_", r"\_").replace("%", r"\%").replace("#", r"\#").replace("±", r"$\pm$")

        lines = [
            r"\begin{tabular}{" + "l" * len(header) + "}",
            r"\toprule",
            " & ".join(escape(h) for h in header) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(escape(c) for c in row) + r" \\" for row in rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    if fmt == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>unilip comparison</title><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
            "padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><ul>{note_html}</ul>"
            "</body></html>\n"
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
