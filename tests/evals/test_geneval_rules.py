"""GenEval protocol data, per-image rules and aggregation, on synthetic detections (no model)."""

import hashlib
import json
import math

import numpy as np
import pytest
from PIL import Image

from evals.benchmarks.geneval.aggregate import ImageOutcome, outcomes_from_official_rows, read_results_jsonl, summarize
from evals.benchmarks.geneval.argsort import numpy123_argsort
from evals.benchmarks.geneval.color import masked_crop
from evals.benchmarks.geneval.protocol import (
    DATA_DIR,
    TAGS,
    ScoringRules,
    load_color_protocol,
    load_object_names,
    load_prompts,
)
from evals.benchmarks.geneval.rules import (
    Detection,
    box_iou,
    evaluate_image,
    keep_detections,
    pick_colors,
    relative_position,
    score_image,
)


def det(score, box=(0, 0, 10, 10)):
    return Detection(box=tuple(float(v) for v in box), score=score)


def no_colors(name, found):
    raise AssertionError("the colour classifier must not be called for this prompt")


# ---------------------------------------------------------------------- protocol data
def test_shipped_data_is_the_official_prompt_set_with_its_notice():
    prompts = load_prompts()
    assert len(prompts) == 553
    counts = {tag: sum(p["tag"] == tag for p in prompts) for tag in TAGS}
    assert counts == {
        "single_object": 80,
        "two_object": 99,
        "counting": 80,
        "colors": 94,
        "position": 100,
        "color_attr": 100,
    }
    names = load_object_names()
    assert len(names) == 80 and names[0] == "person" and names[-1] == "toothbrush"
    colors = load_color_protocol().colors
    for record in prompts:
        for item in record["include"] + record.get("exclude", []):
            assert item["class"] in names
            assert item.get("color", "red") in colors
    assert prompts[0] == {
        "tag": "single_object",
        "include": [{"class": "bench", "count": 1}],
        "prompt": "a photo of a bench",
    }
    notice = (DATA_DIR / "LICENSE-NOTE.md").read_text()
    assert "MIT License" in notice and "Copyright (c) 2023 Dhruba Ghosh" in notice
    digest = hashlib.sha256((DATA_DIR / "evaluation_metadata.jsonl").read_bytes()).hexdigest()
    assert digest in notice


def test_color_protocol_texts():
    protocol = load_color_protocol()
    assert protocol.colors == ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
    assert protocol.texts("red", "fire hydrant") == [
        "a photo of a red fire hydrant",
        "a photo of a red-colored fire hydrant",
        "a photo of a red object",
    ]
    assert protocol.background == "#999999" and protocol.logit_scale == 100.0


# ---------------------------------------------------------------------- filtering
def test_threshold_is_strict_and_classes_left_empty_are_dropped():
    kept = keep_detections({"cat": [det(0.3), det(0.30001)], "dog": [det(0.1)], "cow": []}, "single_object")
    assert list(kept) == ["cat"] and [d.score for d in kept["cat"]] == [0.30001]


def test_threshold_compares_float32_scores_as_mmdet_returns_them():
    # mmdet's scores are float32; numpy compares a float32 array with the Python float 0.3 in float32, so a
    # score of exactly float32(0.3) (= 0.30000001192...) is not above the threshold there.
    at = float(np.float32(0.3))
    above = float(np.nextafter(np.float32(0.3), np.float32(1)))
    assert at > 0.3  # in float64 it would pass
    kept = keep_detections({"cat": [det(at), det(above), det(0.3000000001)]}, "single_object")
    assert [d.score for d in kept["cat"]] == [above]
    at_counting = float(np.float32(0.9))
    kept = keep_detections({"clock": [det(at_counting), det(0.95)]}, "counting")
    assert [d.score for d in kept["clock"]] == [0.95]


def test_counting_threshold_applies_to_every_class_of_a_counting_prompt():
    raw = {"clock": [det(0.95), det(0.85)], "cat": [det(0.5), det(0.91)]}
    assert {k: [d.score for d in v] for k, v in keep_detections(raw, "counting").items()} == {
        "clock": [0.95],
        "cat": [0.91],
    }
    assert sorted(len(v) for v in keep_detections(raw, "two_object").values()) == [2, 2]


def test_at_most_16_per_class_the_most_confident_first():
    scores = [0.31 + 0.01 * i for i in range(20)]
    rng = np.random.default_rng(0)
    raw = {"kite": [det(s) for s in rng.permutation(scores)]}
    kept = keep_detections(raw, "single_object")["kite"]
    assert [d.score for d in kept] == pytest.approx(sorted(scores, reverse=True)[:16])


