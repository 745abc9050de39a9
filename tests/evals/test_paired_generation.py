"""Paired values of the generation benchmarks (GenEval, WISE, ImgEdit): on real run directories, the mean of a run's
unit values is the ``overall`` its results.json reports, and the paired test of two runs gives the difference of
their overalls; an item not scored ``ok`` is left out of the pairs."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from harness_helpers import DeleteBeforeStage
from judge_server import JudgeServer, answer
from PIL import Image
from test_geneval_benchmark import FAKE_SCORER, FakeGenerator, install_fake_official
from test_imgedit import EDITS, FakeEditor, write_imgedit
from test_wise import PROMPTS, prompt_id_of, write_wise_repo

from evals.adapter import ModelAdapter
from evals.benchmark import get_benchmark
from evals.report.compare import build_comparison
from evals.report.paired import unit_values_in
from evals.report.results import load_results
from evals.runtime.distributed import World
from evals.runtime.runner import run_benchmark

RESAMPLES = 200  # the tests check the difference, not the p-value's resolution


def _run(reference: str, options: dict, adapter: ModelAdapter, out: Path, wrap=None) -> dict:
    """One benchmark run into ``out/<bench@variant>``, its judge cache under ``out`` (a run never reuses another's)."""
    bench, variant = get_benchmark(reference)
    resolved = bench.resolve(variant, options, adapter)
    runnable = wrap(resolved) if wrap else resolved
    return run_benchmark(runnable, adapter, out / resolved.name, World(0, 1), 4, out / "cache", progress=False)


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values)


def _check_pairs(base: Path, run: Path, bench: str, metrics: list[str]) -> None:
    """The mean of each run's unit values is its overall (and other metrics); the paired difference of the runs,
    on units both scored, is the difference of their metrics when both scored the same units."""
    results = load_results([base, run])
    by_run = {Path(r["_path"]).parent.parent: r for r in results}
    values = {}
    for root in (base, run):
        metric_values = by_run[root]["metrics"]
        values[root] = unit_values_in(root / bench)
        assert values[root] is not None
        for metric in metrics:
            assert _mean(values[root].contributions(metric)) == pytest.approx(metric_values[metric]["value"], abs=1e-9)
    comparison = build_comparison(results, labels=[f"{base}=base", f"{run}=new"], paired=str(base), resamples=RESAMPLES)
    by_metric = {entry.metric: entry for entry in comparison.paired if entry.row == "new"}
    for metric in metrics:
        stat = by_metric[metric].stat
        assert stat is not None
        shared = [unit for unit in values[run].values[metric] if unit in values[base].values[metric]]
        mine, theirs = values[run].contributions(metric, shared), values[base].contributions(metric, shared)
        assert stat.n == len(shared)
        assert stat.difference == pytest.approx(np.mean([mine[u] - theirs[u] for u in shared]), abs=1e-12)
        if set(values[run].values[metric]) == set(values[base].values[metric]):
            # the same units scored: the difference of the two headlines
            expected = by_run[run]["metrics"][metric]["value"] - by_run[base]["metrics"][metric]["value"]
            assert stat.difference == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------------------------------- GenEval
# The fake official scorer, deciding each image by its bytes: two generators, two different outcomes.
HASHED_SCORER = FAKE_SCORER.replace("import argparse, json", "import argparse, hashlib, json").replace(
    "correct = int(name[:-4]) == 0 and int(sub) != 1",
    "correct = hashlib.sha256(open(os.path.join(folder, 'samples', name), 'rb').read()).digest()[0] % 3 == 0",
)


