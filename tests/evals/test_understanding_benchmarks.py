"""The seven understanding benchmarks end to end: synthetic VLMEvalKit TSVs, a scripted model, a loopback judge.

Every expected number is worked out by hand in a comment beside it from the scripted answers and the gold answers
that ``vlm_tsv`` writes. The extraction rules and the scoring functions have their own unit tests
(``test_vlm_kit.py``, ``test_vlm_scoring.py``); here the runs go through :func:`evals.run` as a user's would.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from judge_server import JudgeServer, answer
from PIL import Image
from vlm_tsv import (
    noise_b64,
    write_mmbench,
    write_mme,
    write_mmmu,
    write_mmvet,
    write_mmvp,
    write_plain_mcq,
    write_rows,
)

import evals
from evals.adapter import AnswerRequest, ModelAdapter
from evals.benchmark import get_benchmark
from evals.benchmarks.vlm import MME_SUFFIX, internvl_prompt, read_tsv
from evals.benchmarks.vlm_benchmark import item_seed_for
from evals.registry import register_adapter
from evals.runtime.runner import load_record
from unilip.cli import main as unilip_main

SECRET = "sk-vlm-test-4f1e2d3c5b6a79880a1b2c3d4e5f6a7b"
JUDGE_ENV = ("UNILIP_JUDGE_API_KEY", "OPENAI_API_KEY", "UNILIP_JUDGE_MODEL", "UNILIP_JUDGE_BASE_URL", "LMUData")


# ---------------------------------------------------------------------- the scripted model
def image_digest(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


def request_key(prompt: str, images: Sequence[Image.Image]) -> tuple[str, tuple[str, ...]]:
    return prompt, tuple(image_digest(image) for image in images)


class ScriptedModel(ModelAdapter):
    """Answers each row of a TSV with a fixed text, found by the request's prompt and images.

    ``script(tsv, dataset, answers)`` maps every row of the TSV (by index) to its answer; a request is matched to
    its row by the prompt VLMEvalKit's InternVL wrapper builds and the decoded images' pixels, so rows sharing an
    image or a question are still told apart. Indices in ``fail`` make their whole ``answer`` call raise.
    """

    capabilities = frozenset({"answer"})

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: dict[tuple[str, tuple[str, ...]], int | str] = {}
        self.answers: dict[int | str, str] = {}
        self.fail: set[int | str] = set()
        self.calls = 0
        self.received: list[tuple[int | str, AnswerRequest]] = []

    def script(
        self, tsv: Path, dataset: str, answers: Mapping[int | str, str], prompt=internvl_prompt
    ) -> ScriptedModel:
        """``prompt(row, dataset)``: the text the benchmark sends (VLMEvalKit's InternVL prompt by default)."""
        rows = read_tsv(tsv)
        for row in rows:
            key = request_key(prompt(row, dataset), row.images())
            assert key not in self.keys, f"rows {self.keys.get(key)} and {row.index} look the same to the model"
            self.keys[key] = row.index
        assert set(answers) == {row.index for row in rows}, "script every row"
        self.answers.update(answers)
        return self

    def describe(self) -> dict:
        return {"adapter": "scripted-vlm", "model": self.name, "weights_sha256": "5" * 64}

    def answer(self, requests: Sequence[AnswerRequest]) -> list[str]:
        self.calls += 1
        indices = []
        for request in requests:
            texts = [part for part in request.parts if isinstance(part, str)]
            images = [part for part in request.parts if not isinstance(part, str)]
            indices.append(self.keys[request_key(texts[0], images)])
        self.received.extend(zip(indices, requests, strict=True))
        broken = [index for index in indices if index in self.fail]
        if broken:
            raise RuntimeError(f"scripted failure for index {broken[0]}")
        return [self.answers[index] for index in indices]

    @property
    def asked(self) -> list[int | str]:
        return [index for index, _ in self.received]


MODELS: dict[str, ScriptedModel] = {}
try:  # once per process: registering a name twice raises
    register_adapter("scripted-vlm", lambda model, **options: MODELS[model])
except ValueError:
    pass


def scripted(
    tmp_path: Path, tsv: Path, dataset: str, answers: Mapping[int | str, str], prompt=internvl_prompt
) -> ScriptedModel:
    name = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]  # one model per test
    model = MODELS[name] = MODELS.get(name) or ScriptedModel(name)
    return model.script(tsv, dataset, answers, prompt)


def run(tmp_path: Path, model: ScriptedModel, bench: str, data: Path, out: str = "run", **flags) -> dict:
    """One benchmark through :func:`evals.run`; its results."""
    flags.setdefault("cache_dir", str(tmp_path / f"{out}-cache"))
    results = evals.run(f"scripted-vlm:{model.name}", bench, tmp_path / out, data=str(data), no_progress=True, **flags)
    assert len(results) == 1
    return results[0]


def headline(results: dict, name: str) -> dict:
    return results["metrics"][name]


def value(cell: dict) -> float:
    assert "value" in cell, cell
    return cell["value"]


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, tmp_path):
    for name in JUDGE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/LMUData, no ~/.cache of this machine


