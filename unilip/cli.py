"""``unilip`` command line: model-side subcommands. Logs go to stderr, results to stdout and files."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="variant name (see `unilip variants`), variant .yaml, saved tokenizer directory, "
                             "released UniLIP model directory, or released tokenizer .pth")
    parser.add_argument("--weights", help="weights for a variant name: .pth, model directory or .safetensors")
    parser.add_argument("--random-init", action="store_true",
                        help="use random weights for a variant that has released ones (for testing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random initialisation (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights dtype (default float32)")


def _cmd_variants(args: argparse.Namespace) -> int:
    from unilip.variants import get_variant, list_variants

    for name in list_variants():
        spec = get_variant(name)
        print(f"{name}\t{spec.description}")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from unilip.data import BUILTIN_PHOTOS, builtin_photos
    from unilip.pipelines import reconstruct_files
    from unilip.provenance import environment_report
    from unilip.variants import load_tokenizer

    if not args.images and not args.builtin:
        print("unilip reconstruct: give IMAGE files, or --builtin for the photos scikit-image ships",
              file=sys.stderr)
        return 2
    model = load_tokenizer(args.model, weights=args.weights, random_init=args.random_init, seed=args.seed,
                           dtype=getattr(torch, args.dtype), device=args.device)
    size = args.size or model.config.image_size
    if size < model.config.token_stride:
        print(f"unilip reconstruct: --size {size} is smaller than one latent token "
              f"({model.config.token_stride} px)", file=sys.stderr)
        return 2
    sources: list = [(str(p), Path(p)) for p in args.images]
    if args.builtin:
        sources += list(builtin_photos().items())
    out_dir = Path(args.out)
    records = reconstruct_files(model, sources, out_dir, size, progress=not args.no_progress)
    for record in records:
        print(record.to_json(), flush=True)
    ok = [r for r in records if r.status == "ok"]
    failed = len(records) - len(ok)
    mean_psnr = sum(r.psnr_db for r in ok) / len(ok) if ok else None
    summary = {"model": args.model, "weights_source": model.weights_source, "seed": args.seed, "size": size,
               "config": model.config.to_dict(), "n_ok": len(ok), "n_failed": failed,
               "mean_psnr_db": mean_psnr, "builtin_photos": list(BUILTIN_PHOTOS) if args.builtin else [],
               "environment": environment_report()}
    (out_dir / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in records))
    (out_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    logging.getLogger("unilip").info("%d reconstructed, %d failed; mean PSNR %s dB; outputs in %s", len(ok), failed,
                                     f"{mean_psnr:.2f}" if mean_psnr is not None else "n/a", out_dir)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unilip", description="UniLIP: models, reconstruction and evaluation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    variants = sub.add_parser("variants", help="list the built-in model variants")
    variants.set_defaults(func=_cmd_variants)

    recon = sub.add_parser("reconstruct", help="reconstruct images with a UniLIP tokenizer; prints PSNR per image")
    _add_model_arguments(recon)
    recon.add_argument("images", nargs="*", help="image files")
    recon.add_argument("--builtin", action="store_true", help="also reconstruct the photos scikit-image ships")
    recon.add_argument("--out", required=True, help="output directory")
    recon.add_argument("--size", type=int, help="resolution: 224, 256 or 448 for the real variants "
                                                "(default: the variant's native size)")
    recon.add_argument("--no-progress", action="store_true", help="no progress bar")
    recon.set_defaults(func=_cmd_reconstruct)
    train = sub.add_parser("train", help="train the tokenizer or the generator (stages 1-3), or run the studies")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    tok = train_sub.add_parser("tokenizer", help="one stage of tokenizer training (resumes from OUT)")
    tok.add_argument("--config", required=True, help="training YAML, or a built-in recipe name "
                                                     "(see unilip/configs/train/)")
    tok.add_argument("--stage", type=int, choices=[1, 2, 3])
    tok.add_argument("--distill-weight", type=float, help="lambda of the self-distillation loss")
    tok.add_argument("--init", help="tokenizer to start from (saved directory or released weights)")
    tok.add_argument("--out", required=True)
    tok.add_argument("--max-steps", type=int)
    tok.add_argument("--fresh", action="store_true", help="discard OUT and start over")
    tok.add_argument("--no-progress", action="store_true")
    tok.set_defaults(func=_cmd_train_tokenizer)
    sweep = train_sub.add_parser("sweep", help="stage 2 once per distillation weight, evaluated and tabulated")
    sweep.add_argument("--config", required=True)
    sweep.add_argument("--distill-weights", default="0,0.1,1,10", help="comma-separated lambdas")
    sweep.add_argument("--out", required=True)
    sweep.add_argument("--stage1-steps", type=int)
    sweep.add_argument("--stage2-steps", type=int)
    sweep.add_argument("--teacher-steps", type=int, default=300)
    sweep.add_argument("--fresh", action="store_true")
    sweep.add_argument("--no-progress", action="store_true")
    sweep.set_defaults(func=_cmd_train_sweep)
    quick = sub.add_parser("quickstart", help="the whole distillation study on the CPU, with an HTML report")
    quick.add_argument("--out", default="runs/quickstart")
    quick.add_argument("--distill-weights", default="0,0.1,1")
    quick.add_argument("--fresh", action="store_true", help="start over instead of reusing finished phases")
    quick.add_argument("--no-progress", action="store_true")
    quick.set_defaults(func=_cmd_quickstart)
    from unilip import generation_cli

    generation_cli.register(sub, train_sub)
    _add_plugin_commands(sub)
    return parser


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from unilip.training.sweep import run_sweep

    weights = [float(w) for w in args.distill_weights.split(",") if w.strip()]
    files = run_sweep(_train_config_path("tiny-digits"), weights, args.out, fresh=args.fresh,
                      progress=not args.no_progress)
    sys.stdout.write(Path(files["markdown"]).read_text())
    print(f"\nreport: {files['html']} (open it in a browser); also {files['report_markdown']}, "
          "results.csv, metrics_vs_lambda.png, reconstructions.png")
    return 0


def _train_config_path(value: str) -> Path:
    path = Path(value)
    if path.is_file():
        return path
    builtin = Path(__file__).parent / "configs" / "train" / f"{value}.yaml"
    if builtin.is_file():
        return builtin
    names = sorted(p.stem for p in builtin.parent.glob("*.yaml"))
    raise FileNotFoundError(f"training config {value!r} is neither a file nor a built-in recipe ({', '.join(names)})")


def _cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from unilip.training.config import load_train_config
    from unilip.training.tokenizer_trainer import train_tokenizer

    config = load_train_config(_train_config_path(args.config), stage=args.stage, distill_weight=args.distill_weight,
                               init=args.init, max_steps=args.max_steps)
    final = train_tokenizer(config, args.out, progress=not args.no_progress, fresh=args.fresh)
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per process
        print(json.dumps({"final": str(final), "stage": config.stage, "distill_weight": config.losses.distill_weight}))
    return 0


def _cmd_train_sweep(args: argparse.Namespace) -> int:
    from unilip.training.sweep import run_sweep

    weights = [float(w) for w in args.distill_weights.split(",") if w.strip()]
    files = run_sweep(_train_config_path(args.config), weights, args.out, stage1_steps=args.stage1_steps,
                      stage2_steps=args.stage2_steps, teacher_steps=args.teacher_steps, fresh=args.fresh,
                      progress=not args.no_progress)
    sys.stdout.write(Path(files["markdown"]).read_text() if "markdown" in files else "")
    print(json.dumps({k: str(v) for k, v in files.items()}))
    return 0


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    # Other installed packages (the evaluation harness: `unilip eval`) add commands through the
    # "unilip.cli" entry-point group, so this package never imports them.
    from importlib.metadata import entry_points

    for entry in entry_points(group="unilip.cli"):
        entry.load()(sub)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unilip`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from unilip.checkpoints import CheckpointError

    try:
        return args.func(args)
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f"unilip {args.command}: error: {error}", file=sys.stderr)
        return 2