def test_geneval_unit_values_are_the_overall_and_pair_to_its_difference(tmp_path, monkeypatch):
    assert HASHED_SCORER != FAKE_SCORER and "hashlib.sha256" in HASHED_SCORER
    repo, models, _ = install_fake_official(tmp_path, monkeypatch)
    (repo / "evaluation" / "evaluate_images.py").write_text(HASHED_SCORER)
    # 83 prompts: the 80 single_object ones and 3 two_object ones, so the two task means weigh the same.
    options = {"limit": 83, "n_samples": 2, "official_scorer": sys.executable}
    options |= {"official_repo": str(repo), "detector": str(models)}
    base = _run("geneval@official", options, FakeGenerator(size=(16, 12)), tmp_path / "base")
    new = _run("geneval@official", options, FakeGenerator(size=(12, 16)), tmp_path / "new")
    for results in (base, new):
        assert results["coverage"]["ok"] == 83 and results["metrics"]["overall"]["tags"] == [
            "single_object",
            "two_object",
        ]
    assert base["metrics"]["overall"]["value"] != new["metrics"]["overall"]["value"]
    # The overall is not the mean over images (the task sizes differ): the weighting matters.
    assert base["metrics"]["overall"]["value"] != pytest.approx(base["metrics"]["correct_images"]["value"])
    metrics = ["overall", "single_object", "two_object", "correct_images", "correct_prompts"]
    _check_pairs(tmp_path / "base", tmp_path / "new", "geneval@official", metrics)
    values = unit_values_in(tmp_path / "base" / "geneval@official")
    assert values.unit == "prompt" and values.kinds["overall"] == "continuous"
    assert values.kinds["correct_prompts"] == "binary" and len(values.values["overall"]) == 83

    # A prompt whose image vanished before scoring failed: it is in no pair, and the overall still matches.
    gone = _run(
        "geneval@official",
        options,
        FakeGenerator(size=(16, 12)),
        tmp_path / "gone",
        wrap=lambda resolved: DeleteBeforeStage(resolved, "score", "images/00081/samples/00000.png"),
    )
    assert list(gone["failures"]) == ["00081"]
    kept = unit_values_in(tmp_path / "gone" / "geneval@official")
    assert "00081" not in kept.values["overall"] and len(kept.values["overall"]) == 82
    assert _mean(kept.contributions("overall")) == pytest.approx(gone["metrics"]["overall"]["value"], abs=1e-9)
    comparison = build_comparison(
        load_results([tmp_path / "base", tmp_path / "gone"]),
        labels=[f"{tmp_path / 'base'}=base", f"{tmp_path / 'gone'}=gone"],
        paired=str(tmp_path / "base"),
        resamples=RESAMPLES,
    )
    overall = next(e for e in comparison.paired if e.row == "gone" and e.metric == "overall")
    assert overall.stat is not None and overall.stat.n == 82


# ---------------------------------------------------------------------------------------- WISE
class NamedGenerator(ModelAdapter):
    """Deterministic images from (prompt, seed), under a model name of its own (two runs, two rows)."""

    capabilities = frozenset({"generate"})

    def __init__(self, name: str) -> None:
        self.name = name

    def describe(self) -> dict:
        return {
            "adapter": "fake-generator",
            "model": self.name,
            "weights_sha256": hashlib.sha256(self.name.encode()).hexdigest(),
        }

    def generate(self, prompts, n, seed):
        rng = np.random.default_rng(seed)
        return [[Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(n)] for _ in prompts]


