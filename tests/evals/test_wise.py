"""WISE: answer parsing, WiScore and the weighted overall, and whole runs against a loopback judge."""

import hashlib
import json
import logging
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from harness_helpers import ROOT, DeleteBeforeStage
from judge_server import JudgeServer, Reply, answer, content_filter, key_leaks
from PIL import Image

from evals.adapter import ModelAdapter
from evals.benchmark import get_benchmark
from evals.benchmarks.judged import plan
from evals.benchmarks.wise.scoring import (
    LEGACY_RANGES,
    LEGACY_WEIGHTS,
    VERIFIED_RANGES,
    VERIFIED_WEIGHTS,
    aggregate_wise,
    parse_legacy,
    parse_legacy_missing_zero,
    parse_verified,
    wiscore,
)
from evals.judges import ParseError
from evals.registry import register_adapter
from evals.runtime.distributed import World
from evals.runtime.records import item_seed
from evals.runtime.runner import load_record, run_benchmark
from unilip.cli import main as unilip_main

SECRET = "sk-wise-test-0c4d8e2f6a1b3c5d7e9f0a2b4c6d8e0f"


# ---------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Consistency: 2\nRealism: 1\nAesthetic Quality: 0", (2, 1, 0)),
        ("**Consistency**: 1\n**Realism**: 2\n**Aesthetic Quality**: 1", (1, 2, 1)),
        ("consistency:2 realism 0 AESTHETIC QUALITY:1", (2, 0, 1)),  # no space, no colon, any case
        ("Consistency: 0\nRealism: 0\nAesthetic Quality: 0\nOn reflection, Consistency: 1", (1, 0, 0)),  # later wins
        ("The scores are:\n1\n2\n0\n", (1, 2, 0)),  # fallback: lines holding one digit 0-2
        ("The scores are:\r\n1\r\n2\r\n0\r\n", (1, 2, 0)),  # CRLF line ends: the "\r" is stripped
        ("Scores\u2028follow:\n1 \n 2\n0", (1, 2, 0)),
        ("<think>Consistency: 0 maybe</think>\nConsistency: 2\nRealism: 2\nAesthetic Quality: 2", (2, 2, 2)),
    ],
)
def test_legacy_answers_parse_as_the_official_script(text, expected):
    assert tuple(parse_legacy(text).values()) == expected and list(parse_legacy(text)) == [
        "consistency",
        "realism",
        "aesthetic_quality",
    ]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("Consistency: 2\nAesthetic Quality: 1", "no score for realism"),
        ("I cannot rate this image.", "no score for consistency, realism, aesthetic_quality"),
        ("1\n2\n", "no score"),  # two digit lines are not three scores
        ("Consistency: 5\nRealism: 1\nAesthetic Quality: 1", "outside 0-2"),
        ("Consistency: 2\n3\n", "no score for realism"),  # a partial match disables the fallback
    ],
)
def test_malformed_legacy_answers_raise(text, problem):
    with pytest.raises(ParseError, match=problem):
        parse_legacy(text)


@pytest.mark.parametrize(
    "text",
    [
        "Consistency\uff1a2\nRealism: 1\nAesthetic Quality: 0",  # the pinned script's colon is ASCII only
        "1\r2\r0",  # lines end at "\n" in the official script; str.splitlines would see three
        "1\u20282\u20280",  # U+2028, LINE SEPARATOR: the same
        "1\x0b2\x0c0",
    ],
)
def test_legacy_parser_reads_the_ascii_colon_and_splits_lines_at_newline_only(text):
    with pytest.raises(ParseError, match="no score for consistency"):
        parse_legacy(text)


def test_missing_zero_parser_scores_every_absent_name_0_and_says_which():
    assert parse_legacy_missing_zero("Consistency: 2\nRealism: 1\nAesthetic Quality: 0") == {
        "consistency": 2,
        "realism": 1,
        "aesthetic_quality": 0,
        "missing_scored_zero": [],
    }
    assert parse_legacy_missing_zero("**Consistency**: 1 and nothing else") == {
        "consistency": 1,
        "realism": 0,
        "aesthetic_quality": 0,
        "missing_scored_zero": ["realism", "aesthetic_quality"],
    }
    # No line fallback in the mid-2025 script: three digit lines are three missing scores.
    assert parse_legacy_missing_zero("1\n2\n2")["missing_scored_zero"] == [
        "consistency",
        "realism",
        "aesthetic_quality",
    ]


