"""Scoring rules of the understanding benchmarks (VLMEvalKit's MME_rating, CircularEval, report_acc_MMVP,
report_acc, MMVet_acc) on small hand-worked examples; the arithmetic is stated beside each expectation."""

from __future__ import annotations

import math

import pytest

from evals.benchmarks.vlm import UNRESOLVED, extract_choice, extract_yes_no
from evals.benchmarks.vlm_scoring import (
    MME_COGNITION,
    MME_PERCEPTION,
    Graded,
    Outcome,
    circular_group,
    score_circular,
    score_mcq,
    score_mme,
    score_mmvet,
    score_mmvp,
)


def _mme(category: str, image: str, index: int, answer: str, gold: str) -> Outcome:
    return Outcome(index=index, answer=answer, gold=gold, category=category, image=image)


# ---------------------------------------------------------------------------------------- MME
def test_mme_subtask_two_images_three_right():
    # 2 images x 2 questions, 3 of 4 right: acc = 100 * 3/4 = 75; acc+ = 100 * 1/2 = 50 (only img1 has both right);
    # score = 75 + 50 = 125.
    outcomes = [
        _mme("color", "img1", 0, "Yes", "Yes"),
        _mme("color", "img1", 1, "No", "No"),
        _mme("color", "img2", 2, "Yes", "Yes"),
        _mme("color", "img2", 3, "Yes", "No"),
    ]
    result = score_mme(outcomes)
    color = result["subtasks"]["color"]
    assert color["acc"]["value"] == pytest.approx(75.0)
    assert color["acc_plus"]["value"] == pytest.approx(50.0)
    assert color["score"]["value"] == pytest.approx(125.0)
    # Per-image scores are 100 * (1 + 1) = 200 and 100 * (0.5 + 0) = 50: mean 125, sample sd = 150 / sqrt(2),
    # se = sd / sqrt(2) = 75, n = 2 images (not 4 questions).
    assert color["score"]["se"] == pytest.approx(75.0)
    assert color["score"]["n"] == 2
    # Only 'color' is present: the sums are not computed, and say which subtasks are missing.
    assert result["perception"]["status"] == "not_computed"
    assert "OCR" in result["perception"]["reason"]
    assert result["cognition"]["status"] == "not_computed"


def test_mme_perception_and_cognition_are_sums_of_subtasks():
    outcomes = []
    index = 0
    # Every perception subtask perfect (2 images, all right): 200 each, 10 subtasks -> perception 2000.
    # Cognition: code_reasoning has one question wrong on one image of two -> acc 75, acc+ 50 = 125;
    # the other three perfect at 200 -> cognition = 125 + 3 * 200 = 725.
    for category in (*MME_PERCEPTION, *MME_COGNITION):
        for image in ("a", "b"):
            for gold in ("Yes", "No"):
                wrong = category == "code_reasoning" and image == "b" and gold == "No"
                outcomes.append(_mme(category, f"{category}/{image}", index, "Yes" if wrong else gold, gold))
                index += 1
    result = score_mme(outcomes)
    assert result["perception"]["value"] == pytest.approx(2000.0)
    assert result["perception"]["se"] == pytest.approx(0.0)
    assert result["perception"]["n"] == 20  # 10 subtasks x 2 images
    assert result["cognition"]["value"] == pytest.approx(725.0)
    # Only code_reasoning varies: its se (75, as above) is the sum's se, sqrt(75^2 + 0 + 0 + 0).
    assert result["cognition"]["se"] == pytest.approx(75.0)
    assert set(result["subtasks"]) == {*MME_PERCEPTION, *MME_COGNITION}


def test_mme_unresolved_is_a_miss_and_counted():
    # 'Yes and no' resolves to neither (VLMEvalKit's Unknown): a miss. 1 image, 1 of 2 right:
    # acc = 50, acc+ = 0, score = 50; 1 unresolved item reported.
    answer = extract_yes_no("Yes and no.")
    assert answer == UNRESOLVED
    outcomes = [_mme("scene", "s1", 0, "Yes", "Yes"), _mme("scene", "s1", 1, answer, "No")]
    result = score_mme(outcomes)
    assert result["subtasks"]["scene"]["score"]["value"] == pytest.approx(50.0)
    assert result["coverage"] == {"items": 2, "resolved": 1, "unresolved": 1}
    assert result["subtasks"]["scene"]["coverage"]["unresolved"] == 1


