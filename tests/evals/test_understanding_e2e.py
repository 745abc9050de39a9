"""Issue 13's acceptance: the seven understanding benchmarks end to end through ``unilip eval run`` with the three
understanding model references (a UniLIP model directory, a stock InternVL3 directory, and a stock InternVL3 with
a UniLIP tokenizer's encoder swapped in), synthetic TSVs in VLMEvalKit's format and a loopback judge for MM-Vet;
then ``unilip eval compare`` beside a reconstruction run. The tiny models are random: the numbers mean nothing,
the plumbing must hold."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from harness_helpers import run_cli, run_tiny_recon
from judge_server import JudgeServer, answer
from vlm_tsv import write_all

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny_internvl import save_tiny_internvl, save_tiny_internvl_chat  # noqa: E402

BENCHES = "mme,mmbench,mmvp,ai2d,seed,mmmu,mmvet"
DEFAULTS = (
    "mme@default",
    "mmbench@dev-en",
    "mmvp@default",
    "ai2d@default",
    "seed@default",
    "mmmu@two-way",
    "mmvet@default",
)
# Items of the synthetic TSVs (tests/evals/vlm_tsv.py): 14 x 2 MME, 4 + 2 MMBench rows, 4 MMVP, 3 AI2D, 3 SEED,
# 4 MMMU, 3 MM-Vet.
ITEMS = {"mme@default": 28, "mmbench@dev-en": 6, "mmvp@default": 4, "ai2d@default": 3, "seed@default": 3}
ITEMS.update({"mmmu@two-way": 4, "mmvet@default": 3})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("understanding")
    internvl = save_tiny_internvl_chat(save_tiny_internvl(root / "stock-weights"), root / "InternVL3-tiny-hf")
    from unilip import build_tokenizer, get_variant

    encoder = root / "tokenizer"
    build_tokenizer(get_variant("tiny").tokenizer, seed=7).save_pretrained(encoder)
    return {"root": root, "internvl": internvl, "encoder": encoder, "data": write_all(root / "LMUData")}


def _run(setup, out: Path, model: list[str], judge_url: str):
    return run_cli(
        "eval",
        "run",
        *model,
        "--bench",
        BENCHES,
        "--out",
        str(out),
        "--data",
        str(setup["data"]),
        "--batch-size",
        "3",
        "--cache-dir",
        str(setup["root"] / "cache"),
        "--no-progress",
        "--opt",
        "max_new_tokens=3",
        "--opt",
        f"mmvet.judge_base_url={judge_url}",
        "--opt",
        "mmvet.judge_model=loopback-grader",
    )


def _results(done) -> dict[str, dict]:
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {line["benchmark"]: line for line in lines}


@pytest.mark.slow
def test_three_model_references_answer_all_seven_benchmarks(setup):
    grades = []

    def grade(call):
        grades.append(call.text)
        return answer("0.5")

    runs = {}
    with JudgeServer(grade) as server:
        for name, model in {
            "stock": ["--model", f"internvl:{setup['internvl']}"],
            "swapped": ["--model", f"internvl:{setup['internvl']}", "--encoder", str(setup["encoder"])],
            "unilip": ["--model", "tiny-digits"],
        }.items():
            out = setup["root"] / f"run-{name}"
            done = _run(setup, out, model, server.base_url)
            assert done.returncode == 0, done.stderr[-4000:]
            results = _results(done)
            assert set(results) == set(DEFAULTS), done.stderr[-3000:]
            for bench, result in results.items():
                assert result["coverage"] == {**result["coverage"], "expected": ITEMS[bench], "ok": ITEMS[bench]}
                headline = next(iter(result["metrics"].values()))
                assert headline["coverage"]["units_scored"] == headline["coverage"]["units"], bench
                # the synthetic files are not VLMEvalKit's releases, and every result says so
                assert any("pinned release" in warning for warning in headline["warnings"]), bench
            mme = results["mme@default"]["metrics"]
            assert 0.0 <= mme["perception"]["value"] <= 2000.0 and 0.0 <= mme["cognition"]["value"] <= 800.0
            # every MM-Vet answer was graded 0.5 by the loopback judge: 100 x 0.5 overall
            assert results["mmvet@default"]["metrics"]["overall"]["value"] == pytest.approx(50.0)
            runs[name] = (out, json.loads((out / "run.json").read_text())["model"])
    assert len(grades) == 3 * ITEMS["mmvet@default"]  # one grading per MM-Vet answer and model

    stock, swapped, unilip = (runs[name][1] for name in ("stock", "swapped", "unilip"))
    assert stock["adapter"] == swapped["adapter"] == "internvl" and unilip["adapter"] == "unilip-generator"
    assert swapped["vision_encoder"] == str(setup["encoder"]) and stock["vision_encoder"] == "InternVL3's own"
    assert stock["weights_sha256"] != swapped["weights_sha256"]  # another encoder is another model
    # the prompt a model read is kept with its answer: MME's question plus VLMEvalKit's suffix
    record = next((runs["swapped"][0] / "mme@default" / "answer").glob("0-*.json"))
    assert json.loads(record.read_text())["prompt"] == "Is it OCR? Answer the question using a single word or phrase."

    recon = run_tiny_recon(setup["root"] / "recon", setup["root"] / "cache")
    assert recon.returncode == 0, recon.stderr[-3000:]
    table = run_cli("eval", "compare", str(runs["swapped"][0]), str(setup["root"] / "recon"))
    assert table.returncode == 0, table.stderr
    for name in (*DEFAULTS, "recon@standard"):
        assert name in table.stdout
    for column in ("perception", "pair_accuracy", "overall"):
        assert column in table.stdout


def test_a_tokenizer_of_another_width_is_refused_by_name_before_loading(setup, tmp_path):
    from dataclasses import replace

    from unilip import build_tokenizer, get_variant

    narrow = tmp_path / "narrow"
    build_tokenizer(replace(get_variant("tiny").tokenizer, llm_hidden_size=32), seed=0).save_pretrained(narrow)
    done = run_cli(
        "eval",
        "run",
        "--model",
        f"internvl:{setup['internvl']}",
        "--encoder",
        str(narrow),
        "--bench",
        "mme",
        "--data",
        str(setup["data"]),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "llm_hidden_size=32" in done.stderr and "hidden_size=64" in done.stderr
    assert not (tmp_path / "run" / "mme@default").exists()  # refused before any work


def test_encoder_is_refused_for_a_unilip_model_and_random_init_for_internvl(setup, tmp_path):
    common = ["--bench", "mme", "--data", str(setup["data"]), "--out", str(tmp_path / "run"), "--no-progress"]
    done = run_cli("eval", "run", "--model", "tiny-digits", "--encoder", str(setup["encoder"]), *common)
    assert done.returncode == 2 and "--encoder swaps a UniLIP encoder into a stock InternVL3" in done.stderr
    done = run_cli("eval", "run", "--model", f"internvl:{setup['internvl']}", "--random-init", *common)
    assert done.returncode == 2 and "--random-init does not apply to internvl" in done.stderr
    done = run_cli("eval", "run", "--model", f"internvl:{tmp_path / 'nowhere'}", *common)
    assert done.returncode != 0 and "nowhere" in done.stderr
