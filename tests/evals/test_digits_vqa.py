"""digits-vqa: deterministic questions from held-out digits in the three formats, scored by the real rules."""

from __future__ import annotations

import numpy as np
import pytest
from test_understanding_benchmarks import headline, run, scripted, value

from evals.benchmark import get_benchmark, list_benchmarks
from evals.benchmarks.digits_vqa.data import CONFUSABLE, PARTS, tsv_text, write_part
from evals.benchmarks.vlm import decode_base64_image, read_tsv
from unilip.training.digits import load_digits_split


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-vqa")
    for part in PARTS:
        write_part(root, part)
    return root


def rows_of(folder, part):
    return read_tsv(folder / f"{PARTS[part]}.tsv")


def test_the_three_parts_are_registered_and_made_the_same_every_time(folder):
    assert {f"digits-vqa@{part}" for part in PARTS} <= set(list_benchmarks())
    for part in PARTS:
        assert tsv_text(part) == (folder / f"{PARTS[part]}.tsv").read_text(encoding="utf-8")
    # 360 held-out images: 4 rotations each (MCQ), 2 questions each (yes/no); pairs: per confusable pair, as many
    # as the rarer digit has images
    counts = {part: len(rows_of(folder, part)) for part in PARTS}
    test_labels = load_digits_split("test")[1].tolist()
    expected_pairs = 2 * sum(min(test_labels.count(a), test_labels.count(b)) for a, b in CONFUSABLE)
    assert counts == {"mcq": 1440, "yes-no": 720, "pairs": expected_pairs}


def test_images_are_the_held_out_split_and_gold_answers_name_their_digit(folder):
    images, labels = load_digits_split("test")
    pixels = {
        bytes((image.permute(1, 2, 0) * 255).round().byte().numpy()): int(label)
        for image, label in zip(images, labels, strict=True)
    }
    for part in PARTS:
        for row in rows_of(folder, part):
            decoded = np.asarray(decode_base64_image(row.images_b64[0]).convert("RGB"))
            label = pixels[decoded.tobytes()]  # a PNG of a test-split image, exactly
            if part == "yes-no":
                asked = int(row.question.removeprefix("Is this the digit ").rstrip("?"))
                assert row.answer == ("Yes" if asked == label else "No")
            else:
                assert str(row.options[row.answer]) == str(label)  # pandas reads the digits as ints


def test_each_format_has_the_structure_its_rules_need(folder):
    mcq = rows_of(folder, "mcq")
    by_question = {}
    for row in mcq:
        by_question.setdefault(row.index % 1_000_000, []).append(row)
    assert all(len(copies) == 4 for copies in by_question.values())
    # every rotation puts the right digit under another letter
    assert all(sorted(row.answer for row in copies) == list("ABCD") for copies in by_question.values())
    yes_no = rows_of(folder, "yes-no")
    by_image = {}
    for row in yes_no:
        by_image.setdefault(row.fields["image_path"], []).append(row.answer)
    assert all(sorted(answers) == ["No", "Yes"] for answers in by_image.values())
    firsts = [answers[0] for answers in by_image.values()]
    assert 0.3 < firsts.count("Yes") / len(firsts) < 0.7  # the Yes is not always asked first
    pairs = rows_of(folder, "pairs")
    for first, second in zip(pairs[0::2], pairs[1::2], strict=True):
        assert first.question == second.question and first.options == second.options
        assert first.answer != second.answer  # one image of each digit


def test_a_file_edited_by_hand_is_made_again(folder, tmp_path):
    path = write_part(tmp_path, "pairs")
    path.write_text("index\timage\n", encoding="utf-8")
    assert write_part(tmp_path, "pairs").read_text(encoding="utf-8") == tsv_text("pairs")


@pytest.mark.parametrize(
    ("part", "always", "expected"),
    [
        # Always "A": each question's right answer is under A in exactly one of its four rotations, so no question
        # is right in all of them: 0.
        ("mcq", "A", {"circular_accuracy": 0.0}),
        # Always "Yes": every Yes question right (half of all), no image with both right: acc 50, acc+ 0.
        ("yes-no", "Yes", {"acc": 50.0, "acc_plus": 0.0}),
        # Always "A": one question of each pair right (their golds differ): questions 50, pairs 0.
        ("pairs", "A", {"question_accuracy": 50.0, "pair_accuracy": 0.0}),
    ],
)
def test_scores_by_the_real_rules(folder, tmp_path, part, always, expected):
    bench, variant = get_benchmark(f"digits-vqa@{part}")
    tsv = folder / f"{PARTS[part]}.tsv"
    rows = read_tsv(tsv)

    def prompt(row, dataset):
        return bench.prompt(row, bench.variants[variant])

    oracle = scripted(tmp_path, tsv, PARTS[part], {row.index: row.answer for row in rows}, prompt)
    results = run(tmp_path, oracle, f"digits-vqa@{part}", folder, out="oracle", batch_size=64)
    for name in bench.headlines_for(bench.variants[variant]):
        assert value(headline(results, name)) == 100.0  # every answer right
    fixed = scripted(tmp_path / "fixed", tsv, PARTS[part], {row.index: always for row in rows}, prompt)
    results = run(tmp_path, fixed, f"digits-vqa@{part}", folder, out="fixed", batch_size=64)
    for name, number in expected.items():
        assert value(headline(results, name)) == pytest.approx(number)
