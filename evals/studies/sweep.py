"""The distillation-weight ablation: stage 2 per lambda and seed from one stage-1 checkpoint, then evaluation.

For the tiny CPU study (a small-scale analogue of the paper's experiment, not its numbers):

1. a tiny encoder is trained to classify scikit-learn's digits (the *teacher*: features worth keeping);
2. a tiny InternVL3-architecture MLLM (the tiny LLM with the teacher's encoder and ``mlp1``) is instruction-tuned
   on training-split digits in the digits-vqa format, then frozen: it stands in for InternVL3, whose LLM stays
   unchanged when UniLIP's encoder is swapped in;
3. stage 1 trains the bridge and pixel decoder on the frozen teacher encoder;
4. stage 2 runs once per lambda and seed from that stage-1 result;
5. a positive control, fixed before any lambda result is seen: the stage-1 tokenizer with its encoder and
   ``mlp1`` weights perturbed by a stated amount (:data:`evals.studies.tiny_mllm.CONTROL_RELATIVE_NOISE`);
6. every model is evaluated on held-out digits through the harness's public API (``evals.run``): its encoder
   swapped into the frozen MLLM (``internvl:MLLM --encoder MODEL``) answering ``digits-vqa`` (MMBench-style
   circular MCQ, MME-style yes/no, MMVP-style pairs), reconstruction (``recon@standard``), and token cosine to
   the teacher;
7. one table (Markdown, CSV) with mean ± standard error over seeds, plots with error bars, an HTML page.

Each phase is skipped when its result exists, so a rerun resumes; ``fresh`` starts over.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unilip.training.phases import run_phase, say

RECON_BENCH = "recon@standard"
# Which digits-vqa headline fills each understanding column.
DIGITS_COLUMNS = {"mcq": "circular_accuracy", "yes_no": "acc_plus", "pairs": "pair_accuracy"}


def _lambda_name(value: float) -> str:
    return f"lambda-{value:g}"


def evaluate_reconstruction(
    model_dir: Path, data: Path, out: Path, batch_size: int = 32, limit: int | None = None
) -> dict[str, Any]:
    """The harness's reconstruction benchmark on a saved tokenizer (``evals.run``; the first ``limit`` images
    when given); returns its results."""
    import evals

    opt = [f"num_images={limit}"] if limit is not None else []
    (results,) = evals.run(
        str(model_dir), RECON_BENCH, out, data=str(data), batch_size=batch_size, no_progress=True, opt=opt
    )
    return results


def evaluate_understanding(
    mllm_dir: Path, model_dir: Path, data: Path, out: Path, limit: int | None = None
) -> dict[str, dict[str, Any]]:
    """The encoder of ``model_dir`` in the frozen MLLM, answering digits-vqa (the first ``limit`` units of each
    part when given): column -> metric cell."""
    from evals.studies.tiny_mllm import score_digits_vqa

    scores = score_digits_vqa(mllm_dir, model_dir, data, out, limit=limit)
    return {column: scores[measure] for column, measure in DIGITS_COLUMNS.items()}


def mean_se(values: list[float]) -> dict[str, Any]:
    """Mean and standard error across seeds (se None for one value; :func:`evals.benchmarks.kit.mean_se`), with
    the values kept."""
    from evals.benchmarks.kit import mean_se as kit_mean_se

    present = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not present:
        return {"mean": None, "se": None, "n": 0, "values": [], "reason": "not computed"}
    stats = kit_mean_se(present)
    return {"mean": stats["value"], "se": stats["se"], "n": stats["n"], "values": present}


def _single(value: float | None, se: float | None = None, reason: str | None = None) -> dict[str, Any]:
    """A metric of one run; ``se`` is the run's own standard error (over questions), when it has one."""
    if value is None:
        return {"mean": None, "se": None, "n": 0, "values": [], "reason": reason or "not computed"}
    return {"mean": float(value), "se": se, "n": 1, "values": [float(value)]}


