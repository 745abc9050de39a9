"""``unilip eval report RUN... --out PAGE.html``: one self-contained HTML page of runs.

Per benchmark variant: the comparison table of :mod:`evals.report.compare` (its footnotes under it), each
cell linking to the items behind it; then per run the items themselves, at most ``--max-items`` of them
(the first in manifest order, so two reports of one run show the same items): reconstructions beside their
reference, generated images with their prompts and GenEval's failed rules, judge rationales with their
states, understanding answers with the gold answer; and every failed item with its reason.

Everything is embedded (images as base64 PNG data URIs): the page reads offline, moved or mailed. Every
text taken from a record is HTML-escaped: prompts, replies and file names are data, never markup.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The report's modules (compare: pandas; torch for the references) load when a page is built, not with the CLI.
logger = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS = 24
# Long texts (prompts, raw judge replies) are cut so that one item cannot swamp the page.
QUESTION_CHARS, REPLY_CHARS = 200, 1200
JUDGED = ("wise", "imgedit")  # produce an image, then a judge grades it
GENERATION = ("geneval", *JUDGED)
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1400px}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:4px 8px;vertical-align:top}"
    "td a{text-decoration:none;color:inherit;display:block}td a:hover{background:#eef}"
    ".grid{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ccc;padding:6px;max-width:300px;"
    "font-size:13px}.card img{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;"
    "background:#eee}.pair{display:flex;gap:4px}.failed{color:#a00}.muted{color:#666}"
    "pre{white-space:pre-wrap;max-width:60em;font-size:12px;background:#f6f6f6;padding:4px}"
    "td.q{max-width:30em}.hit{color:#070}.miss{color:#a00}.ok{color:#070}"
)


# ---------------------------------------------------------------------------------------- helpers
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cut(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slug(text: str) -> str:
    """An id fragment: ``recon@standard`` -> ``recon-standard``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _data_uri(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _file_uri(path: Path) -> str | None:
    """A data URI of an image file, None when it cannot be read (deleted since the run)."""
    mime = IMAGE_TYPES.get(path.suffix.lower())
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if mime is None:  # an unusual extension: re-encode as PNG so that every browser shows it
        try:
            from PIL import Image

            buffer = io.BytesIO()
            Image.open(io.BytesIO(raw)).convert("RGB").save(buffer, format="PNG")
            raw, mime = buffer.getvalue(), "image/png"
        except (OSError, ValueError):
            return None
    return _data_uri(raw, mime)


def _img(uri: str | None, alt: str) -> str:
    if uri is None:
        return f"<span class='muted'>[{_esc(alt)}: image unavailable]</span>"
    return f"<img src='{uri}' alt='{_esc(alt)}' title='{_esc(alt)}'>"


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):  # ImgEdit's axes: [["Axis One", 4], ...] -> "Axis One 4; ..."
        return "; ".join(
            " ".join(_number(part, digits) for part in entry)
            if isinstance(entry, (list, tuple))
            else _number(entry, digits)
            for entry in value
        )
    return _esc(value)  # ints (judge scores, grades) as they are


@dataclass
class RunView:
    """One results.json: its benchmark directory, manifest order and per-stage records."""

    result: dict[str, Any]
    bench_dir: Path
    anchor: str
    stages: list[str]
    item_ids: list[str]
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # stage -> id -> record

    @property
    def family(self) -> str:
        return str(self.result["spec"].get("benchmark") or self.result["benchmark"].partition("@")[0])

    def record(self, stage: str, item_id: str) -> dict[str, Any] | None:
        return self.records.get(stage, {}).get(item_id)

    def item_anchor(self, item_id: str) -> str:
        from evals.runtime.records import safe_item_name

        return f"{self.anchor}-item-{safe_item_name(item_id)}"

    def failures(self) -> list[tuple[str, str, str]]:
        """(item, stage, reason) of each item whose first failed stage is ``stage``, in manifest order."""
        failed = []
        for item_id in self.item_ids:
            for stage in self.stages:
                record = self.record(stage, item_id)
                if record is not None and record.get("status") == "failed":
                    failed.append((item_id, stage, str(record.get("error") or record.get("state") or "no reason")))
                    break
        return failed


