"""The study's report for people: one self-contained HTML page (images embedded) and its Markdown twin.

It shows the comparison table, the metrics-against-λ figure, a grid of held-out originals beside each
model's reconstructions, what the study is and is not, and the provenance of every number (recipe,
seed, steps, package versions, git revision, timings, command).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

WHAT_THIS_IS = (
    "This is a CPU-scale analogue of the UniLIP paper's stage-2 ablation, not the paper's experiment and not "
    "its numbers. A tiny encoder of the same classes as UniLIP's (InternViT, pixel shuffle, mlp1, bridge, DC-AE "
    "decoder) is first trained to classify scikit-learn's 8x8 handwritten digits (upscaled to 56 px), so that its "
    "features are worth preserving; a head trained once on its frozen features stands in for InternVL3's frozen "
    "LLM. Stage 1 trains the bridge and decoder on the frozen encoder; stage 2 fine-tunes everything for "
    "reconstruction with self-distillation weight λ, from the same stage-1 checkpoint with the same seed and data "
    "order. Models are tiny, training is a few hundred steps, the data are digits: the direction of the "
    "trade-off is what this can show, not its size for the real 1B/3B models."
)


def _png_data_uri(path_or_image: Path | Image.Image) -> str:
    image = Image.open(path_or_image) if isinstance(path_or_image, Path) else path_or_image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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


def write_study_report(
    out_dir: Path,
    rows: list[dict[str, Any]],
    table_markdown: str,
    plot: Path,
    grid: tuple[list[str], Image.Image],
    provenance: dict[str, Any],
) -> dict[str, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` beside the table, CSV and plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    grid_titles, grid_image = grid
    grid_path = out_dir / "reconstructions.png"
    grid_image.save(grid_path)
    metric_keys = [k for k in rows[0] if k not in ("name", "role")]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["model", *metric_keys])
    body = ""
    for row in rows:
        cells = [html.escape(row["name"])] + [html.escape(_fmt(k, row.get(k))) for k in metric_keys]
        body += "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
    provenance_json = html.escape(json.dumps(provenance, indent=2, default=str))
    titles = " | ".join(html.escape(t) for t in grid_titles)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>unilip quickstart: the distillation study</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border: 1px solid #bbb; padding: 4px 10px; }}
td {{ text-align: right; }} td:first-child {{ text-align: left; }} th {{ background: #f0f0f0; }}
.note {{ background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.6em 1em; }}
img {{ max-width: 100%; }} pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }}
</style></head><body>
<h1>The distillation study (unilip quickstart)</h1>
<p class="note"><b>What this is.</b> {html.escape(WHAT_THIS_IS)}</p>
<h2>Results</h2>
<table id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>PSNR and SSIM: the harness's <code>recon@standard</code> on the 360 held-out digits (uint8, data range 1).
Token cosine: mean cosine similarity of each model's post-mlp1 tokens to the teacher's on those digits.
Frozen-head accuracy: the head trained once on the teacher's features, applied unchanged.
"not computed": the metric was not measured for that row (the teacher's decoder is untrained; LPIPS and rFID
need weights files that are not present).</p>
<h2>Metrics against λ</h2>
<img id="plot" alt="metrics against distillation weight" src="{_png_data_uri(plot)}">
<h2>Reconstructions of held-out digits</h2>
<p>Rows, top to bottom: {titles}; one held-out digit of each class per column.</p>
<img id="grid" alt="originals and reconstructions" src="{_png_data_uri(grid_image)}">
<h2>Provenance</h2>
<pre id="provenance">{provenance_json}</pre>
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
    markdown = (
        f"# The distillation study (unilip quickstart)\n\n> {WHAT_THIS_IS}\n\n## Results\n\n{table_markdown}\n\n"
        f"## Reconstructions of held-out digits\n\nRows, top to bottom: {' | '.join(grid_titles)}.\n\n"
        f"![reconstructions]({grid_path.name})\n\n## Provenance\n\n```json\n"
        f"{json.dumps(provenance, indent=2, default=str)}\n```\n"
    )
    md_path = out_dir / "report.md"
    md_path.write_text(markdown)
    return {"html": html_path, "report_markdown": md_path, "grid": grid_path}


def _fmt(key: str, value: Any) -> str:
    if key == "distill_weight":
        return "—" if value is None else f"{value:g}"
    if value is None:
        return "not computed"
    if isinstance(value, float):
        return f"{value:.6f}" if abs(value) < 10 else f"{value:.3f}"
    return str(value)