def run_sweep(
    config_path: str | Path,
    distill_weights: list[float],
    out_dir: str | Path,
    *,
    seeds: int = 1,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    teacher_steps: int = 300,
    mllm_steps: int | None = None,
    fresh: bool = False,
    progress: bool = True,
    eval_limit: int | None = None,
) -> dict[str, Path]:
    """Teacher, frozen MLLM, stage 1, the control, stage 2 per lambda and seed, evaluation and report.

    ``eval_limit`` evaluates digits-vqa and reconstruction on the first N held-out units only (a smoke test's
    budget: the reconstruction folder's first N images are all zeros; the study's numbers need all 360).

    Returns the report's files (``markdown``, ``csv``, ``plot``, ``html``, ``report_markdown``, ``grid``).
    """
    import torch

    from evals.benchmarks.digits_vqa.data import PARTS, write_part
    from evals.studies.report import STUDY_METRICS, write_sweep_report
    from evals.studies.tiny_mllm import CONTROL_RELATIVE_NOISE, perturbed_encoder, train_tiny_mllm
    from evals.studies.understanding import token_cosine, train_teacher
    from unilip.tokenizer import UniLIPTokenizer
    from unilip.training.config import load_train_config
    from unilip.training.digits import export_digits_folder, load_digits_split
    from unilip.training.tokenizer_trainer import train_tokenizer

    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    if not distill_weights:
        raise ValueError("no distillation weight to sweep")
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

    teacher_dir, mllm_dir, digits_dir = out / "teacher", out / "mllm", out / "digits-vqa"
    phase(
        "teacher",
        (teacher_dir / "teacher.json").is_file(),
        lambda: train_teacher(
            teacher_dir, variant=base.variant, steps=teacher_steps, seed=base.seed, size=size, progress=progress
        ),
        lambda: f"digit classifier, test accuracy {read_json(teacher_dir / 'teacher.json')['test_accuracy']:.3f}",
    )
    for part in PARTS:
        write_part(digits_dir, part)
    mllm_options = {} if mllm_steps is None else {"steps": mllm_steps}
    phase(
        "frozen MLLM",
        (mllm_dir / "mllm.json").is_file(),
        lambda: train_tiny_mllm(
            teacher_dir,
            mllm_dir,
            data_dir=digits_dir,
            seed=base.seed,
            evaluate=False,  # the teacher is evaluated with every other model below
            progress=progress,
            **mllm_options,
        ),
        lambda: _mllm_summary(read_json(mllm_dir / "mllm.json")),
    )

    stage1 = out / "stage1"
    stage1_config = dataclasses.replace(base, stage=1, init=str(teacher_dir))
    phase(
        "stage 1",
        (stage1 / "final" / "training.json").is_file(),
        lambda: train_tokenizer(stage1_config, stage1, max_steps=stage1_steps, progress=progress),
        lambda: stage_summary(stage1),
    )
    control_dir = out / "control"
    phase(
        "positive control",
        (control_dir / "model.safetensors").is_file(),
        lambda: perturbed_encoder(stage1 / "final", control_dir, relative_noise=CONTROL_RELATIVE_NOISE, seed=base.seed),
        lambda: f"stage 1 with its encoder and mlp1 perturbed by {CONTROL_RELATIVE_NOISE:g} x each weight's std",
    )
    stage2_dirs: dict[float, list[Path]] = {}
    for weight in distill_weights:
        for seed_index in range(seeds):
            seed = base.seed + seed_index
            directory = out / f"stage2-{_lambda_name(weight)}-seed-{seed}"
            losses = dataclasses.replace(base.losses, distill_weight=weight)
            config = dataclasses.replace(base, stage=2, init=str(stage1 / "final"), losses=losses, seed=seed)
            phase(
                f"stage 2, λ={weight:g}, seed {seed}",
                (directory / "final" / "training.json").is_file(),
                lambda c=config, d=directory: train_tokenizer(c, d, max_steps=stage2_steps, progress=progress),
                lambda d=directory: stage_summary(d),
            )
            stage2_dirs.setdefault(weight, []).append(directory / "final")

    heldout = out / "heldout-digits"
    export_digits_folder("test", heldout, size=size, seed=0)
    images, labels = load_digits_split("test", size=size, seed=0)
    teacher = UniLIPTokenizer.from_pretrained(teacher_dir)
    started = time.perf_counter()

    teacher_digits: dict[str, Any] = {}

    def measure(name: str, directory: Path, reconstruct: bool) -> dict[str, Any]:
        """One model's metrics: digits-vqa through the frozen MLLM, token cosine, and (unless the teacher,
        whose decoder was never trained) reconstruction."""
        eval_dir = out / "eval" / name
        tokenizer = UniLIPTokenizer.from_pretrained(directory)
        with torch.no_grad():
            measured: dict[str, Any] = {"token_cosine": token_cosine(tokenizer, teacher, images)}
        if teacher_digits and _same_encoder(tokenizer, teacher):
            # Stage 1 froze the encoder: the MLLM reads the very same tokens (checked tensor by tensor), so its
            # answers are the teacher's; asking again would only cost time.
            measured["digits"] = teacher_digits
            measured["digits_run"] = out / "eval" / teacher_dir.name / "digits"
        else:
            measured["digits"] = evaluate_understanding(
                mllm_dir, directory, digits_dir, eval_dir / "digits", limit=eval_limit
            )
            measured["digits_run"] = eval_dir / "digits"
        if directory == teacher_dir:
            teacher_digits.update(measured["digits"])
        if reconstruct:
            results = evaluate_reconstruction(directory, heldout, eval_dir / "recon", limit=eval_limit)
            measured["recon"] = results
            measured["recon_run"] = eval_dir / "recon" / results["benchmark"]
        return measured

    references = [
        ("teacher", "reference", teacher_dir, False),
        ("stage 1 (frozen encoder)", "reference", stage1 / "final", True),
        (f"positive control: stage 1, encoder + {CONTROL_RELATIVE_NOISE:g} × noise", "control", control_dir, True),
    ]
    rows: list[dict[str, Any]] = []
    eval_dirs: dict[str, Path] = {}
    for name, role, directory, reconstruct in references:
        key = directory.parent.name if directory.name == "final" else directory.name
        measured = measure(key, directory, reconstruct)
        rows.append({"name": name, "role": role, "distill_weight": None, "seeds": 1, "metrics": _metrics(measured)})
        if reconstruct:
            eval_dirs[name] = out / "eval" / key / "recon" / measured["recon"]["benchmark"]
    measured_runs: dict[float, list[dict[str, Any]]] = {}
    for weight, directories in stage2_dirs.items():
        runs = [measure(directory.parent.name, directory, True) for directory in directories]
        measured_runs[weight] = runs
        per_seed = [_metrics(run) for run in runs]
        metrics = {key: mean_se([metric[key]["mean"] for metric in per_seed]) for key in (m.key for m in STUDY_METRICS)}
        rows.append(
            {"name": "stage 2", "role": "variant", "distill_weight": weight, "seeds": len(runs), "metrics": metrics}
        )
        eval_dirs[f"stage 2, λ={weight:g}"] = (
            out / "eval" / directories[0].parent.name / "recon" / runs[0]["recon"]["benchmark"]
        )
    paired = paired_against_baseline(measured_runs)
    timings["evaluation"] = time.perf_counter() - started
    say(f"evaluation: {len(rows)} rows on {len(labels)} held-out digits ({timings['evaluation']:.1f} s)")

    files = write_sweep_report(rows, out / "report", STUDY_METRICS, title=STUDY_TITLE)
    from evals.studies.html_report import write_study_report
    from unilip.provenance import environment_report

    provenance = {
        "command": sys.argv,
        "recipe": str(config_path),
        "recipe_text": Path(config_path).read_text(),
        "distill_weights": distill_weights,
        "seeds": [base.seed + k for k in range(seeds)],
        "steps": {
            "teacher": teacher_steps,
            "frozen MLLM": read_json(mllm_dir / "mllm.json").get("steps"),
            "stage 1": stage1_steps or base.optim.max_steps,
            "stage 2": stage2_steps or base.optim.max_steps,
        },
        "positive control": f"stage 1's encoder and mlp1, each weight matrix + N(0, ({CONTROL_RELATIVE_NOISE:g} x "
        "its std)^2), fixed before any λ result",
        "heldout": f"{len(labels)} digits (scikit-learn load_digits, stratified 20% test split, seed 0, {size} px)"
        + (f"; digits-vqa and reconstruction on the first {eval_limit} units only" if eval_limit is not None else ""),
        "timings_s": timings,
        "environment": environment_report(),
    }
    (out / "report" / "sweep.json").write_text(
        json.dumps({**provenance, "rows": rows, "paired": paired}, indent=2, default=str)
    )
    grid = _reconstruction_grid(heldout, eval_dirs)
    findings = describe_findings(rows, paired)
    files.update(
        write_study_report(
            out / "report",
            rows,
            files["markdown"].read_text(),
            files["plot"],
            grid,
            provenance,
            what_this_is=WHAT_THIS_IS,
            findings=findings,
            title=STUDY_TITLE,
            paired=paired,
        )
    )
    (out / "report" / "findings.txt").write_text(findings + "\n")
    return files