# Tie orders the official scorer gets: ``np.argsort(scores)[::-1]`` under numpy 1.23.5 (its pin), computed
# there for these scores (0.5 + 0.25 * level, float32). Up to 16 candidates this is the stable order
# reversed; from 17 on it is not, and the last case reaches numpy's heapsort fallback.
TIE_CASES = [
    ([0, 0, 2, 1, 1, 1], [2, 5, 4, 3, 1, 0]),
    ([2, 0, 1, 0, 1, 2, 1, 0, 1, 0, 2, 2, 2, 1, 2, 1], [14, 12, 11, 10, 5, 0, 15, 13, 8, 6, 4, 2, 9, 7, 3, 1]),
    ([0, 1, 1, 1, 2, 0, 2, 0, 1, 2, 0, 2, 1, 1, 2, 2, 2], [16, 6, 14, 11, 9, 15, 4, 1, 2, 3, 8, 12, 13, 5, 7, 10, 0]),
    (
        [
            1,
            2,
            2,
            0,
            0,
            0,
            1,
            2,
            1,
            2,
            1,
            2,
            1,
            2,
            0,
            1,
            2,
            2,
            2,
            2,
            0,
            2,
            1,
            2,
            0,
            0,
            0,
            2,
            2,
            0,
            1,
            0,
            0,
            2,
            2,
            0,
            0,
            1,
            2,
            2,
        ],
        [
            39,
            23,
            1,
            2,
            7,
            9,
            11,
            13,
            16,
            17,
            18,
            38,
            21,
            19,
            27,
            28,
            34,
            33,
            12,
            15,
            37,
            6,
            8,
            10,
            0,
            30,
            22,
            14,
            32,
            24,
            31,
            29,
            20,
            35,
            5,
            4,
            3,
            36,
            26,
            25,
        ],
    ),
]
HEAPSORT_CASE = (
    [
        0,
        21,
        2,
        24,
        4,
        39,
        7,
        37,
        8,
        39,
        10,
        36,
        12,
        35,
        14,
        34,
        17,
        33,
        19,
        1,
        3,
        6,
        7,
        9,
        11,
        13,
        15,
        17,
        19,
        21,
        31,
        31,
        29,
        28,
        27,
        27,
        25,
        25,
        32,
        22,
    ],
    [
        5,
        9,
        7,
        11,
        13,
        15,
        17,
        38,
        30,
        31,
        32,
        33,
        35,
        34,
        36,
        37,
        3,
        39,
        29,
        1,
        28,
        18,
        27,
        16,
        26,
        14,
        25,
        12,
        24,
        10,
        23,
        8,
        22,
        6,
        21,
        4,
        20,
        2,
        19,
        0,
    ],
)


@pytest.mark.parametrize("levels, official", TIE_CASES, ids=["6", "16", "17", "40"])
def test_equal_scores_come_out_in_the_official_numpy_1_23_order(levels, official):
    scores = [float(np.float32(0.5) + np.float32(0.25) * np.float32(level)) for level in levels]
    assert numpy123_argsort([float(np.float32(s)) for s in scores])[::-1] == official
    # The rule keeps them in that order (all above 0.3; max_objects lifted to see the whole order).
    raw = {"kite": [Detection(box=(i, 0, i + 1, 1), score=s) for i, s in enumerate(scores)]}
    kept = keep_detections(raw, "single_object", ScoringRules(max_objects=100))["kite"]
    assert [int(d.box[0]) for d in kept] == official
    if len(levels) <= 16:  # insertion sort only: the stable order, reversed
        assert official == np.argsort(np.asarray(scores, dtype=np.float32), kind="stable")[::-1].tolist()


def test_the_port_matches_numpy_1_23_where_it_falls_back_to_heapsort():
    values, official = HEAPSORT_CASE
    assert numpy123_argsort([float(v) for v in values])[::-1] == official
    assert numpy123_argsort([]) == [] and numpy123_argsort([0.5]) == [0]
    # NaN goes last ascending (first once reversed), as numpy sorts it.
    assert numpy123_argsort([0.5, float("nan"), 0.2]) == [2, 0, 1]


def test_no_suppression_by_default_and_iou_suppression_when_asked():
    raw = {"cup": [det(0.9, (0, 0, 10, 10)), det(0.8, (0, 0, 10, 10)), det(0.7, (30, 30, 40, 40))]}
    assert len(keep_detections(raw, "single_object")["cup"]) == 3
    suppressed = keep_detections(raw, "single_object", ScoringRules(max_overlap=0.5))["cup"]
    assert [d.score for d in suppressed] == [0.9, 0.7]
    # The +1-pixel convention: boxes (0,0,9,9) and (5,0,14,9) share 5 x 10 of 10 x 10 pixels each.
    assert box_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)


