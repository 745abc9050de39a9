"""The tiny generator study: train the whole UniLIP stack on the CPU and check what it generates.

A small GenEval: a detector checks that the image says what the prompt asked. Here the "detector" is
the frozen digit classifier of the tokenizer study (the teacher encoder's features read by the frozen
head), the prompts are "a handwritten digit seven", and the score is the fraction of generated images
it reads as the digit asked for (chance: 10 %). Editing gets the same measure: a held-out digit image,
"make it the digit three" (always a different digit from the source's), and the fraction of edited
images read as a three.

Phases (each skipped when its output exists, so a rerun resumes; ``fresh`` starts over):

1. teacher: the tiny encoder trained to classify digits; frozen head on its features (the classifier);
2. tokenizer stage 1: bridge and pixel decoder trained on the frozen teacher encoder (the latent space);
3. tiny LLM pretraining: a random LLM carries nothing a generator could follow, so it gets a little
   causal-LM pretraining on the digit prompts first (``evals.studies.tiny_llm``), then stays frozen;
4. generator stage 2: queries, connector, projector and DiT trained by flow matching on UniLIP
   latents, text-to-image and editing, from the recipe;
5. evaluation, report (JSON, Markdown, sample grid) and export of a self-contained model directory
   (generator, text tokenizer, classifier head) that ``unilip generate --model DIR`` reads.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unilip.training.config import RECIPES_DIR

CLASSIFIER_FILE = "digit-classifier.safetensors"
DEFAULT_GENERATOR_RECIPE = RECIPES_DIR / "tiny-digits-generator.yaml"
DEFAULT_TOKENIZER_RECIPE = RECIPES_DIR / "tiny-digits.yaml"


def _say(message: str) -> None:
    print(f"[generator study] {message}", file=sys.stderr, flush=True)


@torch.no_grad()
def classify_digits(model_tokenizer, head, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Digit labels the frozen classifier (teacher features -> frozen head) reads in [0, 1] images."""
    labels = []
    for start in range(0, len(images), batch_size):
        labels.append(head(model_tokenizer.encode_features(images[start : start + batch_size])).argmax(-1))
    return torch.cat(labels)


def _pil_batch(images) -> torch.Tensor:
    return torch.stack(
        [torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1) for image in images]
    )


def evaluate_generator(
    model_dir: str | Path,
    classifier: str | Path,
    *,
    seeds_per_digit: int = 20,
    edits: int = 200,
    steps: int = 20,
    guidance: float = 4.5,
    seed: int = 0,
    batch_size: int = 50,
) -> dict[str, Any]:
    """Text-to-image and edit accuracy of a digits generator, read by the frozen classifier.

    Text-to-image: ``seeds_per_digit`` images per digit (seeds ``seed .. seed + n - 1``). Editing: the
    first ``edits`` held-out test digits, each asked to become ``(label + 1 + i % 9) % 10`` (never its
    own digit). Returns accuracies with binomial standard errors, confusion counts and settings.
    """
    from evals.studies.understanding import FeatureHead
    from unilip.pipelines import load_pipeline
    from unilip.training.digits import DIGIT_NAMES, load_digits_split
    from unilip.training.generator_data import digit_caption, digit_instruction

    pipeline = load_pipeline(model_dir, batch_size=batch_size)
    head = FeatureHead.load(classifier)
    tokenizer = pipeline.model.tokenizer
    started = time.perf_counter()
    prompts = [digit_caption(label) for label in range(10)]
    generated = pipeline.generate(prompts, n=seeds_per_digit, seed=seed, steps=steps, guidance=guidance)
    t2i_seconds = time.perf_counter() - started
    wanted = torch.arange(10).repeat_interleave(seeds_per_digit)
    read = classify_digits(tokenizer, head, _pil_batch([image for row in generated for image in row]))
    confusion = torch.zeros(10, 10, dtype=torch.long)
    for w, r in zip(wanted.tolist(), read.tolist(), strict=True):
        confusion[w, r] += 1

    images, labels = load_digits_split("test", size=tokenizer.config.image_size, seed=0)
    count = min(edits, len(labels))
    targets = [(int(labels[i]) + 1 + i % 9) % 10 for i in range(count)]
    from unilip.pipelines import tensor_to_pil

    sources = tensor_to_pil(images[:count])
    started = time.perf_counter()
    edited = pipeline.edit_many(
        sources,
        [digit_instruction(t) for t in targets],
        [seed + i for i in range(count)],
        steps=steps,
        guidance=guidance,
    )
    edit_seconds = time.perf_counter() - started
    edit_read = classify_digits(tokenizer, head, _pil_batch(edited))
    reference = classify_digits(tokenizer, head, images)

    def rate(hits: torch.Tensor) -> dict[str, float]:
        p = float(hits.float().mean())
        return {"value": p, "se": float(np.sqrt(p * (1 - p) / max(1, len(hits)))), "n": int(len(hits))}

    return {
        "t2i_accuracy": rate(read == wanted),
        "t2i_per_digit": {DIGIT_NAMES[d]: float((read[wanted == d] == d).float().mean()) for d in range(10)},
        "t2i_confusion": confusion.tolist(),
        "edit_accuracy": rate(edit_read == torch.tensor(targets)),
        "edit_kept_source_digit": rate(edit_read == labels[:count]),
        "classifier_on_real_test_digits": rate(reference == labels),
        "chance": 0.1,
        "settings": {
            "seeds_per_digit": seeds_per_digit,
            "edits": count,
            "steps": steps,
            "guidance": guidance,
            "seed": seed,
        },
        "seconds": {"t2i": t2i_seconds, "edit": edit_seconds},
        "_samples": generated,
        "_edit_pairs": list(zip(sources, edited, targets, strict=True)),
    }


