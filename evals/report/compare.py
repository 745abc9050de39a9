"""``unilip eval compare``: one row per model, columns grouped per benchmark variant, footnotes under the table.

A group of columns is one benchmark variant at one spec fingerprint, so runs of different variants,
resolutions or datasets never share a column: two fingerprints of one variant make two groups
(``recon@standard (1)``, ``(2)``), and the footnotes say what differs. Within a group the metrics come in
the order the benchmark reported them (``metric_order`` in results.json: the headline first), each with
its direction (↑ higher is better, ↓ lower). Rows are named by the model's reference; a footnote gives each
model's weights digest. What a cell cannot show (a metric not computed, a benchmark's warnings, coverage)
goes into one footnote per distinct reason, naming the models it concerns.

Formats: ``md`` (Markdown), ``csv`` (numbers only: ``value``, ``se``, ``n`` per column, coverage per
group; loads with ``pandas.read_csv``), ``tex`` (``Styler.to_latex``: booktabs rules, a ``\\multicolumn``
per group) and ``html`` (``Styler.to_html`` in a self-contained page). No cell is bolded unless ``--paired
BASELINE_RUN`` tests each run against a baseline (:mod:`evals.report.paired`): then, in Markdown, a column's best
value is bolded when its difference from the baseline is significant, and the tests follow the table (md: a section;
tex, html: footnotes; csv: ``:paired_diff``, ``:paired_p`` columns).
"""

from __future__ import annotations

import difflib
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evals.report.results import model_digest, model_label, model_reference

FORMATS = ("md", "csv", "tex", "html")
ARROWS = {"higher": "↑", "lower": "↓"}
TEX_ARROWS = {"higher": r"$\uparrow$", "lower": r"$\downarrow$"}
# Default digits: 3 significant for values and 2 for standard errors, counted on a column's smallest
# magnitude so that one column shares its decimals; never more than MAX_DECIMALS after the point.
VALUE_DIGITS, SE_DIGITS, MAX_DECIMALS = 3, 2, 6


@dataclass(frozen=True)
class Column:
    """One column: a metric of a group (a benchmark variant at one spec fingerprint)."""

    group: str  # how the group is shown: "recon@standard", or "recon@standard (1)" beside another fingerprint
    benchmark: str  # "recon@standard"
    metric: str
    direction: str  # "higher" or "lower": which way is better

    @property
    def qualified(self) -> str:
        """``bench@variant:metric``, as ``--metrics`` and ``--precision`` take it."""
        return f"{self.benchmark}:{self.metric}"


@dataclass
class Comparison:
    """What the table shows, before formatting.

    Attributes:
        rows: the row labels, in the order the runs were given.
        columns: the columns, grouped: groups in the order met, metrics in the benchmark's order (or
            in ``--metrics`` order within a group).
        cells: (row, column) -> the metric's entry in results.json (``value``, ``se``, ``n`` or
            ``status: not_computed``); a missing key means the model has no run of that group.
        coverage: (row, group) -> the run's coverage (``ok``, ``expected``, ``failed``, ``missing``).
        notes: the footnotes, one per distinct fact.
    """

    rows: list[str]
    columns: list[Column]
    cells: dict[tuple[str, Column], dict[str, Any]] = field(default_factory=dict)
    coverage: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    paired: list[Any] = field(default_factory=list)  # evals.report.paired.PairedEntry, with --paired
    baseline: str | None = None  # the baseline's row, with --paired

    @property
    def groups(self) -> list[str]:
        """The groups that have a column, in order."""
        return list(dict.fromkeys(column.group for column in self.columns))


# ---------------------------------------------------------------------------------------- building
def _is_metric(entry: Any) -> bool:
    """A metric entry (a value, or a reason it was not computed), not a breakdown or bookkeeping."""
    return isinstance(entry, dict) and ("value" in entry or entry.get("status") == "not_computed")


def _metric_names(result: dict[str, Any]) -> list[str]:
    """The result's metrics in the benchmark's order; older results.json (no ``metric_order``): as stored."""
    metrics = result["metrics"]
    order = [name for name in result.get("metric_order") or [] if name in metrics]
    order += [name for name in metrics if name not in order]
    return [name for name in order if _is_metric(metrics[name])]