# ---------------------------------------------------------------------- counting
COUNT_TWO = {
    "tag": "counting",
    "prompt": "a photo of two clocks",
    "include": [{"class": "clock", "count": 2}],
    "exclude": [{"class": "clock", "count": 3}],
}


@pytest.mark.parametrize(
    "scores, correct",
    [
        ([0.95, 0.97], True),  # exactly two
        ([0.95, 0.97, 0.99], False),  # three: the exclude item fires
        ([0.95], False),  # one: too few
        ([0.95, 0.97, 0.85], True),  # the third is below the 0.9 counting threshold
        ([0.95, 0.97, 0.9], True),  # exactly 0.9 is not above it
        ([0.95, 0.5, 0.6], False),  # only one above 0.9
    ],
)
def test_counting_is_an_exact_count_at_the_counting_threshold(scores, correct):
    verdict = score_image(COUNT_TWO, {"clock": [det(s) for s in scores]}, no_colors)
    assert verdict["correct"] is correct
    if not correct:
        assert verdict["reason"]


def test_exclude_counts_only_the_kept_16():
    metadata = {
        "tag": "single_object",
        "include": [{"class": "kite", "count": 1}],
        "exclude": [{"class": "kite", "count": 17}],
    }
    many = {"kite": [det(0.5 + 0.01 * i) for i in range(20)]}
    assert score_image(metadata, many, no_colors)["correct"] is True  # 20 detected, 16 kept: fewer than 17
    metadata["exclude"][0]["count"] = 16
    assert score_image(metadata, many, no_colors)["correct"] is False


def test_two_objects_need_both_and_extras_are_not_penalised():
    metadata = {"tag": "two_object", "include": [{"class": "bench", "count": 1}, {"class": "cat", "count": 1}]}
    both = {"bench": [det(0.8), det(0.7)], "cat": [det(0.4)], "dog": [det(0.9)]}
    assert score_image(metadata, both, no_colors) == {
        "correct": True,
        "reason": "",
        "details": {
            "bench": [[0, 0, 10, 10, 0.8], [0, 0, 10, 10, 0.7]],
            "cat": [[0, 0, 10, 10, 0.4]],
            "dog": [[0, 0, 10, 10, 0.9]],
        },
    }
    verdict = score_image(metadata, {"bench": [det(0.8)], "cat": [det(0.2)]}, no_colors)
    assert verdict["correct"] is False and verdict["reason"] == "expected cat>=1, found 0"


# ---------------------------------------------------------------------- position
def boxes_at(dx, dy, size=10.0):
    """A box of the given size at offset (dx, dy) from an equal box at the origin."""
    return (dx - size / 2, dy - size / 2, dx + size / 2, dy + size / 2), (-size / 2, -size / 2, size / 2, size / 2)


@pytest.mark.parametrize(
    "dx, dy, expected",
    [
        # Boxes 10 wide: the margin removes 0.1 * (10 + 10) = 2 from the offset, and a relation needs
        # (|offset| - 2) / |offset| > 0.5, i.e. |offset| > 4.
        (4.01, 0, {"right of"}),
        (3.99, 0, set()),
        (4.0, 0, set()),
        (-4.01, 0, {"left of"}),
        (-3.99, 0, set()),
        (0, -4.01, {"above"}),
        (0, 4.01, {"below"}),
        (0, -3.99, set()),  # y points down
        (1.9, 0, set()),  # inside the margin: no offset left at all
        (10, 10, {"right of", "below"}),  # (8, 8) / 14.14 = 0.57 on both axes: two relations
        (10, 3, {"right of"}),  # (8, 1) / 10.44: only x exceeds 0.5
    ],
)
def test_relative_position_margins(dx, dy, expected):
    a, b = boxes_at(dx, dy)
    assert relative_position(a, b) == expected


def test_position_margin_scales_with_the_threshold():
    a, b = boxes_at(3.0, 0)
    assert relative_position(a, b, position_threshold=0.1) == set()
    assert relative_position(a, b, position_threshold=0.05) == {"right of"}  # (3 - 1) / 3 > 0.5


POSITION = {
    "tag": "position",
    "prompt": "a photo of a dog right of a teddy bear",
    "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}],
}


