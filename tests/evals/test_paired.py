"""Paired comparisons (``unilip eval compare --paired``): the statistics, and the section on synthetic run dirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evals.report.compare import build_comparison, render
from evals.report.paired import mcnemar_exact, paired_binary, paired_bootstrap
from evals.report.results import load_results
from evals.runtime.runner import record_path

RESAMPLES = 1000  # small: the tests check calibration, not the p-value's resolution


# ---------------------------------------------------------------------------------------- statistics
def test_bootstrap_detects_a_known_effect() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.normal(0.0, 1.0, 200)
    run = baseline + 0.5 + rng.normal(0.0, 1.0, 200)  # +0.5, differences with sd 1
    stat = paired_bootstrap(baseline, run, resamples=RESAMPLES, seed=0)
    assert stat.p_value < 0.05
    assert 0 < stat.ci_low < stat.difference < stat.ci_high
    assert stat.difference == pytest.approx(float(np.mean(run - baseline)))
    assert stat.n == 200


def test_binary_detects_a_known_effect() -> None:
    rng = np.random.default_rng(2)
    baseline = (rng.random(400) < 0.55).astype(float)
    run = (rng.random(400) < 0.70).astype(float)
    stat = paired_binary(baseline, run, resamples=RESAMPLES, seed=0)
    assert stat.p_value < 0.05
    assert stat.ci_low > 0
    assert "McNemar" in stat.test


def test_no_effect_keeps_the_false_positive_rate() -> None:
    rng = np.random.default_rng(3)
    continuous = binary = 0
    repetitions = 200
    for seed in range(repetitions):
        baseline = rng.normal(0.0, 1.0, 100)
        run = baseline + rng.normal(0.0, 1.0, 100)
        continuous += paired_bootstrap(baseline, run, resamples=RESAMPLES, seed=seed).p_value < 0.05
        right_a = (rng.random(150) < 0.6).astype(float)
        right_b = (rng.random(150) < 0.6).astype(float)
        binary += paired_binary(right_a, right_b, resamples=200, seed=seed).p_value < 0.05
    # Seen with these seeds: bootstrap 12/200 = 0.060, McNemar 15/200 = 0.075 (below 0.08, as the brief asks).
    assert continuous / repetitions <= 0.08, f"bootstrap false-positive rate {continuous / repetitions}"
    assert binary / repetitions <= 0.08, f"McNemar false-positive rate {binary / repetitions}"


def test_mcnemar_exact_on_a_worked_table() -> None:
    # b = 10, c = 2: 2 P(X <= 2), X ~ Bin(12, 1/2) = 2 (1 + 12 + 66) / 4096 = 0.03857...
    assert mcnemar_exact(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0


def test_no_difference_is_p_one() -> None:
    stat = paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], resamples=100)
    assert (stat.difference, stat.ci_low, stat.ci_high, stat.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap([1.0], [1.0, 2.0])


# ---------------------------------------------------------------------------------------- run directories
def _write_run(
    root: Path, model: str, psnr: dict[str, float], *, fingerprint: str = "f" * 16, failed: tuple[str, ...] = ()
) -> Path:
    """A recon@standard run directory as the harness writes it: manifest, score records, results.json."""
    bench_dir = root / "recon@standard"
    (bench_dir / "score").mkdir(parents=True)
    spec = {"benchmark": "recon", "variant": "standard", "version": "2", "knobs": {}, "name": "recon@standard"}
    spec["fingerprint"] = fingerprint
    (bench_dir / "manifest.json").write_text(json.dumps({"spec": spec, "items": list(psnr)}))
    ok = {}
    for item_id, value in psnr.items():
        status = "failed" if item_id in failed else "ok"
        record = {"id": item_id, "stage": "score", "status": status, "fingerprint": "x", "psnr": value, "ssim": 0.5}
        record_path(bench_dir, "score", item_id).write_text(json.dumps(record))
        if status == "ok":
            ok[item_id] = value
    mean = sum(ok.values()) / len(ok)
    results = {
        "benchmark": "recon@standard",
        "spec": spec,
        "model": {"model": model, "weights_sha256": model * 8},
        "coverage": {"expected": len(psnr), "ok": len(ok), "failed": len(failed), "missing": 0},
        "metrics": {"psnr": {"value": mean, "se": 0.1, "n": len(ok)}, "ssim": {"value": 0.5, "se": 0.0, "n": len(ok)}},
        "metric_order": ["psnr", "ssim"],
        "metric_directions": {"psnr": "higher", "ssim": "higher"},
    }
    (bench_dir / "results.json").write_text(json.dumps(results))
    return root


def test_paired_section_on_synthetic_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    ids = [f"img{i:03d}" for i in range(60)]
    base_values = {i: float(v) for i, v in zip(ids, rng.normal(20.0, 2.0, len(ids)), strict=True)}
    better = {i: v + 1.0 + float(rng.normal(0.0, 0.5)) for i, v in base_values.items()}
    same = {i: v + float(rng.normal(0.0, 0.5)) for i, v in base_values.items()}
    base = _write_run(tmp_path / "base", "aaaa", base_values)
    good = _write_run(tmp_path / "good", "bbbb", better, failed=("img000", "img001"))
    flat = _write_run(tmp_path / "flat", "cccc", same)
    other = _write_run(tmp_path / "other", "dddd", base_values, fingerprint="e" * 16)
    results = load_results([base, good, flat, other])

    comparison = build_comparison(results, paired=str(base), resamples=500)
    by = {(e.row, e.metric): e for e in comparison.paired}
    good_psnr = by[("bbbb", "psnr")].stat
    assert good_psnr is not None and good_psnr.n == 58  # only the units scored ok in both runs
    shared = ids[2:]
    assert good_psnr.difference == pytest.approx(np.mean([better[i] - base_values[i] for i in shared]))
    assert good_psnr.p_value < 0.05 and good_psnr.ci_low > 0
    flat_psnr = by[("cccc", "psnr")].stat
    assert flat_psnr is not None and flat_psnr.n == 60 and flat_psnr.ci_low < 0 < flat_psnr.ci_high
    assert by[("dddd", None)].note is not None and by[("dddd", None)].note.startswith("not comparable")

    text = render(results, "md", paired=str(base), resamples=500)
    table, _, section = text.partition("Paired tests against aaaa")
    assert section, text
    # The best psnr (bbbb) differs significantly from the baseline: bold; ssim (all equal) has no best.
    bold_line = next(line for line in table.splitlines() if line.startswith("| bbbb "))
    assert bold_line.startswith("| bbbb | **20.8 ± 0.10** | 0.500 ± 0.0 |"), bold_line
    assert "**" not in table.replace(bold_line, "")
    row = next(line for line in section.splitlines() if line.startswith("| bbbb | recon@standard (1) | psnr |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == f"{good_psnr.difference:+.3f}"
    assert cells[6] == "58 images" and cells[7].startswith("paired bootstrap")
    assert "| dddd | recon@standard (2) |" in section and "not comparable" in section

    csv = render(results, "csv", paired=str(base), resamples=500)
    assert "recon@standard (1):psnr:paired_p" in csv.splitlines()[0]
    notes = render(results, "html", paired=str(base), resamples=500)
    assert "paired: bbbb vs aaaa, recon@standard (1) psnr: difference" in notes


def test_paired_values_are_the_records_the_results_counted(tmp_path: Path) -> None:
    """A record left from another model (another fingerprint than results.json's) is not paired: the aggregate did
    not count it either."""
    from evals.report.paired import unit_values_in

    run = _write_run(tmp_path / "run", "aaaa", {"img0": 20.0, "img1": 22.0, "img2": 30.0})
    bench_dir = run / "recon@standard"
    results = json.loads((bench_dir / "results.json").read_text())
    (bench_dir / "results.json").write_text(json.dumps({**results, "stage_fingerprints": {"score": "x"}}))
    stale = json.loads(record_path(bench_dir, "score", "img2").read_text())
    record_path(bench_dir, "score", "img2").write_text(json.dumps({**stale, "fingerprint": "another model"}))
    assert set(unit_values_in(bench_dir).values["psnr"]) == {"img0", "img1"}


def test_stratified_contributions_are_reweighed_on_the_units_given() -> None:
    """A metric that weighs strata (the mean of two task means): on every unit the mean of the contributions is
    the metric; on a subset it is the metric of that subset, so two runs compared on shared units agree."""
    from evals.benchmark import Strata, UnitValues

    values = {"a1": 1.0, "a2": 0.0, "a3": 1.0, "b1": 0.0}  # task a: 2/3, task b: 0
    unit_values = UnitValues(
        {"overall": values},
        {"overall": "continuous"},
        strata={"overall": Strata({"a1": "a", "a2": "a", "a3": "a", "b1": "b"}, {"a": 0.5, "b": 0.5})},
    )
    everything = unit_values.contributions("overall")
    assert np.mean(list(everything.values())) == pytest.approx((2 / 3 + 0) / 2)
    subset = unit_values.contributions("overall", ["a1", "a2", "b1"])  # task a: 1/2 on these units
    assert set(subset) == {"a1", "a2", "b1"} and np.mean(list(subset.values())) == pytest.approx((1 / 2 + 0) / 2)
    plain = UnitValues({"psnr": {"x": 1.0, "y": 3.0}}, {"psnr": "continuous"})
    assert plain.contributions("psnr", ["y"]) == {"y": 3.0}


def test_paired_reports_what_it_cannot_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evals.benchmarks.recon.benchmark import ReconstructionBenchmark

    base = _write_run(tmp_path / "base", "aaaa", {"a": 1.0, "b": 2.0})
    run = _write_run(tmp_path / "run", "bbbb", {"a": 2.0, "b": 3.0})
    monkeypatch.setattr(ReconstructionBenchmark, "unit_values", lambda self, bench_dir, ids: None)
    text = render(load_results([base, run]), "md", paired=str(base), resamples=100)
    assert "paired test not available for recon@standard" in text
    assert "**" not in text
    with pytest.raises(ValueError, match="--paired"):
        render(load_results([run]), "md", paired=str(base))


def test_paired_over_seeds_averages_each_arm_on_the_units_every_run_scored() -> None:
    from evals.benchmark import UnitValues
    from evals.report.paired import paired_over_seeds, paired_test

    rng = np.random.default_rng(3)
    units = [f"u{k}" for k in range(200)]
    base = [{unit: float(rng.random() < 0.5) for unit in units} for _ in range(2)]
    run = [{unit: float(rng.random() < 0.7) for unit in units} for _ in range(2)]
    del run[1]["u0"]  # a unit one run did not score is left out of every arm

    def arm(values: list[dict[str, float]]) -> list[UnitValues]:
        return [UnitValues({"acc": each}, {"acc": "binary"}, "question") for each in values]

    stat = paired_over_seeds(arm(base), arm(run), "acc", resamples=2000)
    shared = units[1:]
    expected = np.mean([(run[0][u] + run[1][u]) / 2 - (base[0][u] + base[1][u]) / 2 for u in shared])
    assert stat.n == len(shared) and stat.difference == pytest.approx(expected)
    assert "2 vs 2 seeds averaged per unit" in stat.test and "bootstrap" in stat.test
    assert stat.p_value < 0.05  # a 20-point effect on 199 units
    # One seed in each arm: the kind's own test (McNemar for correctness).
    single = paired_over_seeds(arm(base[:1]), arm(run[:1]), "acc", resamples=2000)
    assert single == paired_test("binary", [base[0][u] for u in units], [run[0][u] for u in units], resamples=2000)
    with pytest.raises(ValueError, match="no unit"):
        paired_over_seeds(arm([{"a": 1.0}]), arm([{"b": 1.0}]), "acc")