def _declared_directions(benchmark: str) -> dict[str, str]:
    """For results.json written before ``metric_directions`` was recorded: what the benchmark declares now
    (``lower_is_better``), so an old rFID column still reads ↓; nothing for a benchmark no longer registered."""
    from evals.benchmark import benchmark_classes

    cls = benchmark_classes().get(benchmark.partition("@")[0])
    return {name: "lower" for name in getattr(cls, "lower_is_better", ())}


def same_run(given: str, result: dict[str, Any]) -> bool:
    """Whether ``given`` (a ``--label`` RUN) names the run directory or results.json ``result`` came from."""
    named = [result.get("_run"), result.get("_path")]
    if given in named:
        return True
    target = Path(given).resolve()
    return any(name is not None and Path(name).resolve() == target for name in named)


def split_label(item: str, results: list[dict[str, Any]]) -> tuple[str, str, list[int]]:
    """A ``--label RUN=NAME``: its RUN, its NAME and the indices of the results that RUN names. RUN or NAME may
    hold "=": the first split whose left side names a run given is taken.

    Raises:
        ValueError: no "=", a RUN that names none of the runs given, or an empty NAME.
    """
    if "=" not in item:
        raise ValueError(f"--label {item!r}: give RUN=NAME (RUN: a run directory or results.json given)")
    for position in [i for i, char in enumerate(item) if char == "="]:
        run, name = item[:position], item[position + 1 :]
        matched = [index for index, result in enumerate(results) if same_run(run, result)]
        if matched:
            break
    else:
        runs = ", ".join(dict.fromkeys(str(result.get("_run", result.get("_path"))) for result in results))
        raise ValueError(f"--label {item!r}: {item.split('=', 1)[0]!r} names none of the runs given ({runs})")
    if not name.strip():
        raise ValueError(f"--label {item!r}: the NAME after '=' is empty")
    return run, name.strip(), matched


def _parse_labels(labels: Sequence[str], results: list[dict[str, Any]]) -> dict[int, str]:
    """Result index -> the name ``--label RUN=NAME`` gives it; ValueError for a RUN that names no run."""
    chosen: dict[int, str] = {}
    for item in labels:
        _, name, matched = split_label(item, results)
        chosen.update(dict.fromkeys(matched, name))
    return chosen


def _row_labels(results: list[dict[str, Any]], labels: Sequence[str]) -> list[str]:
    """Each result's row: its ``--label`` name, else its model reference; a reference shared by different
    models (other weights) gets their digests, so two models never share a row by accident."""
    chosen = _parse_labels(labels, results)
    identity = [(model_reference(r), str(r["model"].get("weights_sha256") or "")) for r in results]
    names = [chosen.get(index, model_reference(result)) for index, result in enumerate(results)]
    models_named: dict[str, set[tuple[str, str]]] = {}
    for name, ident in zip(names, identity, strict=True):
        models_named.setdefault(name, set()).add(ident)
    return [
        model_label(result) if index not in chosen and len(models_named[names[index]]) > 1 else names[index]
        for index, result in enumerate(results)
    ]


