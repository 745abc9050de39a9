"""``unilip eval ...``: run benchmarks, show status, compare runs, gate CI.

Registered into the ``unilip`` command through the ``unilip.cli`` entry-point group, so the model
package never imports the harness.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("evals")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command and its subcommands to the ``unilip`` parser."""
    parser = subparsers.add_parser("eval", help="evaluate models on benchmarks; compare and gate runs")
    sub = parser.add_subparsers(dest="eval_command", required=True)

    run = sub.add_parser("run", help="run benchmarks into a run directory (resumes if it exists)")
    run.add_argument("--model", required=True, help="model reference: variant, directory or weights file "
                                                    "(or ADAPTER:MODEL)")
    run.add_argument("--weights", help="weights for a variant name")
    run.add_argument("--random-init", action="store_true", help="random weights for a variant with released ones")
    run.add_argument("--seed", type=int, default=0, help="run seed (and random-init seed); default 0")
    run.add_argument("--bench", required=True, help="comma-separated NAME@VARIANT (see `unilip eval list`)")
    run.add_argument("--out", required=True, help="run directory")
    run.add_argument("--data", help="dataset path (image folder, tar shard(s), ImageNet val folder), or "
                                    "'builtin' for the photos scikit-image ships")
    run.add_argument("--dataset", default=None, choices=["folder", "tar", "imagenet-val", "builtin"],
                     help="dataset kind (default: folder when --data is given, else builtin)")
    run.add_argument("--num-images", type=int, help="evaluate the first N images (default: all; imagenet-val: 50,000)")
    run.add_argument("--size", type=int, help="resolution (default: the model's native size)")
    run.add_argument("--inception-weights", help="torch-fidelity FID Inception weights (.pth); else "
                                                 "$UNILIP_INCEPTION_WEIGHTS or $TORCH_HOME/hub/checkpoints")
    run.add_argument("--inception-dtype", choices=["float64", "float32"], default="float64",
                     help="Inception internal dtype (float64 as the official evaluator)")
    run.add_argument("--lpips-alex-weights", help="torchvision alexnet-owt-7be5be79.pth for LPIPS(alex)")
    run.add_argument("--lpips-vgg-weights", help="torchvision vgg16-397923af.pth for LPIPS(vgg)")
    run.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE",
                     help="a benchmark option (repeatable; the value is read as YAML: 5, true, [a, b]); "
                          "`unilip eval list --options` shows each benchmark's options")
    run.add_argument("--steps", type=int, help="generators: sampling steps (default 20, as upstream)")
    run.add_argument("--guidance", type=float, help="generators: CFG scale (default 4.5; upstream ImgEdit 3B: 4.0)")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--device", default="cpu")
    run.add_argument("--cache-dir", default=None, help="cache of real-image features (default ~/.cache/unilip)")
    run.add_argument("--retry-failed", action="store_true", help="redo items whose records say failed")
    run.add_argument("--rescore", action="store_true", help="accept changed scoring options (judge, template, "
                                                             "scorer) in an existing run: only the stages that "
                                                             "depend on them are redone, images are kept")
    run.add_argument("--fresh", action="store_true", help="discard what the run directory holds for these benchmarks")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=_cmd_run)

    status = sub.add_parser("status", help="done / failed / stale / missing items per benchmark and stage")
    status.add_argument("run")
    status.set_defaults(func=_cmd_status)

    compare = sub.add_parser("compare", help="table of runs: one row per model, one column per metric")
    compare.add_argument("runs", nargs="+")
    compare.add_argument("--format", choices=["md", "csv", "tex", "html"], default="md")
    compare.set_defaults(func=_cmd_compare)

    gate = sub.add_parser("gate", help="CI verdict against a baseline: exit 0 pass, 1 fail, 2 refused")
    gate.add_argument("run")
    gate.add_argument("--baseline", required=True, help="baseline results.json or run directory")
    gate.add_argument("--rules", required=True, help="rules YAML")
    gate.add_argument("--json", help="write the JSON verdict here (default RUN/gate.json)")
    gate.set_defaults(func=_cmd_gate)

    import importlib

    judge_plan = importlib.import_module("evals.judges.plan")  # the module (the package exports a function of that name)

    dry = sub.add_parser("plan", help="judge dry run: the judge calls a run would make, and how many are cached")
    judge_plan.add_arguments(dry)
    dry.set_defaults(func=judge_plan.run)

    listing = sub.add_parser("list", help="list benchmarks and their variants")
    listing.add_argument("--options", action="store_true", help="also list each benchmark's options")
    listing.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    from evals.benchmark import get_benchmark, list_benchmarks

    shown: set[str] = set()
    for reference in list_benchmarks():
        print(reference)
        bench, _ = get_benchmark(reference)
        if args.options and bench.name not in shown:
            shown.add(bench.name)
            for name, text in bench.options.items():
                print(f"    --opt {name}=...  {text}")
    return 0