def test_mme_refuses_an_image_without_two_questions():
    outcomes = [_mme("count", "c1", 0, "Yes", "Yes")]
    with pytest.raises(ValueError, match="exactly two"):
        score_mme(outcomes)
    with pytest.raises(ValueError, match="category and the image"):
        score_mme([Outcome(index=0, answer="Yes", gold="Yes")])


# ---------------------------------------------------------------------------------------- MMBench
def _mmb(index: int, answer: str, gold: str, category: str, l2: str) -> Outcome:
    return Outcome(index=index, answer=answer, gold=gold, category=category, l2_category=l2, split="dev")


def test_circular_eval_one_rotation_wrong_fails_the_question():
    # Question 1 (4 options): 4 copies, index 1, 1000001, 2000001, 3000001; gold letters rotate.
    # Copy 2000001 is wrong -> question 1 scores 0. Question 2 (2 options): both copies right -> 1.
    # Overall = 100 * 1/2 = 50 over 2 groups (not 6 rows: 5/6 rows are right).
    rows = [
        _mmb(1, "A", "A", "image_emotion", "coarse_perception"),
        _mmb(1_000_001, "D", "D", "image_emotion", "coarse_perception"),
        _mmb(2_000_001, "B", "C", "image_emotion", "coarse_perception"),
        _mmb(3_000_001, "B", "B", "image_emotion", "coarse_perception"),
        _mmb(2, "B", "B", "ocr", "finegrained_perception (instance-level)"),
        _mmb(1_000_002, "A", "A", "ocr", "finegrained_perception (instance-level)"),
    ]
    result = score_circular(rows)
    assert result["overall"]["value"] == pytest.approx(50.0)
    assert result["overall"]["n"] == 2
    # Two groups with hits 0 and 1: sd = sqrt(0.5) * 100, se = sd / sqrt(2) = 50.
    assert result["overall"]["se"] == pytest.approx(50.0)
    # l2-categories carry VLMEvalKit's short names.
    assert result["by_l2_category"]["CP"]["value"] == pytest.approx(0.0)
    assert result["by_l2_category"]["FP-S"]["value"] == pytest.approx(100.0)
    assert result["by_category"]["image_emotion"]["value"] == pytest.approx(0.0)
    assert result["by_category"]["ocr"]["value"] == pytest.approx(100.0)
    assert result["by_split"]["dev"]["value"] == pytest.approx(50.0)
    assert result["coverage"]["groups"] == 2
    assert result["coverage"]["undecided_groups"] == 0


def test_circular_eval_unresolved_copy_is_a_miss_but_undecided():
    # Question 5: copy 1000005 unresolved, the other right -> 0 under exact matching (VLMEvalKit: no judge, hit 0),
    # but 'undecided' (a judge could still make it right). Question 6: one copy Z (a refusal) -> wrong, decided.
    unresolved = extract_choice("I think it is the animal", {"A": "cat", "B": "dog"})
    assert unresolved == UNRESOLVED
    rows = [
        _mmb(5, "A", "A", "c", "logic_reasoning"),
        _mmb(1_000_005, unresolved, "B", "c", "logic_reasoning"),
        _mmb(6, "Z", "A", "c", "logic_reasoning"),
        _mmb(1_000_006, "B", "B", "c", "logic_reasoning"),
    ]
    result = score_circular(rows)
    assert result["overall"]["value"] == pytest.approx(0.0)
    assert result["coverage"] == {"items": 4, "resolved": 3, "unresolved": 1, "groups": 2, "undecided_groups": 1}
    assert result["by_l2_category"]["LR"]["value"] == pytest.approx(0.0)