STUDY_TITLE = "Tiny distillation study: does self-distillation keep the encoder's understanding?"
WHAT_THIS_IS = (
    "A CPU-scale analogue of UniLIP's stage-2 ablation, not the paper's experiment or numbers. A tiny encoder "
    "trained to classify handwritten digits is the teacher; a tiny InternVL3-architecture MLLM is instruction-tuned "
    "on training-split digits with that encoder and then frozen. Each reconstruction-trained encoder (stage 2 at "
    "each distillation weight λ, several seeds) is swapped into the frozen MLLM, as the paper swaps UniLIP into "
    "InternVL3, and answers held-out digits in the formats of MMBench (circular multiple choice), MME (yes/no "
    "pairs, acc+) and MMVP (pairs of confusable digits), scored by the same code as those benchmarks. A positive "
    "control (the stage-1 encoder with its weights perturbed by a fixed amount) shows the measure can see damage. "
    "± is the standard error over seeds for stage 2, over questions for single runs."
)


def _same_encoder(tokenizer: Any, teacher: Any) -> bool:
    """Whether two tokenizers' encoder and ``mlp1`` weights are equal, tensor by tensor."""
    ours, theirs = tokenizer.state_dict(), teacher.state_dict()
    keys = [key for key in ours if key.startswith(("encoder.", "mlp1."))]
    return keys == [key for key in theirs if key.startswith(("encoder.", "mlp1."))] and all(
        ours[key].equal(theirs[key]) for key in keys
    )


