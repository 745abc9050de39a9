"""``unilip eval leaderboard``: published numbers of a benchmark beside this project's runs of it.

For each benchmark variant in the runs and each of its metrics that a published (benchmark, subtask) maps onto
(``leaderboards/published/benchmark-map.yaml``), one table: the published rows of ``published-results.csv`` and the
runs' rows (source "this run"), sorted best first (higher is better unless the map says lower, e.g. rFID). Columns:
model, params, score, protocol (the row's protocol variant and stated knobs where the map knows them, else
"unknown"), source (its first 60 characters; the full text is a footnote in Markdown, a ``source_full`` column in
CSV). Published scores are shown in the published units; a run's value is converted with the map's ``scale``.

This module also holds the published data helpers ``unilip eval verify`` uses: :func:`load_map`,
:func:`load_published`, :func:`map_row`.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "leaderboards" / "published"
MAP_PATH = PUBLISHED_DIR / "benchmark-map.yaml"
CSV_PATH = PUBLISHED_DIR / "published-results.csv"
FORMATS = ("md", "csv", "tex", "html")
SOURCE_CHARS = 60


@dataclass
class Mapping:
    """Where one published (benchmark, subtask) lands in this harness, and the protocol of one row."""

    benchmark: str  # published name
    subtask: str
    bench: str  # our NAME
    metric: str
    variant: str | None = None
    scale: float = 1.0
    direction: str = "higher"
    protocol: str = "unknown"
    knobs: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """``NAME@VARIANT``, or ``NAME`` when the variant is unknown."""
        return f"{self.bench}@{self.variant}" if self.variant else self.bench


def _exists(path: str | Path, flag: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: no such file; pass {flag} FILE (the shipped one is in a checkout: leaderboards/published/)"
        )


def load_map(path: str | Path = MAP_PATH) -> dict[str, Any]:
    """The benchmark map, checked enough that a typo is a ``ValueError`` (refused), never a crash later."""
    _exists(path, "--map")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML ({' '.join(str(error).split())}); fix the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), dict):
        raise ValueError(f"{path}: needs a 'benchmarks' mapping (see the comments at the top of the shipped map)")
    for name, entry in data["benchmarks"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("subtasks"), dict):
            raise ValueError(f"{path}: benchmark {name!r} needs a 'subtasks' mapping of published subtask -> metric")
        for subtask, target in entry["subtasks"].items():
            if (
                not isinstance(target, dict)
                or "metric" not in target
                or not (target.get("bench") or entry.get("bench"))
            ):
                raise ValueError(f"{path}: {name}/{subtask} needs 'metric' and a 'bench' (its own or the benchmark's)")
    data.setdefault("knobs", {})
    return data


def load_published(path: str | Path = CSV_PATH) -> Any:
    """The published rows as a pandas DataFrame (``score`` numeric)."""
    import pandas as pd

    _exists(path, "--published")
    frame = pd.read_csv(path)
    missing = {"model", "params", "benchmark", "subtask", "score", "resolution", "source", "note"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(sorted(missing))}; it must be published-results.csv")
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame


def _text(value: Any) -> str:
    """A CSV cell as text; pandas reads empty cells as NaN."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def map_row(row: dict[str, Any], bench_map: dict[str, Any]) -> Mapping | None:
    """The mapping of one published row (a dict of the CSV's columns), or None when it has no counterpart here."""
    entry = bench_map["benchmarks"].get(row["benchmark"])
    if entry is None or row["subtask"] not in entry["subtasks"]:
        return None
    target = entry["subtasks"][row["subtask"]]
    mapping = Mapping(
        benchmark=row["benchmark"],
        subtask=row["subtask"],
        bench=target.get("bench") or entry["bench"],
        metric=target["metric"],
        variant=target.get("variant", entry.get("variant")),
        scale=float(target.get("scale", entry.get("scale", 1.0))),
        direction=target.get("direction", entry.get("direction", "higher")),
        protocol=target.get("protocol", entry.get("protocol") or "unknown"),
    )
    for rule in entry.get("rows") or []:
        if all(re.search(rule[key], _text(row.get(key))) for key in ("model", "note") if key in rule):
            mapping.variant = rule.get("variant", mapping.variant)
            mapping.protocol = rule.get("protocol", mapping.protocol)
            mapping.knobs.update(rule.get("knobs") or {})
            break
    resolution = row.get("resolution")
    # The CSV's resolution column is a protocol statement only where our bench has a resolution knob (recon).
    if _text(resolution) and "resolution" in bench_map["knobs"].get(mapping.bench, {}):
        mapping.knobs.setdefault("resolution", int(float(resolution)))
    return mapping


