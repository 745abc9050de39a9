"""The study's report for people: one self-contained HTML page (images embedded) and its Markdown twin.

In order: the title; a "What this is" box and a "What it found" section (texts the caller writes); the
results table (mean ± standard error, the positive control in its own marked row); the metrics-against-λ
figure; a grid of held-out originals beside each model's reconstructions; the provenance of every number.
No external assets (the images are data URIs), no scripts beyond one that marks when the images have
decoded, and nothing time-dependent beyond what the provenance holds.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evals.studies.report import (
    CONTROL_MARK,
    NOT_COMPUTED,
    PAIRED_HEADERS,
    PAIRED_LEGEND,
    PLOT_HEADING,
    STUDY_METRICS,
    MetricSpec,
    format_cell,
    format_lambda,
    markdown_table,
    not_computed_notes,
    ordered_rows,
    paired_cells,
    paired_markdown,
    plot_caption,
    table_legend,
    validate_rows,
)

DEFAULT_TITLE = "The distillation study (unilip quickstart)"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; line-height: 1.45; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 2em; }
h1 { font-size: 1.7em; margin-bottom: 0.6em; } h2 { font-size: 1.3em; margin-top: 1.6em; }
.box { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.6em 1em; margin: 1em 0; }
.findings { background: #eef5fc; border-left: 4px solid #1f5fa8; padding: 0.6em 1em; margin: 1em 0; }
.box p, .findings p { margin: 0.4em 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 4px 10px; }
th { background: #f0f0f0; font-weight: 600; vertical-align: bottom; }
td { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.model { text-align: left; white-space: normal; }
td.nc { color: #888; font-style: italic; }
td.control { background: #fdecea; } td.control.model { border-left: 4px solid #c0392b; font-weight: 600; }
.tag { display: inline-block; margin-left: 0.5em; padding: 0 0.45em; border-radius: 3px; font-size: 0.8em;
       font-weight: 600; color: #fff; background: #c0392b; }
.small { font-size: 0.9em; color: #444; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }
"""


def _png_data_uri(path_or_image: Path | Image.Image) -> str:
    if isinstance(path_or_image, Image.Image):
        buffer = io.BytesIO()
        path_or_image.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        data = Path(path_or_image).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def reconstruction_grid(rows: list[tuple[str, list[Path]]], scale: int = 2, gap: int = 4) -> Image.Image:
    """A grid image: one row per (title, image paths), one column per image, upscaled ``scale`` x."""
    tiles = [[np.asarray(Image.open(p).convert("RGB")) for p in paths] for _, paths in rows]
    height, width = tiles[0][0].shape[:2]
    columns = len(tiles[0])
    canvas = np.full(
        (len(tiles) * (height * scale + gap) + gap, columns * (width * scale + gap) + gap, 3), 255, np.uint8
    )
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            big = tile.repeat(scale, 0).repeat(scale, 1)
            top, left = gap + r * (height * scale + gap), gap + c * (width * scale + gap)
            canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
    return Image.fromarray(canvas)


def _paragraphs(text: str) -> str:
    """Escaped text as HTML paragraphs: a blank line separates paragraphs, a single newline breaks a line."""
    blocks = [block.strip() for block in text.strip().split("\n\n") if block.strip()]
    return "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in block.splitlines()) + "</p>" for block in blocks
    )


def _md_text(text: str) -> str:
    return text.strip().replace("<", "\\<")


def _html_table(rows: list[dict[str, Any]], metrics: Sequence[MetricSpec]) -> str:
    head = "".join(f"<th>{html.escape(text)}</th>" for text in ["model", "λ", "seeds", *(m.heading for m in metrics)])
    body = []
    for row in rows:
        role = row["role"]
        name = html.escape(row["name"])
        if row["role"] == "control":
            name += f'<span class="tag" title="positive control">{html.escape(CONTROL_MARK.strip("()"))}</span>'
        cells = [f'<td class="model {role}">{name}</td>']
        cells += [
            f'<td class="{role}">{html.escape(format_lambda(row))}</td>',
            f'<td class="{role}">{row["seeds"]}</td>',
        ]
        for spec in metrics:
            cell = row["metrics"][spec.key]
            text = format_cell(cell, spec, row["seeds"])
            if cell["mean"] is None:
                reason = html.escape(cell.get("reason") or NOT_COMPUTED, quote=True)
                cells.append(f'<td class="{role} nc" title="{reason}">{html.escape(text)}</td>')
            else:
                cells.append(f'<td class="{role}">{html.escape(text)}</td>')
        # A bare <tr> per model: the row's role is on its cells (class), so counting rows stays simple.
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _paired_html(paired: Sequence[dict[str, Any]], metrics: Sequence[MetricSpec]) -> str:
    """The paired tests' table and legend, or nothing when the sweep has none."""
    if not paired:
        return ""
    head = "".join(f"<th>{html.escape(text)}</th>" for text in PAIRED_HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in paired_cells(paired, metrics)
    )
    return (
        f'<h2>Paired against λ = 0</h2>\n<table id="paired"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        f'\n<p class="small">{html.escape(PAIRED_LEGEND)}</p>'
    )