def test_verified_answers_parse_and_malformed_ones_raise():
    assert parse_verified("The image shows the right thing.\nScore: 1") == {"score": 1}
    assert parse_verified("<think>Score: 1?</think>\nreasoning...\n0\n") == {"score": 0}
    for bad in ("Score: 10", "Score: yes", "The answer is one."):
        with pytest.raises(ParseError):
            parse_verified(bad)


# ---------------------------------------------------------------------- scores
# (prompt id, consistency, realism, aesthetic) -> WiScore computed by hand: (0.7 C + 0.2 R + 0.1 A) / 2.
SYNTHETIC = {
    1: (2, 2, 2, 1.0),
    2: (1, 0, 1, 0.4),
    401: (2, 1, 0, 0.8),
    568: (0, 0, 0, 0.0),
    701: (1, 1, 1, 0.5),
    801: (2, 0, 2, 0.8),
    901: (0, 2, 1, 0.25),
}
# 0.4 * mean(1.0, 0.4) + 0.167 * 0.8 + 0.133 * 0 + 0.1 * (0.5 + 0.8 + 0.25)
SYNTHETIC_OVERALL = 0.5686


def test_wiscore_and_weighted_overall_on_a_hand_computed_set():
    for c, r, a, expected in SYNTHETIC.values():
        assert wiscore(c, r, a) == pytest.approx(expected)
    metrics = aggregate_wise({pid: v[3] for pid, v in SYNTHETIC.items()}, LEGACY_RANGES, LEGACY_WEIGHTS)
    assert metrics["overall"]["value"] == pytest.approx(SYNTHETIC_OVERALL)
    assert metrics["culture"] == {"value": pytest.approx(0.7), "se": pytest.approx(0.3), "n": 2}
    assert metrics["time"]["value"] == 0.8 and metrics["time"]["se"] is None
    assert metrics["overall"]["se"] is None  # single-item categories have no standard error
    assert sum(LEGACY_WEIGHTS.values()) == pytest.approx(1.0) and sum(VERIFIED_WEIGHTS.values()) == pytest.approx(1.0)


def test_overall_needs_every_category_and_verified_uses_its_own_ranges_and_weights():
    partial = aggregate_wise({1: 1.0, 401: 0.5}, LEGACY_RANGES, LEGACY_WEIGHTS)
    assert partial["overall"]["status"] == "not_computed" and "space" in partial["overall"]["reason"]
    # Verified: ids 521 and 640 are space, 641 biology; overall = 0.4 culture + 0.12 x the rest.
    scores = {1: 1, 2: 0, 401: 1, 521: 0, 640: 1, 641: 1, 761: 0, 881: 1}
    metrics = aggregate_wise(scores, VERIFIED_RANGES, VERIFIED_WEIGHTS)
    assert metrics["space"]["value"] == 0.5 and metrics["biology"]["n"] == 1
    assert metrics["overall"]["value"] == pytest.approx(0.4 * 0.5 + 0.12 * (1 + 0.5 + 1 + 0 + 1))


# ---------------------------------------------------------------------- whole runs
PROMPTS = {
    1: "A mooncake-shaped pastry eaten at the Mid-Autumn Festival",
    2: "The animal that symbolises Australia's national airline",
    3: "A traditional Dutch wooden shoe",
    4: "The flower associated with remembrance in Britain",
    401: "A maple tree in Quebec three months after the leaves turn red",
    568: "A ship seen from the shore, shortly before it disappears over the horizon",
    701: "A caterpillar after metamorphosis",
    801: "A stick half in a glass of water, seen from the side",
    901: "Copper wire after hours in silver nitrate solution",
}
# What the judge says per prompt id: scores as in SYNTHETIC; 3 never parses; 4 is filtered.
GOOD = {pid: f"Consistency: {v[0]}\nRealism: {v[1]}\nAesthetic Quality: {v[2]}" for pid, v in SYNTHETIC.items()}


def write_wise_repo(root: Path) -> Path:
    """A fake clone in the repository layout: the three legacy files, with our own prompts."""
    files = {
        "cultural_common_sense.json": [1, 2, 3, 4],
        "spatio-temporal_reasoning.json": [401, 568],
        "natural_science.json": [701, 801, 901],
    }
    for name, ids in files.items():
        records = [
            {
                "prompt_id": pid,
                "Prompt": PROMPTS[pid],
                "Explanation": f"explanation {pid}",
                "Category": "test",
                "Subcategory": "test",
            }
            for pid in ids
        ]
        path = root / "WISE_legacy" / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1))
    return root