def _stage_order(result: dict[str, Any]) -> list[str]:
    """The run's stages in pipeline order (``produce`` before ``judge``): results.json keeps them sorted by
    name, which puts WISE's ``judge`` first; the benchmark's own ``stages`` give the order, and a stage it
    does not name (a benchmark no longer registered here) follows in the results' order."""
    from evals.benchmark import get_benchmark

    recorded = list(result.get("stages") or {})
    try:
        declared = list(get_benchmark(result["benchmark"])[0].stages)
    except (KeyError, ValueError) as error:
        logger.warning(
            "%s: benchmark unknown here (%s); its stages keep the results' order", result["benchmark"], error
        )
        declared = []
    return [stage for stage in declared if stage in recorded] + [stage for stage in recorded if stage not in declared]


def _load_view(result: dict[str, Any], anchor: str) -> RunView:
    """The run's manifest and records (a benchmark directory whose manifest is gone shows no items)."""
    from evals.files import read_json
    from evals.runtime.runner import MANIFEST, load_record

    bench_dir = Path(result["_path"]).parent
    stages = _stage_order(result)
    try:
        item_ids = [str(item) for item in read_json(bench_dir / MANIFEST)["items"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("%s: no readable manifest (%s); its items are not shown", bench_dir, error)
        item_ids = []
    view = RunView(result, bench_dir, anchor, stages, item_ids)
    for stage in stages:
        found = {}
        for item_id in item_ids:
            try:
                record = load_record(bench_dir, stage, item_id)
            except (OSError, ValueError) as error:  # RunDirectoryError is a ValueError or OSError subclass
                record = {"status": "failed", "error": f"unreadable record: {error}"}
            if record is not None:
                found[item_id] = record
        view.records[stage] = found
    return view


# ---------------------------------------------------------------------------------------- tables
_CELL = re.compile(r"(<td\b[^>]*\bclass=\"[^\"]*\brow(\d+)\b[^\"]*\"[^>]*>)(.*?)(</td>)", re.DOTALL)


def _table(results: list[dict[str, Any]], views: list[RunView], bench_anchor: str, labels: Sequence[str]) -> str:
    """The comparison table of one benchmark (compare's HTML, its footnotes), each cell linking to its items."""
    from evals.report.compare import build_comparison, render

    page = render(results, "html", labels=labels)
    body = page.split("<body>", 1)[1].rsplit("</body>", 1)[0]
    # Several tables on one page: give each its own ids (compare names every table T_compare).
    body = body.replace("T_compare", f"T_compare_{bench_anchor.replace('-', '_')}")
    rows = build_comparison(results, labels=labels).rows
    # A row is one run when no model ran the benchmark twice; then a cell links to that run's items.
    targets = [view.anchor for view in views] if len(rows) == len(views) else [bench_anchor] * len(rows)

    def link(match: re.Match[str]) -> str:
        row = int(match.group(2))
        target = targets[row] if row < len(targets) else bench_anchor
        return f"{match.group(1)}<a href='#{target}'>{match.group(3)}</a>{match.group(4)}"

    return _CELL.sub(link, body)


# ---------------------------------------------------------------------------------------- reconstruction
def _recon_references(view: RunView, shown: list[str]) -> tuple[dict[str, str], str | None]:
    """Item id -> data URI of the input as the benchmark fed it (listed again from the run's dataset, decoded
    and preprocessed as ``_produce_batch`` does), and why references are unavailable (None when all are)."""
    from PIL import Image

    from evals.benchmarks.recon.data import SHIPPED_KINDS, list_images
    from unilip.data import ImageLoader, ImageReadError, eval_transform

    knobs = view.result["spec"]["knobs"]
    dataset = knobs.get("dataset") or {}
    kind = dataset.get("kind")
    path = None if kind in SHIPPED_KINDS else view.result.get("data_path")
    try:
        listing = list_images(kind, path, None)
    except (OSError, ValueError) as error:
        return {}, f"the dataset ({kind}, {path}) cannot be listed now: {error}"
    sources = {item.id: item.source for item in listing.items}
    uris: dict[str, str] = {}
    missing: list[str] = []
    with ImageLoader() as loader:
        for item_id in shown:
            if item_id not in sources:
                missing.append(item_id)
                continue
            try:
                loaded = loader.load(sources[item_id])
            except (ImageReadError, OSError) as error:
                logger.warning("%s: reference of %s unreadable: %s", view.bench_dir, item_id, error)
                missing.append(item_id)
                continue
            pixels = eval_transform(loaded.image, int(knobs["resolution"]))
            array = (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="PNG")
            uris[item_id] = _data_uri(buffer.getvalue())
    reason = None
    if missing:
        reason = f"{len(missing)} reference(s) unavailable (the data moved or changed since the run)"
    return uris, reason


def _recon_items(view: RunView, shown: list[str]) -> str:
    produce, score = (view.stages + ["produce", "score"])[:2]
    references, reason = _recon_references(view, shown)
    parts = [f"<p class='muted'>{_esc(reason)}; those items show the reconstruction alone.</p>"] if reason else []
    cards = []
    for item_id in shown:
        made = view.record(produce, item_id) or {}
        scored = view.record(score, item_id) or {}
        output = made.get("output")
        recon = _file_uri(view.bench_dir / output) if made.get("status") == "ok" and output else None
        reference = references.get(item_id)
        pair = (
            _img(reference, f"{item_id} reference")
            if reference
            else "<span class='muted'>[reference unavailable]</span>"
        )
        pair += _img(recon, f"{item_id} reconstruction")
        numbers = " ".join(f"{name.upper()} {_number(scored[name])}" for name in ("psnr", "ssim") if name in scored)
        cards.append(
            f"<div class='card' id='{view.item_anchor(item_id)}'><div class='pair'>{pair}</div>"
            f"<div><b>{_esc(item_id)}</b> <span class='muted'>reference | reconstruction</span></div>"
            f"<div>{numbers or '<span class=muted>not scored</span>'}</div></div>"
        )
    return "".join(parts) + f"<div class='grid'>{''.join(cards)}</div>"


# ---------------------------------------------------------------------------------------- generation
def _geneval_items(view: RunView, shown: list[str]) -> str:
    produce, score = (view.stages + ["produce", "score"])[:2]
    cards, wrong = [], []
    for item_id in shown:
        made = view.record(produce, item_id) or {}
        scored = view.record(score, item_id) or {}
        prompt = scored.get("prompt") or _geneval_prompt(view.bench_dir, item_id)
        samples = made.get("samples") or [
            p.relative_to(view.bench_dir).as_posix()
            for p in sorted((view.bench_dir / "images" / item_id / "samples").glob("*.png"))
        ]
        images = "".join(_img(_file_uri(view.bench_dir / sample), sample) for sample in samples)
        verdict = f"{scored['correct']}/{scored['n']} correct" if "correct" in scored and "n" in scored else ""
        cards.append(
            f"<div class='card' id='{view.item_anchor(item_id)}'><div class='pair'>{images}</div>"
            f"<div><b>{_esc(item_id)}</b> {_esc(scored.get('tag', ''))} {_esc(verdict)}</div>"
            f"<div>{_esc(_cut(prompt or '', QUESTION_CHARS))}</div></div>"
        )
        for row in scored.get("images") or []:
            if not row.get("correct"):
                wrong.append((item_id, prompt, row))
    parts = [f"<div class='grid'>{''.join(cards)}</div>"]
    if wrong:
        rows = "".join(
            f"<tr><td><a href='#{view.item_anchor(item_id)}'>{_esc(item_id)}</a></td>"
            f"<td>{_img(_file_uri(view.bench_dir / str(row.get('file', ''))), str(row.get('file', '')))}</td>"
            f"<td class='q'>{_esc(_cut(prompt or '', QUESTION_CHARS))}</td>"
            f"<td>{_esc(row.get('reason') or '')}</td></tr>"
            for item_id, prompt, row in wrong
        )
        parts.append(
            f"<h4>Images the rules marked wrong ({len(wrong)})</h4><table><tr><th>item</th><th>image</th>"
            f"<th>prompt</th><th>reason</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _geneval_prompt(bench_dir: Path, item_id: str) -> str | None:
    """The prompt from the item's metadata.jsonl (written beside its samples), for an item not scored."""
    try:
        return json.loads((bench_dir / "images" / item_id / "metadata.jsonl").read_text().splitlines()[0])["prompt"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _judgement(record: dict[str, Any]) -> str:
    """A judge record: its state (with the error when it failed), scores and rationale (the raw reply), escaped.

    A failed judgement may still hold a reply (one that did not parse): both its error and the reply show."""
    state = record.get("state") or record.get("status") or "unknown"
    failed = record.get("status") == "failed"
    scores = record.get("scores") or {}
    known = {"state", "scores", "raw", "error", "cached", "http_calls", "attempts", "cache_key", "response_model"}
    known |= {"finish_reason", "usage", "id", "stage", "status", "fingerprint", "outputs", "inputs", "by"}
    known |= {"image", "image_sha256", "seed", "rationale"}
    extra = {k: v for k, v in record.items() if k not in known and isinstance(v, (int, float, str, bool))}
    shown = ", ".join(f"{_esc(k)}={_number(v)}" for k, v in {**scores, **extra}.items())
    css = "failed" if failed else "ok"
    parts = [f"<div class='judge-state {css}'>state: <b>{_esc(state)}</b> {shown}</div>"]
    if failed:
        parts.append(
            f"<div class='failed'>error: {_esc(_cut(record.get('error') or 'no reason recorded', REPLY_CHARS))}</div>"
        )
    rationale = record.get("raw") or record.get("rationale")
    if rationale:
        parts.append(f"<pre class='rationale'>{_esc(_cut(rationale, REPLY_CHARS))}</pre>")
    elif failed:
        parts.append("<div class='muted'>no reply</div>")
    return "".join(parts)


def _item_text(source: Any) -> str:
    """The text a judged item's image was made from: a WISE prompt, an ImgEdit instruction ("" when unknown)."""
    for holder in (source, getattr(source, "edit", None)):
        for name in ("prompt", "instruction"):
            text = getattr(holder, name, None)
            if isinstance(text, str):
                return text
    return ""


def _judged_items(view: RunView, shown: list[str]) -> str:
    produce, judge = (view.stages + ["produce", "judge"])[:2]
    sources, reason = _source_items(view)
    cards = []
    for item_id in shown:
        made = view.record(produce, item_id) or {}
        judged = view.record(judge, item_id)
        image = made.get("image")
        uri = _file_uri(view.bench_dir / image) if made.get("status") == "ok" and image else None
        # An edit's source image, as the produce record names it (absolute path), shown before the edited one.
        inputs = [Path(path) for path in made.get("inputs") or {}]
        pair = "".join(_img(_file_uri(path), f"{item_id} source") for path in inputs[:1])
        pair += _img(uri, f"{item_id} {'edited' if inputs else 'generated'} image")
        made_failed = ""
        if made.get("status") == "failed":
            made_failed = f"<div class='failed'>{_esc(produce)} failed: {_esc(made.get('error') or 'no reason')}</div>"
        text = _item_text(sources.get(item_id))
        cards.append(
            f"<div class='card' id='{view.item_anchor(item_id)}' style='max-width:460px'><div class='pair'>{pair}</div>"
            f"<div><b>{_esc(item_id)}</b> {_esc(_cut(text, QUESTION_CHARS))}</div>{made_failed}"
            + (_judgement(judged) if judged else "<div class='muted'>not judged</div>")
            + "</div>"
        )
    note = f"<p class='muted'>prompts unavailable ({_esc(reason)})</p>" if reason else ""
    return f"{note}<div class='grid'>{''.join(cards)}</div>"


# ---------------------------------------------------------------------------------------- understanding
def _run_options(view: RunView) -> dict[str, Any]:
    """The benchmark options the run was given: its data, then the ``--opt`` pairs of the run directory's
    run.json (``imgedit_images``, ``limit``, a judge variant's options) that this benchmark takes."""
    from evals.benchmark import get_benchmark, parse_opts, select_options
    from evals.files import read_json

    given: dict[str, Any] = {"data": view.result.get("data_path")}
    run_json = view.bench_dir.parent / "run.json"
    try:
        pairs = read_json(run_json).get("options", {}).get("opt") or []
        given.update(parse_opts([str(pair) for pair in pairs]))
    except (OSError, ValueError, AttributeError) as error:
        logger.warning("%s: options unreadable (%s); items are looked up with the run's data alone", run_json, error)
    return select_options(get_benchmark(view.result["benchmark"])[0], given)


def _source_items(view: RunView) -> tuple[dict[str, Any], str | None]:
    """Item id -> the item's source (a TSV row: question and gold answer; a WISE prompt; an ImgEdit edit), read
    again from the run's data with the run's options; and why not, when the data cannot be read now (moved)."""
    from evals.benchmark import get_benchmark

    try:
        bench, variant = get_benchmark(view.result["benchmark"])
        resolved = bench.resolve(variant, _run_options(view), None)
    except Exception as error:  # noqa: BLE001 - any refusal only costs the data's texts, said on the page
        return {}, f"{type(error).__name__}: {_cut(error, 300)}"
    return {item.id: item.source for item in resolved.items}, None


def _understanding_items(view: RunView, shown: list[str]) -> str:
    answer_stage, score_stage = (view.stages + ["answer", "score"])[:2]
    rows_by_id, reason = _source_items(view)
    reason = reason and f"gold answers unavailable ({reason})"
    lines = []
    for item_id in shown:
        answered = view.record(answer_stage, item_id) or {}
        scored = view.record(score_stage, item_id) or {}
        row = rows_by_id.get(item_id)
        question = answered.get("prompt") or ""
        gold = None
        if row is not None:
            question = str(getattr(row, "fields", {}).get("question") or question)
            gold = getattr(row, "answer", None)
        extracted = scored.get("answer")
        if "grade" in scored:
            hit = f"grade {_number(scored['grade'])}"
        elif gold is None or extracted is None:
            hit = "?"
        else:
            ok = str(extracted).strip().lower() == str(gold).strip().lower()
            hit = f"<span class='{'hit' if ok else 'miss'}'>{'yes' if ok else 'no'}</span>"
        if "raw" in scored or scored.get("state"):  # a judge's answer: its state, error and rationale
            by = (_esc(scored["by"]) if scored.get("by") else "") + _judgement(scored)
        else:
            by = _esc(scored.get("by") or scored.get("status") or "not scored")
        lines.append(
            f"<tr id='{view.item_anchor(item_id)}'><td>{_esc(item_id)}</td>"
            f"<td class='q'>{_esc(_cut(question, QUESTION_CHARS))}</td>"
            f"<td>{_esc(_cut(answered.get('prediction', ''), QUESTION_CHARS))}</td>"
            f"<td>{_esc('' if extracted is None else extracted)}</td><td>{_esc('' if gold is None else gold)}</td>"
            f"<td>{hit}</td><td>{by}</td></tr>"
        )
    note = f"<p class='muted'>{_esc(reason)}</p>" if reason else ""
    note += (
        "<p class='muted'>hit: the extracted answer equals this row's gold answer; the benchmark's metrics may "
        "combine rows (circular evaluation, pairs, per-image scores).</p>"
    )
    return (
        note + "<table><tr><th>item</th><th>question</th><th>prediction</th><th>extracted</th><th>answer</th>"
        f"<th>hit</th><th>resolved by</th></tr>{''.join(lines)}</table>"
    )


# ---------------------------------------------------------------------------------------- page
def _run_section(view: RunView, max_items: int) -> str:
    from evals.report.results import model_label

    shown = view.item_ids[:max_items]
    left_out = len(view.item_ids) - len(shown)
    family = view.family
    if family == "recon":
        items = _recon_items(view, shown)
    elif family == "geneval":
        items = _geneval_items(view, shown)
    elif family in JUDGED:
        items = _judged_items(view, shown)
    else:
        items = _understanding_items(view, shown)
    count = f"{len(shown)} of {len(view.item_ids)} items shown (the first in manifest order)"
    if left_out:
        count += f"; {left_out} left out (--max-items {max_items})"
    failures = view.failures()
    failed = ""
    if failures:
        listed = set(shown)

        def item_cell(item_id: str) -> str:  # a link to the item's card when the page shows it
            if item_id in listed:
                return f"<a href='#{view.item_anchor(item_id)}'>{_esc(item_id)}</a>"
            return _esc(item_id)

        rows = "".join(
            f"<tr><td>{item_cell(item_id)}</td><td>{_esc(stage)}</td><td>{_esc(reason)}</td></tr>"
            for item_id, stage, reason in failures
        )
        failed = (
            f"<h4 class='failed'>Failed items ({len(failures)})</h4><table><tr><th>item</th><th>stage</th>"
            f"<th>reason</th></tr>{rows}</table>"
        )
    return (
        f"<section id='{view.anchor}'><h3>{_esc(model_label(view.result))} "
        f"<span class='muted'>{_esc(view.bench_dir)}</span></h3><p class='muted'>{_esc(count)}</p>"
        f"{items}{failed}</section>"
    )


def _named_runs(labels: Sequence[str], results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Each ``RUN=NAME`` label with the RUN it names (:func:`evals.report.compare.split_label`).

    Raises:
        ValueError: a label that names none of the runs given.
    """
    from evals.report.compare import split_label

    return [(split_label(label, results)[0], label) for label in labels]


def build_page(runs: Sequence[str | Path], *, max_items: int = DEFAULT_MAX_ITEMS, labels: Sequence[str] = ()) -> str:
    """The HTML page of the runs: per benchmark variant its table, then per run its items and failures.

    Args:
        runs: run directories (or results.json files), as ``unilip eval compare`` takes them.
        max_items: items shown per run and benchmark (the first in manifest order).
        labels: ``RUN=NAME`` row names, as ``unilip eval compare --label``.

    Raises:
        FileNotFoundError: a RUN that holds no results.json.
        ValueError: ``max_items`` below 0, or a label that names no run.
    """
    if max_items < 0:
        raise ValueError(f"--max-items {max_items}: give 0 or more")
    from evals.report.compare import same_run
    from evals.report.results import load_results

    results = load_results(list(runs))
    named = _named_runs(labels, results)
    benchmarks = list(dict.fromkeys(result["benchmark"] for result in results))
    sections, contents = [], []
    for benchmark in benchmarks:
        anchor = f"bench-{_slug(benchmark)}"
        chosen = [result for result in results if result["benchmark"] == benchmark]
        views = [_load_view(result, f"{anchor}-run{number}") for number, result in enumerate(chosen, start=1)]
        # Each table gets the labels of its own runs (a label of a run without this benchmark is no error here).
        own = [label for run, label in named if any(same_run(run, result) for result in chosen)]
        table = _table(chosen, views, anchor, own)
        runs_html = "".join(_run_section(view, max_items) for view in views)
        contents.append(f"<li><a href='#{anchor}'>{_esc(benchmark)}</a></li>")
        sections.append(f"<section id='{anchor}'><h2>{_esc(benchmark)}</h2>{table}{runs_html}</section>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>unilip report</title>"
        f"<style>{STYLE}</style></head><body><h1>unilip report</h1>"
        f"<p class='muted'>runs: {_esc(', '.join(str(run) for run in runs))}</p><ul>{''.join(contents)}</ul>"
        f"{''.join(sections)}</body></html>\n"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``unilip eval report`` options."""
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or results.json files)")
    parser.add_argument("--out", required=True, metavar="PAGE.html", help="the HTML page to write")
    parser.add_argument(
        "--max-items",
        type=int,
        default=DEFAULT_MAX_ITEMS,
        metavar="N",
        help=f"items shown per run and benchmark, the first in manifest order (default {DEFAULT_MAX_ITEMS})",
    )
    parser.add_argument(
        "--label", action="append", default=[], metavar="RUN=NAME", help="name a run's table row (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    """Write the page; 0 when written (a RUN without results or an unwritable --out raise)."""
    from evals.files import atomic_write_bytes

    page = build_page(args.runs, max_items=args.max_items, labels=args.label)
    out = Path(args.out)
    atomic_write_bytes(out, page.encode("utf-8"))
    print(out)
    return 0
