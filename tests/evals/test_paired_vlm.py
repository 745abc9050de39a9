"""Paired values of the understanding benchmarks whose headlines are not plain accuracy: MME (sums of subtask
scores), digits-vqa@yes-no (acc+ and acc per image) and MM-Vet (judge grades).

On real run directories made with the scripted model (``test_understanding_benchmarks``): the mean of the unit
values, times their scale, is the headline in results.json; a paired comparison of two runs scored on the same
units gives the difference of their headlines; a unit with a row not scored ``ok`` is left out.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from judge_server import JudgeServer, answer
from test_understanding_benchmarks import JUDGE_ENV, SECRET, headline, judge_opts, run, scripted, value
from vlm_tsv import noise_b64, write_rows

from evals.benchmark import get_benchmark
from evals.benchmarks.digits_vqa.data import PARTS, write_part
from evals.benchmarks.vlm import read_tsv
from evals.benchmarks.vlm_scoring import MME_COGNITION, MME_PERCEPTION
from evals.report.compare import build_comparison
from evals.report.paired import load_unit_values
from evals.report.results import load_results

RESAMPLES = 200  # the tests check the differences, not the p-values' resolution


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, tmp_path):
    for name in JUDGE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/LMUData, no ~/.cache of this machine


def unit_values_of(run_dir: Path):
    """The run's one result (with its ``_path``) and its benchmark's unit values, as ``--paired`` loads them."""
    (result,) = load_results([run_dir])
    return result, load_unit_values(result)


def assert_means_are_headlines(run_dir: Path, metrics: dict[str, str]) -> dict:
    """Each metric's unit values (of the ``kind`` given) average, times their scale, to the run's headline."""
    result, values = unit_values_of(run_dir)
    assert values is not None, f"{result['benchmark']} has no paired values"
    for metric, kind in metrics.items():
        units = values.contributions(metric)
        assert units and values.kinds[metric] == kind
        mean = sum(units.values()) / len(units) * values.scale.get(metric, 1.0)
        assert mean == pytest.approx(value(result["metrics"][metric]), abs=1e-9), metric
    return values


def assert_paired_differences_are_headline_differences(baseline: Path, other: Path, metrics: list[str]) -> None:
    """``unilip eval compare BASELINE OTHER --paired BASELINE``: each metric's difference is OTHER's headline
    minus BASELINE's, on every unit."""
    (base,), (mine,) = load_results([baseline]), load_results([other])
    comparison = build_comparison(load_results([baseline, other]), paired=str(baseline), resamples=RESAMPLES)
    entries = {entry.metric: entry for entry in comparison.paired}
    assert sorted(entries) == sorted(metrics), [entry.note for entry in comparison.paired]
    for metric in metrics:
        entry = entries[metric]
        assert entry.stat is not None, entry.note
        expected = value(mine["metrics"][metric]) - value(base["metrics"][metric])
        assert entry.stat.difference * entry.scale == pytest.approx(expected, abs=1e-9), metric
        assert expected != 0  # the two runs differ on this metric: the test measures something


# ---------------------------------------------------------------------- MME
def write_uneven_mme(folder: Path) -> Path:
    """MME with 1, 2 or 3 images a subtask (subtask k has 1 + k % 3), two questions each (gold Yes then No): the
    subtasks weigh their images differently, as the real file's do."""
    rows = []
    for number, category in enumerate(MME_PERCEPTION + MME_COGNITION):
        for image in range(1 + number % 3):
            first = len(rows)
            common = {"image_path": f"{category}/{image}.jpg", "category": category}
            question = f"Is it {category} {image}?"
            rows.append({"index": first, "image": noise_b64(700 + first), "question": question, "answer": "Yes"})
            rows.append({"index": first + 1, "image": str(first), "question": f"Not {question}", "answer": "No"})
            rows[-2].update(common)
            rows[-1].update(common)
    return write_rows(folder / "MME.tsv", ["index", "image", "image_path", "question", "answer", "category"], rows)


def yes_no_answers(tsv: Path, seed: int) -> dict[int | str, str]:
    """Each row answered right, wrong or unreadably, at random (seeded)."""
    pick = random.Random(seed)
    rows = read_tsv(tsv)
    return {row.index: pick.choice([row.answer, "No" if row.answer == "Yes" else "Yes", "maybe"]) for row in rows}


def test_mme_perception_and_cognition_pair_per_image_and_average_to_the_headlines(tmp_path):
    tsv = write_uneven_mme(tmp_path / "LMUData")
    for out, seed in (("a", 1), ("b", 2)):
        run(tmp_path, scripted(tmp_path / out, tsv, "MME", yes_no_answers(tsv, seed)), "mme@default", tsv.parent, out)
    values = assert_means_are_headlines(tmp_path / "a", {"perception": "continuous", "cognition": "continuous"})
    images = sum(1 + number % 3 for number in range(14))
    assert len(values.values["perception"]) + len(values.values["cognition"]) == images and values.unit == "image"
    assert_means_are_headlines(tmp_path / "b", {"perception": "continuous", "cognition": "continuous"})
    assert_paired_differences_are_headline_differences(tmp_path / "a", tmp_path / "b", ["perception", "cognition"])