def _group_names(results: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(benchmark, fingerprint) -> the group's name: the benchmark, numbered when it has several fingerprints."""
    fingerprints: dict[str, list[str]] = {}
    for result in results:
        found = fingerprints.setdefault(result["benchmark"], [])
        if result["spec"]["fingerprint"] not in found:
            found.append(result["spec"]["fingerprint"])
    return {
        (bench, fp): bench if len(fps) == 1 else f"{bench} ({number})"
        for bench, fps in fingerprints.items()
        for number, fp in enumerate(fps, start=1)
    }


def _tokens(text: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else list(text)
    return [token.strip() for part in parts for token in part.split(",") if token.strip()]


def _matches(token: str, column: Column) -> bool:
    """Whether ``token`` (``metric`` or ``bench@variant:metric``, the group name allowed) names ``column``."""
    if ":" in token:
        bench, metric = token.rsplit(":", 1)
        return metric == column.metric and bench in (column.benchmark, column.group)
    return token == column.metric


def _check_known(tokens: list[str], columns: list[Column], option: str) -> None:
    """ValueError, with the closest names, for a token that names no column."""
    known = list(dict.fromkeys([c.metric for c in columns] + [c.qualified for c in columns]))
    for token in tokens:
        if not any(_matches(token, column) for column in columns):
            close = difflib.get_close_matches(token, known, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; the runs have: {', '.join(known)}"
            raise ValueError(f"{option}: no metric {token!r} in the runs given{hint}")


def _join(names: list[str]) -> str:
    return ", ".join(names)


def _coverage_text(coverage: dict[str, Any]) -> str:
    text = f"{coverage.get('ok', '?')}/{coverage.get('expected', '?')}"
    extra = [f"{coverage[key]} {key}" for key in ("failed", "missing") if coverage.get(key)]
    return f"{text} ({', '.join(extra)})" if extra else text


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else "..."


def _describe_knob(key: str, values: list[Any]) -> str:
    """``resolution (56 / 256)``; the name alone when a value is long (a data listing's hash table ...)."""
    shown = [_short(value) for value in values]
    return key if "..." in shown else f"{key} ({' / '.join(shown)})"


def _spec_notes(results: list[dict[str, Any]], names: dict[tuple[str, str], str], shown: list[str]) -> list[str]:
    """One footnote per benchmark: its spec fingerprints and, for several, the knobs that differ."""
    specs: dict[str, dict[str, dict[str, Any]]] = {}  # benchmark -> group name -> spec
    for result in results:
        group = names[(result["benchmark"], result["spec"]["fingerprint"])]
        if group in shown:
            specs.setdefault(result["benchmark"], {}).setdefault(group, result["spec"])
    notes = []
    for bench, groups in specs.items():
        if len(groups) == 1:
            ((group, spec),) = groups.items()
            notes.append(f"{group}: spec {spec['fingerprint'][:8]} (version {spec.get('version', '?')})")
            continue
        parts = "; ".join(f"{group}: spec {spec['fingerprint'][:8]}" for group, spec in groups.items())
        flat = [{"version": spec.get("version"), **spec.get("knobs", {})} for spec in groups.values()]
        keys = list(dict.fromkeys(key for knobs in flat for key in knobs))
        differ = [key for key in keys if len({json.dumps(k.get(key), sort_keys=True, default=str) for k in flat}) > 1]
        described = [_describe_knob(key, [knobs.get(key) for knobs in flat]) for key in differ]
        notes.append(f"{bench} at {len(groups)} specs: {parts}; they differ in {_join(described) or 'nothing listed'}")
    return notes


def build_comparison(
    results: list[dict[str, Any]],
    *,
    labels: Sequence[str] = (),
    metrics: str | Sequence[str] | None = None,
    paired: str | None = None,
    resamples: int | None = None,
) -> Comparison:
    """The table of ``results`` (as :func:`evals.report.results.load_results` returns them).

    Args:
        results: one entry per results.json, each with ``_path`` (and ``_run``, the argument given).
        labels: ``RUN=NAME`` items naming the rows of a run (RUN: a run directory or results.json given).
        metrics: the columns to show (``"a,b"`` or a list): metric names, or ``bench@variant:metric``;
            all when None. Within a group they come in this order.
        paired: a run given (directory or results.json, as ``--label`` names it): test every other run against
            it on the units both scored (:mod:`evals.report.paired`); None: no tests.
        resamples: the bootstrap resamples of the paired tests (default :data:`evals.report.paired.RESAMPLES`).

    Raises:
        ValueError: a ``--label`` or ``--paired`` RUN that names no run given, or a metric that no run has.
    """
    rows = _row_labels(results, labels)
    names = _group_names(results)
    columns: dict[tuple[str, str], Column] = {}  # (group, metric) -> column
    comparison = Comparison(rows=list(dict.fromkeys(rows)), columns=[])
    shown_run: dict[tuple[str, str], str] = {}
    duplicates: list[str] = []
    for row, result in zip(rows, results, strict=True):
        group = names[(result["benchmark"], result["spec"]["fingerprint"])]
        if (row, group) in shown_run:  # one cell per model and group: the later run wins, and says so
            duplicates.append(f"{row}: several runs of {group}; showing {result['_path']}")
            comparison.cells = {
                key: entry for key, entry in comparison.cells.items() if (key[0], key[1].group) != (row, group)
            }
        shown_run[(row, group)] = result["_path"]
        comparison.coverage[(row, group)] = result.get("coverage", {})
        directions = result.get("metric_directions") or _declared_directions(result["benchmark"])
        for name in _metric_names(result):
            key = (group, name)
            if key not in columns:
                direction = directions.get(name, "higher")
                columns[key] = Column(group, result["benchmark"], name, direction if direction in ARROWS else "higher")
            comparison.cells[(row, columns[key])] = result["metrics"][name]
    # A benchmark's groups side by side (recon@standard (1), (2)), benchmarks in the order met.
    benchmarks = list(dict.fromkeys(column.benchmark for column in columns.values()))
    every = sorted(columns.values(), key=lambda column: benchmarks.index(column.benchmark))
    chosen = _tokens(metrics)
    _check_known(chosen, every, "--metrics")
    if chosen:
        group_order = list(dict.fromkeys(column.group for column in every))
        picked = [c for c in every if any(_matches(token, c) for token in chosen)]
        rank = {c: min(i for i, token in enumerate(chosen) if _matches(token, c)) for c in picked}
        every = sorted(picked, key=lambda c: (group_order.index(c.group), rank[c]))
    comparison.columns = every
    # A model with nothing in the columns chosen has no row.
    comparison.rows = [row for row in comparison.rows if any((row, column) in comparison.cells for column in every)]
    comparison.notes = _notes(comparison, results, rows, names) + list(dict.fromkeys(duplicates))
    if paired is not None:
        _add_paired(comparison, results, rows, names, paired, resamples, bool(chosen))
    return comparison


def _add_paired(
    comparison: Comparison,
    results: list[dict[str, Any]],
    rows: list[str],
    names: dict[tuple[str, str], str],
    paired: str,
    resamples: int | None,
    chosen: bool,
) -> None:
    """The paired tests of every run against the run ``paired``, for the rows and groups the table shows (and,
    with ``--metrics``, its metrics)."""
    from evals.report import paired as paired_tests

    baseline = [index for index, result in enumerate(results) if same_run(paired, result)]
    if not baseline:
        runs = ", ".join(dict.fromkeys(str(result.get("_run", result.get("_path"))) for result in results))
        raise ValueError(f"--paired {paired!r} is none of the runs given ({runs})")
    entries = paired_tests.paired_entries(results, rows, names, baseline, resamples=resamples or paired_tests.RESAMPLES)
    shown = {(column.group, column.metric) for column in comparison.columns}
    comparison.paired = [
        entry
        for entry in entries
        if entry.row in comparison.rows
        and entry.group in comparison.groups
        and (entry.metric is None or not chosen or (entry.group, entry.metric) in shown)
    ]
    comparison.baseline = rows[baseline[0]]


def _bolded(comparison: Comparison) -> set[tuple[str, Column]]:
    """The cells to bold: a column's best value, when its difference from the baseline is significant (the
    baseline's own best: when it is significantly better than every other run with a value there)."""
    tested = {(e.row, e.group, e.metric): e for e in comparison.paired if e.stat is not None}
    bold = set()
    for column in comparison.columns:
        values = {
            row: float(entry["value"])
            for row in comparison.rows
            if _finite((entry := comparison.cells.get((row, column)) or {}).get("value"))
        }
        if len(values) < 2:
            continue
        pick = max if column.direction == "higher" else min
        best = pick(values, key=lambda row: values[row])
        if sum(value == values[best] for value in values.values()) > 1:
            continue  # a tie has no best
        if best == comparison.baseline:
            others = [tested.get((row, column.group, column.metric)) for row in values if row != best]
            significant = all(entry is not None and entry.significant for entry in others)
        else:
            entry = tested.get((best, column.group, column.metric))
            significant = entry is not None and entry.significant
        if significant:
            bold.add((best, column))
    return bold


def _notes(
    comparison: Comparison, results: list[dict[str, Any]], rows: list[str], names: dict[tuple[str, str], str]
) -> list[str]:
    """The footnotes: models, specs, coverage, what was not computed and the benchmarks' warnings, each once."""
    shown = comparison.groups
    notes = []
    models = dict.fromkeys(
        row if row == model_label(r) else f"{row} = {model_label(r)}"
        for row, r in zip(rows, results, strict=True)
        if model_digest(r) and row in comparison.rows
    )
    if models:
        notes.append(f"models (reference [weights sha256]): {'; '.join(models)}")
    notes += _spec_notes(results, names, shown)
    for group in shown:
        by_text: dict[str, list[str]] = {}
        for row in comparison.rows:
            if (row, group) in comparison.coverage:
                by_text.setdefault(_coverage_text(comparison.coverage[(row, group)]), []).append(row)
        parts = [f"{text} ({_join(labels)})" for text, labels in by_text.items()]
        notes.append(f"{group} coverage (items scored / expected): {'; '.join(parts)}")
    # Not computed: one footnote per reason, naming the columns and models it concerns.
    missing: dict[str, dict[str, list[str]]] = {}  # reason -> where (group and metrics) -> rows
    for row in comparison.rows:
        reasons: dict[str, dict[str, list[str]]] = {}  # reason -> group -> metrics
        for column in comparison.columns:
            entry = comparison.cells.get((row, column))
            if entry is not None and entry.get("status") == "not_computed":
                reason = (str(entry.get("reason") or "no reason given").splitlines() or [""])[0]
                reasons.setdefault(reason, {}).setdefault(column.group, []).append(column.metric)
        for reason, where in reasons.items():
            place = "; ".join(f"{group} {_join(metrics)}" for group, metrics in where.items())
            missing.setdefault(reason, {}).setdefault(place, []).append(row)
    for reason, places in missing.items():
        if len(places) == 1:
            ((place, labels),) = places.items()
            notes.append(f"{place}: not computed for {_join(labels)}: {reason}")
        else:
            parts = "; ".join(f"{place} for {_join(labels)}" for place, labels in places.items())
            notes.append(f"not computed ({parts}): {reason}")
    # Warnings sit on a benchmark's headline but concern the whole run: one footnote per warning.
    warned: dict[str, dict[str, list[str]]] = {}  # warning -> group -> rows
    for row, result in zip(rows, results, strict=True):
        group = names[(result["benchmark"], result["spec"]["fingerprint"])]
        if group not in shown or row not in comparison.rows:
            continue
        for name in _metric_names(result):
            for warning in result["metrics"][name].get("warnings") or []:
                labels = warned.setdefault(str(warning), {}).setdefault(group, [])
                if row not in labels:
                    labels.append(row)
    for warning, groups in warned.items():
        notes.append("; ".join(f"{group} ({_join(labels)})" for group, labels in groups.items()) + f": {warning}")
    return notes


# ---------------------------------------------------------------------------------------- numbers
def _parse_precision(items: Sequence[str], columns: list[Column]) -> tuple[int | None, list[tuple[str, int]]]:
    """``--precision N`` (every column) and ``--precision METRIC=N`` (one metric): (N or None, [(METRIC, N)])."""
    every: int | None = None
    per_metric: list[tuple[str, int]] = []
    for item in items:
        name, _, digits = item.rpartition("=")
        try:
            number = int(digits)
        except ValueError:
            number = -1
        if number < 0 or number > 15:
            raise ValueError(f"--precision {item!r}: give N or METRIC=N, N the digits after the point (0 to 15)")
        if name:
            _check_known([name], columns, "--precision")
            per_metric.append((name, number))
        else:
            every = number
    return every, per_metric


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _default_decimals(numbers: list[Any], significant: int) -> int:
    """Decimals that give ``significant`` digits to the smallest non-zero magnitude (at most MAX_DECIMALS)."""
    magnitudes = [abs(n) for n in numbers if _finite(n) and n != 0]
    if not magnitudes:
        return significant - 1
    return min(MAX_DECIMALS, max(0, significant - 1 - math.floor(math.log10(min(magnitudes)))))


def _decimals(comparison: Comparison, precision: Sequence[str]) -> dict[Column, tuple[int | None, int | None]]:
    """Column -> (value decimals, se decimals); None where ``precision`` gives nothing (the CSV's full digits)."""
    every, per_metric = _parse_precision(precision, comparison.columns)
    decimals: dict[Column, tuple[int | None, int | None]] = {}
    for column in comparison.columns:
        given = every
        for name, number in per_metric:
            if _matches(name, column):
                given = number
        decimals[column] = (given, given)
    return decimals


def _display_decimals(comparison: Comparison, precision: Sequence[str]) -> dict[Column, tuple[int, int]]:
    """Column -> (value decimals, se decimals) for the tables: ``precision``, else the defaults."""
    shown = {}
    for column, (value_d, se_d) in _decimals(comparison, precision).items():
        entries = [comparison.cells.get((row, column)) or {} for row in comparison.rows]
        shown[column] = (
            value_d if value_d is not None else _default_decimals([e.get("value") for e in entries], VALUE_DIGITS),
            se_d if se_d is not None else _default_decimals([e.get("se") for e in entries], SE_DIGITS),
        )
    return shown


def _cell_text(entry: dict[str, Any] | None, decimals: tuple[int, int], fmt: str) -> str:
    """A cell: ``v ± se`` (LaTeX: ``$v \\pm se$``), ``v``, a dash for not computed, empty for not run."""
    if entry is None:
        return ""
    if entry.get("status") == "not_computed":
        return "--" if fmt == "tex" else "—"
    value, se = entry.get("value"), entry.get("se")
    if not _finite(value):
        return "nan" if value is None or isinstance(value, float) else str(value)
    text = f"{value:.{decimals[0]}f}"
    if _finite(se):
        se_text = f"{se:.{decimals[1]}f}"
        return f"${text} \\pm {se_text}$" if fmt == "tex" else f"{text} ± {se_text}"
    return f"${text}$" if fmt == "tex" else text


# ---------------------------------------------------------------------------------------- output
def _latex_escape(text: str) -> str:
    """``& % $ # _ { } ~ ^ \\`` made literal, as ``Styler.format(escape="latex")`` does (for the footnotes)."""
    marker = "\x00backslash\x00"
    return (
        text.replace("\\", marker)
        .replace(marker + " ", marker + "\\space ")  # \textbackslash gobbles the space after it
        .replace("&", "\\&")
        .replace("%", "\\%")
        .replace("$", "\\$")
        .replace("#", "\\#")
        .replace("_", "\\_")
        .replace("{", "\\{")
        .replace("}", "\\}")
        .replace("~ ", "~\\space ")
        .replace("~", "\\textasciitilde ")
        .replace("^ ", "^\\space ")
        .replace("^", "\\textasciicircum ")
        .replace(marker, "\\textbackslash ")
    )


def _display_frame(comparison: Comparison, precision: Sequence[str], fmt: str) -> pd.DataFrame:
    """Rows x (group, metric with its arrow) of formatted cells; the row labels are the index. In Markdown, the
    cells of :func:`_bolded` are bold."""
    decimals = _display_decimals(comparison, precision)
    bold = _bolded(comparison) if fmt == "md" and comparison.paired else set()
    arrows = TEX_ARROWS if fmt == "tex" else ARROWS
    header = pd.MultiIndex.from_tuples(
        [(c.group, f"{c.metric} {arrows[c.direction]}") for c in comparison.columns], names=["", "model"]
    )
    body = [
        [
            f"**{text}**" if (row, c) in bold else text
            for c in comparison.columns
            for text in [_cell_text(comparison.cells.get((row, c)), decimals[c], fmt)]
        ]
        for row in comparison.rows
    ]
    return pd.DataFrame(body, index=pd.Index(comparison.rows), columns=header)


def numeric_frame(comparison: Comparison, precision: Sequence[str] = ()) -> pd.DataFrame:
    """The table as numbers, one row per model: ``GROUP:METRIC:value``, ``:se``, ``:n`` for each column and
    ``GROUP:coverage_ok``, ``GROUP:coverage_expected`` per group; empty (NaN) where not computed or not run.
    Full precision unless ``precision`` gives digits."""
    decimals = _decimals(comparison, precision)
    data: dict[str, list[Any]] = {"model": list(comparison.rows)}
    for group in comparison.groups:
        for column in [c for c in comparison.columns if c.group == group]:
            entries = [comparison.cells.get((row, column)) or {} for row in comparison.rows]
            value_d, se_d = decimals[column]
            for key, digits in (("value", value_d), ("se", se_d)):
                numbers = [float(e[key]) if _finite(e.get(key)) else math.nan for e in entries]
                data[f"{group}:{column.metric}:{key}"] = [n if digits is None else round(n, digits) for n in numbers]
            data[f"{group}:{column.metric}:n"] = pd.array(
                [e.get("n") if _finite(e.get("n")) else None for e in entries], dtype="Int64"
            )
        for key in ("ok", "expected"):
            counts = [comparison.coverage.get((row, group), {}).get(key) for row in comparison.rows]
            data[f"{group}:coverage_{key}"] = pd.array([c if _finite(c) else None for c in counts], dtype="Int64")
    return pd.DataFrame(data)


def _with_paired(frame: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """The CSV's numbers plus ``GROUP:METRIC:paired_diff`` and ``:paired_p`` per tested column (empty for the
    baseline and where there is no test)."""
    tested = {(e.row, e.group, e.metric): e for e in comparison.paired if e.stat is not None}
    extra: dict[str, list[float]] = {}
    for group, metric in dict.fromkeys((e.group, e.metric) for e in tested.values()):
        entries = [tested.get((row, group, metric)) for row in comparison.rows]
        extra[f"{group}:{metric}:paired_diff"] = [
            e.stat.difference * e.scale if e is not None else math.nan for e in entries
        ]
        extra[f"{group}:{metric}:paired_p"] = [e.stat.p_value if e is not None else math.nan for e in entries]
    return pd.concat([frame, pd.DataFrame(extra, index=frame.index)], axis=1) if extra else frame


def _markdown(frame: pd.DataFrame, notes: list[str]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")  # a pipe would end the cell

    groups = [group for group, _ in frame.columns]
    first = [group if i == 0 or groups[i - 1] != group else "" for i, group in enumerate(groups)]
    lines = [
        "| model | " + " | ".join(cell(g) for g in first) + " |",
        "|---|" + "---:|" * len(groups),
        "| | " + " | ".join(cell(metric) for _, metric in frame.columns) + " |",
    ]
    lines += [
        "| " + " | ".join(cell(v) for v in [label, *row]) + " |"
        for label, row in zip(frame.index, frame.values.tolist(), strict=True)
    ]
    if notes:
        lines += [""] + [f"- {cell(note)}" for note in notes]
    return "\n".join(lines) + "\n"


def render(
    results: list[dict[str, Any]],
    fmt: str = "md",
    *,
    labels: Sequence[str] = (),
    metrics: str | Sequence[str] | None = None,
    precision: Sequence[str] = (),
    paired: str | None = None,
    resamples: int | None = None,
) -> str:
    """The comparison as Markdown, CSV, LaTeX (booktabs) or a self-contained HTML page.

    Args:
        results: as :func:`evals.report.results.load_results` returns them.
        fmt: one of :data:`FORMATS`.
        labels: ``RUN=NAME`` items (see :func:`build_comparison`).
        metrics: the columns to show (see :func:`build_comparison`).
        precision: ``N`` (digits after the point for every column) and ``METRIC=N`` items (one metric,
            ``bench@variant:metric`` allowed); default 3 significant digits for values, 2 for standard
            errors, on each column's smallest magnitude. The CSV keeps full precision unless given.
        paired: a baseline run given, to test every other run against (see :func:`build_comparison`).
        resamples: the paired bootstrap's resamples (see :func:`build_comparison`).

    Raises:
        ValueError: an unknown format, label or paired run, metric or a malformed precision.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    comparison = build_comparison(results, labels=labels, metrics=metrics, paired=paired, resamples=resamples)
    if fmt == "csv":
        return _with_paired(numeric_frame(comparison, precision), comparison).to_csv(index=False)
    frame = _display_frame(comparison, precision, fmt)
    if fmt == "md":
        text = _markdown(frame, comparison.notes)
        if paired is None:
            return text
        from evals.report.paired import markdown_section

        return text + "\n" + markdown_section(comparison.paired, str(comparison.baseline))
    if paired is not None:
        from evals.report.paired import entry_note

        comparison.notes += [entry_note(entry, str(comparison.baseline)) for entry in comparison.paired]
    styler = frame.style.format(escape="html" if fmt == "html" else None)
    if fmt == "tex":
        styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex-math", axis=1)
        table = styler.to_latex(hrules=True, multicol_align="c", column_format="l" + "r" * len(frame.columns))
        notes = "".join(f"{_latex_escape(note)}\\par\n" for note in comparison.notes)
        return table + (f"\\smallskip\n{{\\footnotesize\n{notes}}}\n" if notes else "")
    styler = styler.format_index(escape="html", axis=0).format_index(escape="html", axis=1).set_uuid("compare")
    note_html = "".join(f"<li>{html.escape(note)}</li>" for note in comparison.notes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>unilip comparison</title><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
        "padding:4px 8px;text-align:right}th.row_heading{text-align:left}th.col_heading{text-align:center}"
        f"</style></head><body>{styler.to_html()}<ul>{note_html}</ul></body></html>\n"
    )
