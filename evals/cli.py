"""``unilip eval ...``: run benchmarks, show status, compare runs, gate CI.

Registered into the ``unilip`` command through the ``unilip.cli`` entry-point group, so the model
package never imports the harness.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from evals.benchmark import option_flags
from evals.launch import add_run_arguments, execute_aggregate, execute_run

logger = logging.getLogger("evals")


def register(subparsers: argparse._SubParsersAction, train_subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command and its subcommands to the ``unilip`` parser (the ``unilip.cli`` entry point;
    the studies register through their own, ``evals.studies.cli:register``)."""
    _take_adapter_references(subparsers)
    parser = subparsers.add_parser("eval", help="evaluate models on benchmarks; compare and gate runs")
    sub = parser.add_subparsers(dest="eval_command", required=True)

    run = sub.add_parser("run", help="run benchmarks into a run directory (resumes if it exists)")
    add_run_arguments(run)
    run.set_defaults(func=_cmd_run)
    aggregate = sub.add_parser(
        "aggregate",
        help="join the shards of a run (`eval run --shard I/N`): write results.json once every item is finished; "
        "exit 1 naming the shards with unfinished items (no model loads)",
    )
    aggregate.add_argument("run", help="run directory (the --out of the shards)")
    aggregate.add_argument("--bench", help="comma-separated NAME@VARIANT (default: every benchmark started in RUN)")
    aggregate.set_defaults(func=_cmd_aggregate)
    _register_queries(sub)


# The model-side commands that take ADAPTER:MODEL references, and the capability each needs.
MODEL_COMMANDS = {"reconstruct": "reconstruct", "generate": "generate", "edit": "edit"}
# Their run settings an adapter may take (evals.registry refuses one given that it does not).
_MODEL_SETTINGS = ("weights", "random_init", "seed", "dtype", "steps", "guidance", "flow_shift")


def _take_adapter_references(subparsers: argparse._SubParsersAction) -> None:
    """Make ``unilip reconstruct``/``generate``/``edit`` take ``ADAPTER:MODEL`` references, as ``eval run`` does: the
    harness wraps their functions (the model package knows nothing of adapters; it takes a loader)."""
    for name, capability in MODEL_COMMANDS.items():
        parser = subparsers.choices.get(name)
        own = parser.get_default("func") if parser is not None else None
        if own is not None:
            parser.set_defaults(func=functools.partial(_model_command, own, capability))


def _model_command(own: Callable[..., int], capability: str, args: argparse.Namespace) -> int:
    """Run a model-side command: UniLIP's own references as before, an ``ADAPTER:MODEL`` through the registry."""
    if ":" not in args.model or Path(args.model).exists():
        return own(args)
    from evals.registry import load_for_command, parse_reference

    parsed = parse_reference(args.model)  # an unknown prefix: the registry's error, with "did you mean"
    if parsed.entry.name == "unilip":  # unilip:MODEL is UniLIP's own reference
        return own(argparse.Namespace(**{**vars(args), "model": parsed.model}))
    options = {name: getattr(args, name) for name in _MODEL_SETTINGS if getattr(args, name, None) is not None}
    return own(args, load_external=lambda device: load_for_command(args.model, capability, device=device, **options))


