"""Paired comparisons (``unilip eval compare --paired BASELINE_RUN``): each run against a baseline, unit by unit.

Two runs of one benchmark variant at one spec fingerprint score the same units (images, questions, question groups),
so their difference is measured on the units both scored ``ok``, which removes the spread between units from the
comparison. Each benchmark says what its units and per-unit values are (:meth:`evals.benchmark.Benchmark.unit_values`):

- continuous values (recon's per-image PSNR, SSIM, LPIPS): a paired bootstrap over units (seeded) gives the mean
  difference's 95% percentile interval and a two-sided p-value (the share of resampled differences, centred on the
  observed one, at least as far from it as the observed difference is from 0);
- binary values (an understanding benchmark's per-unit correctness): McNemar's exact test (a two-sided binomial test
  on the discordant units) for the p-value, and a paired bootstrap over units for the interval of the difference in
  accuracy.

Differences are the run minus the baseline, on the metric's scale (an accuracy in percent: percentage points).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESAMPLES = 10_000  # bootstrap resamples for a report: the p-value's resolution is 1 / (RESAMPLES + 1)
SEED = 0  # the bootstrap is seeded, so a report is reproducible
ALPHA = 0.05  # significance level: the interval is (1 - ALPHA) and a best value is bolded below it


# ---------------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class PairedStat:
    """One paired test: the mean difference (run minus baseline), its interval, the p-value and the test used."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    test: str