def judge_opts(server: JudgeServer, *more: str) -> list[str]:
    return [f"judge_base_url={server.base_url}", "judge_max_retries=1", "judge_concurrency=2", *more]


# ---------------------------------------------------------------------- MME
def test_mme_perception_and_cognition_are_sums_of_subtask_acc_plus_acc_plus(tmp_path):
    tsv = write_mme(tmp_path / "LMUData")
    # write_mme: subtask k (MME_PERCEPTION then MME_COGNITION) has one image, rows 2k (gold Yes) and 2k+1 (gold No).
    answers = {index: "Yes" if index % 2 == 0 else "No" for index in range(28)}  # right unless changed below
    answers.update(
        {
            0: "YES!",  # OCR: "yes" once punctuation goes: right
            1: "No, it is not.",  # OCR: right -> acc 100, acc+ 100 = 200
            3: "Yes, it is.",  # artwork: 2 right, 3 wrong -> acc 50, acc+ 0 = 50
            4: "maybe",  # celebrity: both unresolved (misses) -> 0
            5: "maybe",
            7: "I cannot tell.",  # color: 6 right, 7 unresolved -> 50
            20: "No",  # code_reasoning: both wrong -> 0
            21: "Yes",
            26: "yes and no",  # text_translation: 26 unresolved (both words), 27 right -> 50
        }
    )
    model = scripted(tmp_path, tsv, "MME", answers)
    results = run(tmp_path, model, "mme@default", tsv.parent)

    perception, cognition = headline(results, "perception"), headline(results, "cognition")
    # perception: OCR 200 + artwork 50 + celebrity 0 + color 50 + six untouched subtasks x 200 = 1500
    assert value(perception) == pytest.approx(1500.0) and perception["n"] == 10  # n: images
    # cognition: code_reasoning 0 + commonsense_reasoning 200 + numerical_calculation 200 + text_translation 50
    assert value(cognition) == pytest.approx(450.0) and cognition["n"] == 4
    subtasks = perception["breakdown"]["subtasks"]
    assert value(subtasks["artwork"]["acc"]) == 50.0 and value(subtasks["artwork"]["acc_plus"]) == 0.0
    assert value(subtasks["color"]["score"]) == 50.0 and value(subtasks["OCR"]["score"]) == 200.0
    assert subtasks["celebrity"]["coverage"] == {"items": 2, "resolved": 0, "unresolved": 2}

    coverage = perception["coverage"]
    # Unresolved: rows 4, 5, 7, 26; the other 24 resolved by the rules; nothing judged.
    assert coverage["answers_by"] == {"rules": 24, "unresolved": 4, "judge": 0, "random": 0, "zero": 0}
    assert (coverage["items"], coverage["scored"], coverage["units"], coverage["units_scored"]) == (28, 28, 14, 14)
    assert set(coverage["not_scored"].values()) == {0}
    assert results["coverage"]["ok"] == results["coverage"]["expected"] == 28

    # The prompt is the question with MME's suffix, then the row's one image; the dataset names MME.
    index, request = next(pair for pair in model.received if pair[0] == 3)
    assert request.dataset == "MME" and request.parts[0] == "Is it not artwork?" + MME_SUFFIX
    assert len(request.parts) == 2 and isinstance(request.parts[1], Image.Image)
    # A synthetic file is not VLMEvalKit's release: said beside the headline.
    assert any("differs from VLMEvalKit's pinned release" in w for w in perception["warnings"])
    assert "warnings" not in cognition  # coverage, breakdown and warnings ride on the first headline only


def test_mme_limit_keeps_whole_images(tmp_path):
    tsv = write_mme(tmp_path / "LMUData")
    model = scripted(tmp_path, tsv, "MME", {index: "Yes" for index in range(28)})
    results = run(tmp_path, model, "mme@default", tsv.parent, opt=["limit=3"])
    # limit=3: the first three images (OCR, artwork, celebrity), both questions each: rows 0-5.
    assert sorted(model.asked) == [0, 1, 2, 3, 4, 5]
    perception = headline(results, "perception")
    assert perception["coverage"]["units"] == 3 and perception["coverage"]["items"] == 6
    # Seven perception subtasks have no question: the sum is not computed, and says why.
    assert perception["status"] == "not_computed" and "color" in perception["reason"]
    # "Yes" to both questions of an image: acc 50, acc+ 0.
    assert value(perception["breakdown"]["subtasks"]["OCR"]["score"]) == 50.0
    assert any("only the first 3 of 14 images" in w for w in perception["warnings"])


# ---------------------------------------------------------------------- MMBench
# write_mmbench's rows and gold letters. Question 0 (blue, green, red, black; gold blue): index 0 gold A,
# 1000000 (green, red, black, blue) gold D, 2000000 (red, black, blue, green) gold C, 3000000 (black, blue, green,
# red) gold B. Question 1 (one, two; gold two): index 1 gold B, 1000001 (two, one) gold A.
MMBENCH_RIGHT = {0: "A", 1_000_000: "D", 2_000_000: "C", 3_000_000: "B", 1: "B", 1_000_001: "A"}


