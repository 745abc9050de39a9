"""ImgEdit: answer parsing, sample/type/overall scores, and runs with a fake editor against a loopback judge."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from judge_server import JudgeServer, answer
from PIL import Image

from evals.adapter import ModelAdapter
from evals.benchmark import get_benchmark
from evals.benchmarks.imgedit.scoring import aggregate_types, parse_axis_scores
from evals.judges import ParseError
from evals.runtime.distributed import World
from evals.runtime.records import item_seed
from evals.runtime.runner import load_record, run_benchmark


# ---------------------------------------------------------------------- parsing
def test_axis_lines_parse_as_the_official_step():
    text = (
        "Brief reasoning: The edit: mostly right, 20 words\n**Prompt Compliance**: 4\n"
        "  Visual Naturalness: 3  \nPhysical & Detail Coherence: 5\nOverall: 4.\nConfidence: 4/5\n"
    )
    parsed = parse_axis_scores(text)
    assert parsed["axes"] == [
        ["**Prompt Compliance**", 4],
        ["Visual Naturalness", 3],
        ["Physical & Detail Coherence", 5],
    ]
    assert parsed["mean"] == 4.0 and parsed["score"] == 4.0
    assert parse_axis_scores("A: 2\nB: 1\nC: 1")["score"] == 1.33  # rounded to 2 decimals per sample
    assert parse_axis_scores("Brief reasoning: fine\nScore: 4") == {"axes": [["Score", 4]], "mean": 4.0, "score": 4.0}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("The edit looks good overall.", "no 'Axis name: n' line"),
        ("Prompt Compliance:4\nVisual Naturalness - 3", "no 'Axis name: n' line"),  # the split is on ': '
        ("Prompt Compliance: 4\nVisual Naturalness: 9", "outside 1-5"),
        ("Prompt Compliance: 0", "outside 1-5"),
    ],
)
def test_malformed_answers_raise(text, problem):
    with pytest.raises(ParseError, match=problem):
        parse_axis_scores(text)


# ---------------------------------------------------------------------- the synthetic benchmark
# key -> (edit_type, the judge's three axis scores, or a failure); sample score = mean rounded to 2 decimals.
EDITS = {
    "22": ("add", (4, 3, 5)),  # 4.0
    "23": ("add", (5, 5, 5)),  # 5.0      -> add 4.5
    "100": ("adjust", (3, 3, 3)),  # adjust 3.0
    "200": ("extract", (2, 1, 1)),  # 1.33 (not 1.333...)
    "300": ("replace", (5, 5, 5)),  # 5.0
    "400": ("remove", (4, 4, 2)),  # 3.33
    "500": ("background", (1, 2, 3)),  # 2.0
    "600": ("style", (5, 4, 4)),  # 4.33
    "700": ("compose", (3, 4, 2)),  # 3.0
    "800": ("action", (2, 2, 2)),  # 2.0
    "801": ("action", "unparseable"),
    "802": ("action", "no source image"),
}
# mean of the 9 type means, each from rounded sample scores: (4.5 + 3 + 1.33 + 5 + 3.33 + 2 + 4.33 + 3 + 2) / 9
OVERALL = 28.49 / 9


def write_imgedit(root: Path, images: Path) -> None:
    """A fake ImgEdit clone (edit list, judge prompts in our words) and a folder of source images."""
    basic = root / "Benchmark" / "Basic"
    basic.mkdir(parents=True)
    edits = {
        key: {
            "id": f"{edit_type}/{key}.{'jpg' if int(key) % 2 else 'png'}",
            "prompt": f"Instruction {key}: change something",
            "edit_type": edit_type,
        }
        for key, (edit_type, _) in EDITS.items()
    }
    (basic / "basic_edit.json").write_text(json.dumps(edits, indent=1))
    prompts = {
        edit_type: (
            f"Rate a {edit_type} edit. The user asked: <edit_prompt>\nThe first image is the source, "
            "the second the result.\nBrief reasoning: <20 words>\n"
            "Axis One: n\nAxis Two: n\nAxis Three: n"
        )
        for edit_type, _ in EDITS.values()
    }
    (basic / "prompts.json").write_text(json.dumps(prompts, indent=1))
    uge = root / "Benchmark" / "UGE"
    uge.mkdir()
    (uge / "UGE_edit.json").write_text(
        json.dumps({str(k): {"id": f"uge{k}.png", "prompt": f"Instruction {k}: do it"} for k in (1, 2, 3)})
    )
    rng = np.random.default_rng(0)
    for key, (_edit_type, outcome) in {**EDITS, **{f"uge{k}": (None, None) for k in (1, 2, 3)}}.items():
        if outcome == "no source image":
            continue
        path = images / (edits[key]["id"] if key in edits else f"{key}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(path, quality=95)


class FakeEditor(ModelAdapter):
    """Inverts the source image; records what it was given."""

    capabilities = frozenset({"edit"})

    def __init__(self):
        self.calls = []

    def describe(self):
        return {"adapter": "fake-editor", "model": "fake", "weights_sha256": "e" * 64}

    def edit(self, image, instruction, seed):
        self.calls.append((image.mode, image.size, instruction, seed))
        return Image.fromarray(255 - np.asarray(image))


def judge(call, fixed=False):
    key = re.search(r"Instruction (\d+):", call.text).group(1)
    if "Score: <1-5>" in call.text:  # our UGE template
        return answer(f"Brief reasoning: fine.\nScore: {int(key) + 2}")
    outcome = EDITS[key][1]
    if outcome == "unparseable" and not fixed:
        return answer("Brief reasoning: I would rather not give numbers.")
    axes = outcome if isinstance(outcome, tuple) else (1, 1, 1)
    return answer(
        "Brief reasoning: ok.\n"
        + "\n".join(f"Axis {n}: {v}" for n, v in zip(("One", "Two", "Three"), axes, strict=True))
    )


def run_imgedit(reference, data, images, out, server, retry_failed=False, **options):
    adapter = FakeEditor()
    bench, variant = get_benchmark(reference)
    options = {
        "data": str(data),
        "imgedit_images": str(images),
        "judge_base_url": server.base_url,
        "judge_max_retries": 1,
        "judge_config": {"backoff_base_s": 0.01, "backoff_max_s": 0.02},
        **options,
    }
    resolved = bench.resolve(variant, options, adapter)
    spec = resolved.spec
    results = run_benchmark(
        resolved,
        adapter,
        Path(out) / spec.name,
        World(0, 1),
        1,
        Path(out) / "cache",
        progress=False,
        retry_failed=retry_failed,
    )
    return results, spec, adapter


def test_basic_run_type_means_overall_and_failure_states(tmp_path):
    write_imgedit(tmp_path / "ImgEdit", tmp_path / "images")
    with JudgeServer(judge) as server:
        results, spec, adapter = run_imgedit(
            "imgedit@basic", tmp_path / "ImgEdit", tmp_path / "images", tmp_path / "run", server
        )
        metrics = results["metrics"]
        assert metrics["overall"]["value"] == pytest.approx(OVERALL, abs=1e-12)
        assert metrics["overall"]["value_rounded"] == 3.17
        assert metrics["add"] == {"value": 4.5, "se": 0.5, "n": 2, "value_rounded": 4.5}
        assert metrics["extract"]["value"] == 1.33 and metrics["action"]["n"] == 1  # failures excluded, not zeros
        assert metrics["overall"]["judge_states"] == {
            "ok": 10,
            "parse_failed": 1,
            "judge_error": 0,
            "content_filtered": 0,
            "missing_image": 1,
            "pending": 0,
        }
        assert results["failures"]["801"].startswith("judge: parse_failed")
        assert results["failures"]["802"].startswith("produce: missing_image")
        assert spec.knobs["data"]["matches_pinned"] is False
        assert any("differs from the pinned release" in w for w in metrics["overall"]["warnings"])
        assert any("1 source images are missing" in w for w in metrics["overall"]["warnings"])

        # The edit call: the source as an RGB image, the instruction, a per-item seed; output <key>.png.
        assert ("RGB", (28, 20), "Instruction 300: change something", item_seed(0, "300")) in adapter.calls
        bench_dir = tmp_path / "run" / "imgedit@basic"
        sent = next(c for c in server.history if "Instruction 300:" in c.text)
        assert sent.images == [
            (tmp_path / "images" / "replace" / "300.png").read_bytes(),
            (bench_dir / "images" / "300.png").read_bytes(),
        ]
        assert sent.system is None and sent.text.startswith("Rate a replace edit. The user asked: Instruction 300")
        assert sent.body["model"] == "gpt-4.1-2025-04-14" and "temperature" not in sent.body
        jpeg = next(c for c in server.history if "Instruction 23:" in c.text)
        assert jpeg.body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")

        # Once the judge answers item 801, retrying in place fixes it; the missing source stays missing.
        server.responder = lambda call: judge(call, fixed=True)
        retried, _, _ = run_imgedit(
            "imgedit@basic", tmp_path / "ImgEdit", tmp_path / "images", tmp_path / "run", server, retry_failed=True
        )
    states = retried["metrics"]["overall"]["judge_states"]
    assert states["ok"] == 11 and states["parse_failed"] == 0 and states["missing_image"] == 1
    assert retried["metrics"]["action"]["value"] == pytest.approx(1.5)  # mean(2.0, 1.0)


def test_uge_variant_scores_the_mean_of_samples_with_our_template(tmp_path):
    write_imgedit(tmp_path / "ImgEdit", tmp_path / "images")
    with JudgeServer(judge) as server:
        results, spec, _ = run_imgedit(
            "imgedit@uge", tmp_path / "ImgEdit", tmp_path / "images", tmp_path / "run", server
        )
        sent = {re.search(r"Instruction (\d): do it", call.text).group(1): call for call in server.history}
        assert sorted(sent) == ["1", "2", "3"] and server.total_calls == 3
        assert sent["2"].images[0] == (tmp_path / "images" / "uge2.png").read_bytes() and len(sent["2"].images) == 2
    assert results["metrics"]["overall"]["value"] == pytest.approx((3 + 4 + 5) / 3)
    assert results["metrics"]["overall"]["n"] == 3 and results["coverage"]["ok"] == 3
    assert spec.knobs["judge"]["templates"]["uge"]["source"] == "builtin:imgedit/uge.yaml"
    assert spec.knobs["judge"]["model"] == "gpt-4o"


def test_aggregate_needs_every_type_and_bad_inputs_are_explained(tmp_path):
    partial = aggregate_types({"add": [4.0, 5.0]}, ["add", "style"])
    assert partial["overall"]["status"] == "not_computed" and "style" in partial["overall"]["reason"]
    write_imgedit(tmp_path / "ImgEdit", tmp_path / "images")
    bench, variant = get_benchmark("imgedit@basic")
    with pytest.raises(ValueError, match="none of the 12 source images"):
        bench.resolve(variant, {"data": str(tmp_path / "ImgEdit"), "imgedit_images": str(tmp_path)}, None)
    with pytest.raises(ValueError, match="judge_template applies to imgedit@uge"):
        bench.resolve(
            variant,
            {"data": str(tmp_path / "ImgEdit"), "imgedit_images": str(tmp_path / "images"), "judge_template": "x.yaml"},
            None,
        )
    prompts = tmp_path / "ImgEdit" / "Benchmark" / "Basic" / "prompts.json"
    prompts.write_text(json.dumps({"add": "Rate <edit_prompt>"}))
    with pytest.raises(ValueError, match="no judge prompt for edit types"):
        bench.resolve(variant, {"data": str(tmp_path / "ImgEdit"), "imgedit_images": str(tmp_path / "images")}, None)


# ---------------------------------------------------------------------- digits the official step counts
@pytest.mark.parametrize(
    "text, axes",
    [
        ("Prompt Compliance: \u0664\nVisual Naturalness: 3\nDetail: \u0665", [4, 3, 5]),  # Arabic-Indic 4 and 5
        ("Prompt Compliance: \uff14\nVisual Naturalness: \uff12", [4, 2]),  # full-width 4 and 2
        ("Prompt Compliance: \u096a\nVisual Naturalness: 1", [4, 1]),  # Devanagari 4
    ],
)
def test_unicode_decimal_digits_count_as_in_the_official_step(text, axes):
    # The official step1: parts[1].isdigit() then int(parts[1]), both of which take these digits.
    parsed = parse_axis_scores(text)
    assert [value for _, value in parsed["axes"]] == axes
    assert parsed["score"] == round(sum(axes) / len(axes), 2)


def test_a_digit_int_cannot_read_is_a_parse_failure_not_a_dropped_line():
    # "²".isdigit() is True but int("²") raises: the official step stops there; we fail this answer only.
    with pytest.raises(ParseError, match="int\\(\\) cannot read it"):
        parse_axis_scores("Prompt Compliance: 4\nVisual Naturalness: \u00b2")


# ---------------------------------------------------------------------- paths named by the data
def test_data_paths_never_write_or_read_outside_their_folders(tmp_path):
    from evals.runtime.records import safe_item_name

    root, images = tmp_path / "ImgEdit", tmp_path / "images"
    write_imgedit(root, images)
    outside = tmp_path / "outside"
    outside.mkdir()
    rng = np.random.default_rng(1)
    for name in ("secret.png", "absolute.png"):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(outside / name)
    Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(images / "add" / "fine.png")
    edits_file = root / "Benchmark" / "Basic" / "basic_edit.json"
    edits = json.loads(edits_file.read_text())
    edits["../../../escaped"] = {
        "id": "add/fine.png",
        "prompt": "Instruction 24: a key that is a path",
        "edit_type": "add",
    }
    edits["900"] = {"id": "../outside/secret.png", "prompt": "Instruction 900: relative escape", "edit_type": "add"}
    edits["901"] = {"id": str(outside / "absolute.png"), "prompt": "Instruction 901: absolute path", "edit_type": "add"}
    edits_file.write_text(json.dumps(edits))
    before = {path for path in tmp_path.rglob("*")}

    def responder(call):
        if "Instruction 24:" in call.text:
            return answer("Brief reasoning: ok.\nAxis One: 3\nAxis Two: 3\nAxis Three: 3")
        return judge(call)

    with JudgeServer(responder) as server:
        results, spec, adapter = run_imgedit("imgedit@basic", root, images, tmp_path / "run", server)
        sent = [image for call in server.history for image in call.images]
    bench_dir = tmp_path / "run" / "imgedit@basic"
    written = {path for path in tmp_path.rglob("*") if path.is_file()} - before
    assert written and all(
        path.is_relative_to(bench_dir) or path.is_relative_to(tmp_path / "run" / "cache") for path in written
    ), sorted(written)
    # The key that is a path gets a hashed file name and is evaluated like any other edit.
    mapped = f"images/{safe_item_name('../../../escaped')}.png"
    assert (bench_dir / mapped).is_file()
    assert load_record(bench_dir, "produce", "../../../escaped")["outputs"].keys() == {mapped}
    assert load_record(bench_dir, "judge", "../../../escaped")["status"] == "ok"
    assert any("not safe file names" in w for w in results["metrics"]["overall"]["warnings"])
    # The source paths that leave the images folder are refused and never read, sent or edited.
    for key, name in (("900", "../outside/secret.png"), ("901", str(outside / "absolute.png"))):
        error = results["failures"][key]
        assert error.startswith("produce: missing_image: ") and f"{name!r} escapes {images}" in error
    assert not [call for call in adapter.calls if call[2].startswith(("Instruction 900", "Instruction 901"))]
    for name in ("secret.png", "absolute.png"):
        assert (outside / name).read_bytes() not in sent
    assert any("name a source image outside the images folder" in w for w in results["metrics"]["overall"]["warnings"])


def test_produce_records_name_their_output_and_source_files(tmp_path):
    import hashlib

    write_imgedit(tmp_path / "ImgEdit", tmp_path / "images")
    with JudgeServer(judge) as server:
        run_imgedit("imgedit@basic", tmp_path / "ImgEdit", tmp_path / "images", tmp_path / "run", server, limit=2)
    record = load_record(tmp_path / "run" / "imgedit@basic", "produce", "22")
    output = tmp_path / "run" / "imgedit@basic" / "images" / "22.png"
    source = tmp_path / "images" / "add" / "22.png"
    assert record["outputs"]["images/22.png"]["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert record["inputs"][str(source.absolute())]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