class FakeGenerator(ModelAdapter):
    """Deterministic images from (prompt, seed); records every call."""

    capabilities = frozenset({"generate"})

    def __init__(self):
        self.calls = []

    def describe(self):
        return {"adapter": "fake-generator", "model": "fake", "weights_sha256": "f" * 64}

    def generate(self, prompts, n, seed):
        self.calls.append((list(prompts), n, seed))
        images = []
        for prompt in prompts:
            digest = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
            rng = np.random.default_rng(list(digest[:8]))
            images.append([Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for _ in range(n)])
        return images


register_adapter("fake-wise", lambda model, **options: FakeGenerator())


def prompt_id_of(call):
    return next(pid for pid, prompt in PROMPTS.items() if f"PROMPT: {prompt}\n" in call.text)


def wise_judge(call, fixed=()):
    pid = prompt_id_of(call)
    if pid == 3 and 3 not in fixed:
        return answer("This image is lovely.")
    if pid == 4:
        return content_filter() if 4 not in fixed else answer("Consistency: 1\nRealism: 1\nAesthetic Quality: 1")
    return answer(GOOD[pid] if pid in GOOD else "Consistency: 1\nRealism: 1\nAesthetic Quality: 1")


def run_wise(data, out, server, adapter=None, wrap=None, retry_failed=False, reference="wise@legacy", **options):
    adapter = adapter or FakeGenerator()
    real, variant = get_benchmark(reference)
    options = {
        "data": str(data),
        "judge_base_url": server.base_url,
        "judge_max_retries": 1,
        "judge_concurrency": 3,
        "judge_config": {"backoff_base_s": 0.01, "backoff_max_s": 0.02},
        **options,
    }
    resolved = real.resolve(variant, options, adapter)
    runnable = wrap(resolved) if wrap else resolved
    results = run_benchmark(
        runnable,
        adapter,
        Path(out) / resolved.name,
        World(0, 1),
        1,
        Path(out) / "cache",
        progress=False,
        retry_failed=retry_failed,
    )
    return results, resolved.spec, adapter