def test_mme_an_image_with_a_question_not_scored_is_left_out(tmp_path):
    tsv = write_uneven_mme(tmp_path / "LMUData")
    model = scripted(tmp_path, tsv, "MME", yes_no_answers(tsv, 3))
    # Row 3: the first artwork image's second question (artwork, subtask 1, has two images: rows 2-5).
    model.fail = {3}  # its answer call raises: batches of one, so that only row 3 fails
    results = run(tmp_path, model, "mme@default", tsv.parent, batch_size=1)
    assert results["coverage"]["failed"] == 1
    values = assert_means_are_headlines(tmp_path / "run", {"perception": "continuous", "cognition": "continuous"})
    assert str(("artwork", "artwork/0.jpg")) not in values.values["perception"]
    assert str(("artwork", "artwork/1.jpg")) in values.values["perception"]
    # A subtask with no image scored: perception is not computed, and nothing of it is paired.
    model.fail = {0}  # OCR's only image
    results = run(tmp_path, model, "mme@default", tsv.parent, "ocr-lost", batch_size=1)
    assert headline(results, "perception")["status"] == "not_computed"
    _, values = unit_values_of(tmp_path / "ocr-lost")
    assert "perception" not in values.values and "cognition" in values.values


# ---------------------------------------------------------------------- digits-vqa@yes-no
def test_digits_yes_no_acc_plus_and_acc_pair_per_image(tmp_path):
    bench, variant = get_benchmark("digits-vqa@yes-no")
    folder = tmp_path / "digits"
    tsv = write_part(folder, "yes-no")

    def prompt(row, dataset):
        return bench.prompt(row, bench.variants[variant])

    for out, seed in (("a", 4), ("b", 5)):
        model = scripted(tmp_path / out, tsv, PARTS["yes-no"], yes_no_answers(tsv, seed), prompt)
        run(tmp_path, model, "digits-vqa@yes-no", folder, out, batch_size=64, opt=["limit=40"])
    for out in ("a", "b"):
        values = assert_means_are_headlines(tmp_path / out, {"acc_plus": "binary", "acc": "continuous"})
        assert len(values.values["acc"]) == 40 and values.unit == "image"
        assert set(values.values["acc_plus"].values()) <= {0.0, 1.0}
        assert set(values.values["acc"].values()) <= {0.0, 0.5, 1.0}
    assert_paired_differences_are_headline_differences(tmp_path / "a", tmp_path / "b", ["acc_plus", "acc"])


# ---------------------------------------------------------------------- MM-Vet
GRADE = re.compile(r"GRADE=(\w+(?:\.\d)?)")


def grade_judge(call):
    """Grades the answer ``GRADE=0.3`` 0.3; ``GRADE=none`` never gets a number in [0, 1]."""
    found = GRADE.findall(call.text)
    return answer("excellent" if found[-1] == "none" else found[-1])


def write_graded_mmvet(folder: Path) -> Path:
    rows = [
        {"index": f"q{n}", "image": noise_b64(900 + n), "question": f"Question {n}?", "answer": "x", "category": cat}
        for n, cat in enumerate(("ocr,rec", "ocr,math", "know", "rec", "gen", "spat"))
    ]
    return write_rows(folder / "MMVet.tsv", ["index", "image", "question", "answer", "category"], rows)


def test_mmvet_grades_pair_per_question_as_the_overall_counts_a_failed_grading(tmp_path, monkeypatch):
    monkeypatch.setenv("UNILIP_JUDGE_API_KEY", SECRET)
    tsv = write_graded_mmvet(tmp_path / "LMUData")
    # q2's grading fails in both runs: left out of both (default), or 0 in both (vlmevalkit-zero).
    grades = {"a": ["1.0", "0.4", "none", "0.0", "0.7", "0.5"], "b": ["0.6", "0.4", "none", "1.0", "0.2", "0.9"]}
    with JudgeServer(grade_judge, api_key=SECRET) as server:
        for out, given in grades.items():
            model = scripted(tmp_path / out, tsv, "MMVet", {f"q{n}": f"GRADE={g}" for n, g in enumerate(given)})
            run(tmp_path, model, "mmvet@default", tsv.parent, out, opt=judge_opts(server))
            run(tmp_path, model, "mmvet@vlmevalkit-zero", tsv.parent, f"{out}-zero", opt=judge_opts(server))
    values = assert_means_are_headlines(tmp_path / "a", {"overall": "continuous"})
    # The failed grading is out of the overall (100 x mean of five grades = 52), so out of the pairs too.
    assert values.values["overall"] == {"q0": 1.0, "q1": 0.4, "q3": 0.0, "q4": 0.7, "q5": 0.5}
    assert value(unit_values_of(tmp_path / "a")[0]["metrics"]["overall"]) == pytest.approx(52.0)
    zero = assert_means_are_headlines(tmp_path / "a-zero", {"overall": "continuous"})
    assert zero.values["overall"]["q2"] == 0.0 and len(zero.values["overall"]) == 6  # counted 0, as the overall
    assert_means_are_headlines(tmp_path / "b", {"overall": "continuous"})
    assert_means_are_headlines(tmp_path / "b-zero", {"overall": "continuous"})
    assert_paired_differences_are_headline_differences(tmp_path / "a", tmp_path / "b", ["overall"])
    assert_paired_differences_are_headline_differences(tmp_path / "a-zero", tmp_path / "b-zero", ["overall"])