def _mllm_summary(info: dict[str, Any]) -> str:
    return f"{info.get('steps')} steps, final loss {info.get('final_train_loss', float('nan')):.4f}"


def _metrics(measured: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One run's metric cells (``mean`` the run's value, ``se`` its own standard error when it has one)."""
    metrics = {"token_cosine": _single(measured["token_cosine"])}
    for column, cell in measured["digits"].items():
        if cell.get("status") == "not_computed":
            metrics[column] = _single(None, reason=cell.get("reason"))
        else:
            metrics[column] = _single(cell["value"], cell.get("se"))
    recon = measured.get("recon")
    for column in ("psnr", "ssim"):
        cell = recon["metrics"].get(column) if recon else None
        if cell is None or cell.get("status") == "not_computed":
            reason = "the teacher's decoder was never trained" if recon is None else (cell or {}).get("reason")
            metrics[column] = _single(None, reason=reason)
        else:
            metrics[column] = _single(cell["value"], cell.get("se"))
    return metrics


# The harness run and the metric of its results.json behind each study column a paired test can read (token cosine
# is measured in the study itself, not by a harness benchmark, so it has no stored per-unit values).
PAIRED_COLUMNS = {
    "mcq": ("digits_run", DIGITS_COLUMNS["mcq"]),
    "yes_no": ("digits_run", DIGITS_COLUMNS["yes_no"]),
    "pairs": ("digits_run", DIGITS_COLUMNS["pairs"]),
    "psnr": ("recon_run", "psnr"),
    "ssim": ("recon_run", "ssim"),
}


def _benchmark_run_with(run_dir: Path, metric: str) -> Path:
    """The benchmark directory under ``run_dir`` (or ``run_dir`` itself) whose results.json reports ``metric``."""
    from evals.runtime.runner import RESULTS

    for results in [run_dir / RESULTS, *sorted(run_dir.glob(f"*/{RESULTS}"))]:
        if results.is_file() and metric in json.loads(results.read_text()).get("metrics", {}):
            return results.parent
    raise FileNotFoundError(f"no benchmark run under {run_dir} reports {metric}")


def paired_against_baseline(
    measured_runs: dict[float, list[dict[str, Any]]], baseline_weight: float = 0.0
) -> list[dict[str, Any]]:
    """Each λ's runs against the baseline λ's (λ = 0: no distillation), column by column, on the same units.

    Args:
        measured_runs: λ -> its runs, one per seed (seeds in the same order in every λ: seed k of each λ starts
            from the same stage-1 checkpoint with the same data order), each with the harness runs it was
            measured by (``digits_run``, ``recon_run``).
        baseline_weight: the λ the others are tested against.

    Returns:
        One dict per λ and column: ``distill_weight``, ``baseline``, ``column``, ``metric`` and either the test
        (``difference``, ``ci`` on the metric's scale, ``p``, ``n``, ``unit``, ``test``) or ``note`` (why there is
        none). Empty when the sweep has no baseline λ.
    """
    from evals.report.paired import paired_over_seeds, unit_values_in

    if baseline_weight not in measured_runs:
        return []
    cache: dict[Path, Any] = {}

    def values_of(measured: dict[str, Any], run_key: str, metric: str) -> Any:
        bench_dir = _benchmark_run_with(Path(measured[run_key]), metric)
        if bench_dir not in cache:
            cache[bench_dir] = unit_values_in(bench_dir)
        unit_values = cache[bench_dir]
        return None if unit_values is None or metric not in unit_values.values else unit_values

    entries: list[dict[str, Any]] = []
    for weight in sorted(measured_runs):
        if weight == baseline_weight:
            continue
        for column, (run_key, metric) in PAIRED_COLUMNS.items():
            entry: dict[str, Any] = {
                "distill_weight": weight,
                "baseline": baseline_weight,
                "column": column,
                "metric": metric,
            }
            base = [values_of(measured, run_key, metric) for measured in measured_runs[baseline_weight]]
            mine = [values_of(measured, run_key, metric) for measured in measured_runs[weight]]
            if any(values is None for values in base + mine):
                entries.append({**entry, "note": f"{metric} has no per-unit values to pair"})
                continue
            scale = float(mine[0].scale.get(metric, 1.0))
            stat = paired_over_seeds(base, mine, metric)
            entries.append(
                {
                    **entry,
                    "difference": stat.difference * scale,
                    "ci": [stat.ci_low * scale, stat.ci_high * scale],
                    "p": stat.p_value,
                    "n": stat.n,
                    "unit": mine[0].unit,
                    "test": stat.test,
                }
            )
    return entries


def describe_findings(rows: list[dict[str, Any]], paired: Sequence[dict[str, Any]] = ()) -> str:
    """What the study showed, in numbers with their standard errors, whichever way they fall; with ``paired``
    (:func:`paired_against_baseline`), each λ's understanding against λ = 0 on the same questions too."""
    teacher = next(row for row in rows if row["name"] == "teacher")
    control = next(row for row in rows if row["role"] == "control")
    variants = sorted((row for row in rows if row["role"] == "variant"), key=lambda row: row["distill_weight"])
    lines = []
    for key, label in (("mcq", "MCQ circular accuracy"), ("yes_no", "yes/no acc+"), ("pairs", "pair accuracy")):
        t, c = teacher["metrics"][key], control["metrics"][key]
        parts = [f"teacher {_pm(t)}", f"control {_pm(c)}"]
        parts += [f"λ={row['distill_weight']:g} {_pm(row['metrics'][key])}" for row in variants]
        lines.append(f"{label} (%): " + "; ".join(parts) + ".")
    if len(variants) >= 2:
        low, high = variants[0], variants[-1]
        for key, label in (("token_cosine", "token cosine"), ("mcq", "MCQ circular accuracy")):
            a, b = low["metrics"][key], high["metrics"][key]
            if a["mean"] is None or b["mean"] is None:
                continue
            difference = b["mean"] - a["mean"]
            se = _combined_se(a, b)
            verdict = (
                "within noise (less than 2 standard errors)"
                if se == 0.0 or abs(difference) < 2 * se
                else f"{abs(difference) / se:.1f} standard errors"
            )
            lines.append(
                f"{label}, λ={high['distill_weight']:g} minus λ={low['distill_weight']:g}: {difference:+.4g} "
                f"± {se:.2g} ({verdict})."
            )
    labels = {"mcq": "MCQ circular accuracy", "yes_no": "yes/no acc+", "pairs": "pair accuracy"}
    for entry in paired:
        if entry["column"] not in labels or "note" in entry:
            continue
        low, high = entry["ci"]
        verdict = "significant" if entry["p"] < 0.05 else "not significant"
        lines.append(
            f"{labels[entry['column']]}, λ={entry['distill_weight']:g} minus λ={entry['baseline']:g} on the same "
            f"{entry['n']} {entry['unit']}s: {entry['difference']:+.1f} points, 95% CI [{low:+.1f}, {high:+.1f}], "
            f"p = {entry['p']:.4f} ({verdict} at 0.05)."
        )
    for key, label in (("mcq", "MCQ circular accuracy"), ("yes_no", "yes/no acc+"), ("pairs", "pair accuracy")):
        t, c = teacher["metrics"][key], control["metrics"][key]
        if t["mean"] is None or c["mean"] is None:
            continue
        se = _combined_se(t, c)
        if t["mean"] - c["mean"] <= 2 * se:
            lines.append(
                f"{label} does not separate the teacher from the damaged control ({_pm(t)} vs {_pm(c)}): "
                "it carries no information in this study."
            )
    t, c = teacher["metrics"]["mcq"], control["metrics"]["mcq"]
    if t["mean"] is not None and c["mean"] is not None:
        se = _combined_se(t, c)
        gap = t["mean"] - c["mean"]
        seen = "detected" if se > 0 and gap > 3 * se else "NOT detected: the measure is not sensitive enough"
        lines.append(f"Positive control, teacher minus control MCQ accuracy: {gap:.1f} ± {se:.1f} points ({seen}).")
    return "\n".join(lines)