def test_run_scores_what_parses_counts_the_rest_and_reports_the_data_mismatch(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("UNILIP_JUDGE_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    data = write_wise_repo(tmp_path / "WISE")
    with JudgeServer(wise_judge, api_key=SECRET) as server:
        results, spec, adapter = run_wise(data, tmp_path / "run", server)
        # Item 3's answers never parse: asked 3 times (the legacy policy); item 4 is filtered once.
        per_item = {
            prompt_id_of(call): count
            for call, count in ((next(c for c in server.history if c.key == key), n) for key, n in server.calls.items())
        }
        assert per_item == {1: 1, 2: 1, 3: 3, 4: 1, 401: 1, 568: 1, 701: 1, 801: 1, 901: 1}

        overall = results["metrics"]["overall"]
        assert overall["value"] == pytest.approx(SYNTHETIC_OVERALL)  # failures are not zeros: culture = mean(1.0, 0.4)
        assert overall["judge_states"] == {
            "ok": 7,
            "parse_failed": 1,
            "judge_error": 0,
            "content_filtered": 1,
            "missing_image": 0,
            "pending": 0,
        }
        assert results["coverage"] == {"expected": 9, "ok": 7, "failed": 2, "missing": 0, "fraction": 7 / 9}
        assert results["failures"]["3"].startswith("judge: parse_failed: ")
        assert results["failures"]["4"].startswith("judge: content_filtered: ")
        assert results["metrics"]["culture"]["n"] == 2 and results["metrics"]["consistency"]["n"] == 7

        # The data differ from the pinned release: said in the spec and the results, not silently.
        assert spec.knobs["data"]["matches_pinned"] is False
        assert any("differs from the pinned release" in w for w in overall["warnings"])
        assert "differs from the pinned release" in caplog.text

        # One image per prompt, the raw prompt, a per-item seed; saved as <prompt_id>.png and sent as is.
        bench_dir = tmp_path / "run" / "wise@legacy"
        assert sorted(adapter.calls) == sorted(([p], 1, item_seed(0, str(pid))) for pid, p in PROMPTS.items())
        assert sorted(p.name for p in (bench_dir / "images").iterdir()) == sorted(f"{pid}.png" for pid in PROMPTS)
        sent = next(c for c in server.history if prompt_id_of(c) == 401)
        assert sent.images == [(bench_dir / "images" / "401.png").read_bytes()]
        assert sent.body["model"] == "gpt-4o-2024-05-13" and sent.body["temperature"] == 0.0
        assert sent.body["max_tokens"] == 2000 and "explanation 401" in sent.text

        # Retrying the failed items in place, once the judge behaves: only they are asked again.
        server.responder = lambda call: wise_judge(call, fixed=(3, 4))
        before = server.total_calls
        retried, _, adapter2 = run_wise(data, tmp_path / "run", server, retry_failed=True)
        assert server.total_calls - before == 2 and adapter2.calls == []
        assert retried["metrics"]["overall"]["judge_states"]["ok"] == 9 and retried["failures"] == {}
        # culture now mean(1.0, 0.4, 0.5, 0.5) = 0.6
        assert retried["metrics"]["overall"]["value"] == pytest.approx(SYNTHETIC_OVERALL - 0.4 * 0.1)

    # The key reached the server's header and nothing else.
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == [] and SECRET not in caplog.text and SECRET not in json.dumps(results)


class InterruptJudging:
    """Wraps the benchmark: its judge stage dies after ``after`` results, as a Ctrl-C would stop it."""

    def __init__(self, bench, after):
        self.bench, self.after = bench, after

    def __getattr__(self, name):
        return getattr(self.bench, name)

    def run_stage(self, stage, items, ctx):
        with closing(self.bench.run_stage(stage, items, ctx)) as results:
            for count, pair in enumerate(results):
                if stage == "judge" and count == self.after:
                    raise KeyboardInterrupt("simulated interrupt while judging")
                yield pair


def test_interrupted_judging_resumes_without_asking_any_request_twice(tmp_path):
    data = write_wise_repo(tmp_path / "WISE")

    def slow_judge(call):
        return answer(GOOD.get(prompt_id_of(call), "Consistency: 1\nRealism: 1\nAesthetic Quality: 1"), delay_s=0.05)

    with JudgeServer(slow_judge) as server:
        with pytest.raises(KeyboardInterrupt):
            run_wise(
                data, tmp_path / "run", server, wrap=lambda bench: InterruptJudging(bench, after=3), judge_concurrency=2
            )
        asked_before = server.total_calls
        assert 3 <= asked_before < len(PROMPTS)  # stopped partway; queued requests never went out
        judged = list((tmp_path / "run" / "wise@legacy" / "judge").glob("*.json"))
        assert len(judged) == 3
        results, _, _ = run_wise(data, tmp_path / "run", server, judge_concurrency=2)
        assert len(server.calls) == len(PROMPTS) and set(server.calls.values()) == {1}
    assert results["coverage"]["ok"] == len(PROMPTS)
    # 3 and 4 answer 1/1/1 here (WiScore 0.5): culture = mean(1.0, 0.4, 0.5, 0.5)
    assert results["metrics"]["overall"]["value"] == pytest.approx(SYNTHETIC_OVERALL - 0.4 * 0.1)


def test_dry_run_plan_counts_calls_and_cache_hits_without_calling(tmp_path, capsys):
    data = write_wise_repo(tmp_path / "WISE")
    with JudgeServer(lambda call: answer(GOOD.get(prompt_id_of(call), "1\n1\n1"))) as server:
        options = {"data": str(data), "judge_base_url": server.base_url, "judge_max_retries": 1}
        (before,) = plan(["wise@legacy"], tmp_path / "run", options, cache_dir=tmp_path / "run" / "cache")
        assert (before["awaiting_generation"], before["judge_calls"], before["cached"]) == (9, 9, 0)
        assert before["judge_calls_at_most"] == 9 * 3 * 2  # 3 answers per item at most, 2 tries per answer
        run_wise(data, tmp_path / "run", server, judge_max_retries=1)
        calls = server.total_calls
        bench_dir = tmp_path / "run" / "wise@legacy"
        for record in (bench_dir / "judge").glob("*.json"):  # records lost, answers still cached
            record.unlink()
        next((tmp_path / "run" / "cache" / "judge").rglob("*.json")).unlink()  # and one cached answer lost
        (after,) = plan(["wise@legacy"], tmp_path / "run", options, cache_dir=tmp_path / "run" / "cache")
        assert (after["cached"], after["judge_calls"], after["awaiting_generation"]) == (8, 1, 0)
        capsys.readouterr()
        assert (
            unilip_main(
                [
                    "eval",
                    "plan",
                    "--bench",
                    "wise@legacy",
                    "--out",
                    str(tmp_path / "run"),
                    "--data",
                    str(data),
                    "--cache-dir",
                    str(tmp_path / "run" / "cache"),
                    "--json",
                    "--opt",
                    f"judge_base_url={server.base_url}",
                    "--opt",
                    "judge_max_retries=1",
                ]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out) == [after]
        assert unilip_main(["eval", "plan", "--bench", "recon@standard", "--out", str(tmp_path / "run")]) == 2
        assert "not scored by a judge" in capsys.readouterr().err
        assert server.total_calls == calls  # planning made no call


def test_cli_run_routes_options_and_keeps_the_key_out_of_everything(tmp_path):
    data = write_wise_repo(tmp_path / "WISE")
    with JudgeServer(wise_judge, api_key=SECRET) as server:
        code = (
            "import sys; sys.path.insert(0, 'tests/evals'); import test_wise; from unilip.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))"
        )
        args = [
            "eval",
            "run",
            "--model",
            "fake-wise:x",
            "--bench",
            "wise@legacy",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-progress",
            "--opt",
            f"judge_base_url={server.base_url}",
            "--opt",
            "judge_concurrency=2",
            "--opt",
            "judge_config={backoff_base_s: 0.01, backoff_max_s: 0.02}",
            "--opt",
            "judge_max_retries=1",
        ]

        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "UNILIP_JUDGE_API_KEY": SECRET},
            timeout=300,
        )
    assert done.returncode == 1, done.stderr  # exit 1: items 3 and 4 are not ok
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["coverage"]["ok"] == 7 and summary["metrics"]["overall"]["value"] == pytest.approx(SYNTHETIC_OVERALL)
    assert "parse" in done.stderr and "differs from the pinned release" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def test_missing_data_and_bad_template_are_explained(tmp_path):
    bench, variant = get_benchmark("wise@legacy")
    with pytest.raises(ValueError, match="needs data=PATH"):
        bench.resolve(variant, {}, None)
    with pytest.raises(ValueError, match="cannot find WISE_legacy/data/cultural_common_sense.json"):
        bench.resolve(variant, {"data": str(tmp_path)}, None)
    data = write_wise_repo(tmp_path / "WISE")
    template = tmp_path / "official.yaml"
    template.write_text("user: 'Rate the image for {prompt}.'\n")
    with pytest.raises(ValueError, match="does not use {explanation}"):
        bench.resolve(variant, {"data": str(data), "judge_template": str(template)}, None)
    template.write_text("system: auditor\nuser: 'Rate the image for {prompt} ({explanation}).'\n")
    ours = bench.resolve(variant, {"data": str(data)}, None).spec
    theirs = bench.resolve(variant, {"data": str(data), "judge_template": str(template)}, None).spec
    assert ours.fingerprint != theirs.fingerprint
    assert theirs.knobs["judge"]["templates"]["judge"]["source"] == "file:official.yaml"
    assert ours.knobs["produce"] == theirs.knobs["produce"]  # a template change re-judges, never regenerates
    limited = bench.resolve(variant, {"data": str(data), "limit": 2}, None)
    assert [item.id for item in limited.items] == ["1", "2"] and limited.spec.knobs["produce"]["limit"] == 2
    with pytest.raises(ValueError, match="limit must be between 1 and 9"):
        bench.resolve(variant, {"data": str(data), "limit": 0}, None)


def test_verified_variant_runs_with_its_file_binary_judge_and_weights(tmp_path):
    ids = {1: 1, 2: 0, 401: 1, 521: 0, 641: 1, 761: 1, 881: 0}  # prompt id -> the judge's 0/1
    path = tmp_path / "WISE" / "data_verified" / "merge.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            [
                {
                    "prompt_id": pid,
                    "Prompt": f"verified prompt {pid}",
                    "Explanation": "e",
                    "Category": "c",
                    "Subcategory": "s",
                }
                for pid in ids
            ]
        )
    )

    def responder(call):
        pid = int(call.text.split("verified prompt ")[1].split()[0])
        if pid == 2 and call.attempt < 3:  # the verified protocol asks up to 3 times
            return answer("I would rather describe the image.")
        return answer(f"<think>Score: 1?</think>Reasoning.\nScore: {ids[pid]}")

    with JudgeServer(responder) as server:
        bench, variant = get_benchmark("wise@verified")
        adapter = FakeGenerator()
        resolved = bench.resolve(variant, {"data": str(tmp_path / "WISE"), "judge_base_url": server.base_url}, adapter)
        spec = resolved.spec
        results = run_benchmark(
            resolved, adapter, tmp_path / "run" / spec.name, World(0, 1), 1, tmp_path / "run" / "cache", progress=False
        )
        assert server.history[0].body["model"] == "Qwen/Qwen3.5-35B-A3B" and server.history[0].body["max_tokens"] == 500
        assert sorted(server.calls.values()) == [1] * 6 + [3]
    metrics = results["metrics"]
    # 0.4 * culture mean(1, 0) + 0.12 * (time 1 + space 0 + biology 1 + physics 1 + chemistry 0)
    assert metrics["overall"]["value"] == pytest.approx(0.4 * 0.5 + 0.12 * 3)
    assert metrics["overall"]["judge_states"]["ok"] == 7 and "consistency" not in metrics
    assert spec.knobs["judge"]["templates"]["judge"]["source"] == "builtin:wise/verified.yaml"
    assert spec.knobs["judge"]["parse_attempts"] == 3


