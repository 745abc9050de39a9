"""``unilip eval verify``: do this project's runs reproduce claimed (published) numbers?

Usage::

    unilip eval verify RUNS... --claims claims.yaml [--z 2.0] [--json OUT] [--report OUT.md]
    unilip eval verify RUNS... --claims published [--model UniLIP-3B] [--benchmark GenEval] [--subtask overall]

Claims file (YAML): a list of claims, or a mapping with ``claims:`` (that list) and optional top-level
``budgets:``::

    budgets: {judge_variance: 0.01}          # extra tolerance terms for every claim (our units; default none)
    claims:
      - model: UniLIP-3B
        benchmark: geneval@official          # ours: NAME or NAME@VARIANT (NAME = any variant) ...
        metric: overall                      # ... with our metric key
        value: 0.90                          # the claimed number, in the claim's units (see scale)
        source: nnnth/UniLIP README.md @299817d
        knobs: {n_samples: 4}                # optional: protocol knobs the source states (see below)
        budgets: {hardware: 0.005}           # optional: added to the top-level budgets (same name: this one wins)
        scale: 1                             # optional: claimed = ours x scale (e.g. 100 for a percentage)
      - model: UniLIP (tokenizer)
        benchmark: ImageNet-val reconstruction   # or a published name with its subtask, mapped through
        subtask: rFID                            # leaderboards/published/benchmark-map.yaml (metric, scale, variant)
        value: 0.31
        source: UniLIP README
        knobs: {resolution: 448}

Knob names are the short names of the map's ``knobs:`` table for the bench (recon: ``resolution``, ``dataset``,
``num_images``, ``quantisation``; geneval: ``n_samples``, ``prompts``, ``scorer``; judged benchmarks:
``judge_model``; understanding: ``dataset``, ``fallback``, ``judge_model``) or a dotted path in the run's
``spec.knobs`` (``judge.version``).

``--claims published`` takes the rows of ``published-results.csv`` selected by ``--model`` (exact, any case),
``--benchmark`` (a published name, or ours: NAME or NAME@VARIANT) and ``--subtask``; each row's variant, protocol
and stated knobs (and the CSV's ``resolution``) come from the map. Rows without a mapping are skipped with a
count, unless ``--benchmark``/``--subtask`` names them: then each is a ``not comparable: no mapping`` verdict.

The run that answers a claim is a result whose benchmark NAME is the claim's (any variant), preferring the claim's
variant. Verdicts:

- ``consistent``: |run - claim| <= tolerance, with tolerance = z x the run's se + the claim's budgets (every term
  is listed; a run metric without se gets the budgets only, and the verdict says so);
- ``inconsistent``: outside the tolerance;
- ``not comparable``: the run used another protocol variant than the claim, or a knob the claim states differs
  (or is not recorded by the run); each differing knob is named with both values;
- ``not run``: no run of that benchmark, or the metric is absent or not computed in it (the reason is given).

Every verdict lists the claim's stated knobs beside the run's knobs that matter (variant and the map's knobs).
Output: a Markdown report on stdout (and ``--report FILE``) and a JSON verdict file, ``--json FILE`` or by default
``verify.json`` next to the first run (in its run directory; beside a results.json given as a file), as
``unilip eval gate`` writes ``gate.json``. The JSON is written first, so a verdict that could not be recorded
is an I/O error, never a printed success.

Exit codes: 0 when every claim is ``consistent``; 1 when any is not (``inconsistent``, ``not comparable`` or
``not run``: none of them confirms the claim); 2 refused (raised as ``ValueError``/``OSError``: a malformed claims
file, an unknown benchmark, no claims selected, unreadable runs, a verdict file that cannot be written).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evals.report.leaderboard import (
    CSV_PATH,
    MAP_PATH,
    knob_value,
    load_map,
    load_published,
    map_row,
    run_knobs,
)

CONSISTENT, INCONSISTENT, NOT_COMPARABLE, NOT_RUN = "consistent", "inconsistent", "not comparable", "not run"
CLAIM_KEYS = {"model", "benchmark", "metric", "subtask", "value", "source", "knobs", "budgets", "scale", "note"}


@dataclass
class Claim:
    """One claimed number, in our benchmark's terms."""

    model: str
    bench: str  # our NAME
    variant: str | None  # the protocol variant the claim was made with; None = not stated
    metric: str  # our metric key
    value: float  # as claimed (claim units)
    source: str
    scale: float = 1.0  # claimed = ours x scale
    knobs: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    label: str = ""  # how the claim names it (published benchmark / subtask), for the report
    protocol: str = ""  # one line on the claim's protocol, where known
    unmapped: str | None = None  # why a selected published row has no counterpart here

    @property
    def reference(self) -> str:
        return f"{self.bench}@{self.variant}" if self.variant else self.bench