def _register_queries(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="done / failed / stale / missing items per benchmark and stage")
    status.add_argument("run")
    status.set_defaults(func=_cmd_status)

    compare = sub.add_parser(
        "compare", help="table of runs: one row per model, columns grouped per benchmark variant, footnotes"
    )
    compare.add_argument("runs", nargs="+", help="run directories or results.json files")
    compare.add_argument(
        "--format",
        choices=["md", "csv", "tex", "html"],
        default="md",
        help="md (default), csv (numbers: value, se, n per metric), tex (booktabs), html",
    )
    compare.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="RUN=NAME",
        help="name the row of a run (RUN as given above); default: the model's reference (repeatable)",
    )
    compare.add_argument(
        "--metrics",
        action="append",
        metavar="A,B",
        help="columns to show, in this order within a benchmark: METRIC or BENCH@VARIANT:METRIC (repeatable)",
    )
    compare.add_argument(
        "--precision",
        action="append",
        default=[],
        metavar="N|METRIC=N",
        help="digits after the point, for every column or one metric (repeatable); default 3 significant "
        "digits for values, 2 for standard errors",
    )
    compare.add_argument(
        "--paired",
        metavar="BASELINE_RUN",
        help="test every other run against this one (a run directory or results.json; added to the runs if not "
        "given) on the units both scored: paired bootstrap or McNemar; md bolds a best value only when significant",
    )
    compare.set_defaults(func=_cmd_compare)

    gate = sub.add_parser("gate", help="CI verdict against a baseline: exit 0 pass, 1 fail, 2 refused")
    gate.add_argument("run")
    gate.add_argument("--baseline", required=True, help="baseline results.json or run directory")
    gate.add_argument("--rules", required=True, help="rules YAML")
    gate.add_argument("--json", help="write the JSON verdict here (default RUN/gate.json)")
    gate.set_defaults(func=_cmd_gate)

    from evals.report import leaderboard, verify  # light: yaml; pandas loads only when a command runs

    for name, module, text in (
        ("verify", verify, "check runs against claimed numbers (claims YAML or published): exit 0 all consistent"),
        ("leaderboard", leaderboard, "the published rows of the runs' benchmarks beside the runs, with sources"),
    ):
        command = sub.add_parser(name, help=text)
        module.add_arguments(command)
        command.set_defaults(func=module.run)

    from evals.report import run_report

    report = sub.add_parser(
        "report", help="one self-contained HTML page of runs: tables, images, judge rationales, failures"
    )
    run_report.add_arguments(report)
    report.set_defaults(func=run_report.run)

    dry = sub.add_parser(
        "plan",
        help="judge dry run: the judge calls a run would make, and how many are cached "
        "(no call is made, no model loads)",
    )
    dry.add_argument("--bench", required=True, help="comma-separated NAME@VARIANT of judged benchmarks")
    dry.add_argument("--out", required=True, help="run directory (as for `unilip eval run`)")
    dry.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE", help="a benchmark option")
    dry.add_argument("--data", help="the benchmark data path (as `unilip eval run --data`)")
    dry.add_argument("--cache-dir", default=None, help="the run's cache directory (default ~/.cache/unilip)")
    dry.add_argument("--json", action="store_true", help="print JSON instead of a table")
    dry.set_defaults(func=_cmd_plan)

    adapters = sub.add_parser(
        "adapters", help="list the model adapters (built in, installed, registered) and what each can do"
    )
    adapters.add_argument("--json", action="store_true", help="print JSON instead of a table")
    adapters.set_defaults(func=_cmd_adapters)

    listing = sub.add_parser("list", help="list benchmarks and their variants")
    listing.add_argument("--options", action="store_true", help="also list each benchmark's options")
    listing.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    from evals.benchmark import benchmark_classes

    for name, cls in benchmark_classes().items():
        for variant in cls.variants:
            print(f"{name}@{variant}")
        if args.options:
            flags = {field_name: flag for flag, field_name in option_flags(cls.Options).items()}
            for option_name, text in cls.options_help().items():
                also = f" (or {flags[option_name]})" if option_name in flags else ""
                print(f"    --opt {option_name}=...{also}  {text}")
    return 0