def parse_opts(pairs: list[str]) -> dict[str, Any]:
    """``["limit=5", "judge_model=gpt-4o"]`` -> ``{"limit": 5, "judge_model": "gpt-4o"}`` (values as YAML)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"unilip eval run: --opt wants NAME=VALUE, got {pair!r}")
        parsed = yaml.safe_load(value) if value.strip() else None
        options[name.strip()] = value if isinstance(parsed, (dict, type(None))) and value.strip() else parsed
    return options


def _cmd_run(args: argparse.Namespace) -> int:
    from evals.adapter import load_adapter
    from evals.benchmark import get_benchmark, select_options
    from evals.runtime.distributed import init_world
    from evals.runtime.records import atomic_write_json
    from evals.runtime.runner import run_benchmark
    from unilip.provenance import environment_report

    world = init_world()
    sampler = {k: v for k, v in {"steps": args.steps, "guidance": args.guidance}.items() if v is not None}
    adapter = load_adapter(args.model, weights=args.weights, random_init=args.random_init, seed=args.seed,
                           device=args.device, **sampler)
    out = Path(args.out)
    if args.data == "builtin" and not Path("builtin").exists():
        args.dataset, args.data = "builtin", None
    kind = args.dataset or ("folder" if args.data else "builtin")
    options: dict[str, Any] = {"seed": args.seed, "data_kind": kind, "data": args.data, "num_images": args.num_images,
                               "resolution": args.size, "inception_weights": args.inception_weights,
                               "inception_dtype": args.inception_dtype,
                               "lpips_alex_weights": args.lpips_alex_weights, "lpips_vgg_weights": args.lpips_vgg_weights}
    extra = parse_opts(args.opt)
    options.update(extra)
    benches = [get_benchmark(reference.strip()) for reference in args.bench.split(",")]
    unclaimed = sorted(name for name in extra if not any(name in bench.options for bench, _ in benches))
    if unclaimed:
        raise SystemExit(f"unilip eval run: no selected benchmark takes --opt {', '.join(unclaimed)} "
                         "(see `unilip eval list --options`)")
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path.home() / ".cache" / "unilip"
    environment = environment_report()
    environment["world_size"] = world.size
    status = 0
    for bench, variant in benches:
        spec = bench.make_spec(variant, select_options(bench, options), adapter)
        bench_dir = out / spec.name
        if args.fresh and world.is_main and bench_dir.exists():
            shutil.rmtree(bench_dir)
        if world.is_main:
            atomic_write_json(out / "run.json", {"model_ref": args.model, "options": {**vars(args), "func": None},
                                                 "model": adapter.describe(), "environment": environment})
        results = run_benchmark(bench, spec, adapter, bench_dir, world, args.batch_size, cache_dir,
                                progress=not args.no_progress, retry_failed=args.retry_failed, rescore=args.rescore,
                                extra_results={"seed": args.seed, "batch_size": args.batch_size,
                                               "data_path": args.data, "environment": environment})
        if results is not None:
            print(json.dumps({"benchmark": results["benchmark"], "coverage": results["coverage"],
                              "metrics": results["metrics"]}), flush=True)
            if results["coverage"]["ok"] < results["coverage"]["expected"]:
                status = 1
    return status


def _cmd_status(args: argparse.Namespace) -> int:
    from evals.benchmark import get_benchmark
    from evals.runtime.records import read_json
    from evals.runtime.runner import MANIFEST, stage_status

    run = Path(args.run)
    manifests = sorted(run.glob(f"*/{MANIFEST}"))
    if not manifests:
        print(f"{run}: no benchmark started here", file=sys.stderr)
        return 2
    complete = True
    for manifest_path in manifests:
        manifest = read_json(manifest_path)
        spec = manifest["spec"]
        bench, _ = get_benchmark(spec["name"])
        bench_dir = manifest_path.parent
        print(f"{spec['name']} (fingerprint {spec['fingerprint'][:8]}, {len(manifest['items'])} items)")
        for stage, counts in stage_status(bench_dir, bench.stages, manifest["items"]).items():
            complete &= counts["missing"] == 0
            print(f"  {stage:10s} done {counts['done']:6d}  failed {counts['failed']:6d}  missing {counts['missing']:6d}")
        results = bench_dir / "results.json"
        print(f"  aggregate  {'written' if results.is_file() else 'not yet written'}")
    return 0 if complete else 1


def _cmd_compare(args: argparse.Namespace) -> int:
    from evals.report.compare import render
    from evals.report.results import load_results

    sys.stdout.write(render(load_results(args.runs), args.format))
    return 0


def _cmd_gate(args: argparse.Namespace) -> int:
    from evals.report.gate import REFUSED, judge, load_rules
    from evals.report.results import load_results
    from evals.runtime.records import atomic_write_json

    rules = load_rules(args.rules)
    runs = load_results([args.run])
    wanted = rules.get("benchmark")
    matching = [r for r in runs if not wanted or r["benchmark"] == wanted]
    baselines = [r for r in load_results([args.baseline]) if not wanted or r["benchmark"] == wanted]
    if len(matching) != 1 or len(baselines) != 1:
        print(f"unilip eval gate: need exactly one {wanted or 'result'} in the run and in the baseline "
              f"(found {len(matching)} and {len(baselines)})", file=sys.stderr)
        return REFUSED
    verdict = judge(matching[0], baselines[0], rules)
    sys.stdout.write(verdict.markdown())
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    atomic_write_json(Path(args.json) if args.json else run_dir / "gate.json", verdict.to_dict())
    return verdict.code
