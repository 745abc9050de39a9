"""The understanding benchmarks' shared kit: VLMEvalKit TSVs, pinned MD5s, InternVL prompts, answer extraction.

Expected outcomes follow VLMEvalKit's rules (open-compass/VLMEvalKit): each case names the rule it exercises.
"""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from evals.benchmarks import vlm
from evals.benchmarks.vlm import UNRESOLVED, extract_choice, extract_yes_no, infer_option, read_tsv


def _b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def _noise(seed: int, size: int = 24, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)
    return Image.fromarray(pixels, mode)


def _write_tsv(path, header: list[str], rows: list[list[str]]):
    path.write_text("\n".join("\t".join(cells) for cells in [header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def images():
    return [_noise(0), _noise(1, mode="RGBA"), _noise(2), _noise(3)]


# ---------------------------------------------------------------------------------------- TSV reading
def test_shared_image_rows_resolve_by_index_and_images_are_what_the_model_reads(tmp_path, images):
    header = ["index", "image", "question", "A", "B", "answer", "category"]
    first = _b64(images[0])
    path = _write_tsv(
        tmp_path / "MMBench_DEV_EN.tsv",
        header,
        [
            ["10", first, "What is it?", "cat", "dog", "A", "x"],
            ["11", "10", "Which animal?", "dog", "cat", "B", "x"],  # a short image cell: the index of row 10
            ["12", _b64(images[1]), "Transparent?", "yes", "None", "A", "y"],  # "None" is a pandas NA string
        ],
    )
    rows = read_tsv(path)
    assert [row.index for row in rows] == [10, 11, 12]  # every index is an integer, so ints (image_base.py)
    assert rows[1].images_b64 == rows[0].images_b64 == (first,)
    assert rows[0].image_names == ("10.jpg",) and rows[1].image_names == ("11.jpg",)
    assert rows[1].options == {"A": "dog", "B": "cat"} and rows[1].answer == "B"
    # pandas' default NA parsing, as VLMEvalKit's load: an option reading "None" is absent
    assert rows[2].options == {"A": "yes"}

    (decoded,) = rows[1].images()
    assert decoded.mode == "RGB" and decoded.size == (24, 24)
    # dump_image writes <index>.jpg: the model sees the PNG's pixels re-encoded as a default-quality JPEG
    buffer = io.BytesIO()
    images[0].save(buffer, format="JPEG")
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert np.array_equal(np.asarray(decoded), expected)
    assert not np.array_equal(np.asarray(decoded), np.asarray(images[0]))
    # RGBA becomes RGB by dropping alpha (decode_base64_to_image), then the same JPEG round trip
    (rgba,) = rows[2].images()
    assert rgba.mode == "RGB"
    assert vlm.decode_base64_image(_b64(images[1])).mode == "RGB"


def test_a_multi_image_row_holds_a_list_of_base64_named_by_image_path(tmp_path, images):
    cell = repr([_b64(images[2]), _b64(images[3])])
    path = _write_tsv(
        tmp_path / "MMMU_DEV_VAL.tsv",
        ["index", "image", "image_path", "question", "A", "B", "answer", "split"],
        [
            [
                "validation_1",
                cell,
                "['v1_1.png', 'v1_2.jpg']",
                "Compare <image 1> and <image 2>.",
                "same",
                "different",
                "B",
                "validation",
            ],
            ["validation_2", _b64(images[0]), "v2.png", "What is 2+2?", "", "", "4", "validation"],
            ["validation_3", "", "v3.png", "No image here", "x", "y", "A", "validation"],  # skipped: no image
        ],
    )
    rows = read_tsv(path)
    assert [row.index for row in rows] == ["validation_1", "validation_2"]  # indices not all ints stay strings
    multi = rows[0]
    assert len(multi.images_b64) == 2 and multi.image_names == ("v1_1.png", "v1_2.jpg")
    first, second = multi.images()
    # each image is written under its image_path name: the .png one keeps its pixels exactly, the .jpg does not
    assert np.array_equal(np.asarray(first), np.asarray(images[2]))
    assert first.size == second.size == (24, 24) and not np.array_equal(np.asarray(second), np.asarray(images[3]))
    assert rows[1].options == {}  # empty cells are missing options: an MMMU open question


def test_a_dangling_image_reference_is_an_error_naming_the_row(tmp_path, images):
    path = _write_tsv(
        tmp_path / "AI2D_TEST.tsv",
        ["index", "image", "question"],
        [["1", _b64(images[0]), "q"], ["2", "7", "q"]],
    )
    with pytest.raises(ValueError, match=r"row index 2: its image cell '7' names no row"):
        read_tsv(path)


def test_chained_references_repeated_indices_and_list_name_mismatches_are_errors(tmp_path, images):
    chained = _write_tsv(tmp_path / "a.tsv", ["index", "image"], [["1", _b64(images[0])], ["2", "1"], ["3", "2"]])
    with pytest.raises(ValueError, match=r"row index 3: its image refers to row 2, itself a reference"):
        read_tsv(chained)
    repeated = _write_tsv(tmp_path / "b.tsv", ["index", "image"], [["1", _b64(images[0])], ["1", _b64(images[1])]])
    with pytest.raises(ValueError, match=r"index 1 appears more than once"):
        read_tsv(repeated)
    mismatch = _write_tsv(
        tmp_path / "c.tsv",
        ["index", "image", "image_path"],
        [["1", repr([_b64(images[0]), _b64(images[1])]), "only_one.png"]],
    )
    with pytest.raises(ValueError, match=r"row index 1: 2 images but 1 image_path names"):
        read_tsv(mismatch)


def test_md5_check_identifies_pinned_files_and_warns_on_others(tmp_path, monkeypatch):
    path = _write_tsv(tmp_path / "MMVP.tsv", ["index", "image"], [["1", "x" * 80]])
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    identity, warnings = vlm.check_tsv_md5(path)
    assert identity["files"]["MMVP"] == {
        "md5": actual,
        "pinned_md5": ["8cb732b141a0cba5b42159df2839e557"],
        "matches_pinned": False,
    }
    assert identity["matches_pinned"] is False
    assert len(warnings) == 1 and "differs from VLMEvalKit's pinned release" in warnings[0]

    monkeypatch.setitem(vlm.PINNED_TSV_MD5, "MMVP", {actual: "this test"})
    identity, warnings = vlm.check_tsv_md5(path)
    assert identity["matches_pinned"] is True and warnings == []

    identity, warnings = vlm.check_tsv_md5(path, dataset="NotABenchmark")
    assert identity["matches_pinned"] is False and "no pinned VLMEvalKit MD5" in warnings[0]


def test_the_pinned_table_covers_the_issue_13_files_with_md5_shaped_values():
    assert set(vlm.PINNED_TSV_MD5) == set(vlm.DATASET_KIND)
    for values in vlm.PINNED_TSV_MD5.values():
        assert values and all(len(value) == 32 and int(value, 16) >= 0 for value in values)


# ---------------------------------------------------------------------------------------- prompts
def _row(**fields) -> vlm.VlmRow:
    return vlm.VlmRow(index=1, fields={"index": 1, **fields}, images_b64=("x" * 80,), image_names=("1.jpg",))


def test_mcq_prompt_is_internvl_build_multi_choice_prompt():
    row = _row(question="What color is the sky?", hint="Look up.", A="blue", B="green", C=None, answer="A")
    expected = (
        "Look up.\nWhat color is the sky?\nA. blue\nB. green\n"
        "Answer with the option's letter from the given choices directly."
    )
    for dataset in ("MMBench_DEV_EN", "MMBench_DEV_EN_V11", "MMVP", "AI2D_TEST", "SEEDBench_IMG", "MMMU_DEV_VAL"):
        assert vlm.internvl_prompt(row, dataset) == expected
    no_hint = _row(question="How many?", A=1, B=2)
    assert vlm.mcq_prompt(no_hint) == (
        "How many?\nA. 1\nB. 2\nAnswer with the option's letter from the given choices directly."
    )
    # no options (MMMU open question): answer directly
    assert vlm.mcq_prompt(_row(question="What is 2+2?")) == "What is 2+2?\nAnswer the question directly."
    # Chinese text: Chinese instructions (cn_string)
    assert (
        vlm.mcq_prompt(_row(question="天空是什么颜色?", A="蓝", B="绿"))
        == "天空是什么颜色?\nA. 蓝\nB. 绿\n请直接回答选项字母。"
    )


def test_yes_no_and_open_prompts():
    mme = _row(question="Is there a dog in the image? Please answer yes or no.")
    assert vlm.internvl_prompt(mme, "MME") == (
        "Is there a dog in the image? Please answer yes or no. Answer the question using a single word or phrase."
    )
    vet = _row(question="What is written on the sign?\nExplain.")
    assert vlm.internvl_prompt(vet, "MMVet") == "What is written on the sign?\nExplain."
    with pytest.raises(ValueError, match="unknown dataset 'MMStar'"):
        vlm.internvl_prompt(vet, "MMStar")
    with pytest.raises(ValueError, match="row index 1 has no question"):
        vlm.internvl_prompt(_row(A="x"), "AI2D_TEST")


def test_mmmu_open_questions_score_as_a_two_way_choice():
    # MMMU_preproc: option A missing -> A = gold text, B = "Other Answers"; a non-letter gold scores as A
    choices, gold = vlm.scoring_choices(_row(question="q", answer="42"), "MMMU_DEV_VAL")
    assert choices == {"A": "42", "B": "Other Answers"} and gold == "A"
    assert extract_choice("The result is 42", choices) == "A"
    choices, gold = vlm.scoring_choices(_row(question="q", A="x", B="y", answer="B"), "MMMU_DEV_VAL")
    assert choices == {"A": "x", "B": "y"} and gold == "B"
    choices, gold = vlm.scoring_choices(_row(question="q", A="x", B="y", answer="B"), "AI2D_TEST")
    assert choices == {"A": "x", "B": "y"} and gold == "B"


# ---------------------------------------------------------------------------------------- extraction
COLORS = {"A": "red", "B": "blue", "C": "green"}


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("A", "A"),  # a lone letter token
        ("B.", "B"),  # '.' becomes a space
        ("(C)", "C"),  # brackets become spaces
        ("**B**", "B"),  # '*' becomes a space
        ("Answer: {A}", "A"),  # ':' '{' '}' become spaces
        ("The answer is C", "C"),  # one letter, within the last four tokens
        ("A and B", UNRESOLVED),  # two letters: not resolvable, and no option text matches
        ("B; C", UNRESOLVED),  # two letters after ';' splitting
        ("a", UNRESOLVED),  # letters are case-sensitive tokens; 'a' is no option text either
        ("D", UNRESOLVED),  # a letter that is not a choice
        ("Z", "Z"),  # no choice letter but a Z token
        ("Cannot determine the answer from the picture", "Z"),  # a refusal phrase
        ("the red one", "A"),  # text fallback: exactly one option text is a substring
        ("red or blue", UNRESOLVED),  # text fallback: two option texts match
        ("it is red, definitely red, no doubt", UNRESOLVED),  # longer than twice the option texts: no text match
        ("Failed to obtain answer via API", UNRESOLVED),  # the API-failure marker infers no option
    ],
)
def test_extract_choice_follows_can_infer(prediction, expected):
    assert extract_choice(prediction, COLORS) == expected


def test_a_letter_far_from_the_end_is_not_taken():
    # can_infer_option takes a single letter only within the last four tokens (index > len - 5)
    early = "C is right because the image clearly shows the object"
    assert infer_option(early, COLORS) is None
    assert extract_choice(early, COLORS) == UNRESOLVED
    assert infer_option("I think it is C", COLORS) == "C"  # index 4 of 5 tokens


def test_the_answer_is_rule_is_opt_in():
    # VLMEvalKit's newest revision also accepts "(correct) answer is X" for letters A-D
    prediction = "The correct answer is **B** because the sky in the photograph is blue and clear today"
    assert infer_option(prediction, COLORS) is None
    assert infer_option(prediction, COLORS, answer_is_rule=True) == "B"
    assert extract_choice(prediction, COLORS, answer_is_rule=True) == "B"


def test_a_missing_prediction_is_the_string_nan():
    # VLMEvalKit scores str(prediction): NaN reads 'nan', which matches nothing here
    assert extract_choice(float("nan"), COLORS) == UNRESOLVED
    assert extract_choice(float("nan"), {"A": "na", "B": "xyz"}) == "A"  # option text 'na' is inside 'nan'


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("Yes", "Yes"),
        ("Yes, there is a dog.", "Yes"),  # ',' touches a space: deleted; the final '.' is removed
        ("no.", "No"),
        ("NO!", "No"),  # lower-cased first
        ("The answer is yes", "Yes"),
        ("Yes and no", UNRESOLVED),  # both words
        ("yes/no", UNRESOLVED),  # '/' touches no space: becomes one, giving both words
        ("Not really", UNRESOLVED),  # 'not' is not 'no'
        ("I don't know", UNRESOLVED),  # neither word
        ("", UNRESOLVED),
    ],
)
def test_extract_yes_no_follows_yorn_extraction(prediction, expected):
    assert extract_yes_no(prediction) == expected


def test_process_punctuation_quirks():
    assert vlm.process_punctuation("a-b") == "a b"  # no mark touches a space: replaced by a space
    assert vlm.process_punctuation("a - b-c") == "a  bc"  # '-' touches a space somewhere: every '-' deleted
    assert vlm.process_punctuation("1,000-2") == "10002"  # a digit-comma-digit: every mark deleted
    assert vlm.process_punctuation("3.5 apples.") == "3.5 apples"  # periods before a digit stay
    assert vlm.process_punctuation("." * 40) == "." * 8  # only the first 32 periods go (count=re.UNICODE)