def _table_markdown_part(table_markdown: str | None, rows: list[dict[str, Any]], metrics: Sequence[MetricSpec]) -> str:
    """The table part of ``table_markdown`` (its own title and figure section dropped), or a fresh table."""
    if not table_markdown or not table_markdown.strip():
        return markdown_table(rows, metrics)
    lines = table_markdown.strip().splitlines()
    if lines and lines[0].startswith("# "):  # results.md's own title: the report has one title
        lines = lines[1:]
    if PLOT_HEADING in lines:  # results.md's figure section: the report shows the figure itself
        lines = lines[: lines.index(PLOT_HEADING)]
    return "\n".join(lines).strip()


def write_study_report(
    out_dir: str | Path,
    rows: Sequence[dict[str, Any]],
    table_markdown: str | None,
    plot: str | Path,
    grid: tuple[list[str], Image.Image],
    provenance: dict[str, Any],
    *,
    what_this_is: str,
    findings: str,
    metrics: Sequence[MetricSpec] = STUDY_METRICS,
    title: str = DEFAULT_TITLE,
    paired: Sequence[dict[str, Any]] = (),
) -> dict[str, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` beside the table, CSV and plot.

    Args:
        out_dir: the report's directory (created if needed); ``reconstructions.png`` is written there too.
        rows: the rows given to :func:`evals.studies.report.write_sweep_report` (same schema).
        table_markdown: the Markdown table for ``report.md``: ``results.md``'s text (its title and figure
            section are dropped) or :func:`evals.studies.report.markdown_table`'s; empty or None builds it
            from ``rows``. The HTML table is always built from ``rows``.
        plot: the metrics-against-λ PNG.
        grid: (row titles top to bottom, the grid image) from :func:`reconstruction_grid`.
        provenance: JSON-serialisable; shown as is (the only place a time or a revision may appear).
        what_this_is: the "What this is" box, plain text (escaped; a blank line starts a paragraph).
        findings: the "What it found" section, plain text (escaped; each line kept as a line).
        metrics: the table's columns, as for ``write_sweep_report``.
        title: the page's one title.
        paired: the paired tests of each λ against λ = 0
            (:func:`evals.studies.sweep.paired_against_baseline`), shown under the table; none: no section.

    Returns:
        ``{"html": report.html, "report_markdown": report.md, "grid": reconstructions.png}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = ordered_rows(validate_rows(rows, metrics))
    grid_titles, grid_image = grid
    grid_path = out_dir / "reconstructions.png"
    grid_image.save(grid_path)
    provenance_json = json.dumps(provenance, indent=2, default=str)
    notes = not_computed_notes(rows, metrics)
    notes_html = (
        f"<p class='small'>{html.escape(NOT_COMPUTED.capitalize())}:</p><ul class='small'>"
        + "".join(f"<li>{html.escape(note)}</li>" for note in notes)
        + "</ul>"
        if notes
        else ""
    )
    titles = " | ".join(html.escape(t) for t in grid_titles)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<section class="box" id="what-this-is"><p><b>What this is.</b></p>
{_paragraphs(what_this_is)}</section>
<section class="findings" id="findings"><p><b>What it found.</b></p>
{_paragraphs(findings)}</section>
<h2>Results</h2>
{_html_table(rows, metrics)}
<p class="small">{html.escape(table_legend(rows))}</p>
{notes_html}
{_paired_html(paired, metrics)}
<h2>Metrics against λ</h2>
<img id="plot" alt="metrics against the distillation weight λ" src="{_png_data_uri(Path(plot))}">
<p class="small">{html.escape(plot_caption(metrics))}</p>
<h2>Reconstructions of held-out digits</h2>
<p>Rows, top to bottom: {titles}; one held-out digit of each class per column.</p>
<img id="grid" alt="originals and reconstructions" src="{_png_data_uri(grid_image)}">
<h2>Provenance</h2>
<pre id="provenance">{html.escape(provenance_json)}</pre>
<script>
// Marks the page once every image has decoded, so a headless browser can check that they render.
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  const rendered = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesRendered = rendered + "/" + images.length;
}});
</script>
</body></html>
"""
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    plot_name = Path(plot).name if Path(plot).parent.resolve() == out_dir.resolve() else Path(plot).as_posix()
    # Markdown renders raw HTML: the caller's plain text has its "<" escaped here too.
    quoted = "\n".join(f"> {line}" if line.strip() else ">" for line in _md_text(what_this_is).splitlines())
    findings_md = "  \n".join(line.rstrip() for line in _md_text(findings).splitlines())
    markdown = (
        f"# {title}\n\n> **What this is.**\n>\n{quoted}\n\n## What it found\n\n{findings_md}\n\n"
        f"## Results\n\n{_table_markdown_part(table_markdown, rows, metrics)}\n\n"
        + (f"## Paired against λ = 0\n\n{paired_markdown(paired, metrics)}\n\n" if paired else "")
        + f"{PLOT_HEADING}\n\n![metrics against λ]({plot_name})\n\n{plot_caption(metrics)}\n\n"
        f"## Reconstructions of held-out digits\n\nRows, top to bottom: {' | '.join(grid_titles)}.\n\n"
        f"![reconstructions]({grid_path.name})\n\n## Provenance\n\n```json\n{provenance_json}\n```\n"
    )
    md_path = out_dir / "report.md"
    md_path.write_text(markdown)
    return {"html": html_path, "report_markdown": md_path, "grid": grid_path}
