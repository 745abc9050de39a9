"""``unilip eval run``'s request: its arguments and its execution, checked before the model loads.

:func:`evals.run` (code) and ``unilip eval run`` (the command line, :mod:`evals.cli`) both come here.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from unilip.devices import DEVICE_HELP

logger = logging.getLogger("evals")


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """The arguments of ``unilip eval run`` (also what :func:`evals.run` takes as keywords): the core ones,
    then the flags benchmarks declare on their options (``--data``, ``--size`` ...)."""
    run.add_argument(
        "--model",
        required=True,
        help="model reference: variant, directory, weights file, repo id in the local Hugging Face cache, or "
        "ADAPTER:MODEL (`unilip eval adapters`; pkg.module:factory=MODEL for your own)",
    )
    run.add_argument("--weights", help="weights for a variant name (with --encoder: the encoder variant's)")
    run.add_argument(
        "--encoder",
        help="understanding: a UniLIP tokenizer (variant, directory, released 1b_unilip.pth, training output) whose "
        "encoder and mlp1 replace those of the stock InternVL3 of --model internvl:DIR",
    )
    run.add_argument("--random-init", action="store_true", help="random weights for a variant with released ones")
    run.add_argument("--seed", type=int, default=0, help="run seed (and random-init seed); default 0")
    run.add_argument("--bench", required=True, help="comma-separated NAME@VARIANT (see `unilip eval list`)")
    run.add_argument("--out", required=True, help="run directory")
    run.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a benchmark option (repeatable; the value is read as YAML: 5, true, [a, b]); "
        "`unilip eval list --options` shows each benchmark's options; BENCH.NAME=VALUE gives it "
        "to the benchmark BENCH only",
    )
    run.add_argument(
        "--steps", type=int, help="generators: sampling steps (UniLIP default 20, as upstream; diffusers-pipe: its own)"
    )
    run.add_argument(
        "--guidance",
        type=float,
        help="generators: CFG scale (UniLIP default 4.5, upstream ImgEdit 3B: 4.0; diffusers-pipe: its own)",
    )
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--device", default=None, help=DEVICE_HELP)
    run.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="model weights dtype (default float32; the pixel decoder stays float32 as upstream)",
    )
    run.add_argument("--cache-dir", default=None, help="cache of real-image features (default ~/.cache/unilip)")
    run.add_argument("--retry-failed", action="store_true", help="redo items whose records say failed")
    run.add_argument(
        "--rescore",
        action="store_true",
        help="accept changed scoring options (judge, template, "
        "scorer) in an existing run: only the stages that "
        "depend on them are redone, images are kept",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="discard what the run directory holds for these benchmarks "
        "(all of its runs when it holds another model or seed)",
    )
    run.add_argument("--no-progress", action="store_true")
    run.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="run only shard I of N (0-based: 0/N ... N-1/N), the items manifest[I::N], as an independent process "
        "with no process group (Slurm array jobs, any scheduler); shards of one run may run side by side into "
        "one --out; when all are done, `unilip eval aggregate OUT` writes results.json (the last shard to "
        "finish does it itself when it finds every item finished). Not with torchrun, whose ranks already split",
    )
    for flag, (_, text) in benchmark_flags().items():
        run.add_argument(flag, default=None, help=text)


def benchmark_flags() -> dict[str, tuple[str, str]]:
    """The flags benchmarks declare on their options: flag -> (option name, help naming the benchmarks).

    Raises:
        TypeError: two benchmarks declare one flag for options of different names.
    """
    import dataclasses

    from evals.benchmark import benchmark_classes

    declared: dict[str, tuple[str, str, list[str]]] = {}
    for name, cls in benchmark_classes().items():
        for field in dataclasses.fields(cls.Options):
            flag = field.metadata.get("flag")
            if not flag:
                continue
            option_name, text, owners = declared.setdefault(flag, (field.name, field.metadata["help"], []))
            if option_name != field.name:
                raise TypeError(
                    f"benchmark {name} declares {flag} for its option {field.name}, another benchmark "
                    f"for {option_name}: one flag is one option name"
                )
            owners.append(name)
    return {
        flag: (option_name, f"{text} [{', '.join(owners)}]") for flag, (option_name, text, owners) in declared.items()
    }


def _flag_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def execute_run(args: argparse.Namespace) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``unilip eval run``'s request: (exit status, each benchmark's results on the main process, and for a
    ``--shard`` that did not aggregate, what the shard holds of each benchmark: its items' coverage).

    Everything is checked before the model loads (see the README's order).
    """
    from evals.benchmark import check_option_names
    from evals.registry import load_adapter, probe_adapter
    from evals.runtime.distributed import init_world, parse_shard
    from evals.runtime.records import canonical_hash
    from evals.runtime.rundir import (
        RunLock,
        check_identity,
        discard_runs,
        recorded_identity,
        remove_stale_temporaries,
        run_identity,
        serialized,
        write_run_json,
    )
    from evals.runtime.runner import run_benchmark
    from unilip.devices import resolve_device
    from unilip.errors import EXIT_FAILED, EXIT_OK
    from unilip.outdir import ensure_writable
    from unilip.provenance import environment_report

    # 1. What is asked: benchmarks, variants, options, device (no file is touched, no model loads).
    device = resolve_device(args.device)
    benches, parsed, flagged, flags = _requested_benchmarks(args)
    sampler = {k: v for k, v in {"steps": args.steps, "guidance": args.guidance}.items() if v is not None}
    model_options = {
        "weights": args.weights,
        "random_init": args.random_init,
        "seed": args.seed,
        "device": device,
        "dtype": args.dtype,
        **sampler,
        **({"encoder": args.encoder} if getattr(args, "encoder", None) else {}),
    }
    part = parse_shard(args.shard) if getattr(args, "shard", None) else None
    if part is not None and args.fresh:
        raise ValueError(
            "--fresh with --shard would let each shard discard the others' work: delete --out once (or run "
            "without --shard with --fresh), then start the shards without --fresh"
        )
    world = init_world()
    if part is not None and world.size > 1:
        raise ValueError(
            f"--shard {part} asks for an independent process, but this one is rank {world.rank} of a "
            f"{world.size}-process group (torchrun/accelerate), whose ranks already split the run: drop --shard"
        )
    out = Path(args.out)
    world.on_main(lambda: ensure_writable(out, what="run directory"))
    lock = RunLock(out, world, part=part)
    with lock:
        # 2. The model reference, what it can do, and every spec: data, metric weights, judge keys.
        info = probe_adapter(args.model, **model_options)
        for bench, _ in benches:
            info.require(bench.capability)
        # A flag no selected benchmark takes (--size for a generation benchmark) is refused, not ignored.
        check_option_names(flagged, benches, spelled={name: flag for flag, name in flags.items()})
        resolved = [
            bench.resolve(variant, options, info) for (bench, variant), options in zip(benches, parsed, strict=True)
        ]
        for benchmark in resolved:
            benchmark.preflight()
        held = world.on_main(lambda: recorded_identity(out))
        if held is not None and not args.fresh:
            # Before minutes of loading: the cheap parts of the identity (the weights need the model).
            world.on_main(
                lambda: check_identity(
                    out, {"adapter": info.adapter, "seed": args.seed}, fields=("adapter", "seed"), model_ref=args.model
                )
            )
        # 3. The model.
        adapter = load_adapter(args.model, info, **model_options)
        identity = run_identity(adapter.describe(), args.seed)

        def claim() -> None:
            if part is not None:  # shards starting together: one checks and writes run.json at a time
                with serialized(out):
                    settle()
            else:
                settle()

        def settle() -> None:
            if args.fresh:
                if held is not None and any(
                    canonical_hash(held.get(k)) != canonical_hash(v) for k, v in identity.items()
                ):
                    discard_runs(out)
                for benchmark in resolved:
                    shutil.rmtree(out / benchmark.name, ignore_errors=True)
            else:
                check_identity(
                    out, identity, model_ref=args.model, weights_changed=getattr(adapter, "weights_changed", "")
                )
            if lock.alone:  # beside other shards, a temporary file may be a write in progress
                remove_stale_temporaries(out)
            write_run_json(
                out,
                identity,
                {
                    "model_ref": args.model,
                    "options": {**vars(args), "func": None},
                    "model": adapter.describe(),
                    "device": device,
                    "environment": environment_report(),
                },
            )

        world.on_main(claim)
        # 4. The benchmarks.
        cache_dir = Path(args.cache_dir) if args.cache_dir else Path.home() / ".cache" / "unilip"
        environment = environment_report()
        environment["world_size"] = world.size if part is None else part.count
        if part is not None:
            environment["shard"] = str(part)
        status = EXIT_OK
        finished: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        for benchmark in resolved:
            results = run_benchmark(
                benchmark,
                adapter,
                out / benchmark.name,
                world,
                args.batch_size,
                cache_dir,
                progress=not args.no_progress,
                retry_failed=args.retry_failed,
                rescore=args.rescore,
                part=part,
                extra_results={
                    "seed": args.seed,
                    "batch_size": args.batch_size,
                    "device": device,
                    "dtype": args.dtype,
                    "data_path": getattr(args, "data", None),
                    "environment": environment,
                },
            )
            if results is not None:
                finished.append(results)
                if results["coverage"]["ok"] < results["coverage"]["expected"]:
                    status = EXIT_FAILED
            elif part is not None:
                summary = _shard_summary(benchmark, out / benchmark.name, part)
                pending.append(summary)
                if summary["coverage"]["ok"] < summary["coverage"]["expected"]:
                    status = EXIT_FAILED
    if pending:
        logger.info(
            "shard %s done; other shards still have items to finish: when every shard is done, run "
            "`unilip eval aggregate %s` to write results.json",
            part,
            out,
        )
    return status, finished, pending


