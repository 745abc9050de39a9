"""Real-size generator timings: UniLIP-1B / -3B architectures with random weights, on one GPU.

What it measures (per variant, bf16 weights with the pixel decoder in float32 as upstream):

- text-to-image: the dual condition for 4 prompts plus their null prompts, 20 DPM-Solver++ steps with
  CFG (both branches in one batch), decoding to 448 px; seconds per call and per image;
- editing: the same for one 448 px reference image (256 image tokens in the prompt);
- one stage-2 training step (flow matching, queries/connector/projector/DiT trained) at a given batch;
- peak GPU memory of each.

The weights are random (the released ones are not on this machine), so this says nothing about image
quality; it checks that the real-size path runs and how fast. Prompts are token-id sequences of
realistic length in InternVL3's id space (no text tokenizer is needed for timing).

    python benchmarks/generator_real_size.py --variants unilip-1b,unilip-3b --device cuda --out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def _prompt_ids(model, batch: int, text_tokens: int, with_image: bool, generator: torch.Generator) -> tuple:
    config = model.config
    # Ordinary text ids: below Qwen2's special tokens (151643) and above the tiny tokenizer's (0-5).
    vocab = model.language_model.embed_tokens.num_embeddings
    pieces = [torch.randint(6, min(151643, vocab), (batch, text_tokens), generator=generator)]
    if with_image:
        pieces.append(
            torch.tensor(
                [[config.image_start_id] + [config.image_context_id] * config.image_tokens + [config.image_end_id]]
            ).expand(batch, -1)
        )
    pieces.append(torch.full((batch, 1), config.image_start_id))
    ids = torch.cat(pieces, dim=1)
    return ids, torch.ones_like(ids)


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / repeats
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def measure(
    variant: str, device: torch.device, dtype: torch.dtype, images: int, train_batch: int, repeats: int
) -> dict:
    from unilip.generator import GeneratorConfig, build_generator
    from unilip.pipelines import sample_latents
    from unilip.training.generator_trainer import configure_trainable, flow_matching_loss, sample_sigmas
    from unilip.variants import get_variant

    spec = get_variant(variant)
    started = time.perf_counter()
    model = build_generator(spec.tokenizer, GeneratorConfig.from_dict(spec.generator), device=device, seed=0)
    model.to(dtype)
    model.tokenizer.decoder.float()
    build_seconds = time.perf_counter() - started
    counts = {
        name: sum(p.numel() for p in getattr(model, name).parameters()) / 1e6
        for name in ("language_model", "llm_connector", "projector", "dit", "tokenizer")
    }
    generator = torch.Generator().manual_seed(0)
    size = spec.tokenizer.image_size

    @torch.no_grad()
    def sample(batch: int, with_image: bool):
        ids, mask = _prompt_ids(model, batch, 24, with_image, generator)
        nulls, null_mask = _prompt_ids(model, batch, 24, with_image, generator)
        ids, mask, nulls, null_mask = (t.to(device) for t in (ids, mask, nulls, null_mask))
        reference = torch.rand(batch, 3, size, size, device=device, dtype=dtype) if with_image else None
        condition, cmask = model.condition(ids, mask, reference)
        null_condition, nmask = model.condition(nulls, null_mask, reference)
        latents = sample_latents(model.dit, condition, cmask, null_condition, nmask, list(range(batch)), steps=20)
        out = model.latent_to_image(latents)
        assert out.shape == (batch, 3, size, size), out.shape
        return out

    t2i_seconds, t2i_peak = _timed(lambda: sample(images, False), device, repeats)
    edit_seconds, edit_peak = _timed(lambda: sample(1, True), device, repeats)

    configure_trainable(model, stage=2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def train_step():
        ids, mask = _prompt_ids(model, train_batch, 48, False, generator)
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            x0 = model.image_to_latent(torch.rand(train_batch, 3, size, size, device=device, dtype=dtype)).float()
        sigmas = sample_sigmas(train_batch, generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        condition, cmask = model.condition(ids, mask)
        loss = flow_matching_loss(model.dit, x0, condition, cmask, sigmas, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train_seconds, train_peak = _timed(train_step, device, repeats)
    return {
        "variant": variant,
        "parameters_millions": counts,
        "build_seconds": build_seconds,
        "t2i": {
            "images": images,
            "steps": 20,
            "seconds_per_call": t2i_seconds,
            "seconds_per_image": t2i_seconds / images,
            "peak_gib": t2i_peak,
        },
        "edit": {"images": 1, "steps": 20, "seconds_per_call": edit_seconds, "peak_gib": edit_peak},
        "train_step": {
            "batch": train_batch,
            "seconds": train_seconds,
            "peak_gib": train_peak,
            "note": "bf16 weights and AdamW on bf16 parameters (no master copy), stage 2 parts",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="unilip-1b,unilip-3b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    from unilip.provenance import environment_report

    results = {
        "environment": environment_report(),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "runs": [],
    }
    for variant in args.variants.split(","):
        run = measure(variant.strip(), device, getattr(torch, args.dtype), args.images, args.train_batch, args.repeats)
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
        del run
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
