"""The distillation-weight ablation: stage 2 once per lambda from one stage-1 checkpoint, then evaluation.

For the tiny CPU study (a small-scale analogue of the paper's experiment, not its numbers):

1. a tiny encoder is trained to classify scikit-learn's digits (the *teacher*: features worth keeping),
   and a downstream head is trained once on its frozen features (it stands in for InternVL3's LLM,
   which stays unchanged when UniLIP's encoder is swapped in);
2. stage 1 trains the bridge and pixel decoder on the frozen teacher encoder;
3. stage 2 runs once per lambda from that stage-1 result, same seed, same data order;
4. every model is evaluated on held-out digits: reconstruction through the harness's public API
   (``evals.run``, benchmark ``recon@standard``), and understanding preservation (token cosine to the
   teacher, frozen-head accuracy);
5. one table (Markdown, CSV) and a plot of each metric against lambda.

Each phase is skipped when its result exists, so a rerun resumes; ``fresh`` starts over.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from unilip.training.phases import run_phase, say

RECON_BENCH = "recon@standard"


def _lambda_name(value: float) -> str:
    return f"lambda-{value:g}"


def evaluate_reconstruction(model_dir: Path, data: Path, out: Path, batch_size: int = 32) -> dict[str, Any]:
    """The harness's reconstruction benchmark on a saved tokenizer (``evals.run``); returns its results."""
    import evals

    (results,) = evals.run(str(model_dir), RECON_BENCH, out, data=str(data), batch_size=batch_size, no_progress=True)
    return results