def _shard_summary(benchmark: Any, bench_dir: Path, part: Any) -> dict[str, Any]:
    """What shard ``part`` holds of ``benchmark``'s run: its items' final-stage coverage (its own items only)."""
    from evals.runtime.distributed import shard_items
    from evals.runtime.records import read_json
    from evals.runtime.runner import MANIFEST, stage_status

    ids = shard_items(list(read_json(bench_dir / MANIFEST)["items"]), part.index, part.count)
    final = stage_status(bench_dir, benchmark.stages, ids)[benchmark.stages[-1]]
    coverage = {"expected": len(ids), "ok": final["done"], "failed": final["failed"], "missing": final["missing"]}
    return {"benchmark": benchmark.name, "shard": str(part), "coverage": coverage, "aggregated": False}


def _requested_benchmarks(args: argparse.Namespace) -> tuple[list[Any], list[Any], dict[str, Any], dict[str, str]]:
    """The benchmarks ``args`` asks for: (``(benchmark, variant)`` pairs, their parsed options, the options given by
    benchmark flags, flag -> option name). Touches no file and loads no model."""
    from evals.benchmark import check_option_names, get_benchmark, parse_opts, select_options

    benches = [get_benchmark(reference.strip()) for reference in args.bench.split(",") if reference.strip()]
    if not benches:
        raise ValueError("--bench names no benchmark (see `unilip eval list`)")
    # The options: benchmark-declared flags, then --opt (which wins); each benchmark parses those it takes.
    flags = {flag: option_name for flag, (option_name, _) in benchmark_flags().items()}
    flagged = {
        name: getattr(args, _flag_dest(flag))
        for flag, name in flags.items()
        if getattr(args, _flag_dest(flag), None) is not None
    }
    opts = parse_opts(args.opt)
    check_option_names(opts, benches)
    given = {**flagged, **opts}
    parsed = []
    for bench, _ in benches:
        chosen = select_options(bench, given)
        if "seed" in bench.options_help():
            chosen.setdefault("seed", args.seed)  # the run seed, unless --opt seed= says otherwise
        parsed.append(bench.parse_options(chosen))
    return benches, parsed, flagged, flags