def _wise_judge(shift: int, unparsed: tuple[int, ...] = ()):
    """Scores that depend on the prompt id and ``shift``; the prompts in ``unparsed`` get an answer with none."""

    def respond(call):
        pid = prompt_id_of(call)
        if pid in unparsed:
            return answer("This image is lovely.")
        c, r, a = (pid + shift) % 3, (pid // 3 + shift) % 3, (pid + 2 * shift) % 3
        return answer(f"Consistency: {c}\nRealism: {r}\nAesthetic Quality: {a}")

    return respond


def _wise_options(data: Path, server: JudgeServer) -> dict:
    return {
        "data": str(data),
        "judge_base_url": server.base_url,
        "judge_max_retries": 1,
        "judge_config": {"backoff_base_s": 0.01, "backoff_max_s": 0.02},
    }


def test_wise_unit_values_are_the_weighted_overall_and_pair_to_its_difference(tmp_path):
    data = write_wise_repo(tmp_path / "WISE")
    with JudgeServer(_wise_judge(0)) as server:
        options = _wise_options(data, server)
        base = _run("wise@legacy", options, NamedGenerator("a"), tmp_path / "base")
        server.responder = _wise_judge(1)
        new = _run("wise@legacy", options, NamedGenerator("b"), tmp_path / "new")
        # Prompt 2 (culture) is never parsed in this run: a failed item, in no pair, out of the overall.
        server.responder = _wise_judge(1, unparsed=(2,))
        gone = _run("wise@legacy", options, NamedGenerator("c"), tmp_path / "gone")
    assert base["coverage"]["ok"] == new["coverage"]["ok"] == len(PROMPTS)
    assert base["metrics"]["overall"]["value"] != new["metrics"]["overall"]["value"]
    metrics = ["overall", "culture", "time", "consistency"]
    _check_pairs(tmp_path / "base", tmp_path / "new", "wise@legacy", metrics)
    values = unit_values_in(tmp_path / "base" / "wise@legacy")
    assert values.unit == "prompt" and set(values.values["culture"]) == {"1", "2", "3", "4"}

    assert list(gone["failures"]) == ["2"]
    kept = unit_values_in(tmp_path / "gone" / "wise@legacy")
    assert "2" not in kept.values["overall"] and "2" not in kept.values["culture"]
    assert _mean(kept.contributions("overall")) == pytest.approx(gone["metrics"]["overall"]["value"], abs=1e-9)
    _check_pairs(tmp_path / "new", tmp_path / "gone", "wise@legacy", ["overall", "culture"])


def test_wise_missing_zero_pairs_what_its_aggregate_counted_and_no_overall_without_every_category(tmp_path):
    data = write_wise_repo(tmp_path / "WISE")
    with JudgeServer(_wise_judge(0, unparsed=(2, 401))) as server:
        options = _wise_options(data, server)
        zero = _run("wise@legacy-missing-zero", options, NamedGenerator("a"), tmp_path / "zero")
        server.responder = _wise_judge(0)
        partial = _run("wise@legacy", {**options, "limit": 4}, NamedGenerator("a"), tmp_path / "partial")
    # The unparsed answers were scored 0 by the aggregate: so they are here, at 0.
    assert zero["metrics"]["overall"]["missing_scores_counted_as_zero"]["answers"] == 2
    values = unit_values_in(tmp_path / "zero" / "wise@legacy-missing-zero")
    assert values.values["culture"]["2"] == 0.0 and values.values["time"] == {"401": 0.0}
    assert _mean(values.contributions("overall")) == pytest.approx(zero["metrics"]["overall"]["value"], abs=1e-9)
    # Only culture judged: the aggregate has no overall, and neither do the paired values.
    assert partial["metrics"]["overall"]["status"] == "not_computed"
    values = unit_values_in(tmp_path / "partial" / "wise@legacy")
    assert "overall" not in values.values and len(values.values["culture"]) == 4


# ---------------------------------------------------------------------------------------- ImgEdit
def _imgedit_judge(shift: int):
    """Three 1-5 axes that depend on the edit key and ``shift``; UGE's one score; edit 801 never parses."""

    def respond(call):
        key = int(re.search(r"Instruction (\d+):", call.text).group(1))
        if "Score: <1-5>" in call.text:
            return answer(f"Brief reasoning: fine.\nScore: {1 + (key + shift) % 5}")
        if key == 801:
            return answer("Brief reasoning: I would rather not give numbers.")
        axes = (1 + (key + shift) % 5, 1 + (key // 7 + shift) % 5, 1 + (2 * key + shift) % 5)
        return answer(
            "Brief reasoning: ok.\n"
            + "\n".join(f"Axis {n}: {v}" for n, v in zip(("One", "Two", "Three"), axes, strict=True))
        )

    return respond


class NamedEditor(FakeEditor):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def describe(self) -> dict:
        return {
            "adapter": "fake-editor",
            "model": self.name,
            "weights_sha256": hashlib.sha256(self.name.encode()).hexdigest(),
        }


@pytest.mark.parametrize("variant", ["basic", "uge"])
def test_imgedit_unit_values_are_the_overall_and_pair_to_its_difference(tmp_path, variant):
    write_imgedit(tmp_path / "ImgEdit", tmp_path / "images")
    reference = f"imgedit@{variant}"
    with JudgeServer(_imgedit_judge(0)) as server:
        options = {
            "data": str(tmp_path / "ImgEdit"),
            "imgedit_images": str(tmp_path / "images"),
            "judge_base_url": server.base_url,
            "judge_max_retries": 1,
            "judge_config": {"backoff_base_s": 0.01, "backoff_max_s": 0.02},
        }
        base = _run(reference, options, NamedEditor("a"), tmp_path / "base")
        server.responder = _imgedit_judge(2)
        new = _run(reference, options, NamedEditor("b"), tmp_path / "new")
    assert base["metrics"]["overall"]["value"] != new["metrics"]["overall"]["value"]
    values = unit_values_in(tmp_path / "base" / reference)
    assert values.unit == "edit" and values.kinds["overall"] == "continuous"
    if variant == "uge":
        _check_pairs(tmp_path / "base", tmp_path / "new", reference, ["overall"])
        assert len(values.values["overall"]) == 3
        return
    _check_pairs(tmp_path / "base", tmp_path / "new", reference, ["overall", "add", "action"])
    # 801 (never parsed) and 802 (no source image) failed: in no pair; the other 10 edits are.
    assert set(base["failures"]) == {"801", "802"}
    assert set(values.values["overall"]) == set(EDITS) - {"801", "802"}
    assert set(values.values["action"]) == {"800"}
