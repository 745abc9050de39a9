"""The studies' commands, registered through the ``unilip.cli`` entry-point group: ``unilip quickstart``,
``unilip train sweep`` (both evaluate with the harness) and ``unilip train generator-study``.

Nothing heavy is imported here: ``unilip --help`` builds every parser; each command imports its work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction, train_subparsers: argparse._SubParsersAction) -> None:
    """Add ``quickstart`` to the ``unilip`` parser, ``generator-study`` and ``sweep`` to its ``train`` group."""
    study = train_subparsers.add_parser(
        "generator-study",
        help="the tiny digits generator on the CPU, trained and measured with the tokenizer study's frozen classifier",
    )
    study.add_argument("--out", default="runs/generator-study")
    study.add_argument("--generator-steps", type=int)
    study.add_argument("--tokenizer-steps", type=int)
    study.add_argument("--seeds-per-digit", type=int, default=20)
    study.add_argument("--edits", type=int, default=200)
    study.add_argument("--fresh", action="store_true")
    study.add_argument("--no-progress", action="store_true")
    study.set_defaults(func=_cmd_generator_study)
    sweep = train_subparsers.add_parser("sweep", help="stage 2 once per distillation weight, evaluated and tabulated")
    sweep.add_argument("--config", required=True)
    sweep.add_argument("--distill-weights", default="0,0.1,1,10", help="comma-separated lambdas")
    sweep.add_argument("--out", required=True)
    sweep.add_argument("--stage1-steps", type=int)
    sweep.add_argument("--stage2-steps", type=int)
    sweep.add_argument("--teacher-steps", type=int, default=300)
    sweep.add_argument("--mllm-steps", type=int, help="instruction-tuning steps of the frozen tiny MLLM")
    sweep.add_argument("--seeds", type=int, default=1, help="stage-2 seeds per λ (mean ± standard error over them)")
    sweep.add_argument("--fresh", action="store_true")
    sweep.add_argument("--no-progress", action="store_true")
    sweep.set_defaults(func=_cmd_train_sweep)
    quick = subparsers.add_parser("quickstart", help="the whole distillation study on the CPU, with an HTML report")
    quick.add_argument("--out", default="runs/quickstart")
    quick.add_argument("--distill-weights", default=QUICKSTART_WEIGHTS)
    quick.add_argument(
        "--seeds",
        type=int,
        default=QUICKSTART_SEEDS,
        help="stage-2 seeds per λ (default 2: error bars over seeds need at least 2)",
    )
    quick.add_argument("--fresh", action="store_true", help="start over instead of reusing finished phases")
    quick.add_argument("--no-progress", action="store_true")
    quick.set_defaults(func=_cmd_quickstart)


# The quickstart's study, sized to finish within its time budget on 2 CPU cores (README: the measured time).
QUICKSTART_WEIGHTS = "0,1"
QUICKSTART_SEEDS = 2
QUICKSTART_STAGE_STEPS = 150  # stage 1 and each stage-2 run (the recipe's 300 halved to fit 2 seeds)


def _weights(text: str) -> list[float]:
    return [float(w) for w in text.split(",") if w.strip()]


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from evals.studies.sweep import run_sweep
    from unilip.training.config import recipe_path

    files = run_sweep(
        recipe_path("tiny-digits"),
        _weights(args.distill_weights),
        args.out,
        seeds=args.seeds,
        stage1_steps=QUICKSTART_STAGE_STEPS,
        stage2_steps=QUICKSTART_STAGE_STEPS,
        fresh=args.fresh,
        progress=not args.no_progress,
    )
    sys.stdout.write(Path(files["markdown"]).read_text())
    sys.stdout.write("\n" + (Path(files["markdown"]).parent / "findings.txt").read_text())
    print(
        f"\nreport: {files['html']} (open it in a browser); also {files['report_markdown']}, "
        "results.csv, metrics_vs_lambda.png, reconstructions.png"
    )
    return 0


def _cmd_train_sweep(args: argparse.Namespace) -> int:
    from evals.studies.sweep import run_sweep
    from unilip.training.config import recipe_path

    files = run_sweep(
        recipe_path(args.config),
        _weights(args.distill_weights),
        args.out,
        stage1_steps=args.stage1_steps,
        stage2_steps=args.stage2_steps,
        teacher_steps=args.teacher_steps,
        mllm_steps=args.mllm_steps,
        seeds=args.seeds,
        fresh=args.fresh,
        progress=not args.no_progress,
    )
    sys.stdout.write(Path(files["markdown"]).read_text() if "markdown" in files else "")
    print(json.dumps({k: str(v) for k, v in files.items()}))
    return 0


def _cmd_generator_study(args: argparse.Namespace) -> int:
    from evals.studies.generator_study import run_generator_study

    summary = run_generator_study(
        args.out,
        generator_steps=args.generator_steps,
        tokenizer_steps=args.tokenizer_steps,
        seeds_per_digit=args.seeds_per_digit,
        edits=args.edits,
        fresh=args.fresh,
        progress=not args.no_progress,
    )
    sys.stdout.write((Path(args.out) / "report" / "generator.md").read_text())
    print(json.dumps({k: summary[k]["value"] for k in ("t2i_accuracy", "edit_accuracy")}))
    return 0
