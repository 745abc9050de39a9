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

from unilip.devices import DEVICE_HELP

logger = logging.getLogger("evals")


def register(subparsers: argparse._SubParsersAction, train_subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command and its subcommands, and the studies (``quickstart``, ``train sweep``),
    to the ``unilip`` parser (the ``unilip.cli`` entry point)."""
    from evals.studies.cli import register as register_studies

    parser = subparsers.add_parser("eval", help="evaluate models on benchmarks; compare and gate runs")
    sub = parser.add_subparsers(dest="eval_command", required=True)

    run = sub.add_parser("run", help="run benchmarks into a run directory (resumes if it exists)")
    add_run_arguments(run)
    run.set_defaults(func=_cmd_run)
    _register_queries(sub)
    register_studies(subparsers, train_subparsers)


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """The arguments of ``unilip eval run`` (also what :func:`evals.run` takes as keywords)."""
    run.add_argument("--model", required=True, help="model reference: variant, directory or weights file "
                                                    "(or ADAPTER:MODEL)")
    run.add_argument("--weights", help="weights for a variant name")
    run.add_argument("--random-init", action="store_true", help="random weights for a variant with released ones")
    run.add_argument("--seed", type=int, default=0, help="run seed (and random-init seed); default 0")
    run.add_argument("--bench", required=True, help="comma-separated NAME@VARIANT (see `unilip eval list`)")
    run.add_argument("--out", required=True, help="run directory")
    run.add_argument("--data", help="dataset path (image folder, tar shard(s), ImageNet val folder), or "
                                    "'builtin' for the photos scikit-image ships")
    run.add_argument("--dataset", default=None, choices=["folder", "tar", "imagenet-val", "builtin", "digits"],
                     help="dataset kind (default: folder when --data is given, else builtin); builtin and digits "
                          "(the 360 held-out digits of the tiny studies) ship with the dependencies")
    run.add_argument("--num-images", type=int, help="evaluate the first N images (default: all; imagenet-val: 50,000)")
    run.add_argument("--size", type=int, help="resolution (default: the model's native size)")
    run.add_argument("--inception-weights", help="torch-fidelity FID Inception weights (.pth; must exist); else "
                                                 "$UNILIP_INCEPTION_WEIGHTS (must exist when set) or "
                                                 "$TORCH_HOME/hub/checkpoints")
    run.add_argument("--inception-dtype", choices=["float64", "float32"], default="float64",
                     help="Inception internal dtype (float64 as the official evaluator)")
    run.add_argument("--lpips-alex-weights", help="torchvision alexnet-owt-7be5be79.pth for LPIPS(alex) (must exist; "
                                                  "else $UNILIP_LPIPS_ALEX_WEIGHTS or the torch hub cache)")
    run.add_argument("--lpips-vgg-weights", help="torchvision vgg16-397923af.pth for LPIPS(vgg) (must exist; else "
                                                 "$UNILIP_LPIPS_VGG_WEIGHTS or the torch hub cache)")
    run.add_argument("--opt", action="append", default=[], metavar="NAME=VALUE",
                     help="a benchmark option (repeatable; the value is read as YAML: 5, true, [a, b]); "
                          "`unilip eval list --options` shows each benchmark's options")
    run.add_argument("--steps", type=int, help="generators: sampling steps (default 20, as upstream)")
    run.add_argument("--guidance", type=float, help="generators: CFG scale (default 4.5; upstream ImgEdit 3B: 4.0)")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--device", default=None, help=DEVICE_HELP)
    run.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                     help="model weights dtype (default float32; the pixel decoder stays float32 as upstream)")
    run.add_argument("--cache-dir", default=None, help="cache of real-image features (default ~/.cache/unilip)")
    run.add_argument("--retry-failed", action="store_true", help="redo items whose records say failed")
    run.add_argument("--rescore", action="store_true", help="accept changed scoring options (judge, template, "
                                                             "scorer) in an existing run: only the stages that "
                                                             "depend on them are redone, images are kept")
    run.add_argument("--fresh", action="store_true", help="discard what the run directory holds for these benchmarks "
                                                           "(all of its runs when it holds another model or seed)")
    run.add_argument("--no-progress", action="store_true")


def _register_queries(sub: argparse._SubParsersAction) -> None:
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
            raise ValueError(f"--opt wants NAME=VALUE, got {pair!r}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value  # not YAML: the text itself (a path with a colon, say)
        options[name.strip()] = value if isinstance(parsed, (dict, type(None))) and value.strip() else parsed
    return options


def check_option_names(given: dict[str, Any], benches: list[tuple[Any, str]]) -> None:
    """Refuse ``--opt`` names no selected benchmark declares, suggesting the closest ones."""
    import difflib

    known = sorted({name for bench, _ in benches for name in bench.options})
    unclaimed = sorted(name for name in given if name not in known)
    if not unclaimed:
        return
    hints = []
    for name in unclaimed:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
    selected = ", ".join(f"{bench.name}@{variant}" for bench, variant in benches)
    raise ValueError(f"no selected benchmark ({selected}) takes --opt {', '.join(hints)}; "
                     "`unilip eval list --options` lists each benchmark's options")


def _cmd_run(args: argparse.Namespace) -> int:
    """``unilip eval run``: one JSON line per benchmark on stdout; exit 1 when an item is not ok."""
    status, results = execute_run(args)
    for result in results:
        print(json.dumps({"benchmark": result["benchmark"], "coverage": result["coverage"],
                          "metrics": result["metrics"]}), flush=True)
    return status


def execute_run(args: argparse.Namespace) -> tuple[int, list[dict[str, Any]]]:
    """Run ``unilip eval run``'s request: (exit status, each benchmark's results on the main process).

    Everything is checked before the model loads (see the README's order).
    """
    from evals.adapter import load_adapter, probe_adapter
    from evals.benchmark import get_benchmark, select_options
    from evals.runtime.distributed import init_world
    from evals.runtime.rundir import (RunLock, check_identity, discard_runs, recorded_identity,
                                      remove_stale_temporaries, run_identity, write_run_json)
    from evals.runtime.records import canonical_hash
    from evals.runtime.runner import run_benchmark
    from unilip.devices import resolve_device
    from unilip.errors import EXIT_FAILED, EXIT_OK
    from unilip.outdir import ensure_writable
    from unilip.provenance import environment_report

    # 1. What is asked: benchmarks, variants, options, device (no file is touched, no model loads).
    device = resolve_device(args.device)
    benches = [get_benchmark(reference.strip()) for reference in args.bench.split(",") if reference.strip()]
    if not benches:
        raise ValueError("--bench names no benchmark (see `unilip eval list`)")
    if args.data == "builtin" and not Path("builtin").exists():
        args.dataset, args.data = "builtin", None
    kind = args.dataset or ("folder" if args.data else "builtin")
    options: dict[str, Any] = {"seed": args.seed, "data_kind": kind, "data": args.data, "num_images": args.num_images,
                               "resolution": args.size, "inception_weights": args.inception_weights,
                               "inception_dtype": args.inception_dtype,
                               "lpips_alex_weights": args.lpips_alex_weights, "lpips_vgg_weights": args.lpips_vgg_weights}
    extra = parse_opts(args.opt)
    check_option_names(extra, benches)
    options.update(extra)
    sampler = {k: v for k, v in {"steps": args.steps, "guidance": args.guidance}.items() if v is not None}
    model_options = {"weights": args.weights, "random_init": args.random_init, "seed": args.seed, "device": device,
                     "dtype": args.dtype, **sampler}
    world = init_world()
    out = Path(args.out)
    world.on_main(lambda: ensure_writable(out, what="run directory"))
    with RunLock(out, world):
        # 2. The model reference, what it can do, and every spec: data, metric weights, judge keys.
        info = probe_adapter(args.model, **model_options)
        for bench, _ in benches:
            info.require(bench.capability)
        specs = [bench.make_spec(variant, select_options(bench, options), info) for bench, variant in benches]
        for (bench, _), spec in zip(benches, specs):
            bench.preflight(spec)
        held = world.on_main(lambda: recorded_identity(out))
        if held is not None and not args.fresh:
            # Before minutes of loading: the cheap parts of the identity (the weights need the model).
            world.on_main(lambda: check_identity(out, {"adapter": info.adapter, "seed": args.seed},
                                                 fields=("adapter", "seed"), model_ref=args.model))
        # 3. The model.
        adapter = load_adapter(args.model, info, **model_options)
        identity = run_identity(adapter.describe(), args.seed)

        def claim() -> None:
            if args.fresh:
                if held is not None and any(canonical_hash(held.get(k)) != canonical_hash(v)
                                            for k, v in identity.items()):
                    discard_runs(out)
                for spec in specs:
                    shutil.rmtree(out / spec.name, ignore_errors=True)
            else:
                check_identity(out, identity, model_ref=args.model)
            remove_stale_temporaries(out)
            write_run_json(out, identity, {"model_ref": args.model, "options": {**vars(args), "func": None},
                                           "model": adapter.describe(), "device": device,
                                           "environment": environment_report()})

        world.on_main(claim)
        # 4. The benchmarks.
        cache_dir = Path(args.cache_dir) if args.cache_dir else Path.home() / ".cache" / "unilip"
        environment = environment_report()
        environment["world_size"] = world.size
        status = EXIT_OK
        finished: list[dict[str, Any]] = []
        for (bench, _), spec in zip(benches, specs):
            results = run_benchmark(bench, spec, adapter, out / spec.name, world, args.batch_size, cache_dir,
                                    progress=not args.no_progress, retry_failed=args.retry_failed,
                                    rescore=args.rescore,
                                    extra_results={"seed": args.seed, "batch_size": args.batch_size, "device": device,
                                                   "dtype": args.dtype, "data_path": args.data,
                                                   "environment": environment})
            if results is not None:
                finished.append(results)
                if results["coverage"]["ok"] < results["coverage"]["expected"]:
                    status = EXIT_FAILED
    return status, finished


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
    from evals.report.gate import judge, load_rules
    from evals.report.results import load_results
    from evals.runtime.records import atomic_write_json

    rules = load_rules(args.rules)
    runs = load_results([args.run])
    wanted = rules.get("benchmark")
    matching = [r for r in runs if not wanted or r["benchmark"] == wanted]
    baselines = [r for r in load_results([args.baseline]) if not wanted or r["benchmark"] == wanted]
    if len(matching) != 1 or len(baselines) != 1:
        raise ValueError(f"need exactly one {wanted or 'result'} in the run and in the baseline "
                         f"(found {len(matching)} and {len(baselines)})")
    verdict = judge(matching[0], baselines[0], rules)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    # The JSON first: a verdict that could not be recorded is an I/O error (exit 2), never a printed PASS.
    atomic_write_json(Path(args.json) if args.json else run_dir / "gate.json", verdict.to_dict())
    sys.stdout.write(verdict.markdown())
    return verdict.code