def _cmd_adapters(args: argparse.Namespace) -> int:
    """``unilip eval adapters``: each adapter's name, capabilities, origin and one-line summary."""
    from evals.adapter import CAPABILITIES
    from evals.registry import adapter_entries

    rows = []
    for name, entry in sorted(adapter_entries().items()):
        offers = [c for c in CAPABILITIES if entry.offers is not None and c in entry.offers]
        rows.append(
            {
                "adapter": name,
                "capabilities": offers if entry.offers is not None else None,
                "origin": entry.origin,
                "summary": entry.summary,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["adapter"]) for row in rows)
    for row in rows:
        capabilities = ", ".join(row["capabilities"]) if row["capabilities"] is not None else "known once loaded"
        print(f"{row['adapter']:{width}s}  {capabilities:38s}  {row['origin']}")
        if row["summary"]:
            print(f"{'':{width}s}  {row['summary']}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    """``unilip eval plan``: the judge calls each judged benchmark of ``--bench`` would make."""
    from evals.benchmark import parse_opts
    from evals.benchmarks.judged import plan

    options = {"data": args.data, **parse_opts(args.opt)}
    plans = plan([r.strip() for r in args.bench.split(",")], args.out, options, args.cache_dir)
    if args.json:
        print(json.dumps(plans, indent=2))
        return 0
    for entry in plans:
        print(f"{entry['benchmark']} (judge {entry['judge']} at {entry['endpoint']}; {entry['items']} items)")
        print(
            f"  judge calls to make   {entry['judge_calls']:6d}  (at most {entry['judge_calls_at_most']} "
            "with retries and re-asks)"
        )
        names = ("cached", "already_judged", "resolved_by_rules", "awaiting_generation", "generation_failed")
        for name in (*names, "missing_image"):
            if name in entry:  # resolved_by_rules: the understanding benchmarks only
                print(f"  {name.replace('_', ' '):21s} {entry[name]:6d}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """``unilip eval run``: one JSON line per benchmark on stdout; exit 1 when an item is not ok."""
    status, results, pending = execute_run(args)
    for result in results:
        print(
            json.dumps(
                {"benchmark": result["benchmark"], "coverage": result["coverage"], "metrics": result["metrics"]}
            ),
            flush=True,
        )
    for shard in pending:  # a --shard that did not aggregate: its own items' coverage
        print(json.dumps(shard), flush=True)
    return status


def _cmd_aggregate(args: argparse.Namespace) -> int:
    """``unilip eval aggregate``: one JSON line per benchmark aggregated; exit 1 when one is incomplete or has
    items not ok."""
    status, results = execute_aggregate(Path(args.run), args.bench)
    for result in results:
        print(
            json.dumps(
                {"benchmark": result["benchmark"], "coverage": result["coverage"], "metrics": result["metrics"]}
            ),
            flush=True,
        )
    return status


def _cmd_status(args: argparse.Namespace) -> int:
    from evals.benchmark import get_benchmark
    from evals.runtime.records import read_json
    from evals.runtime.runner import MANIFEST, stage_status

    run = Path(args.run)
    manifests = sorted(run.glob(f"*/{MANIFEST}"))
    if not manifests:
        raise FileNotFoundError(f"{run}: no benchmark started here (no */{MANIFEST})")
    complete = True
    for manifest_path in manifests:
        manifest = read_json(manifest_path)
        spec = manifest["spec"]
        bench, _ = get_benchmark(spec["name"])
        bench_dir = manifest_path.parent
        print(f"{spec['name']} (fingerprint {spec['fingerprint'][:8]}, {len(manifest['items'])} items)")
        for stage, counts in stage_status(bench_dir, bench.stages, manifest["items"]).items():
            complete &= counts["missing"] == 0
            print(
                f"  {stage:10s} done {counts['done']:6d}  failed {counts['failed']:6d}  missing {counts['missing']:6d}"
            )
        results = bench_dir / "results.json"
        print(f"  aggregate  {'written' if results.is_file() else 'not yet written'}")
    return 0 if complete else 1


def _cmd_compare(args: argparse.Namespace) -> int:
    from evals.report.compare import render, same_run
    from evals.report.results import load_results

    results = load_results(args.runs)
    baseline = getattr(args, "paired", None)
    if baseline is not None and not any(same_run(baseline, result) for result in results):
        results += load_results([baseline])  # the baseline gets its row, as if given among the runs
    text = render(
        results, args.format, labels=args.label, metrics=args.metrics, precision=args.precision, paired=baseline
    )
    sys.stdout.write(text)
    return 0


def _cmd_gate(args: argparse.Namespace) -> int:
    from evals.files import atomic_write_json
    from evals.report.gate import judge, load_rules
    from evals.report.results import load_results

    rules = load_rules(args.rules)
    runs = load_results([args.run])
    wanted = rules.get("benchmark")
    matching = [r for r in runs if not wanted or r.get("benchmark") == wanted]
    baselines = [r for r in load_results([args.baseline]) if not wanted or r.get("benchmark") == wanted]
    if len(matching) != 1 or len(baselines) != 1:
        raise ValueError(
            f"need exactly one {wanted or 'result'} in the run and in the baseline "
            f"(found {len(matching)} and {len(baselines)})"
        )
    verdict = judge(matching[0], baselines[0], rules)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    # The JSON first: a verdict that could not be recorded is an I/O error (exit 2), never a printed PASS.
    atomic_write_json(Path(args.json) if args.json else run_dir / "gate.json", verdict.to_dict())
    sys.stdout.write(verdict.markdown())
    return verdict.code