def run_sweep(
    config_path: str | Path,
    distill_weights: list[float],
    out_dir: str | Path,
    *,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    teacher_steps: int = 300,
    head_steps: int = 300,
    fresh: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Teacher, stage 1, stage 2 per lambda, evaluation and report; returns the report's files."""
    import torch

    from evals.studies.report import write_sweep_report
    from evals.studies.understanding import FeatureHead, train_frozen_head, train_teacher, understanding_metrics
    from unilip.tokenizer import UniLIPTokenizer
    from unilip.training.config import load_train_config
    from unilip.training.digits import export_digits_folder, load_digits_split
    from unilip.training.tokenizer_trainer import train_tokenizer

    out = Path(out_dir)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_train_config(config_path)
    size = base.data.size
    timings: dict[str, float] = {}

    def phase(name: str, done: bool, work, summary) -> None:
        run_phase(name, done, work, summary, timings)

    def read_json(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text())

    def stage_summary(directory: Path) -> str:
        last = json.loads((directory / "log.jsonl").read_text().splitlines()[-1])
        return f"{last['step']} steps, final loss {last['loss/total']:.4f}"

    teacher_dir, head_path = out / "teacher", out / "head.safetensors"
    phase(
        "teacher",
        (teacher_dir / "teacher.json").is_file(),
        lambda: train_teacher(
            teacher_dir, variant=base.variant, steps=teacher_steps, seed=base.seed, size=size, progress=progress
        ),
        lambda: f"digit classifier, test accuracy {read_json(teacher_dir / 'teacher.json')['test_accuracy']:.3f}",
    )
    phase(
        "frozen head",
        head_path.is_file(),
        lambda: train_frozen_head(teacher_dir, head_path, steps=head_steps, seed=base.seed, size=size),
        lambda: (
            f"test accuracy on the teacher's features {read_json(head_path.with_suffix('.json'))['test_accuracy']:.3f}"
        ),
    )

    stage1 = out / "stage1"
    stage1_config = dataclasses.replace(base, stage=1, init=str(teacher_dir))
    phase(
        "stage 1",
        (stage1 / "final" / "training.json").is_file(),
        lambda: train_tokenizer(stage1_config, stage1, max_steps=stage1_steps, progress=progress),
        lambda: stage_summary(stage1),
    )
    stage2_dirs: dict[float, Path] = {}
    for weight in distill_weights:
        directory = out / f"stage2-{_lambda_name(weight)}"
        losses = dataclasses.replace(base.losses, distill_weight=weight)
        config = dataclasses.replace(base, stage=2, init=str(stage1 / "final"), losses=losses)
        phase(
            f"stage 2, λ={weight:g}",
            (directory / "final" / "training.json").is_file(),
            lambda c=config, d=directory: train_tokenizer(c, d, max_steps=stage2_steps, progress=progress),
            lambda d=directory: stage_summary(d),
        )
        stage2_dirs[weight] = directory / "final"

    heldout = out / "heldout-digits"
    export_digits_folder("test", heldout, size=size, seed=0)
    images, labels = load_digits_split("test", size=size, seed=0)
    teacher = UniLIPTokenizer.from_pretrained(teacher_dir)
    head = FeatureHead.load(head_path)
    models: list[tuple[str, str, float | None, Path]] = [
        ("teacher", "reference", None, teacher_dir),
        ("stage 1 (frozen encoder)", "reference", None, stage1 / "final"),
    ]
    models += [(f"stage 2, λ={w:g}", "variant", w, d) for w, d in stage2_dirs.items()]
    rows = []
    eval_dirs: dict[str, Path] = {}
    started = time.perf_counter()
    for name, role, weight, directory in models:
        tokenizer = UniLIPTokenizer.from_pretrained(directory)
        with torch.no_grad():
            row: dict[str, Any] = {
                "name": name,
                "role": role,
                "distill_weight": weight,
                **understanding_metrics(tokenizer, teacher, head, images, labels),
            }
        if name == "teacher":
            # The teacher's bridge and decoder were never trained: its reconstruction means nothing.
            row.update({"psnr": None, "ssim": None})
        else:
            eval_dir = out / "eval" / directory.parent.name
            results = evaluate_reconstruction(directory, heldout, eval_dir)
            eval_dirs[name] = eval_dir / results["benchmark"]  # its folder in the run directory
            for metric, value in results["metrics"].items():
                row[metric] = value.get("value") if value.get("status") != "not_computed" else None
            row["coverage"] = f"{results['coverage']['ok']}/{results['coverage']['expected']}"
        rows.append(row)
    timings["evaluation"] = time.perf_counter() - started
    say(f"evaluation: {len(models)} models on {len(labels)} held-out digits ({timings['evaluation']:.1f} s)")
    files = write_sweep_report(rows, out / "report")
    from evals.studies.html_report import write_study_report
    from unilip.provenance import environment_report

    provenance = {
        "command": sys.argv,
        "recipe": str(config_path),
        "recipe_text": Path(config_path).read_text(),
        "distill_weights": distill_weights,
        "seed": base.seed,
        "steps": {
            "teacher": teacher_steps,
            "frozen head": head_steps,
            "stage 1": stage1_steps or base.optim.max_steps,
            "stage 2": stage2_steps or base.optim.max_steps,
        },
        "heldout": f"{len(labels)} digits (scikit-learn load_digits, stratified 20% test split, seed 0, {size} px)",
        "timings_s": timings,
        "environment": environment_report(),
    }
    (out / "report" / "sweep.json").write_text(json.dumps({**provenance, "rows": rows}, indent=2, default=str))
    grid = _reconstruction_grid(heldout, eval_dirs)
    files.update(
        write_study_report(out / "report", rows, files["markdown"].read_text(), files["plot"], grid, provenance)
    )
    return files


def _reconstruction_grid(heldout: Path, eval_dirs: dict[str, Path]):
    """Originals (the first held-out image of each digit) beside each model's reconstructions."""
    from evals.runtime.runner import load_record
    from evals.studies.html_report import reconstruction_grid

    chosen = [sorted((heldout / str(label)).glob("*.png"))[0] for label in range(10)]
    ids = [p.relative_to(heldout).as_posix() for p in chosen]
    columns = [("original", chosen)]
    for name, bench_dir in eval_dirs.items():
        # Each item's produce record names its reconstruction.
        columns.append((name, [bench_dir / load_record(bench_dir, "produce", item_id)["output"] for item_id in ids]))
    return [title for title, _ in columns], reconstruction_grid(columns)