# ---------------------------------------------------------------------- the historical missing-as-zero variant
# What the judge answers per prompt id, and the WiScore the mid-2025 script gave it (a missing score is 0).
MISSING_ZERO = {
    1: ("Consistency: 2\nRealism: 2\nAesthetic Quality: 2", 1.0),
    2: ("Consistency: 2", 0.7),  # realism, aesthetic missing
    3: ("This image is lovely.", 0.0),  # nothing parses: all three 0
    401: ("Consistency\uff1a2\nRealism: 1\nAesthetic Quality: 1", 0.15),  # full-width colon: consistency 0
    568: ("Consistency: 0\nRealism: 0\nAesthetic Quality: 0", 0.0),
    701: ("Consistency: 1\nRealism: 1\nAesthetic Quality: 1", 0.5),
    801: ("1\n1\n1", 0.0),  # no line fallback there
    901: ("Consistency: 0\nRealism: 2\nAesthetic Quality: 1", 0.25),
}


def test_legacy_missing_zero_scores_unparsed_answers_0_says_so_loudly_and_never_scores_a_filtered_item(tmp_path):
    data = write_wise_repo(tmp_path / "WISE")

    def responder(call):
        pid = prompt_id_of(call)
        return content_filter() if pid == 4 else answer(MISSING_ZERO[pid][0])

    with JudgeServer(responder) as server:
        results, spec, _ = run_wise(data, tmp_path / "run", server, reference="wise@legacy-missing-zero")
        assert set(server.calls.values()) == {1}  # one answer per item, as that script asked
    overall = results["metrics"]["overall"]
    culture = (1.0 + 0.7 + 0.0) / 3  # item 4 was filtered: not scored, not a zero
    expected = 0.4 * culture + 0.167 * 0.15 + 0.133 * 0.0 + 0.1 * (0.5 + 0.0 + 0.25)
    assert overall["value"] == pytest.approx(expected)
    assert overall["judge_states"]["ok"] == 8 and overall["judge_states"]["content_filtered"] == 1
    zeroed = overall["missing_scores_counted_as_zero"]
    assert (zeroed["answers"], zeroed["of"]) == (4, 8)  # items 2, 3, 401 and 801
    assert any("counts every score missing from a judge answer as 0" in w for w in overall["warnings"])
    assert "counts as 0" in spec.knobs["protocol"] and spec.knobs["score"]["missing_scores"] == "counted as 0"
    # The same answers under wise@legacy: unparsed ones are failures (asked 3 times), never zeros.
    with JudgeServer(responder) as server:
        legacy, legacy_spec, _ = run_wise(data, tmp_path / "legacy", server)
    assert legacy_spec.fingerprint != spec.fingerprint
    assert legacy["metrics"]["overall"]["judge_states"]["parse_failed"] == 3  # items 2, 3 and 401
    assert not any("missing" in w for w in legacy["metrics"]["overall"]["warnings"])