def sample_grid(generated, edit_pairs, path: Path, columns: int = 8) -> Path:
    """A PNG: one row per digit of text-to-image samples, then rows of (source -> edit) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unilip.training.digits import DIGIT_NAMES

    rows = [np.concatenate([np.asarray(image) for image in row[:columns]], axis=1) for row in generated]
    size = rows[0].shape[0]
    pairs = edit_pairs[: columns // 2 * 2]
    edit_rows = []
    for start in range(0, len(pairs), columns // 2):
        tiles = []
        for source, edited, _ in pairs[start : start + columns // 2]:
            tiles += [np.asarray(source), np.asarray(edited)]
        edit_rows.append(np.concatenate(tiles, axis=1))
    figure, axes = plt.subplots(
        2,
        1,
        figsize=(columns * 0.9, (len(rows) + len(edit_rows)) * 0.9 + 1.2),
        gridspec_kw={"height_ratios": [len(rows), max(1, len(edit_rows))]},
    )
    axes[0].imshow(np.concatenate(rows, axis=0))
    axes[0].set_yticks([size * (i + 0.5) for i in range(len(rows))], [f'"{DIGIT_NAMES[i]}"' for i in range(len(rows))])
    axes[0].set_xticks([])
    axes[0].set_title('text-to-image: "a handwritten digit ..." (8 seeds)', fontsize=9)
    if edit_rows:
        axes[1].imshow(np.concatenate(edit_rows, axis=0))
        per_row = columns // 2
        for number, (_, _, target) in enumerate(pairs):  # each edit's request, under its result
            axes[1].text(
                size * (2 * (number % per_row) + 1.5),
                size * (number // per_row + 1) - 2,
                f"→{DIGIT_NAMES[target]}",
                color="yellow",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        axes[1].set_xticks([])
        axes[1].set_yticks([])
        axes[1].set_title('editing: source, then "make it the digit ..."', fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def pretrain_tiny_llm(out: Path, config, steps: int) -> Path:
    """The generator's starting point: its variant with random weights, then the tiny LLM pretrained
    (``evals.studies.tiny_llm``) and copied into the connector; saved with its text tokenizer."""
    from evals.studies.tiny_llm import digit_corpus, pretrain_llm
    from unilip.prompts import load_text_tokenizer
    from unilip.variants import load_generator

    model, text_dir = load_generator(config.variant, random_init=True, seed=config.seed)
    text_tokenizer = load_text_tokenizer(text_dir)
    summary = pretrain_llm(
        model, text_tokenizer, digit_corpus(model.config.image_tokens), steps=steps, seed=config.seed, progress=False
    )
    model.save_pretrained(out)
    text_tokenizer.save_pretrained(str(out))
    (out / "pretraining.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out


def export_model(generator_dir: Path, classifier: Path, out: Path, provenance: dict[str, Any]) -> Path:
    """A self-contained model directory: generator, text tokenizer, classifier head and how it was made."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(generator_dir, out)
    shutil.copy(classifier, out / CLASSIFIER_FILE)
    shutil.copy(classifier.with_suffix(".json"), (out / CLASSIFIER_FILE).with_suffix(".json"))
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    return out