def test_position_rule_uses_the_most_confident_objects():
    right, left = (50, 0, 60, 10), (0, 0, 10, 10)
    dets = {"teddy bear": [det(0.9, left)], "dog": [det(0.8, right), det(0.7, (-60, 0, -50, 10))]}
    assert score_image(POSITION, dets, no_colors)["correct"] is True
    dets["dog"] = [det(0.6, right), det(0.7, (-60, 0, -50, 10))]  # the most confident dog is on the left
    verdict = score_image(POSITION, dets, no_colors)
    assert verdict["correct"] is False and verdict["reason"] == "expected dog right of target, found left of target"


def test_position_fails_without_a_target_and_every_pair_must_hold():
    verdict = score_image(POSITION, {"dog": [det(0.8, (50, 0, 60, 10))]}, no_colors)
    assert verdict["correct"] is False
    assert verdict["reason"].splitlines() == ["expected teddy bear>=1, found 0", "no target for dog to be right of"]
    # Two dogs, both must be right of the one bear.
    metadata = {
        "tag": "position",
        "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 2, "position": ["right of", 0]}],
    }
    bear = [det(0.9, (0, 0, 10, 10))]
    good = {"teddy bear": bear, "dog": [det(0.8, (50, 0, 60, 10)), det(0.7, (80, 0, 90, 10))]}
    bad = {"teddy bear": bear, "dog": [det(0.8, (50, 0, 60, 10)), det(0.7, (2, 0, 12, 10))]}
    assert score_image(metadata, good, no_colors)["correct"] is True
    assert score_image(metadata, bad, no_colors)["correct"] is False


def test_overlapping_objects_have_no_relation():
    dets = {"teddy bear": [det(0.9, (0, 0, 10, 10))], "dog": [det(0.8, (1, 0, 11, 10))]}
    verdict = score_image(POSITION, dets, no_colors)
    # The official text joins the empty set of relations: "found " + "" + " target".
    assert verdict["correct"] is False and verdict["reason"] == "expected dog right of target, found  target"


def test_two_wrong_relations_are_listed_alphabetically():
    dets = {"teddy bear": [det(0.9, (50, 50, 60, 60))], "dog": [det(0.8, (0, 0, 10, 10))]}
    verdict = score_image(POSITION, dets, no_colors)
    assert verdict["reason"] == "expected dog right of target, found above and left of target"


# ---------------------------------------------------------------------- colour
def test_pick_colors_argmax_and_ties_go_to_the_first_listed_colour():
    colors = load_color_protocol().colors
    logits = np.zeros((3, 10))
    logits[0, 4] = 2.0  # blue
    logits[1, [2, 7]] = 5.0  # yellow and brown tie: yellow is listed first
    logits[2, [9, 0]] = [3.0, 3.0]  # white and red tie: red is listed first
    assert pick_colors(logits, colors) == ["blue", "yellow", "red"]
    with pytest.raises(ValueError, match="colour logits"):
        pick_colors(np.zeros((2, 9)), colors)


def test_colour_checks_only_the_top_count_objects_and_needs_count_matches():
    metadata = {
        "tag": "color_attr",
        "include": [{"class": "car", "count": 1, "color": "red"}, {"class": "cup", "count": 1, "color": "blue"}],
    }
    seen = {}

    def classify(name, found):
        seen[name] = [d.score for d in found]
        return {"car": ["red"], "cup": ["green"]}[name]

    dets = {"car": [det(0.5), det(0.9)], "cup": [det(0.4)]}
    verdict = score_image(metadata, dets, classify)
    assert seen == {"car": [0.9], "cup": [0.4]}  # the most confident car only
    assert verdict["correct"] is False
    assert verdict["reason"] == "expected blue cup>=1, found 0 blue; and 1 green"
    # Several colours seen: listed in the protocol's colour order (red ... white), as the official text.
    three = {"tag": "colors", "include": [{"class": "car", "count": 3, "color": "red"}]}
    verdict = score_image(three, {"car": [det(0.9), det(0.8), det(0.7)]}, lambda n, f: ["white", "green", "white"])
    assert verdict["reason"] == "expected red car>=3, found 0 red; and 1 green, 2 white"
    two_red = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "red"}]}
    assert evaluate_image(two_red, {"car": [det(0.9), det(0.8)]}, lambda n, f: ["red", "blue"])[0] is False
    assert evaluate_image(two_red, {"car": [det(0.9), det(0.8)]}, lambda n, f: ["red", "red"])[0] is True


def test_a_failed_colour_stops_the_position_check():
    metadata = {
        "tag": "position",
        "include": [
            {"class": "bench", "count": 1},
            {"class": "cat", "count": 1, "color": "red", "position": ["above", 0]},
        ],
    }
    dets = {"bench": [det(0.9, (0, 50, 10, 60))], "cat": [det(0.9, (0, 0, 10, 10))]}
    verdict = score_image(metadata, dets, lambda name, found: ["blue"])
    assert verdict["correct"] is False and "above" not in verdict["reason"]
    assert score_image(metadata, dets, lambda name, found: ["red"])["correct"] is True