@dataclass
class Verdict:
    """The verdict on one claim."""

    claim: Claim
    verdict: str
    reasons: list[str] = field(default_factory=list)
    run: str | None = None  # path of the results.json that answered
    run_benchmark: str | None = None
    run_value: float | None = None  # ours
    claimed: float | None = None  # the claim in our units
    difference: float | None = None  # run - claimed, our units
    tolerance: float | None = None
    terms: dict[str, float] = field(default_factory=dict)
    knobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {claim, run}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "claim": {**asdict(self.claim), "reference": self.claim.reference}}


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _budgets(value: Any, where: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(_number(v) and v >= 0 for v in value.values()):
        raise ValueError(
            f"{where}: budgets must map names to numbers >= 0, e.g. {{judge_variance: 0.01}}; got {value!r}"
        )
    return {str(k): float(v) for k, v in value.items()}


def _known_benches() -> set[str]:
    from evals.benchmark import list_benchmarks

    return {reference.partition("@")[0] for reference in list_benchmarks()}


def load_claims(path: str | Path, bench_map: dict[str, Any]) -> list[Claim]:
    """The claims of a claims YAML file (format in the module docstring); malformed = ``ValueError``."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML ({' '.join(str(error).split())}); fix the claims file") from None
    top_budgets: dict[str, float] = {}
    if isinstance(data, dict):
        unknown = set(data) - {"claims", "budgets"}
        if unknown:
            raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; use 'claims' and 'budgets'")
        top_budgets = _budgets(data.get("budgets"), str(path))
        data = data.get("claims")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: needs a non-empty list of claims (or 'claims:' holding one); see `--help`")
    known = _known_benches()
    published = {name.lower(): name for name in bench_map["benchmarks"]}
    claims = []
    for index, entry in enumerate(data, 1):
        where = f"{path}: claim {index}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is {type(entry).__name__}, not a mapping with model, benchmark, metric, value")
        unknown = set(entry) - CLAIM_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {', '.join(sorted(CLAIM_KEYS))}")
        missing = [key for key in ("model", "benchmark", "value", "source") if key not in entry]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        if not _number(entry["value"]):
            raise ValueError(f"{where}: value must be a number; got {entry['value']!r}")
        knobs = entry.get("knobs") or {}
        if not isinstance(knobs, dict):
            raise ValueError(f"{where}: knobs must be a mapping, e.g. {{resolution: 448}}; got {knobs!r}")
        budgets = {**top_budgets, **_budgets(entry.get("budgets"), where)}
        benchmark = str(entry["benchmark"])
        name, _, variant = benchmark.partition("@")
        if name in known:
            if "metric" not in entry:
                raise ValueError(f"{where}: {benchmark} is ours, so the claim needs 'metric' (our metrics key)")
            scale = entry.get("scale", 1.0)
            if not _number(scale) or scale == 0:
                raise ValueError(f"{where}: scale must be a non-zero number; got {scale!r}")
            claims.append(
                Claim(
                    model=str(entry["model"]),
                    bench=name,
                    variant=variant or None,
                    metric=str(entry["metric"]),
                    value=float(entry["value"]),
                    source=str(entry["source"]),
                    scale=float(scale),
                    knobs=dict(knobs),
                    budgets=budgets,
                    label=f"{benchmark} {entry['metric']}",
                )
            )
            continue
        if benchmark.lower() not in published:
            raise ValueError(
                f"{where}: unknown benchmark {benchmark!r}; use ours (`unilip eval list`) or a published name of "
                f"benchmark-map.yaml ({', '.join(bench_map['benchmarks'])})"
            )
        if "subtask" not in entry:
            raise ValueError(f"{where}: a published benchmark ({benchmark}) needs 'subtask' (e.g. overall)")
        row = {
            "model": str(entry["model"]),
            "benchmark": published[benchmark.lower()],
            "subtask": str(entry["subtask"]),
            "note": str(entry.get("note", "")),
            "resolution": None,
        }
        mapping = map_row(row, bench_map)
        if mapping is None:
            raise ValueError(f"{where}: {benchmark} has no subtask {entry['subtask']!r} in benchmark-map.yaml")
        claims.append(
            Claim(
                model=row["model"],
                bench=mapping.bench,
                variant=mapping.variant,
                metric=mapping.metric,
                value=float(entry["value"]),
                source=str(entry["source"]),
                scale=float(entry.get("scale", mapping.scale)),
                knobs={**mapping.knobs, **knobs},  # what the claim states wins over the map's default
                budgets=budgets,
                label=f"{row['benchmark']} / {row['subtask']}",
                protocol=mapping.protocol,
            )
        )
    return claims


def published_claims(
    bench_map: dict[str, Any],
    model: str | None = None,
    benchmark: str | None = None,
    subtask: str | None = None,
    csv_path: str | Path = CSV_PATH,
) -> tuple[list[Claim], int]:
    """Claims from the selected rows of ``published-results.csv``, and how many unmapped rows were skipped."""
    frame = load_published(csv_path)
    rows = frame.to_dict("records")
    known = _known_benches()
    published_names = {str(row["benchmark"]).lower() for row in rows}
    if benchmark:
        name = benchmark.partition("@")[0]
        if benchmark.lower() not in published_names and name not in known:
            raise ValueError(
                f"unknown benchmark {benchmark!r}; use a published name ({', '.join(sorted(set(frame.benchmark)))}) "
                "or ours (`unilip eval list`)"
            )
    claims, skipped = [], 0
    for row in rows:
        if model and str(row["model"]).lower() != model.lower():
            continue
        if subtask and str(row["subtask"]).lower() != subtask.lower():
            continue
        mapping = map_row(row, bench_map)
        explicit = bool(benchmark and str(row["benchmark"]).lower() == benchmark.lower())
        # Ours (NAME or NAME@VARIANT) selects the rows mapped to that bench; the variant is judged in the verdict.
        if benchmark and not explicit and (mapping is None or benchmark.partition("@")[0] != mapping.bench):
            continue
        common = {"model": str(row["model"]), "value": float(row["score"]), "source": str(row["source"])}
        label = f"{row['benchmark']} / {row['subtask']}"
        if mapping is None:
            if explicit or subtask:
                why = f"{label} has no counterpart in this harness (no entry in benchmark-map.yaml)"
                claims.append(Claim(bench="", variant=None, metric="", label=label, unmapped=why, **common))
            else:
                skipped += 1
            continue
        claims.append(
            Claim(
                bench=mapping.bench,
                variant=mapping.variant,
                metric=mapping.metric,
                scale=mapping.scale,
                knobs=dict(mapping.knobs),
                label=label,
                protocol=mapping.protocol,
                **common,
            )
        )
    if not claims:
        raise ValueError(
            f"no published claims selected (--model {model} --benchmark {benchmark} --subtask {subtask}"
            f"{f'; {skipped} rows without a mapping skipped' if skipped else ''}); check the names in "
            "published-results.csv"
        )
    return claims, skipped


def _same(claimed: Any, actual: Any) -> bool:
    """Knob equality that forgives YAML typing (448 vs "448", 4 vs 4.0), nothing else."""
    if claimed == actual:
        return True
    if _number(claimed) and _number(actual):
        return float(claimed) == float(actual)
    return str(claimed).strip().lower() == str(actual).strip().lower()


def _knob_matches(claim: Claim, result: dict[str, Any], bench_map: dict[str, Any]) -> int:
    aliases, knobs, count = bench_map["knobs"].get(claim.bench, {}), result.get("spec", {}).get("knobs", {}), 0
    for name, stated in claim.knobs.items():
        try:
            count += _same(stated, knob_value(knobs, aliases.get(name, name)))
        except KeyError:
            continue
    return count


def judge_claim(claim: Claim, results: list[dict[str, Any]], bench_map: dict[str, Any], z: float = 2.0) -> Verdict:
    """The verdict on one claim against the runs."""
    if claim.unmapped:
        return Verdict(claim, NOT_COMPARABLE, [f"no mapping: {claim.unmapped}"])
    matching = [r for r in results if str(r.get("benchmark", "")).partition("@")[0] == claim.bench]
    if not matching:
        return Verdict(claim, NOT_RUN, [f"no run of {claim.bench} among the given runs"])
    preferred = [r for r in matching if claim.variant and r["benchmark"] == claim.reference] or matching
    # Among runs of the claim's variant, the one that matches most of the claim's knobs (a 448 claim, a 448 run).
    result = max(preferred, key=lambda r: _knob_matches(claim, r, bench_map))
    verdict = Verdict(claim, NOT_RUN, run=result.get("_path"), run_benchmark=str(result["benchmark"]))
    if len(preferred) > 1:
        verdict.reasons.append(f"{len(preferred)} runs of {preferred[0]['benchmark']}; judged {result.get('_path')}")
    run_variant = str(result["benchmark"]).partition("@")[2]
    spec_knobs = result.get("spec", {}).get("knobs", {})
    aliases = bench_map["knobs"].get(claim.bench, {})
    shown = run_knobs(result, bench_map)
    verdict.knobs["variant"] = {"claim": claim.variant or "not stated", "run": run_variant}
    differing = []
    if claim.variant and claim.variant != run_variant:
        differing.append(f"variant: claim {claim.variant}, run {run_variant}")
    for name, stated in claim.knobs.items():
        try:
            actual = knob_value(spec_knobs, aliases.get(name, name))
        except KeyError:
            actual = "not recorded"
            differing.append(f"{name}: claim {stated}, the run does not record it")
        else:
            if not _same(stated, actual):
                differing.append(f"{name}: claim {stated}, run {actual}")
        verdict.knobs[name] = {"claim": stated, "run": actual}
    for name, actual in shown.items():
        verdict.knobs.setdefault(name, {"claim": "not stated", "run": actual})
    if differing:
        verdict.verdict = NOT_COMPARABLE
        verdict.reasons = [f"protocol differs: {'; '.join(differing)}"] + verdict.reasons
        return verdict
    entry = result.get("metrics", {}).get(claim.metric)
    if entry is None or entry.get("status") == "not_computed" or not _number(entry.get("value")):
        why = "absent" if entry is None else (entry.get("reason") or f"value {entry.get('value')!r}").splitlines()[0]
        why = why if len(why) <= 200 else why[:199] + "…"  # the full reason is in the run's results.json
        verdict.reasons.insert(0, f"{claim.metric} not computed in {result['benchmark']}: {why}")
        return verdict
    verdict.run_value = float(entry["value"])
    verdict.claimed = claim.value / claim.scale
    verdict.difference = verdict.run_value - verdict.claimed
    se = entry.get("se")
    if _number(se):
        verdict.terms[f"{z:g} x se ({se:.4g})"] = z * float(se)
    else:
        verdict.reasons.append("the run's metric has no se: tolerance = budgets only")
    verdict.terms.update(claim.budgets)
    verdict.tolerance = sum(verdict.terms.values())
    coverage = result.get("coverage") or {}
    if coverage.get("missing"):
        verdict.reasons.append(f"the run is incomplete: {coverage['missing']} of {coverage.get('expected')} missing")
    ok = abs(verdict.difference) <= verdict.tolerance
    verdict.verdict = CONSISTENT if ok else INCONSISTENT
    return verdict


def exit_code(verdicts: list[Verdict]) -> int:
    """0 when every claim is consistent, else 1 (refusals are exceptions, exit 2)."""
    return 0 if verdicts and all(v.verdict == CONSISTENT for v in verdicts) else 1


def _fmt(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if _number(value):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def markdown(verdicts: list[Verdict], skipped: int = 0) -> str:
    """The report: a summary table, then every verdict with its knobs and tolerance terms."""
    counts = {
        word: sum(v.verdict == word for v in verdicts) for word in (CONSISTENT, INCONSISTENT, NOT_COMPARABLE, NOT_RUN)
    }
    word = "CONSISTENT" if exit_code(verdicts) == 0 else "NOT CONFIRMED"
    lines = [f"## unilip verify: **{word}** ({', '.join(f'{n} {w}' for w, n in counts.items() if n)})", ""]
    if skipped:
        lines += [f"- {skipped} published rows without a mapping in benchmark-map.yaml were skipped", ""]
    lines += [
        "| # | model | claim | claimed | run | difference | tolerance | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, v in enumerate(verdicts, 1):
        tol = f"±{_fmt(v.tolerance)}" if v.tolerance is not None else "-"
        diff = f"{v.difference:+.4g}" if v.difference is not None else "-"
        cells = [str(index), v.claim.model, v.claim.label or v.claim.reference, _fmt(v.claim.value)]
        cells += [_fmt(v.run_value) if v.run_value is not None else "-", diff, tol, f"**{v.verdict}**"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    for index, v in enumerate(verdicts, 1):
        lines += ["", f"### {index}. {v.claim.model}: {v.claim.label or v.claim.reference} — {v.verdict}", ""]
        lines.append(f"- claim: {_fmt(v.claim.value)} ({v.claim.reference} {v.claim.metric}); source: {v.claim.source}")
        if v.claim.protocol:
            lines.append(f"- claimed protocol: {v.claim.protocol}")
        if v.run:
            lines.append(f"- run: {v.run_benchmark} ({v.run})")
        if v.claimed is not None and v.claim.scale != 1:
            lines.append(f"- claim in our units: {_fmt(v.claimed)} (claimed / scale {v.claim.scale:g})")
        if v.tolerance is not None:
            terms = " + ".join(f"{name} {_fmt(value)}" for name, value in v.terms.items()) or "0 (no se, no budgets)"
            lines.append(f"- tolerance {_fmt(v.tolerance)} = {terms}")
        lines += [f"- {reason}" for reason in v.reasons]
        if v.knobs:
            lines += ["", "| knob | claim | run |", "|---|---|---|"]
            lines += [f"| {k} | {_fmt(p['claim'])} | {_fmt(p['run'])} |" for k, p in v.knobs.items()]
    return "\n".join(lines) + "\n"


def verify(
    runs: list[str],
    claims_arg: str,
    model: str | None = None,
    benchmark: str | None = None,
    subtask: str | None = None,
    z: float = 2.0,
    map_path: str | Path = MAP_PATH,
    csv_path: str | Path = CSV_PATH,
) -> tuple[list[Verdict], int]:
    """Verdicts on the claims (a claims file, or "published" rows) against the runs, and the skipped-row count."""
    from evals.report.results import load_results

    if not _number(z) or z < 0:
        raise ValueError(f"--z must be a number >= 0; got {z!r}")
    bench_map = load_map(map_path)
    results = load_results(list(runs))
    if claims_arg == "published":
        claims, skipped = published_claims(bench_map, model, benchmark, subtask, csv_path)
    else:
        claims, skipped = load_claims(claims_arg, bench_map), 0
        if model:
            claims = [c for c in claims if c.model.lower() == model.lower()]
        if benchmark:
            claims = [c for c in claims if benchmark.lower() in (c.bench, c.reference, c.label.split(" / ")[0].lower())]
        if subtask:
            claims = [c for c in claims if subtask.lower() in (c.metric.lower(), c.label.rpartition(" / ")[2].lower())]
        if not claims:
            raise ValueError(f"{claims_arg}: no claim matches --model/--benchmark/--subtask; check the names")
    return [judge_claim(claim, results, bench_map, z) for claim in claims], skipped


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unilip eval verify``."""
    parser.add_argument("runs", nargs="+", help="run directories or results.json files")
    parser.add_argument("--claims", required=True, help="claims YAML file, or 'published' (published-results.csv)")
    parser.add_argument("--model", help="only claims of this model (exact name, any case)")
    parser.add_argument("--benchmark", help="only this benchmark: a published name or ours (NAME or NAME@VARIANT)")
    parser.add_argument("--subtask", help="only this published subtask (or our metric name)")
    parser.add_argument("--z", type=float, default=2.0, help="tolerance = z x the run's se + budgets (default 2.0)")
    parser.add_argument(
        "--json", help="write the JSON verdicts here (default: verify.json in the first run's directory)"
    )
    parser.add_argument("--report", help="also write the Markdown report here")
    parser.add_argument("--map", default=str(MAP_PATH), help="benchmark map YAML (default: the shipped one)")
    parser.add_argument("--published", default=str(CSV_PATH), help="published results CSV (default: the shipped one)")


def run(args: argparse.Namespace) -> int:
    """Verify, write the JSON verdicts and the report; exit 0 all consistent, 1 otherwise, 2 refused (raised)."""
    from evals.files import atomic_write_json

    verdicts, skipped = verify(
        args.runs, args.claims, args.model, args.benchmark, args.subtask, args.z, args.map, args.published
    )
    code = exit_code(verdicts)
    first = Path(args.runs[0])
    target = Path(args.json) if args.json else (first if first.is_dir() else first.parent) / "verify.json"
    payload = {
        "verdict": "consistent" if code == 0 else "not confirmed",
        "exit_code": code,
        "z": args.z,
        "skipped_unmapped_rows": skipped,
        "claims": [v.to_dict() for v in verdicts],
    }
    # The JSON first: a verdict that could not be recorded is an I/O error (exit 2), never a printed success.
    atomic_write_json(target, payload)
    report = markdown(verdicts, skipped)
    if args.report:
        Path(args.report).write_text(report)
    sys.stdout.write(report)
    return code