def run_generator_study(
    out_dir: str | Path,
    *,
    recipe: str | Path = DEFAULT_GENERATOR_RECIPE,
    tokenizer_recipe: str | Path = DEFAULT_TOKENIZER_RECIPE,
    generator_steps: int | None = None,
    tokenizer_steps: int | None = None,
    teacher_steps: int = 300,
    head_steps: int = 300,
    llm_steps: int = 300,
    seeds_per_digit: int = 20,
    edits: int = 200,
    fresh: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Every phase of the study (see the module docstring); returns the evaluation summary."""
    from evals.studies.understanding import train_frozen_head, train_teacher
    from unilip.provenance import environment_report
    from unilip.training.config import load_generator_train_config, load_train_config
    from unilip.training.generator_trainer import train_generator
    from unilip.training.phases import run_phase
    from unilip.training.tokenizer_trainer import train_tokenizer

    out = Path(out_dir)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    tokenizer_config = load_train_config(tokenizer_recipe)
    size = tokenizer_config.data.size
    teacher_dir, head_path = out / "teacher", out / "head.safetensors"
    run_phase(
        "teacher",
        (teacher_dir / "teacher.json").is_file(),
        lambda: train_teacher(
            teacher_dir,
            variant=tokenizer_config.variant,
            steps=teacher_steps,
            seed=tokenizer_config.seed,
            size=size,
            progress=progress,
        ),
        lambda: f"test accuracy {json.loads((teacher_dir / 'teacher.json').read_text())['test_accuracy']:.3f}",
        timings,
        _say,
    )
    run_phase(
        "classifier head",
        head_path.is_file(),
        lambda: train_frozen_head(teacher_dir, head_path, steps=head_steps, seed=tokenizer_config.seed, size=size),
        lambda: f"test accuracy {json.loads(head_path.with_suffix('.json').read_text())['test_accuracy']:.3f}",
        timings,
        _say,
    )
    tokenizer_dir = out / "tokenizer"
    stage1 = dataclasses.replace(tokenizer_config, stage=1, init=str(teacher_dir))
    run_phase(
        "tokenizer stage 1",
        (tokenizer_dir / "final" / "training.json").is_file(),
        lambda: train_tokenizer(stage1, tokenizer_dir, max_steps=tokenizer_steps, progress=progress),
        lambda: "bridge and decoder on the frozen teacher encoder",
        timings,
        _say,
    )
    llm_dir = out / "llm"
    run_phase(
        "tiny LLM pretraining",
        (llm_dir / "pretraining.json").is_file(),
        lambda: pretrain_tiny_llm(llm_dir, load_generator_train_config(recipe), llm_steps),
        lambda: "causal LM on the digit prompts, loss {first_loss:.3f} -> {last_loss:.3f}".format(
            **json.loads((llm_dir / "pretraining.json").read_text())
        ),
        timings,
        _say,
    )
    generator_config = load_generator_train_config(recipe, tokenizer=str(tokenizer_dir / "final"), init=str(llm_dir))
    generator_dir = out / "generator"
    run_phase(
        "generator stage 2",
        (generator_dir / "final" / "training.json").is_file(),
        lambda: train_generator(generator_config, generator_dir, max_steps=generator_steps, progress=progress),
        lambda: f"final loss {json.loads((generator_dir / 'log.jsonl').read_text().splitlines()[-1])['loss']:.4f}",
        timings,
        _say,
    )
    started = time.perf_counter()
    results = evaluate_generator(
        generator_dir / "final", head_path, seeds_per_digit=seeds_per_digit, edits=edits, seed=0
    )
    timings["evaluation"] = time.perf_counter() - started
    _say(
        f"text-to-image accuracy {results['t2i_accuracy']['value']:.3f}, edit accuracy "
        f"{results['edit_accuracy']['value']:.3f} (chance 0.1)"
    )
    report = out / "report"
    report.mkdir(exist_ok=True)
    sample_grid(results.pop("_samples"), results.pop("_edit_pairs"), report / "generator-samples.png")
    log = [json.loads(line) for line in (generator_dir / "log.jsonl").read_text().splitlines() if line]
    provenance = {
        "command": sys.argv,
        "recipe": str(recipe),
        "recipe_text": Path(recipe).read_text(),
        "tokenizer_recipe": str(tokenizer_recipe),
        "steps": {
            "teacher": teacher_steps,
            "classifier head": head_steps,
            "tiny LLM": llm_steps,
            "tokenizer stage 1": tokenizer_steps or tokenizer_config.optim.max_steps,
            "generator": generator_steps or generator_config.optim.max_steps,
        },
        "loss_first_last_50": [
            float(np.mean([r["loss"] for r in log[:50]])),
            float(np.mean([r["loss"] for r in log[-50:]])),
        ],
        "timings_s": timings,
        "environment": environment_report(),
    }
    summary = {**results, "provenance": provenance}
    (report / "generator.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (report / "generator.md").write_text(_markdown(results, timings))
    export_model(generator_dir / "final", head_path, out / "model", provenance)
    return summary


def _markdown(results: dict[str, Any], timings: dict[str, float]) -> str:
    def cell(entry: dict[str, float]) -> str:
        return f"{entry['value']:.3f} ± {entry['se']:.3f} (n = {entry['n']})"

    lines = [
        "| measure | value |",
        "|---|---|",
        f"| text-to-image: read as the prompted digit | {cell(results['t2i_accuracy'])} |",
        f"| editing: read as the requested digit | {cell(results['edit_accuracy'])} |",
        f"| editing: still read as the source digit | {cell(results['edit_kept_source_digit'])} |",
        f"| classifier on real held-out digits | {cell(results['classifier_on_real_test_digits'])} |",
        "| chance | 0.100 |",
        "",
        "Per digit (text-to-image): " + ", ".join(f"{k} {v:.2f}" for k, v in results["t2i_per_digit"].items()),
        "",
        "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
    ]
    return "\n".join(lines)