def _bootstrap_means(differences: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The means of ``resamples`` resamples (with replacement) of ``differences``; in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    n = len(differences)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = differences[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def paired_bootstrap(
    baseline: Sequence[float], run: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED
) -> PairedStat:
    """Paired bootstrap of the mean difference ``run - baseline`` over units (the two sequences aligned by unit).

    The interval is the percentile interval of the resampled means (level ``1 - ALPHA``). The two-sided p-value
    compares the resampled means, shifted to centre on 0 (the null of no difference), with the observed mean:
    ``(1 + #{|m* - m| >= |m|}) / (resamples + 1)``, never 0.

    Raises:
        ValueError: sequences of different lengths, or no unit.
    """
    a, b = np.asarray(baseline, dtype=float), np.asarray(run, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired values need two equal, non-empty sequences (got {a.shape} and {b.shape})")
    differences = b - a
    observed = float(differences.mean())
    means = _bootstrap_means(differences, resamples, seed)
    low, high = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    # A tolerance, so that a difference of exactly 0 (every resample 0 too) gives p = 1, not a rounding accident.
    extreme = int(np.sum(np.abs(means - observed) >= abs(observed) - 1e-12 * max(1.0, abs(observed))))
    p_value = (1 + extreme) / (resamples + 1)
    return PairedStat(observed, float(low), float(high), min(1.0, p_value), len(a), f"paired bootstrap ({resamples})")


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value for ``b`` units right only in one run and ``c`` right only in the other:
    ``min(1, 2 P(X <= min(b, c)))`` with X ~ Binomial(b + c, 1/2); 1 when no unit is discordant."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_binary(
    baseline: Sequence[float], run: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED
) -> PairedStat:
    """Difference in accuracy (``run - baseline``, as a fraction) over units right (1) or wrong (0) in both runs:
    McNemar's exact p-value, and the paired bootstrap's interval over units."""
    a, b = np.asarray(baseline, dtype=float), np.asarray(run, dtype=float)
    boot = paired_bootstrap(a, b, resamples=resamples, seed=seed)
    only_run = int(np.sum((b > 0.5) & (a <= 0.5)))
    only_baseline = int(np.sum((a > 0.5) & (b <= 0.5)))
    p_value = mcnemar_exact(only_run, only_baseline)
    test = f"McNemar exact ({only_run} vs {only_baseline} discordant); bootstrap CI ({resamples})"
    return PairedStat(boot.difference, boot.ci_low, boot.ci_high, p_value, boot.n, test)


def paired_test(
    kind: str, baseline: Sequence[float], run: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED
) -> PairedStat:
    """The test for a kind of unit value: ``continuous`` (paired bootstrap) or ``binary`` (McNemar exact)."""
    if kind == "binary":
        return paired_binary(baseline, run, resamples=resamples, seed=seed)
    if kind == "continuous":
        return paired_bootstrap(baseline, run, resamples=resamples, seed=seed)
    raise ValueError(f"unknown kind of unit value {kind!r} (continuous or binary)")


# ---------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class PairedEntry:
    """One line of the paired section: a run's metric against the baseline's, or why there is no test.

    ``stat`` is None when there is no test; ``note`` then says why (not comparable, not available ...).
    """

    row: str  # the run's row label in the table
    benchmark: str
    group: str  # the table's group of the run (the benchmark, numbered beside another fingerprint)
    metric: str | None
    stat: PairedStat | None = None
    unit: str = "item"
    scale: float = 1.0
    note: str | None = None

    @property
    def significant(self) -> bool:
        """Whether the difference from the baseline is significant at :data:`ALPHA`."""
        return self.stat is not None and self.stat.p_value < ALPHA


def _manifest_ids(bench_dir: Path) -> list[str]:
    from evals.files import read_json
    from evals.runtime.runner import MANIFEST

    return [str(item) for item in read_json(bench_dir / MANIFEST)["items"]]


def load_unit_values(result: Mapping[str, Any]) -> Any:
    """The run's :class:`evals.benchmark.UnitValues` (its benchmark's hook), None when the benchmark has none.

    Raises:
        ValueError: the benchmark is not registered.
    """
    from evals.benchmark import get_benchmark

    bench, _ = get_benchmark(str(result["benchmark"]))
    bench_dir = Path(str(result["_path"])).parent
    return bench.unit_values(bench_dir, _manifest_ids(bench_dir))


def unit_values_in(bench_dir: Path) -> Any:
    """The :class:`evals.benchmark.UnitValues` of the benchmark run in ``bench_dir`` (it holds a results.json),
    None when its benchmark has no per-unit values.

    Raises:
        FileNotFoundError: ``bench_dir`` holds no results.json.
        ValueError: the benchmark is not registered.
    """
    from evals.files import read_json
    from evals.runtime.runner import RESULTS

    path = Path(bench_dir) / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {bench_dir} is not a finished benchmark run")
    return load_unit_values({**read_json(path), "_path": str(path)})


def paired_over_seeds(
    baseline: Sequence[Any],
    run: Sequence[Any],
    metric: str,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PairedStat:
    """A paired test of ``metric`` between two arms of seeded runs (a λ against λ = 0), on the units every run
    scored (each run's :class:`evals.benchmark.UnitValues`; a metric that weighs strata reweighed on those units).

    Each arm's per-unit value is its mean over the arm's seeds. With one seed in each arm this is
    :func:`paired_test` of the metric's kind; with more, a unit's averaged correctness is no longer 0 or 1, so the
    test is the paired bootstrap over units of the seed-averaged differences: its interval covers the sampling of
    the units at these seeds, not the spread between seeds (a study reports that beside it).

    Raises:
        ValueError: an arm without a run, or no unit scored by every run.
    """
    if not baseline or not run:
        raise ValueError("each arm needs at least one run")
    runs = [*baseline, *run]
    shared = [unit for unit in runs[0].values[metric] if all(unit in values.values[metric] for values in runs[1:])]
    if not shared:
        raise ValueError("no unit was scored by every run")

    def averaged(arm: Sequence[Any]) -> list[float]:
        contributions = [values.contributions(metric, shared) for values in arm]
        return [sum(each[unit] for each in contributions) / len(arm) for unit in shared]

    kind = runs[0].kinds[metric]
    if len(baseline) == 1 and len(run) == 1:
        return paired_test(kind, averaged(baseline), averaged(run), resamples=resamples, seed=seed)
    stat = paired_bootstrap(averaged(baseline), averaged(run), resamples=resamples, seed=seed)
    seeds = f"{len(run)} vs {len(baseline)} seeds averaged per unit"
    return PairedStat(stat.difference, stat.ci_low, stat.ci_high, stat.p_value, stat.n, f"{stat.test}, {seeds}")


def paired_entries(
    results: list[dict[str, Any]],
    rows: Sequence[str],
    groups: Mapping[tuple[str, str], str],
    baseline: Sequence[int],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> list[PairedEntry]:
    """Every result not of the baseline against the baseline's result of the same benchmark variant and spec.

    Args:
        results: as :func:`evals.report.results.load_results` returns them.
        rows: each result's row label (aligned with ``results``).
        groups: (benchmark, fingerprint) -> the table's group name.
        baseline: the indices of ``results`` that are the baseline run's.
    """
    base_by_bench: dict[str, list[int]] = {}
    for index in baseline:
        base_by_bench.setdefault(str(results[index]["benchmark"]), []).append(index)
    cache: dict[int, Any] = {}

    def values_of(index: int) -> Any:
        if index not in cache:
            cache[index] = load_unit_values(results[index])
        return cache[index]

    entries: list[PairedEntry] = []
    for index, result in enumerate(results):
        if index in baseline:
            continue
        bench, fingerprint = str(result["benchmark"]), str(result["spec"]["fingerprint"])
        group = groups[(bench, fingerprint)]
        row = rows[index]
        same = [i for i in base_by_bench.get(bench, []) if results[i]["spec"]["fingerprint"] == fingerprint]
        if not same:
            others = [str(results[i]["spec"]["fingerprint"])[:8] for i in base_by_bench.get(bench, [])]
            why = (
                f"not comparable: spec {fingerprint[:8]}, the baseline's {' / '.join(others)}"
                if others
                else "the baseline has no run of it"
            )
            entries.append(PairedEntry(row, bench, group, None, note=why))
            continue
        mine, theirs = values_of(index), values_of(same[-1])  # the baseline's later run, as the table shows it
        if mine is None or theirs is None:
            entries.append(PairedEntry(row, bench, group, None, note=f"paired test not available for {bench}"))
            continue
        metrics = [name for name in mine.values if name in theirs.values]
        if not metrics:
            entries.append(PairedEntry(row, bench, group, None, note="no per-unit values in both runs"))
        for metric in metrics:
            shared = [unit for unit in mine.values[metric] if unit in theirs.values[metric]]
            scale = float(mine.scale.get(metric, 1.0))
            if not shared:
                entries.append(PairedEntry(row, bench, group, metric, unit=mine.unit, note="no unit scored in both"))
                continue
            # Both runs on the shared units only: a metric that weighs strata is reweighed on them alike.
            theirs_shared, mine_shared = theirs.contributions(metric, shared), mine.contributions(metric, shared)
            stat = paired_test(
                mine.kinds[metric],
                [theirs_shared[unit] for unit in shared],
                [mine_shared[unit] for unit in shared],
                resamples=resamples,
                seed=seed,
            )
            entries.append(PairedEntry(row, bench, group, metric, stat, mine.unit, scale))
    return entries


def _number(value: float, scale: float) -> str:
    scaled = value * scale
    if scaled == 0 or not math.isfinite(scaled):
        return f"{scaled:.3g}"
    decimals = min(6, max(0, 2 - math.floor(math.log10(abs(scaled)))))
    return f"{scaled:+.{decimals}f}"


def _p_text(p_value: float) -> str:
    return "<0.0001" if p_value < 1e-4 else f"{p_value:.4f}"


def entry_cells(entry: PairedEntry) -> dict[str, str]:
    """An entry as the paired table's text cells: run, benchmark, metric, difference, 95% CI, p, n, test."""
    cells = {"run": entry.row, "benchmark": entry.group, "metric": entry.metric or ""}
    if entry.stat is None:
        return {**cells, "difference": "", "95% CI": "", "p": "", "n": "", "test": entry.note or ""}
    stat = entry.stat
    return {
        **cells,
        "difference": _number(stat.difference, entry.scale),
        "95% CI": f"[{_number(stat.ci_low, entry.scale)}, {_number(stat.ci_high, entry.scale)}]",
        "p": _p_text(stat.p_value),
        "n": f"{stat.n} {entry.unit}s",
        "test": stat.test,
    }


def entry_note(entry: PairedEntry, baseline: str) -> str:
    """An entry as one footnote line (the LaTeX and HTML tables)."""
    cells = entry_cells(entry)
    where = f"{entry.row} vs {baseline}, {entry.group}" + (f" {entry.metric}" if entry.metric else "")
    if entry.stat is None:
        return f"paired: {where}: {entry.note}"
    return (
        f"paired: {where}: difference {cells['difference']}, 95% CI {cells['95% CI']}, p {cells['p']}, "
        f"n {cells['n']} ({cells['test']})"
    )


def markdown_section(entries: Sequence[PairedEntry], baseline: str) -> str:
    """The Markdown section under the table: one row per run, benchmark and metric."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    header = ["run", "benchmark", "metric", "difference", "95% CI", "p", "n", "test"]
    lines = [
        f"Paired tests against {cell(baseline)} (run minus baseline, on the units both scored; "
        f"bold in the table: best and p < {ALPHA:g}):",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for entry in entries:
        cells = entry_cells(entry)
        lines.append("| " + " | ".join(cell(cells[key]) for key in header) + " |")
    return "\n".join(lines) + "\n"