def protocol_label(mapping: Mapping) -> str:
    """The protocol column: variant and stated knobs where known, else "unknown"."""
    knobs = ", ".join(f"{key}={value}" for key, value in mapping.knobs.items())
    if mapping.variant:
        return f"{mapping.reference}" + (f" ({knobs})" if knobs else "")
    return f"unknown ({knobs})" if knobs else "unknown"


def knob_value(knobs: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of ``spec.knobs``; ``KeyError`` when the run does not record it."""
    value: Any = knobs
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def run_knobs(result: dict[str, Any], bench_map: dict[str, Any]) -> dict[str, Any]:
    """The knobs that matter for a run (the map's ``knobs`` of its bench), by their short names."""
    name = str(result.get("benchmark", "")).partition("@")[0]
    shown: dict[str, Any] = {}
    for alias, path in bench_map["knobs"].get(name, {}).items():
        try:
            shown[alias] = knob_value(result.get("spec", {}).get("knobs", {}), path)
        except KeyError:
            continue  # a knob this variant does not have (no judge in mme@default) is simply not shown
    return shown


def _matches(text: str | None, wanted: str | None) -> bool:
    return wanted is None or (text is not None and text.lower() == wanted.lower())


def build_tables(
    results: list[dict[str, Any]],
    published: Any,
    bench_map: dict[str, Any],
    benchmark: str | None = None,
    subtask: str | None = None,
) -> list[dict[str, Any]]:
    """One table per (run benchmark variant, mapped metric): ``{title, direction, rows}``; rows are dicts."""
    from evals.report.results import model_label

    records = published.to_dict("records")
    mapped = [(row, map_row(row, bench_map)) for row in records]
    tables = []
    references = sorted({str(result["benchmark"]) for result in results})
    for reference in references:
        name = reference.partition("@")[0]
        runs = [result for result in results if result["benchmark"] == reference]
        keys = sorted(
            {(m.benchmark, m.subtask, m.metric) for _, m in mapped if m and m.bench == name},
            key=lambda key: (key[0], key[2] != "overall", key[1]),
        )
        for pub_bench, pub_subtask, metric in keys:
            if benchmark and not any(_matches(text, benchmark) for text in (reference, name, pub_bench)):
                continue
            if subtask and not (_matches(pub_subtask, subtask) or _matches(metric, subtask)):
                continue
            if not any(metric in result.get("metrics", {}) for result in runs):
                continue
            rows, direction, scale = [], "higher", 1.0
            for row, m in mapped:
                if m and m.bench == name and (m.benchmark, m.subtask) == (pub_bench, pub_subtask):
                    direction, scale = m.direction, m.scale
                    rows.append(
                        {
                            "model": row["model"],
                            "params": _text(row["params"]),
                            "score": row["score"],
                            "protocol": protocol_label(m),
                            "source": _text(row["source"]),
                            "note": _text(row["note"]),
                        }
                    )
            for result in runs:
                entry = result["metrics"].get(metric, {})
                value = entry.get("value") if entry.get("status") != "not_computed" else None
                knobs = ", ".join(f"{k}={v}" for k, v in run_knobs(result, bench_map).items())
                rows.append(
                    {
                        "model": model_label(result),
                        "params": "",
                        "score": float(value) * scale if isinstance(value, (int, float)) else math.nan,
                        "protocol": reference + (f" ({knobs})" if knobs else ""),
                        "source": "this run",
                        "note": result.get("_path", "")
                        + ("" if value is not None else f"; {metric} not computed: {entry.get('reason', 'absent')}"),
                    }
                )
            # NaN scores (not computed) last, whatever the direction.
            rows.sort(key=lambda r: (math.isnan(r["score"]), -r["score"] if direction == "higher" else r["score"]))
            tables.append(
                {
                    "title": f"{reference} {metric} (published: {pub_bench} / {pub_subtask})",
                    "run_benchmark": reference,
                    "metric": metric,
                    "published_benchmark": pub_bench,
                    "published_subtask": pub_subtask,
                    "direction": direction,
                    "rows": rows,
                }
            )
    return tables


def _short(source: str) -> str:
    return source if len(source) <= SOURCE_CHARS else source[: SOURCE_CHARS - 1] + "…"


def render(tables: list[dict[str, Any]], fmt: str = "md") -> str:
    """The tables as Markdown (sources in footnotes), CSV (one long table), LaTeX or HTML (pandas)."""
    import pandas as pd

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "csv":
        flat = [
            {
                "run_benchmark": table["run_benchmark"],
                "metric": table["metric"],
                "published_benchmark": table["published_benchmark"],
                "published_subtask": table["published_subtask"],
                "model": row["model"],
                "params": row["params"],
                "score": row["score"],
                "protocol": row["protocol"],
                "source": _short(row["source"]),
                "source_full": row["source"],
                "note": row["note"],
            }
            for table in tables
            for row in table["rows"]
        ]
        columns = ["run_benchmark", "metric", "published_benchmark", "published_subtask", "model", "params"]
        columns += ["score", "protocol", "source", "source_full", "note"]
        return pd.DataFrame(flat, columns=columns).to_csv(index=False)
    parts = []
    footnotes: dict[str, int] = {}
    for table in tables:
        frame = pd.DataFrame(
            [
                {
                    "model": row["model"],
                    "params": row["params"],
                    "score": row["score"],
                    "protocol": row["protocol"],
                    "source": row["source"]
                    if row["source"] == "this run"
                    else f"{_short(row['source'])} [{footnotes.setdefault(row['source'], len(footnotes) + 1)}]",
                }
                for row in table["rows"]
            ],
            columns=["model", "params", "score", "protocol", "source"],
        )
        better = "lower is better" if table["direction"] == "lower" else "higher is better"
        if fmt == "md":
            lines = [f"### {table['title']}, {better}", "", "| model | params | score | protocol | source |"]
            lines.append("|---|---|---|---|---|")
            for row in frame.to_dict("records"):
                score = "not computed" if math.isnan(row["score"]) else f"{row['score']:.4g}"
                cells = [str(row[k]).replace("|", "\\|") for k in ("model", "params")]
                cells += [score] + [str(row[k]).replace("|", "\\|") for k in ("protocol", "source")]
                lines.append("| " + " | ".join(cells) + " |")
            parts.append("\n".join(lines) + "\n")
        elif fmt == "tex":
            styler = frame.style.format({"score": "{:.4g}"}, na_rep="n/a").hide(axis="index")
            caption = f"{table['title']}, {better}".replace("_", r"\_")
            text = ["model", "params", "protocol", "source"]
            body = styler.format_index(escape="latex", axis=1).format(escape="latex", subset=text)
            parts.append(f"% {caption}\n" + body.to_latex(hrules=True, caption=caption))
        else:
            styler = frame.style.format({"score": "{:.4g}"}, na_rep="n/a").hide(axis="index")
            styler = styler.format(escape="html", subset=["model", "params", "protocol", "source"])
            parts.append(f"<h3>{html.escape(table['title'])}, {better}</h3>\n" + styler.to_html())
    notes = [f"[{number}] {source}" for source, number in footnotes.items()]
    if fmt == "md":
        if not tables:
            parts.append("no published rows map onto the metrics of these runs (see benchmark-map.yaml)\n")
        return "\n".join(parts) + ("\n" + "\n".join(f"- {note}" for note in notes) + "\n" if notes else "")
    if fmt == "tex":
        return "\n".join(parts) + "".join(f"% {note}\n" for note in notes)
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>unilip leaderboard</title></head><body>"
        + "\n".join(parts)
        + f"<ol>{items}</ol></body></html>\n"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unilip eval leaderboard``."""
    parser.add_argument("runs", nargs="+", help="run directories or results.json files")
    parser.add_argument("--benchmark", help="only this benchmark: ours (NAME or NAME@VARIANT) or a published name")
    parser.add_argument("--subtask", help="only this published subtask or our metric name (e.g. overall, rFID)")
    parser.add_argument("--format", choices=FORMATS, default="md")
    parser.add_argument("--map", default=str(MAP_PATH), help="benchmark map YAML (default: the shipped one)")
    parser.add_argument("--published", default=str(CSV_PATH), help="published results CSV (default: the shipped one)")


def run(args: argparse.Namespace) -> int:
    """Print the leaderboard tables; 0, or raise ``ValueError``/``OSError`` (exit 2)."""
    from evals.report.results import load_results

    results = load_results(args.runs)
    tables = build_tables(results, load_published(args.published), load_map(args.map), args.benchmark, args.subtask)
    if not tables and (args.benchmark or args.subtask):
        raise ValueError(
            f"no run metric maps onto a published row for --benchmark {args.benchmark} --subtask {args.subtask}; "
            "check the names against benchmark-map.yaml"
        )
    sys.stdout.write(render(tables, args.format))
    return 0
