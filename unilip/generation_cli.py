"""``unilip generate``, ``unilip edit`` and ``unilip train generator``.

(``unilip train generator-study`` is a study: the harness registers it, from ``evals.studies.cli``.)"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unilip.devices import DEVICE_HELP
from unilip.outdir import OVERWRITE_HELP

GENERATOR_MODEL_HELP = (
    "generator: a shipped model (tiny-digits), a saved or released UniLIP-1B/3B model directory (or its repo id "
    "in the local Hugging Face cache), a variant name with --random-init, or ADAPTER:MODEL "
    "(diffusers-pipe:DIR ...) where an installed plug-in provides adapters"
)
# A model another package resolves for a model-side command (the evaluation harness wraps ``reconstruct``,
# ``generate`` and ``edit`` for ``ADAPTER:MODEL`` references): device -> the loaded model, called once the output
# folder is claimed. The model has ``describe()`` and the method of its command.
ExternalLoader = Callable[[str], Any]
# UniLIP's sampler defaults (upstream's); an ADAPTER:MODEL uses its own unless --steps/--guidance are given.
SAMPLER_DEFAULTS = {"steps": 20, "guidance": 4.5, "flow_shift": 3.0}


def _add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=GENERATOR_MODEL_HELP)
    parser.add_argument("--weights", help="for a variant name: its released model directory")
    parser.add_argument("--random-init", action="store_true", help="random weights (testing only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of image k is SEED + k (default 0)")
    parser.add_argument(
        "--steps", type=int, help="sampling steps (UniLIP: DPM-Solver++, default 20 as upstream; adapters: theirs)"
    )
    parser.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (UniLIP default 4.5; adapters: theirs)"
    )
    parser.add_argument("--flow-shift", type=float, help="UniLIP: flow-sigma shift (default 3.0)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="weights dtype; the pixel decoder stays float32 as upstream",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument("--no-progress", action="store_true")


class _Sampler:
    """What ``unilip generate`` / ``unilip edit`` sample with: a UniLIP pipeline with its sampler settings, or an
    ``ADAPTER:MODEL``'s ``generate`` / ``edit``; and what run.json records of it."""

    def __init__(self, args: argparse.Namespace, device: str, load_external: ExternalLoader | None) -> None:
        import torch

        from unilip.pipelines import load_pipeline

        given = {"steps": args.steps, "guidance": args.guidance, "flow_shift": args.flow_shift}
        self.adapter = load_external(device) if load_external is not None else None
        self.progress = not args.no_progress
        if self.adapter is not None:
            described = self.adapter.describe()
            self.weights_source = described.get("weights_source")
            self.settings = {"seed": args.seed, "dtype": args.dtype, **given, "model": described}
            return
        # The loader keeps the pixel decoder in float32 whatever the rest runs in, as upstream decodes.
        self.pipeline = load_pipeline(
            args.model,
            args.weights,
            random_init=args.random_init,
            seed=args.seed,
            dtype=getattr(torch, args.dtype),
            device=device,
            batch_size=args.batch_size,
        )
        self.batch_size = args.batch_size
        self.sampler = {name: value if value is not None else SAMPLER_DEFAULTS[name] for name, value in given.items()}
        self.weights_source = self.pipeline.model.weights_source
        self.settings = {"seed": args.seed, **self.sampler, "dtype": args.dtype}

    def _fit_batch(self, rows: int) -> None:
        """Rows per model call for this command's ``rows`` images: at most ``--batch-size``, and never more than
        the images asked for. The pipeline fills a short call up to its batch size so that no row depends on the
        others in its call; this command's rows are all its own, so it pays no filler rows (its images then equal
        a full call's to float rounding, not bit for bit)."""
        self.pipeline.batch_size = max(1, min(self.batch_size, rows))

    def generate(self, prompts: list[str], n: int, seed: int) -> list[list]:
        if self.adapter is not None:
            return self.adapter.generate(prompts, n, seed)
        self._fit_batch(len(prompts) * n)
        return self.pipeline.generate(prompts, n=n, seed=seed, progress=self.progress, **self.sampler)

    def edit(self, image, instruction: str, seed: int):
        if self.adapter is not None:
            return self.adapter.edit(image, instruction, seed)
        self._fit_batch(1)
        return self.pipeline.edit(image, instruction, seed=seed, progress=self.progress, **self.sampler)


