"""``unilip`` command line: model-side subcommands. Logs go to stderr, results to stdout and files."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from unilip.devices import DEVICE_HELP
from unilip.outdir import OVERWRITE_HELP

if TYPE_CHECKING:
    from unilip.generation_cli import ExternalLoader

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="variant name (see `unilip variants`), variant .yaml, saved tokenizer directory, "
        "released UniLIP model directory, released tokenizer .pth, a repo id in the local Hugging Face cache, "
        "or ADAPTER:MODEL (diffusers-ae:DIR ...) where an installed plug-in provides adapters",
    )
    parser.add_argument("--weights", help="weights for a variant name: .pth, model directory or .safetensors")
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="use random weights for a variant that has released ones (for testing)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random initialisation (default 0)")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights dtype (default float32)")


def _cmd_variants(args: argparse.Namespace) -> int:
    from unilip.variants import get_variant, list_variants

    for name in list_variants():
        spec = get_variant(name)
        print(f"{name}\t{spec.description}")
    return 0


def _cmd_reconstruct(args: argparse.Namespace, load_external: ExternalLoader | None = None) -> int:
    """``unilip reconstruct``. ``load_external``: for a model reference another package resolves (the evaluation
    harness wraps this command for ``ADAPTER:MODEL``), called with the device once the output folder is claimed;
    it returns an object with ``describe()`` and ``reconstruct(images)``."""
    from collections import Counter

    import torch

    from unilip.data import BUILTIN_PHOTOS, builtin_photos, list_image_sources, printable
    from unilip.devices import resolve_device
    from unilip.errors import EXIT_FAILED, EXIT_OK
    from unilip.outdir import claim_output_dir, invocation_of, write_run
    from unilip.pipelines import reconstruct_files
    from unilip.provenance import environment_report
    from unilip.variants import load_tokenizer

    if not args.images and not args.builtin:
        raise ValueError("give IMAGE files, or --builtin for the photos scikit-image ships")
    device = resolve_device(args.device)
    out_dir = Path(args.out)
    invocation = invocation_of(vars(args))
    claim_output_dir(out_dir, invocation, args.overwrite)
    adapter = load_external(device) if load_external is not None else None
    if adapter is None:
        model = load_tokenizer(
            args.model,
            weights=args.weights,
            random_init=args.random_init,
            seed=args.seed,
            dtype=getattr(torch, args.dtype),
            device=device,
        )
        size = args.size or model.config.image_size
        if size < model.config.token_stride:
            raise ValueError(f"--size {size} is smaller than one latent token ({model.config.token_stride} px)")
        reconstructor, identity = model, {"weights_source": model.weights_source, "config": model.config.to_dict()}
    else:
        size = args.size or getattr(adapter, "native_size", None)
        if not size:
            raise ValueError(f"{args.model} declares no native resolution; pass --size")
        described = adapter.describe()
        reconstructor = adapter.reconstruct
        identity = {"weights_source": described.get("weights_source"), "config": described}
    sources: list = []
    for given in args.images:
        if Path(given).is_dir():
            # A folder: every image under it, its reconstruction at the same relative path (what folder: reads).
            listing = list_image_sources("folder", Path(given))
            for skipped in listing.skipped:
                logging.getLogger("unilip").warning("%s: skipped %s (%s)", given, printable(skipped.id), skipped.reason)
            stems = [PurePosixPath(entry.id).with_suffix("").as_posix() for entry in listing.entries]
            # a.jpg and a.png of one folder keep their extensions (a.jpg.recon.png): folder: tells them apart.
            shared = {stem for stem, count in Counter(stems).items() if count > 1}
            sources += [
                (entry.id, Path(entry.source[1]), entry.id if stem in shared else stem)
                for entry, stem in zip(listing.entries, stems, strict=True)
            ]
        else:
            sources.append((str(given), Path(given)))
    if args.builtin:
        sources += list(builtin_photos().items())
    records = reconstruct_files(reconstructor, sources, out_dir, size, progress=not args.no_progress)
    for record in records:
        print(record.to_json(), flush=True)
    ok = [r for r in records if r.status == "ok"]
    failed = len(records) - len(ok)
    mean_psnr = sum(r.psnr_db for r in ok) / len(ok) if ok else None
    summary = {
        "model": args.model,
        "weights_source": identity["weights_source"],
        "seed": args.seed,
        "size": size,
        "device": device,
        "config": identity["config"],
        "n_ok": len(ok),
        "n_failed": failed,
        "mean_psnr_db": mean_psnr,
        "builtin_photos": list(BUILTIN_PHOTOS) if args.builtin else [],
        "environment": environment_report(),
    }
    (out_dir / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in records))
    written = [Path(p) for r in ok for p in (r.input_path, r.output_path)] + [out_dir / "results.jsonl"]
    write_run(out_dir, invocation, written, summary)
    logging.getLogger("unilip").info(
        "%d reconstructed, %d failed; mean PSNR %s dB; outputs in %s",
        len(ok),
        failed,
        f"{mean_psnr:.2f}" if mean_psnr is not None else "n/a",
        out_dir,
    )
    return EXIT_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unilip", description="UniLIP: models, reconstruction and evaluation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    variants = sub.add_parser("variants", help="list the built-in model variants")
    variants.set_defaults(func=_cmd_variants)

    recon = sub.add_parser("reconstruct", help="reconstruct images with a UniLIP tokenizer; prints PSNR per image")
    _add_model_arguments(recon)
    recon.add_argument(
        "images",
        nargs="*",
        help="image files, or folders (every image under them, reconstructions at the same relative paths)",
    )
    recon.add_argument("--builtin", action="store_true", help="also reconstruct the photos scikit-image ships")
    recon.add_argument("--out", required=True, help="output directory")
    recon.add_argument(
        "--size",
        type=int,
        help="resolution: 224, 256 or 448 for the real variants (default: the variant's native size)",
    )
    recon.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    recon.add_argument("--no-progress", action="store_true", help="no progress bar")
    recon.set_defaults(func=_cmd_reconstruct)
    train = sub.add_parser("train", help="train the tokenizer or the generator (stages 1-3), or run the studies")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    tok = train_sub.add_parser("tokenizer", help="one stage of tokenizer training (resumes from OUT)")
    tok.add_argument(
        "--config", required=True, help="training YAML, or a built-in recipe name: " + ", ".join(_tokenizer_recipes())
    )
    tok.add_argument("--stage", type=int, choices=[1, 2, 3])
    tok.add_argument("--distill-weight", type=float, help="lambda of the self-distillation loss")
    tok.add_argument("--init", help="tokenizer to start from (saved directory or released weights)")
    tok.add_argument("--out", required=True)
    tok.add_argument("--max-steps", type=int)
    tok.add_argument("--fresh", action="store_true", help="discard OUT and start over")
    tok.add_argument("--no-progress", action="store_true")
    tok.set_defaults(func=_cmd_train_tokenizer)
    from unilip import generation_cli

    generation_cli.register(sub, train_sub)
    _add_plugin_commands(sub, train_sub)
    return parser


def _tokenizer_recipes() -> list[str]:
    """The built-in recipes of ``train tokenizer`` (the generator's are named ``*-generator*``)."""
    from unilip.training.config import list_recipes

    return [name for name in list_recipes() if "generator" not in name]


def _cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from unilip.training.config import load_train_config, recipe_path
    from unilip.training.tokenizer_trainer import train_tokenizer

    config = load_train_config(
        recipe_path(args.config),
        stage=args.stage,
        distill_weight=args.distill_weight,
        init=args.init,
        max_steps=args.max_steps,
    )
    final = train_tokenizer(config, args.out, progress=not args.no_progress, fresh=args.fresh)
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per process
        print(json.dumps({"final": str(final), "stage": config.stage, "distill_weight": config.losses.distill_weight}))
    return 0


def _add_plugin_commands(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    # Other installed packages (the evaluation harness and the studies that train and evaluate) add commands
    # through the "unilip.cli" entry-point group: this package knows none of them, and never imports or runs them.
    from importlib.metadata import entry_points

    for entry in entry_points(group="unilip.cli"):
        entry.load()(sub, train_sub)


def command_name(args: argparse.Namespace) -> str:
    """``unilip train tokenizer``, ``unilip reconstruct`` ...: how error lines name the command. A command with
    sub-commands (``train``, or one a plug-in adds) keeps the chosen one in ``<command>_command``."""
    words = ["unilip", args.command]
    sub = getattr(args, f"{args.command}_command", None)
    return " ".join(words + ([sub] if sub else []))


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def describe_os_error(error: OSError) -> str:
    """One line for an I/O error: the file, what went wrong, and for a full disk which disk and what to do."""
    import errno

    where = error.filename if error.filename is not None else None
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        disk = _mount_point(Path(where)) if where else None
        return (
            f"no space left on the disk holding {where or 'the output'}"
            + (f" (mounted at {disk})" if disk else "")
            + "; free some space, then run the same command to resume (finished work is kept)"
        )
    reason = error.strerror or str(error) or type(error).__name__
    return f"{reason}: {where}" if where is not None else reason


def _checkpoint_errors() -> tuple[type[Exception], ...]:
    """``CheckpointError`` once ``unilip.checkpoints`` is loaded; before, nothing can have raised it.

    Read from ``sys.modules`` so that mapping an error never imports torch (``unilip.checkpoints`` does):
    commands that never touch a model stay light.
    """
    checkpoints = sys.modules.get("unilip.checkpoints")
    error = getattr(checkpoints, "CheckpointError", None)
    return (error,) if isinstance(error, type) else ()


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command and map what it raises onto the exit-code contract (``unilip.errors``).

    Only this function turns exceptions into exit codes, so every command follows one contract: user
    errors (bad input, refused requests, missing or unreadable files, full disks) are one line on stderr
    and exit 2; Ctrl-C exits 130 saying what is kept; anything else is a bug: traceback and exit 3.
    """
    import traceback

    from unilip.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, Interrupted

    name = command_name(args)
    try:
        return args.func(args)
    except KeyboardInterrupt as error:
        detail = f": {error}" if isinstance(error, Interrupted) else ""
        print(f"{name}: interrupted{detail}; run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError, *_checkpoint_errors()) as error:
        if args.verbose:
            traceback.print_exc()
        message = describe_os_error(error) if isinstance(error, OSError) else str(error)
        print(f"{name}: error: {' '.join(message.split()) if len(message) < 400 else message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # a bug: keep its traceback
        traceback.print_exc()
        print(f"{name}: internal error (a bug; please report it with the traceback above)", file=sys.stderr)
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unilip`` console script; the exit code follows ``unilip.errors``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return run_command(args)