def test_circular_groups_and_missing_original():
    assert circular_group(Outcome(index=3_000_017, answer="A", gold="A")) == 17
    assert circular_group(Outcome(index="q", answer="A", gold="A", group="q")) == "q"
    with pytest.raises(ValueError, match="integer indices"):
        circular_group(Outcome(index="17", answer="A", gold="A"))
    # Copies of question 9 without its original row 9: refused, naming the question.
    with pytest.raises(ValueError, match="question 9"):
        score_circular([_mmb(1_000_009, "A", "A", "c", "l2"), _mmb(2_000_009, "B", "B", "c", "l2")])


# ---------------------------------------------------------------------------------------- MMVP
def _mmvp(index: int, answer: str, gold: str, question: str) -> Outcome:
    return Outcome(index=index, answer=answer, gold=gold, question=question)


def test_mmvp_pair_accuracy_and_question_accuracy():
    # Pairs (rows sorted by index): (1, 2) both right; (3, 4) one right; (5, 6) one unresolved, one right.
    # pair accuracy = 100 * 1/3 = 33.33; question accuracy = 100 * 4/6 = 66.67.
    rows = [
        _mmvp(4, "A", "B", "Is the door open?"),
        _mmvp(1, "A", "A", "Is the dog facing left?"),
        _mmvp(2, "B", "B", "Is the dog facing left?"),
        _mmvp(3, "A", "A", "Is the door open?"),
        _mmvp(5, UNRESOLVED, "A", "Are there two cups?"),
        _mmvp(6, "B", "B", "Are there two cups?"),
    ]
    result = score_mmvp(rows)
    assert result["pair_accuracy"]["value"] == pytest.approx(100 / 3)
    assert result["pair_accuracy"]["n"] == 3
    # Pair hits 1, 0, 0: sd = sqrt(1/3) * 100, se = sd / sqrt(3) = 100 / 3.
    assert result["pair_accuracy"]["se"] == pytest.approx(100 / 3)
    assert result["question_accuracy"]["value"] == pytest.approx(400 / 6)
    assert result["question_accuracy"]["n"] == 6
    assert result["coverage"] == {"items": 6, "resolved": 5, "unresolved": 1, "pairs": 3, "undecided_pairs": 1}


def test_mmvp_refuses_a_malformed_pair():
    # Rows 1 and 2 are paired by position but ask different questions: refused, naming both indices.
    rows = [
        _mmvp(1, "A", "A", "Is the dog facing left?"),
        _mmvp(2, "B", "B", "Is the door open?"),
    ]
    with pytest.raises(ValueError, match="index 1 and 2"):
        score_mmvp(rows)
    with pytest.raises(ValueError, match="odd number"):
        score_mmvp(rows[:1])
    with pytest.raises(ValueError, match="different questions"):
        score_mmvp([_mmvp(1, "A", "A", "Q"), Outcome(index=2, answer="A", gold="B")])


# ---------------------------------------------------------------------------------------- vanilla MCQ
def test_vanilla_mcq_overall_and_per_category():
    # 5 items: category 'Scene Understanding' 2 of 3 right, 'Instance Counting' 1 of 2 (one miss unresolved).
    # overall = 100 * 3/5 = 60; per category 66.67 and 50.
    rows = [
        Outcome(index=0, answer="A", gold="A", category="Scene Understanding"),
        Outcome(index=1, answer="B", gold="B", category="Scene Understanding"),
        Outcome(index=2, answer="C", gold="D", category="Scene Understanding"),
        Outcome(index=3, answer="A", gold="A", category="Instance Counting"),
        Outcome(index=4, answer=UNRESOLVED, gold="B", category="Instance Counting"),
    ]
    result = score_mcq(rows)
    assert result["overall"]["value"] == pytest.approx(60.0)
    # hits 1,1,0,1,0: sd = sqrt(0.3) * 100, se = sd / sqrt(5).
    assert result["overall"]["se"] == pytest.approx(100 * math.sqrt(0.3 / 5))
    assert result["by_category"]["Scene Understanding"]["value"] == pytest.approx(200 / 3)
    assert result["by_category"]["Instance Counting"]["value"] == pytest.approx(50.0)
    assert result["by_l2_category"] == {}
    assert result["coverage"] == {"items": 5, "resolved": 4, "unresolved": 1}