def _prepare(args: argparse.Namespace):
    """Device and output folder checked before the (slow) model load; returns (device, invocation)."""
    from unilip.devices import resolve_device
    from unilip.outdir import claim_output_dir, invocation_of

    device = resolve_device(args.device)
    invocation = invocation_of(vars(args))
    claim_output_dir(Path(args.out), invocation, args.overwrite)
    return device, invocation


def _write_run(
    out: Path, args: argparse.Namespace, invocation: dict, sampler: _Sampler, outputs: list[dict], device: str
) -> None:
    from unilip.outdir import write_run
    from unilip.provenance import environment_report

    write_run(
        out,
        invocation,
        [Path(o["path"]) for o in outputs],
        {
            "model": args.model,
            "weights_source": sampler.weights_source,
            "device": device,
            "settings": sampler.settings,
            "outputs": outputs,
            "environment": environment_report(),
        },
    )


def _cmd_generate(args: argparse.Namespace, load_external: ExternalLoader | None = None) -> int:
    """``unilip generate``; ``load_external`` as for ``unilip reconstruct`` (an object with ``generate``)."""
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += [line.strip() for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    device, invocation = _prepare(args)
    sampler = _Sampler(args, device, load_external)
    images = sampler.generate(prompts, args.n, args.seed)
    out = Path(args.out)
    outputs = []
    for index, (prompt, row) in enumerate(zip(prompts, images, strict=True)):
        for k, image in enumerate(row):
            path = out / f"{index:05d}" / f"{k:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            record = {"prompt": prompt, "index": index, "k": k, "seed": args.seed + k, "path": str(path)}
            outputs.append(record)
            print(json.dumps(record), flush=True)
    _write_run(out, args, invocation, sampler, outputs, device)
    return 0


def _cmd_edit(args: argparse.Namespace, load_external: ExternalLoader | None = None) -> int:
    """``unilip edit``; ``load_external`` as for ``unilip reconstruct`` (an object with ``edit``)."""
    from unilip.data import read_image

    image = read_image(Path(args.image))
    device, invocation = _prepare(args)
    sampler = _Sampler(args, device, load_external)
    edited = sampler.edit(image, args.instruction, args.seed)
    out = Path(args.out)
    path = out / f"{Path(args.image).stem}-edited.png"
    edited.save(path)
    record = {"image": args.image, "instruction": args.instruction, "seed": args.seed, "path": str(path)}
    print(json.dumps(record), flush=True)
    _write_run(out, args, invocation, sampler, [record], device)
    return 0


def _cmd_train_generator(args: argparse.Namespace) -> int:
    from unilip.training.config import load_generator_train_config, recipe_path
    from unilip.training.generator_trainer import train_generator

    config = load_generator_train_config(
        recipe_path(args.config),
        stage=args.stage,
        init=args.init,
        tokenizer=args.tokenizer,
        max_steps=args.max_steps,
        data_path=args.data,
    )
    final = train_generator(config, args.out, progress=not args.no_progress, fresh=args.fresh)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"final": str(final), "stage": config.stage}))
    return 0


def register(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    """Add the generation commands to the ``unilip`` parser and its ``train`` group."""
    generate = sub.add_parser("generate", help="text-to-image with a UniLIP generator")
    _add_generator_arguments(generate)
    generate.add_argument("--prompt", action="append", help="a caption (repeatable)")
    generate.add_argument("--prompts-file", help="one caption per line")
    generate.add_argument("-n", type=int, default=1, help="images per prompt (default 1)")
    generate.set_defaults(func=_cmd_generate)

    edit = sub.add_parser("edit", help="edit an image with a UniLIP generator")
    _add_generator_arguments(edit)
    edit.add_argument("--image", required=True)
    edit.add_argument("--instruction", required=True)
    edit.set_defaults(func=_cmd_edit)

    train = train_sub.add_parser("generator", help="one stage of generator training (resumes from OUT)")
    train.add_argument("--config", required=True, help="training YAML or built-in recipe name")
    train.add_argument("--stage", type=int, choices=[1, 2, 3])
    train.add_argument("--init", help="saved generator directory to start from")
    train.add_argument("--tokenizer", help="UniLIP tokenizer to load strictly (stages 2-3)")
    train.add_argument("--data", help="training examples (.jsonl) for recipes with data.dataset jsonl")
    train.add_argument("--out", required=True)
    train.add_argument("--max-steps", type=int)
    train.add_argument("--fresh", action="store_true")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_cmd_train_generator)