def test_masked_crop_fills_outside_the_mask_with_gray_and_rounds_the_box():
    pixels = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    image = Image.fromarray(pixels)
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:3, 2:5] = True
    crop = masked_crop(image, (1.4, 0.6, 5.5, 4.5), mask, "#999999")  # PIL rounds to (1, 1, 6, 4)
    assert crop.size == (5, 3)
    out = np.asarray(crop)
    expected = np.where(mask[1:4, 1:6, None], pixels[1:4, 1:6], 153)
    assert np.array_equal(out, expected)
    with pytest.raises(ValueError, match="mask of shape"):
        masked_crop(image, (0, 0, 4, 4), np.ones((8, 6), dtype=bool), "#999999")
    with pytest.raises(ValueError, match="empty colour crop"):
        masked_crop(image, (2, 2, 2.2, 5), mask, "#999999")


# ---------------------------------------------------------------------- aggregation
def _row(index, k, tag, correct):
    metadata = {"tag": tag, "prompt": f"prompt {index}", "include": []}
    return {
        "filename": f"images/{index:05d}/samples/{k:05d}.png",
        "tag": tag,
        "prompt": metadata["prompt"],
        "correct": correct,
        "reason": "",
        "metadata": json.dumps(metadata),
        "details": "{}",
    }


def test_aggregation_is_the_mean_of_task_means_over_images(tmp_path):
    # (prompt index, tag, correctness of its images)
    plan = [
        (0, "single_object", [1, 1]),
        (1, "single_object", [1, 0]),  # 3/4 = 0.75
        (2, "two_object", [0, 1]),  # 1/2 = 0.5
        (3, "counting", [0, 0]),
        (4, "counting", [0, 0]),  # 0/4 = 0
        (5, "colors", [1]),  # 1/1 = 1
        (6, "position", [1, 0, 0, 0]),
        (7, "position", [0, 1, 0, 0]),  # 2/8 = 0.25
        (8, "color_attr", [1, 1]),
        (9, "color_attr", [0, 0]),
    ]  # 2/4 = 0.5
    path = tmp_path / "results.jsonl"
    path.write_text(
        "".join(json.dumps(_row(i, k, tag, bool(c))) + "\n" for i, tag, cs in plan for k, c in enumerate(cs))
    )
    summary = summarize(outcomes_from_official_rows(read_results_jsonl(path)))
    tasks = {tag: summary[tag]["value"] for tag in TAGS}
    assert tasks == {
        "single_object": 0.75,
        "two_object": 0.5,
        "counting": 0.0,
        "colors": 1.0,
        "position": 0.25,
        "color_attr": 0.5,
    }
    assert summary["overall"]["value"] == pytest.approx(3.0 / 6)  # not the pooled 9 / 23
    assert summary["overall"]["all_tags"] is True
    assert summary["correct_images"]["value"] == pytest.approx(9 / 23)
    assert summary["correct_prompts"]["value"] == pytest.approx(7 / 10)
    assert [summary[tag]["n"] for tag in TAGS] == [4, 2, 4, 1, 8, 4]
    # Clustered SE of color_attr: prompt residuals (+1, -1) -> sqrt(2/1 * 2) / 4 = 0.5; one prompt -> none.
    assert summary["color_attr"]["se"] == pytest.approx(0.5)
    assert summary["colors"]["se"] is None and summary["overall"]["se"] is None


def test_aggregation_over_some_tasks_says_so_and_rejects_bad_rows():
    summary = summarize(
        [
            ImageOutcome("counting", "a", True),
            ImageOutcome("counting", "b", False),
            ImageOutcome("position", "c", False),
            ImageOutcome("position", "d", False),
        ]
    )
    assert summary["overall"]["value"] == pytest.approx(0.25)
    assert summary["overall"]["tags"] == ["counting", "position"] and summary["overall"]["all_tags"] is False
    assert summary["overall"]["se"] == pytest.approx(math.sqrt(0.5**2 + 0.0) / 2)
    with pytest.raises(ValueError, match="non-boolean"):
        outcomes_from_official_rows([{"tag": "counting", "correct": "false", "metadata": "{}"}])
    with pytest.raises(ValueError, match="unknown GenEval tag"):
        summarize([ImageOutcome("faces", "a", True)])
    with pytest.raises(ValueError, match="no scored image"):
        summarize([])