def test_vanilla_mcq_split_restriction():
    # MMMU_DEV_VAL: the published number is the validation split only: 1 of 2 right -> 50 (dev's item ignored).
    rows = [
        Outcome(index=0, answer="A", gold="A", category="Art", split="dev"),
        Outcome(index=1, answer="A", gold="A", category="Art", split="validation"),
        Outcome(index=2, answer="B", gold="A", category="Math", split="validation"),
    ]
    assert score_mcq(rows)["by_split"]["dev"]["value"] == pytest.approx(100.0)
    validation = score_mcq(rows, split="validation")
    assert validation["overall"]["value"] == pytest.approx(50.0)
    assert validation["overall"]["n"] == 2
    assert set(validation["by_category"]) == {"Art", "Math"}
    with pytest.raises(ValueError, match="no outcome has split 'test'"):
        score_mcq(rows, split="test")


def test_missing_gold_is_refused():
    with pytest.raises(ValueError, match="no gold answer"):
        score_mcq([Outcome(index=0, answer="A", gold=None)])


# ---------------------------------------------------------------------------------------- MM-Vet
def test_mmvet_capabilities_and_combinations():
    # grades: 'rec' 1.0, 'rec,ocr' 0.5, 'ocr,spat' 0.0, 'math' 0.8 -> overall = 100 * 2.3/4 = 57.5.
    # rec: items 1 and 2 -> 100 * 1.5/2 = 75; ocr: items 2 and 3 -> 25; spat: 0; math: 80; know, gen: none.
    items = [
        Graded(index=1, category="rec", grade=1.0),
        Graded(index=2, category="rec,ocr", grade=0.5),
        Graded(index=3, category="ocr,spat", grade=0.0),
        Graded(index=4, category="math", grade=0.8),
    ]
    result = score_mmvet(items)
    assert result["overall"]["value"] == pytest.approx(57.5)
    assert result["overall"]["n"] == 4
    assert result["by_capability"]["rec"]["value"] == pytest.approx(75.0)
    assert result["by_capability"]["ocr"]["value"] == pytest.approx(25.0)
    assert result["by_capability"]["spat"]["value"] == pytest.approx(0.0)
    assert result["by_capability"]["math"]["value"] == pytest.approx(80.0)
    assert result["by_capability"]["know"]["status"] == "not_computed"
    # Combination keys: commas become underscores, in order of first appearance.
    assert list(result["by_combination"]) == ["rec", "rec_ocr", "ocr_spat", "math"]
    assert result["by_combination"]["rec_ocr"]["value"] == pytest.approx(50.0)


def test_mmvet_missing_grade_is_explicit():
    # Item 2's grading failed. Default: left out -> overall = 100 * (1.0 + 0.4)/2 = 70 over n = 2, 1 ungraded.
    # VLMEvalKit's behaviour (missing_as_zero): 0 -> overall = 100 * 1.4/3 = 46.67 over n = 3.
    items = [
        Graded(index=1, category="rec", grade=1.0),
        Graded(index=2, category="rec", grade=None),
        Graded(index=3, category="gen", grade=0.4),
    ]
    default = score_mmvet(items)
    assert default["overall"]["value"] == pytest.approx(70.0)
    assert default["overall"]["n"] == 2
    assert default["coverage"] == {"items": 3, "graded": 2, "ungraded": 1, "missing_as_zero": False}
    assert default["by_capability"]["rec"]["value"] == pytest.approx(100.0)
    as_zero = score_mmvet(items, missing_as_zero=True)
    assert as_zero["overall"]["value"] == pytest.approx(140 / 3)
    assert as_zero["overall"]["n"] == 3
    assert as_zero["by_capability"]["rec"]["value"] == pytest.approx(50.0)
    assert as_zero["coverage"]["ungraded"] == 1


def test_mmvet_refuses_an_out_of_range_grade():
    with pytest.raises(ValueError, match=r"not a number in \[0, 1\]"):
        score_mmvet([Graded(index=7, category="rec", grade=1.5)])


def test_no_items_is_not_computed_rather_than_zero():
    assert score_mcq([])["overall"]["status"] == "not_computed"
    assert score_mmvet([Graded(index=1, category="rec", grade=None)])["overall"]["status"] == "not_computed"