def _combined_se(first: dict[str, Any], second: dict[str, Any]) -> float:
    """The standard error of a difference of two cells (independent; a missing se counts 0)."""
    return math.hypot(first["se"] or 0.0, second["se"] or 0.0)


def _pm(cell: dict[str, Any]) -> str:
    if cell["mean"] is None:
        return "not computed"
    return f"{cell['mean']:.1f}" + (f" ± {cell['se']:.1f}" if cell.get("se") is not None else "")


def _reconstruction_grid(heldout: Path, eval_dirs: dict[str, Path]):
    """Originals (the first held-out image of each digit that every model reconstructed: all of them, unless the
    evaluation was limited) beside each model's reconstructions."""
    from evals.runtime.runner import load_record
    from evals.studies.html_report import reconstruction_grid

    def reconstructed(path: Path) -> bool:
        item_id = path.relative_to(heldout).as_posix()
        return all(load_record(bench_dir, "produce", item_id) is not None for bench_dir in eval_dirs.values())

    firsts = [next(filter(reconstructed, sorted((heldout / str(label)).glob("*.png"))), None) for label in range(10)]
    chosen = [path for path in firsts if path is not None]
    ids = [p.relative_to(heldout).as_posix() for p in chosen]
    columns = [("original", chosen)]
    for name, bench_dir in eval_dirs.items():
        # Each item's produce record names its reconstruction.
        columns.append((name, [bench_dir / load_record(bench_dir, "produce", item_id)["output"] for item_id in ids]))
    return [title for title, _ in columns], reconstruction_grid(columns)