def execute_aggregate(run_dir: Path, bench: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """``unilip eval aggregate RUN``: join the shards of a run. Returns (exit status, the results written).

    For each benchmark of the run (or of ``bench``, comma-separated): when every item of its manifest is
    finished, write ``results.json`` with :func:`evals.runtime.runner.aggregate_run`, the code path of a run's
    own aggregate (so the numbers are those of a single-process run); otherwise say which shards have
    unfinished items, write nothing, and return exit 1 (incomplete).

    No model loads: the benchmark is rebuilt from the options and the model description the run recorded in
    ``run.json`` (and its data, read again: an aggregate may need the items, e.g. the VLM benchmarks' rows),
    and checked against the manifest's spec. A model whose adapter has no cheap probe is stood in for by what
    ``run.json`` recorded of it (its native size).

    Raises:
        RunDirectoryError: ``run_dir`` is not a run directory, has no such benchmark, or its manifest's spec is
            not what the recorded options give now (all exit 2).
    """
    from evals.adapter import ModelInfo
    from evals.registry import parse_reference, probe_adapter
    from evals.runtime.distributed import parse_shard
    from evals.runtime.records import read_json
    from evals.runtime.rundir import RUN_JSON, RunDirectoryError, serialized
    from evals.runtime.runner import (
        MANIFEST,
        RecordReader,
        aggregate_run,
        unfinished_by_shard,
        unfinished_items,
        write_manifest,
    )
    from unilip.errors import EXIT_FAILED, EXIT_OK
    from unilip.provenance import environment_report

    run_dir = Path(run_dir)
    if not (run_dir / RUN_JSON).is_file():
        raise RunDirectoryError(
            f"{run_dir} is not a run directory (no {RUN_JSON}); give the --out of `unilip eval run`"
        )
    run = read_json(run_dir / RUN_JSON)
    recorded = dict(run.get("options") or {})
    if bench is not None:
        recorded["bench"] = bench
    else:
        names = sorted(path.parent.name for path in run_dir.glob(f"*/{MANIFEST}"))
        if not names:
            raise RunDirectoryError(
                f"{run_dir}: no benchmark started here (no */{MANIFEST}); run `unilip eval run` first"
            )
        recorded["bench"] = ",".join(names)
    # The run's own options, with the defaults of options added since it was recorded.
    parser = argparse.ArgumentParser(add_help=False)
    add_run_arguments(parser)
    args = parser.parse_args(
        ["--model", str(recorded.get("model")), "--bench", recorded["bench"], "--out", str(run_dir)]
    )
    for name, value in recorded.items():
        if hasattr(args, name) and name != "func":
            setattr(args, name, value)
    benches, parsed, _, _ = _requested_benchmarks(args)
    model = run.get("model") or {}
    entry = parse_reference(args.model).entry
    if entry.probe is not None:  # cheap by contract: configs and file headers, never the weights
        sampler = {k: v for k, v in {"steps": args.steps, "guidance": args.guidance}.items() if v is not None}
        info = probe_adapter(
            args.model,
            weights=args.weights,
            random_init=args.random_init,
            seed=args.seed,
            device=run.get("device") or "cpu",  # as recorded: a probe reads configs, it places nothing
            dtype=args.dtype,
            **sampler,
            **({"encoder": args.encoder} if getattr(args, "encoder", None) else {}),
        )
    else:
        info = ModelInfo(model.get("adapter") or entry.name, args.model, frozenset(), model.get("native_size"))
    shards = parse_shard(args.shard).count if args.shard else None
    status = EXIT_OK
    written: list[dict[str, Any]] = []
    for (benchmark, variant), options in zip(benches, parsed, strict=True):
        name = f"{benchmark.name}@{variant}"
        bench_dir = run_dir / name
        if not (bench_dir / MANIFEST).is_file():
            raise RunDirectoryError(
                f"{run_dir} holds no run of {name} (no {name}/{MANIFEST}); see `unilip eval status`"
            )
        resolved = benchmark.resolve(variant, options, info)
        # The manifest exists: this only checks it (and takes the run's own spec when only the data listing changed).
        resolved, expected = write_manifest(resolved, bench_dir)
        fingerprints = {stage: resolved.stage_fingerprint(stage, model) for stage in resolved.stages}
        # Read once: with every item finished no shard writes a record, so the aggregate reuses these reads.
        reader = RecordReader(bench_dir)
        unfinished = unfinished_items(bench_dir, resolved.stages, expected, fingerprints, reader=reader)
        if unfinished:
            status = EXIT_FAILED
            items = [item.id for item in resolved.items]
            where = unfinished_by_shard(unfinished, items, shards or 1)
            said = ", ".join(
                f"shard {key}: {count}" if key != "gone" else f"no longer in the data: {count}"
                for key, count in where.items()
            )
            logger.error(
                "%s: %d of %d item(s) not finished (%s); run those shards again (the same command resumes them), "
                "then `unilip eval aggregate %s`",
                name,
                len(unfinished),
                len(expected),
                said if shards else f"the run was not sharded with --shard: {said}",
                run_dir,
            )
            continue
        environment = environment_report()
        environment["world_size"] = shards or 1
        extra = {
            "seed": args.seed,
            "batch_size": args.batch_size,
            "device": (run.get("device") or args.device),
            "dtype": args.dtype,
            "data_path": getattr(args, "data", None),
            "environment": environment,
            "aggregated_by": "unilip eval aggregate",
        }
        with serialized(run_dir):  # not beside a shard that aggregates as it finishes
            results = aggregate_run(resolved, expected, bench_dir, model, extra, reader=reader)
        written.append(results)
        if results["coverage"]["ok"] < results["coverage"]["expected"]:
            status = EXIT_FAILED
    return status, written