# ---------------------------------------------------------------------- outputs behind records


def test_an_image_deleted_after_generation_says_how_to_fix_it_and_the_same_command_regenerates_it(tmp_path):
    data = write_wise_repo(tmp_path / "WISE")
    bench_dir = tmp_path / "run" / "wise@legacy"

    def good(call):
        return answer(GOOD.get(prompt_id_of(call), "Consistency: 1\nRealism: 1\nAesthetic Quality: 1"))

    with JudgeServer(good) as server:
        results, _, _ = run_wise(
            data, tmp_path / "run", server, wrap=lambda bench: DeleteBeforeStage(bench, "judge", "images/401.png")
        )
        produced = load_record(bench_dir, "produce", "401")
        assert produced["status"] == "ok" and set(produced["outputs"]) == {"images/401.png"}
        judged = load_record(bench_dir, "judge", "401")
        assert judged["status"] == "failed" and judged["state"] == "missing_image"
        assert "the image was deleted after generation; run the same command again to regenerate it" in judged["error"]
        assert results["failures"]["401"].startswith("judge: missing_image: images/401.png: the image was deleted")
        # The same command (no --retry-failed) makes that one image again and judges it.
        again, _, adapter = run_wise(data, tmp_path / "run", server)
    assert [call[0] for call in adapter.calls] == [[PROMPTS[401]]]
    assert again["failures"] == {} and again["coverage"]["ok"] == len(PROMPTS)