def test_mmbench_circular_eval_a_wrong_rotation_fails_the_question(tmp_path):
    tsv = write_mmbench(tmp_path / "LMUData")
    # Question 0 right in all four rotations; question 1 right in the original, wrong ("one") in its rotation.
    model = scripted(tmp_path, tsv, "MMBench_DEV_EN", {**MMBENCH_RIGHT, 1_000_001: "B"})
    results = run(tmp_path, model, "mmbench@dev-en", tsv.parent)
    overall = headline(results, "overall")
    assert value(overall) == 50.0 and overall["n"] == 2  # 1 of 2 questions
    # Per category (the original rows' categories): attribute_recognition is question 0, object_localization 1.
    by_category = overall["breakdown"]["by_category"]
    assert value(by_category["attribute_recognition"]) == 100.0 and value(by_category["object_localization"]) == 0.0
    assert value(overall["breakdown"]["by_l2_category"]["FP-S"]) == 100.0  # MMBench's short name
    coverage = overall["coverage"]
    assert (coverage["items"], coverage["units"], coverage["units_scored"]) == (6, 2, 2)
    assert coverage["answers_by"]["rules"] == 6


def test_mmbench_failed_answer_drops_the_whole_question_until_retried(tmp_path, capsys):
    tsv = write_mmbench(tmp_path / "LMUData")
    model = scripted(tmp_path, tsv, "MMBench_DEV_EN", {**MMBENCH_RIGHT, 1_000_001: "B"})
    model.fail = {1_000_000}  # one rotated copy of question 0: its batch (of one) raises
    out = tmp_path / "run"
    command = [
        "eval",
        "run",
        "--model",
        f"scripted-vlm:{model.name}",
        "--bench",
        "mmbench@dev-en",
        "--out",
        str(out),
        "--data",
        str(tsv.parent),
        "--batch-size",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert unilip_main(command) == 1  # an item failed: exit 1
    assert model.calls == 6  # batch size 1: one call per row
    results = json.loads((out / "mmbench@dev-en" / "results.json").read_text())
    assert results["coverage"]["failed"] == 1 and results["coverage"]["ok"] == 5
    assert results["failures"]["1000000"].startswith("answer: RuntimeError: scripted failure for index 1000000")
    overall = headline(results, "overall")
    # Question 0 is not whole (three of four copies right, one never answered): left out, never counted right.
    # What remains is question 1, wrong in its rotation: 0 of 1.
    assert value(overall) == 0.0 and overall["n"] == 1
    coverage = overall["coverage"]
    assert coverage["not_scored"]["answer_failed"] == 1
    assert (coverage["units"], coverage["units_scored"], coverage["scored"]) == (2, 1, 2)

    # Asked again without --retry-failed: nothing is asked, the item stays failed.
    assert unilip_main(command) == 1 and model.calls == 6

    # The model fixed, --retry-failed asks for that one copy only; question 0 is now whole and right.
    model.fail = set()
    cache = str(tmp_path / "cache")
    results = run(tmp_path, model, "mmbench@dev-en", tsv.parent, batch_size=1, retry_failed=True, cache_dir=cache)
    assert model.calls == 7 and model.asked[-1] == 1_000_000
    overall = headline(results, "overall")
    assert value(overall) == 50.0 and overall["n"] == 2  # question 0 right, question 1 wrong
    assert overall["coverage"]["not_scored"]["answer_failed"] == 0 and overall["coverage"]["units_scored"] == 2
    assert results["coverage"]["failed"] == 0
    assert unilip_main(command) == 0 and model.calls == 7  # complete: exit 0, nothing asked
    capsys.readouterr()


def test_mmbench_limit_keeps_every_rotated_copy_of_the_first_question(tmp_path):
    # Originals first, copies after: question 0's rows are 0, 1000000, 2000000, 3000000, not contiguous.
    tsv = write_mmbench(tmp_path / "LMUData", originals_first=True)
    assert [row.index for row in read_tsv(tsv)] == [0, 1, 1_000_000, 1_000_001, 2_000_000, 3_000_000]
    model = scripted(tmp_path, tsv, "MMBench_DEV_EN", MMBENCH_RIGHT)
    results = run(tmp_path, model, "mmbench@dev-en", tsv.parent, opt=["limit=1"])
    assert sorted(model.asked) == [0, 1_000_000, 2_000_000, 3_000_000]
    overall = headline(results, "overall")
    assert value(overall) == 100.0 and overall["n"] == 1
    assert results["coverage"]["expected"] == 4
    assert any("only the first 1 of 2 questions" in w for w in overall["warnings"])


# ---------------------------------------------------------------------- MMVP, AI2D, SEED
def test_mmvp_pair_accuracy_and_question_accuracy(tmp_path):
    tsv = write_mmvp(tmp_path / "LMUData")
    # Pairs (1, 2) gold A, B and (3, 4) gold B, A. Rows 1 and 2 ask the same question: only the images differ.
    model = scripted(tmp_path, tsv, "MMVP", {1: "A", 2: "(b) No", 3: "B", 4: "B"})
    results = run(tmp_path, model, "mmvp@default", tsv.parent)
    # Pair 1 both right; pair 2 has row 4 wrong. Pairs: 1 of 2 = 50; questions: 3 of 4 = 75.
    assert value(headline(results, "pair_accuracy")) == 50.0 and headline(results, "pair_accuracy")["n"] == 2
    assert value(headline(results, "question_accuracy")) == 75.0 and headline(results, "question_accuracy")["n"] == 4
    coverage = headline(results, "pair_accuracy")["coverage"]
    assert (coverage["units"], coverage["units_scored"]) == (2, 2)
    assert coverage["answers_by"]["rules"] == 4


def test_resume_asks_the_model_nothing_again(tmp_path):
    tsv = write_mmvp(tmp_path / "LMUData")
    model = scripted(tmp_path, tsv, "MMVP", {1: "A", 2: "B", 3: "B", 4: "B"})
    first = run(tmp_path, model, "mmvp@default", tsv.parent)
    calls, asked = model.calls, len(model.asked)
    assert asked == 4
    second = run(tmp_path, model, "mmvp@default", tsv.parent)
    assert model.calls == calls and len(model.asked) == asked  # every answer came from the run directory
    assert second["metrics"] == first["metrics"]
    assert value(headline(second, "pair_accuracy")) == 50.0


@pytest.mark.parametrize(
    "bench, dataset, categories, answers, overall, per_category",
    [
        (
            # Gold A, B, C (rows 0-2). Row 0 "A" right; row 1 names option B's text ("second"): right; row 2 wrong.
            "ai2d@default",
            "AI2D_TEST",
            ("physics", "biology", "physics"),
            {0: "A", 1: "The answer is second", 2: "D"},
            200 / 3,  # 2 of 3
            {"physics": 50.0, "biology": 100.0},  # physics rows 0 (right), 2 (wrong); biology row 1 (right)
        ),
        (
            # Gold A, B, C, D (rows 0-3). Rows 0, 2, 3 right; row 1 "C" wrong.
            "seed@default",
            "SEEDBench_IMG",
            ("Scene Understanding", "Instance Identity", "Scene Understanding", "Instance Identity"),
            {0: "A", 1: "C", 2: "C.", 3: "(D) fourth"},
            75.0,  # 3 of 4
            {"Scene Understanding": 100.0, "Instance Identity": 50.0},  # rows 0, 2 right; rows 1 wrong, 3 right
        ),
    ],
)
def test_plain_multiple_choice_accuracy_overall_and_per_category(
    tmp_path, bench, dataset, categories, answers, overall, per_category
):
    tsv = write_plain_mcq(tmp_path / "LMUData", dataset, categories)
    model = scripted(tmp_path, tsv, dataset, answers)
    results = run(tmp_path, model, bench, tsv.parent)
    cell = headline(results, "overall")
    assert value(cell) == pytest.approx(overall) and cell["n"] == len(categories)
    assert {name: value(c) for name, c in cell["breakdown"]["by_category"].items()} == pytest.approx(per_category)
    assert all(request.dataset == dataset for _, request in model.received)


# ---------------------------------------------------------------------- MMMU
def test_mmmu_interleaved_images_open_questions_and_the_validation_headline(tmp_path):
    tsv = write_mmmu(tmp_path / "LMUData")
    # Gold: dev_Art_1 B, validation_Math_1 C (two images), validation_Math_2 open "42" (scored as A = "42",
    # B = "Other Answers"), validation_Art_3 A.
    answers = {"dev_Art_1": "A", "validation_Math_1": "C", "validation_Math_2": "A", "validation_Art_3": "B"}
    model = scripted(tmp_path, tsv, "MMMU_DEV_VAL", answers)
    results = run(tmp_path, model, "mmmu@two-way", tsv.parent)

    request = dict(model.received)["validation_Math_1"]
    assert request.dataset == "MMMU_DEV_VAL"
    assert [type(part).__name__ if isinstance(part, str) else "image" for part in request.parts] == [
        "str",
        "image",
        "image",
    ]
    assert request.parts[1].size == request.parts[2].size == (40, 40)
    assert image_digest(request.parts[1]) != image_digest(request.parts[2])  # two images, in the row's order
    open_prompt = dict(model.received)["validation_Math_2"].parts[0]
    assert open_prompt.endswith("Answer the question directly.") and "\nA." not in open_prompt

    overall = headline(results, "overall")
    # Validation only: Math_1 right, Math_2 right ("A" is the gold text's option), Art_3 wrong: 2 of 3.
    assert value(overall) == pytest.approx(200 / 3) and overall["n"] == 3
    by_split = overall["breakdown"]["by_split"]
    assert set(by_split) == {"dev", "validation"}
    assert value(by_split["dev"]) == 0.0 and by_split["dev"]["n"] == 1  # the dev row: answered, scored apart
    assert value(by_split["validation"]) == pytest.approx(200 / 3)
    assert {name: value(c) for name, c in overall["breakdown"]["by_category"].items()} == {"Art": 0.0, "Math": 100.0}
    assert overall["coverage"]["items"] == 4 and overall["coverage"]["scored"] == 4


# ---------------------------------------------------------------------- judge fallbacks
def choice_judge(replies: Mapping[str, str]):
    """A judge answering by the model's answer: ``replies[prediction]``, or the letter of option ``blue``."""

    def respond(call):
        prediction = re.search(r"Model's answer: (.*)\n", call.text).group(1)
        if prediction in replies:
            return answer(replies[prediction])
        options = dict(re.findall(r"^([A-Z])\. (.*)$", call.text, re.MULTILINE))
        return answer(next(letter for letter, text in options.items() if text == "blue"))

    return respond


# Rows 0, 1000000 and 1 are read by the rules (right); 2000000 and 3000000 say "the ocean" (the judge names
# blue: right); 1000001's answer the judge never reads as a letter.
JUDGED_ANSWERS = {
    **MMBENCH_RIGHT,
    2_000_000: "It looks like the ocean, copy 2",
    3_000_000: "Like the ocean, copy 3",
    1_000_001: "hard to say",
}


def test_mmbench_judge_reads_only_unresolved_answers_and_a_reply_that_never_parses_fails(tmp_path):
    tsv = write_mmbench(tmp_path / "LMUData")
    model = scripted(tmp_path, tsv, "MMBench_DEV_EN", JUDGED_ANSWERS)
    with JudgeServer(choice_judge({"hard to say": "unclear"})) as server:
        results = run(
            tmp_path, model, "mmbench@dev-en-judge", tsv.parent, opt=judge_opts(server, "judge_model=loopback-judge")
        )
        asked = [re.search(r"Model's answer: (.*)\n", call.text).group(1) for call in server.history]
        # The two "ocean" answers once each; "hard to say" three times (the protocol's parse attempts); the
        # rules-resolved answers never.
        assert sorted(asked) == sorted(
            ["It looks like the ocean, copy 2", "Like the ocean, copy 3"] + ["hard to say"] * 3
        )
        assert all(call.body["model"] == "loopback-judge" for call in server.history)

    bench_dir = tmp_path / "run" / "mmbench@dev-en-judge"
    failed = load_record(bench_dir, "score", "1000001")
    assert failed["status"] == "failed" and failed["state"] == "parse_failed"
    assert load_record(bench_dir, "score", "2000000")["by"] == "judge"
    assert load_record(bench_dir, "score", "2000000")["answer"] == "C"  # blue in that rotation
    overall = headline(results, "overall")
    # Question 1 has a failed item: left out. Question 0 is right in all four copies: 1 of 1.
    assert value(overall) == 100.0 and overall["n"] == 1
    coverage = overall["coverage"]
    # answers_by counts the scored (whole-question) rows: 0 and 1000000 by the rules, 2000000 and 3000000 by the
    # judge; row 1 (rules) belongs to the question left out.
    assert coverage["answers_by"] == {"rules": 2, "unresolved": 0, "judge": 2, "random": 0, "zero": 0}
    assert (coverage["scored"], coverage["items"]) == (4, 6)
    assert coverage["not_scored"]["parse_failed"] == 1 and coverage["units_scored"] == 1
    assert results["coverage"]["failed"] == 1
    assert overall["judge"]  # the judge that scored is described beside the headline
    assert any("not the protocol's gpt-3.5-turbo-0125" in w for w in overall["warnings"])


def test_mmbench_vlmevalkit_random_gives_a_seeded_random_letter(tmp_path):
    tsv = write_mmbench(tmp_path / "LMUData")
    model = scripted(tmp_path, tsv, "MMBench_DEV_EN", JUDGED_ANSWERS)
    letters = []
    for out in ("first", "second"):  # two separate runs (own run directories, own judge caches), one seed
        with JudgeServer(choice_judge({"hard to say": "unclear"})) as server:
            results = run(
                tmp_path, model, "mmbench@dev-en-vlmevalkit-random", tsv.parent, out, seed=7, opt=judge_opts(server)
            )
            assert server.total_calls == 2 + 3  # the same questions asked as in the judge variant
        record = load_record(tmp_path / out / "mmbench@dev-en-vlmevalkit-random", "score", "1000001")
        assert record["status"] == "ok" and record["by"] == "random" and record["state"] == "parse_failed"
        letters.append(record["answer"])
        overall = headline(results, "overall")
        assert overall["coverage"]["answers_by"]["random"] == 1 and results["coverage"]["failed"] == 0
        # Every question is scored now; question 1 is right only if the random letter is its gold A.
        assert overall["n"] == 2 and value(overall) == (100.0 if letters[-1] == "A" else 50.0)
    assert letters[0] == letters[1] and letters[0] in {"A", "B", "Z"}  # the options and Z
    # The letter is the one the run seed gives this item; other seeds give other letters.
    bench, variant = get_benchmark("mmbench@dev-en-vlmevalkit-random")
    row = next(row for row in read_tsv(tsv) if row.index == 1_000_001)
    protocol = bench.variants[variant]
    assert bench.last_resort(row, item_seed_for(7, "1000001"), protocol) == {"answer": letters[0], "by": "random"}
    assert len({bench.last_resort(row, item_seed_for(seed, "1000001"), protocol)["answer"] for seed in range(30)}) == 3


def test_a_judge_naming_an_option_the_question_does_not_have_is_asked_again(tmp_path):
    tsv = write_mmvp(tmp_path / "LMUData")
    # Rows 2 and 4 (options A and B only) answer in words the rules cannot read. For row 2 the judge says "C"
    # (no such option), then "B"; for row 4 it always says "C".
    model = scripted(tmp_path, tsv, "MMVP", {1: "A", 2: "not sure", 3: "B", 4: "not sure at all"})

    def respond(call):
        if "Model's answer: not sure at all" in call.text:
            return answer("C")
        return answer("C" if call.attempt == 1 else "I think B")  # "I" is no option of this question either

    with JudgeServer(respond) as server:
        results = run(tmp_path, model, "mmvp@judge", tsv.parent, opt=judge_opts(server))
        # "C" does not parse against the question's own options: asked again (3 attempts at most), never cached.
        assert sorted(server.calls.values()) == [2, 3]
    row2 = load_record(tmp_path / "run" / "mmvp@judge", "score", "2")
    assert row2["status"] == "ok" and (row2["answer"], row2["by"]) == ("B", "judge")
    row4 = load_record(tmp_path / "run" / "mmvp@judge", "score", "4")
    assert row4["status"] == "failed" and row4["state"] == "parse_failed" and "A, B" in row4["error"]
    pairs = headline(results, "pair_accuracy")
    # Pair (1, 2): A right, B right (gold B). Pair (3, 4) is not whole: left out, row 3 with it.
    assert value(pairs) == 100.0 and pairs["n"] == 1
    assert value(headline(results, "question_accuracy")) == 100.0 and headline(results, "question_accuracy")["n"] == 2
    assert pairs["coverage"]["not_scored"]["parse_failed"] == 1
    assert pairs["coverage"]["not_scored"]["in_incomplete_units"] == 1  # row 3, scored but left out with row 4


def test_mme_judge_resolves_yes_no_and_its_unknown_is_a_miss(tmp_path):
    tsv = write_mme(tmp_path / "LMUData")
    answers = {index: "Yes" if index % 2 == 0 else "No" for index in range(28)}
    answers.update({0: "maybe so", 3: "hard to say"})  # OCR row 0 and artwork row 3: unresolved by the rules

    def respond(call):
        return answer("Yes." if "Model's answer: maybe so" in call.text else "Unknown.")

    model = scripted(tmp_path, tsv, "MME", answers)
    with JudgeServer(respond) as server:
        results = run(tmp_path, model, "mme@judge", tsv.parent, opt=["limit=2", *judge_opts(server)])
        # Row 0 once (the reply reads Yes); row 3 once: "Unknown" is the judge's answer (VLMEvalKit's Unknown).
        assert sorted(server.calls.values()) == [1, 1]
        asked = {re.search(r"Model's answer: (.*)\n", call.text).group(1) for call in server.history}
        assert asked == {"maybe so", "hard to say"}  # never an answer the rules read
    perception = headline(results, "perception")
    # OCR: row 0 Yes by the judge (right), row 1 No by the rules (right): acc 100 + acc+ 100 = 200.
    # artwork: row 2 Yes (right), row 3 unknown (a miss): acc 50 + acc+ 0 = 50. The other 12 subtasks have no
    # question (limit=2), so the perception sum is not computed.
    subtasks = perception["breakdown"]["subtasks"]
    assert value(subtasks["OCR"]["score"]) == 200.0 and value(subtasks["artwork"]["score"]) == 50.0
    assert perception["status"] == "not_computed"
    coverage = perception["coverage"]
    assert coverage["answers_by"] == {"rules": 2, "unresolved": 0, "judge": 2, "random": 0, "zero": 0}
    assert load_record(tmp_path / "run" / "mme@judge", "score", "3")["answer"] == "UNRESOLVED"
    assert (coverage["units"], coverage["units_scored"]) == (2, 2)


# ---------------------------------------------------------------------- MM-Vet
def mmvet_judge(call):
    if "| What is written? |" in call.text:
        return answer("1.0")
    if "| How much is it in total? |" in call.text:
        return answer("0.4")
    # "What is it for?": never a number in [0, 1] (words, then out of range).
    return answer("excellent" if call.attempt == 1 else "1.5")


def test_mmvet_grades_failed_gradings_are_excluded_by_default_and_zero_only_in_the_vlmevalkit_variant(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("UNILIP_JUDGE_API_KEY", SECRET)
    tsv = write_mmvet(tmp_path / "LMUData")
    # v1 "ocr,rec" graded 1.0; v2 "ocr,math" graded 0.4; v3 "know" never gets a grade.
    model = scripted(tmp_path, tsv, "MMVet", {"v1": "STOP", "v2": "It is 12.", "v3": "no idea"})
    with JudgeServer(mmvet_judge, api_key=SECRET) as server:
        results = run(tmp_path, model, "mmvet@default", tsv.parent, opt=judge_opts(server))
        per_question = {key: count for key, count in server.calls.items()}
        assert sorted(per_question.values()) == [1, 1, 5]  # v3 asked five times (MM-Vet's attempts)
        assert all(call.authorization == f"Bearer {SECRET}" for call in server.history)
    overall = headline(results, "overall")
    # 100 x mean(1.0, 0.4) = 70; v3 left out and counted.
    assert value(overall) == pytest.approx(70.0) and overall["n"] == 2
    capability = overall["breakdown"]["by_capability"]
    assert value(capability["ocr"]) == pytest.approx(70.0)  # "ocr" is in "ocr,rec" and "ocr,math"
    assert value(capability["rec"]) == pytest.approx(100.0) and value(capability["math"]) == pytest.approx(40.0)
    assert capability["know"]["status"] == "not_computed"  # its only item was not graded
    coverage = overall["coverage"]
    assert coverage["not_scored"]["parse_failed"] == 1 and coverage["answers_by"]["judge"] == 2
    assert results["coverage"]["failed"] == 1
    record = load_record(tmp_path / "run" / "mmvet@default", "score", "v3")
    assert record["status"] == "failed" and record["state"] == "parse_failed"

    with JudgeServer(mmvet_judge, api_key=SECRET) as server:
        zero = run(tmp_path, model, "mmvet@vlmevalkit-zero", tsv.parent, "zero", opt=judge_opts(server))
    overall = headline(zero, "overall")
    # v3 counts 0: 100 x (1.0 + 0.4 + 0) / 3 = 46.67; "know" = 0.
    assert value(overall) == pytest.approx(140 / 3) and overall["n"] == 3
    assert value(overall["breakdown"]["by_capability"]["know"]) == 0.0
    assert overall["coverage"]["answers_by"] == {"rules": 0, "unresolved": 0, "judge": 2, "random": 0, "zero": 1}
    assert zero["coverage"]["failed"] == 0


# ---------------------------------------------------------------------- refusals
def test_a_missing_tsv_names_the_file_and_the_data_flag(tmp_path):
    model = ScriptedModel("unused")
    MODELS.setdefault("unused", model)
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as caught:
        run(tmp_path, model, "ai2d@default", empty)
    assert str(empty / "AI2D_TEST.tsv") in str(caught.value) and "--data" in str(caught.value)
    assert model.calls == 0


def test_judge_options_on_a_rules_variant_are_refused_naming_the_judged_variants(tmp_path):
    tsv = write_mmbench(tmp_path / "LMUData")
    model = scripted(tmp_path, tsv, "MMBench_DEV_EN", MMBENCH_RIGHT)
    with pytest.raises(ValueError, match="uses no judge") as caught:
        run(tmp_path, model, "mmbench@dev-en", tsv.parent, opt=["judge_model=gpt-4o-mini"])
    assert "judge_model" in str(caught.value)
    assert "dev-en-judge" in str(caught.value) and "dev-en-vlmevalkit-random" in str(caught.value)
    assert model.calls == 0


def test_a_tsv_with_rows_lacking_answers_is_refused(tmp_path):
    rows = [
        {"index": index, "image": noise_b64(index), "question": f"Q{index}?", "A": "x", "B": "y", "category": "c"}
        for index in range(2)
    ]
    rows[0]["answer"] = "A"  # row 1 has no answer (a test split)
    tsv = write_rows(tmp_path / "LMUData" / "AI2D_TEST.tsv", ["index", "image", "question", "A", "B", "answer"], rows)
    model = ScriptedModel("unused-answers")
    MODELS.setdefault(model.name, model)
    with pytest.raises(ValueError, match=r"1 rows have no answer \(first index 1\)"):
        run(tmp_path, model, "ai2d@default", tsv.parent)
    assert model.calls == 0


def drop_original(rows: list[dict], index: str) -> list[dict]:
    original = next(row for row in rows if row["index"] == index)
    kept = [row for row in rows if row["index"] != index]
    return [{**row, "image": original["image"]} if row["image"] == index else row for row in kept]


@pytest.mark.parametrize(
    ("bench", "write", "damage", "message"),
    [
        # MMBench: the original row of question 1 is gone (its copy keeps the image itself)
        ("mmbench@dev-en", write_mmbench, lambda rows: drop_original(rows, "1"), "no original row"),
        # MMVP: the fourth row asks another question than its pair's first
        ("mmvp@default", write_mmvp, lambda rows: rows[:3] + [{**rows[3], "question": "Other?"}], "different"),
        # MME: the OCR image loses its second question
        ("mme@default", write_mme, lambda rows: [r for r in rows if r["index"] != "1"], "exactly two questions"),
    ],
)
def test_data_that_cannot_be_scored_is_refused_before_the_model_answers(tmp_path, bench, write, damage, message):
    import pandas as pd

    tsv = write(tmp_path / "LMUData")
    frame = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    rows = damage(frame.to_dict("records"))
    write_rows(tsv, list(frame.columns), rows)
    model = ScriptedModel("never-asked")
    MODELS.setdefault(model.name, model)
    with pytest.raises(ValueError, match=message):
        run(tmp_path, model, bench, tsv.parent)
    assert model.calls == 0


def test_an_image_that_does_not_decode_fails_its_item_only(tmp_path):
    tsv = write_plain_mcq(tmp_path / "LMUData", "AI2D_TEST")
    model = scripted(tmp_path, tsv, "AI2D_TEST", {0: "A", 1: "B", 2: "C"})
    text = tsv.read_text().splitlines()
    cells = text[2].split("\t")
    cells[1] = "A" * 80 + "!!"  # not base64, and too long to be another row's index
    tsv.write_text("\n".join([*text[:2], "\t".join(cells), *text[3:]]) + "\n")
    results = run(tmp_path, model, "ai2d@default", tsv.parent, batch_size=3)
    assert results["coverage"]["failed"] == 1 and "row index 1" in results["failures"]["1"]
    overall = headline(results, "overall")
    # rows 0 and 2 answered in one call and right (A, C): 100 over 2
    assert (value(overall), overall["n"], model.calls) == (100.0, 2, 1)
    assert overall["coverage"]["not_scored"]["answer_failed"] == 1


def test_eval_plan_counts_only_the_answers_the_rules_cannot_read(tmp_path):
    import shutil

    from evals.benchmarks.judged import plan
    from evals.runtime.runner import record_path

    tsv = write_mmbench(tmp_path / "LMUData")
    # Five answers the rules read; copy 1000001's they cannot (the judge then says A).
    model = scripted(tmp_path, tsv, "MMBench_DEV_EN", {**MMBENCH_RIGHT, 1_000_001: "hmm, no idea"})
    bench_dir, cache = tmp_path / "run" / "mmbench@dev-en-judge", tmp_path / "run-cache"

    def dry_run() -> dict:
        options = {"data": str(tsv.parent), "judge_base_url": server.base_url, "judge_max_retries": 1}
        return plan(["mmbench@dev-en-judge"], tmp_path / "run", options, cache)[0]

    with JudgeServer(choice_judge({"hmm, no idea": "A"})) as server:
        before = dry_run()
        # nothing answered yet: no call is certain; at most one per item, 3 answers x 2 tries each
        assert (before["awaiting_generation"], before["judge_calls"], before["judge_calls_at_most"]) == (6, 0, 36)
        model.fail = {1_000_001}  # its answer fails: the judge stage never sees it
        run(tmp_path, model, "mmbench@dev-en-judge", tsv.parent, opt=judge_opts(server), batch_size=1)
        assert server.total_calls == 0
        after_fail = dry_run()
        assert (after_fail["already_judged"], after_fail["generation_failed"]) == (5, 1)
        model.fail = set()
        run(tmp_path, model, "mmbench@dev-en-judge", tsv.parent, opt=judge_opts(server), retry_failed=True)
        assert server.total_calls == 1
        assert (dry_run()["already_judged"], dry_run()["judge_calls"]) == (6, 0)
        # the judged record gone: answered, and the rules cannot read it; its judge answer is in the cache
        record_path(bench_dir, "score", "1000001").unlink()
        record_path(bench_dir, "score", "0").unlink()  # read by the rules: never a call
        again = dry_run()
        assert (again["cached"], again["calls"], again["resolved_by_rules"], again["judge_calls"]) == (1, 0, 1, 0)
        shutil.rmtree(cache / "judge")
        cold = dry_run()
        assert (cold["cached"], cold["calls"], cold["judge_calls"], cold["judge_calls_at_most"]) == (0, 1, 1, 6)
    with pytest.raises(ValueError, match="uses no judge"):
        plan(["mmbench@dev-en"], tmp_path / "run", {"data": str(tsv.parent)}, cache)


# ---------------------------------------------------------------------- paired comparisons
def test_a_paired_compare_of_two_models_counts_units_both_answered_and_detects_a_real_gap(tmp_path, monkeypatch):
    """AI2D, 40 questions: the baseline is right on all, the other wrong on the first 12 (McNemar: b = 0, c = 12)."""
    from evals.report.compare import render
    from evals.report.results import load_results

    tsv = write_plain_mcq(tmp_path / "data", "AI2D_TEST", ("physics",) * 40)
    gold = {index: "ABCD"[index % 4] for index in range(40)}
    worse = {index: ("B" if gold[index] == "A" else "A") if index < 12 else gold[index] for index in range(40)}
    good = scripted(tmp_path / "good", tsv, "AI2D_TEST", gold)
    bad = scripted(tmp_path / "bad", tsv, "AI2D_TEST", worse)
    assert value(headline(run(tmp_path, good, "ai2d@default", tsv.parent, out="good"), "overall")) == 100.0
    assert value(headline(run(tmp_path, bad, "ai2d@default", tsv.parent, out="bad"), "overall")) == 70.0
    text = render(load_results([tmp_path / "good", tmp_path / "bad"]), "md", paired=str(tmp_path / "good"))
    section = text[text.index("Paired tests") :]
    # 12 discordant units all one way: p = 2 x 0.5^12 = 0.000488 (shown 0.0005); 40 units; difference -30 points.
    assert "| -30.0 |" in section and "| 0.0005 | 40 rows |" in section
    assert "McNemar exact (0 vs 12 discordant)" in section
    # The data file moved away from where the run read it: no pairing on wrong answers, and it says so.
    tsv.rename(tmp_path / "moved.tsv")
    text = render(load_results([tmp_path / "good", tmp_path / "bad"]), "md", paired=str(tmp_path / "good"))
    assert "paired test not available for ai2d@default" in text