# ---------------------------------------------------------------------- the key, echoed back in other encodings
ODD_KEY = 'sk-wise/0dd+Key=w1th&ch"rs~0c4d8e2f6a1b3c5d'


def test_a_judge_echoing_the_key_json_escaped_and_url_encoded_leaks_it_nowhere(tmp_path, caplog, capsys, monkeypatch):
    from urllib.parse import quote, quote_plus

    monkeypatch.setenv("UNILIP_JUDGE_API_KEY", ODD_KEY)
    caplog.set_level(logging.DEBUG)
    data = write_wise_repo(tmp_path / "WISE")

    def responder(call):
        key = call.authorization.removeprefix("Bearer ")
        escaped = json.dumps(key)[1:-1].replace("/", "\\/")
        pid = prompt_id_of(call)
        if pid == 2 and call.attempt == 1:  # an error body that is not JSON, then a good answer
            return Reply(status=502, raw_body=f'bad gateway for {{"Authorization": "Bearer {escaped}"}}'.encode())
        if pid == 3:  # never parses: its raw answer is kept in the record
            return answer(f"I saw {quote(key)} and {quote_plus(key)}; no scores from me.")
        return Reply(
            content=GOOD.get(pid, "Consistency: 1\nRealism: 1\nAesthetic Quality: 1") + f"\n(key {escaped})",
            model=f"judge/{quote_plus(key)}",
        )

    with JudgeServer(responder, api_key=ODD_KEY) as server:
        results, _, _ = run_wise(data, tmp_path / "run", server)
        assert server.history[0].authorization == f"Bearer {ODD_KEY}"
    assert results["coverage"]["ok"] == 8 and results["failures"]["3"].startswith("judge: parse_failed")
    assert "HTTP 502" in caplog.text
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err, json.dumps(results)]
    texts += [path.read_bytes().decode("utf-8", "replace") for path in tmp_path.rglob("*") if path.is_file()]
    assert key_leaks(texts, ODD_KEY) == []


def test_cli_refuses_a_key_with_a_line_break_in_one_line_before_loading_anything(tmp_path):
    data = write_wise_repo(tmp_path / "WISE")
    code = (
        "import sys; sys.path.insert(0, 'tests/evals'); import test_wise; from unilip.cli import main; "
        "raise SystemExit(main(sys.argv[1:]))"
    )
    args = [
        "eval",
        "run",
        "--model",
        "fake-wise:x",
        "--bench",
        "wise@legacy",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        "--opt",
        "judge_base_url=https://judge.example.org/v1",
    ]
    pasted = f"{SECRET}\nsk-second-line-{SECRET[::-1]}"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "UNILIP_JUDGE_API_KEY": pasted},
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()  # the data-mismatch warnings, then the one-line error
    assert "UNILIP_JUDGE_API_KEY contains a line break" in lines[-1] and "error" in lines[-1]
    assert all(line.startswith("WARNING") for line in lines[:-1])
    assert key_leaks([done.stdout + done.stderr], SECRET) == [] and "sk-second-line" not in done.stderr
    assert not (tmp_path / "run" / "wise@legacy" / "produce").exists()  # refused before any generation
