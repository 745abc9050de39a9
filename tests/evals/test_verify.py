"""``unilip eval verify`` and ``unilip eval leaderboard`` on hand-written results.json files (no model runs)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from evals.report import leaderboard, verify


def write_result(
    root: Path,
    benchmark: str,
    metrics: dict,
    knobs: dict | None = None,
    model: str = "tiny",
) -> Path:
    """A minimal results.json as the runner writes it, in ``root/benchmark/``."""
    name, _, variant = benchmark.partition("@")
    payload = {
        "benchmark": benchmark,
        "coverage": {"expected": 10, "ok": 10, "failed": 0, "missing": 0, "fraction": 1.0},
        "metrics": metrics,
        "spec": {"name": benchmark, "variant": variant, "version": "2", "knobs": knobs or {}, "fingerprint": "f" * 16},
        "model": {"adapter": "unilip", "model": model, "weights_sha256": "ab" * 32},
        "seed": 0,
    }
    folder = root / benchmark
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(payload))
    return root


RECON_KNOBS = {"resolution": 256, "dataset": {"kind": "imagenet-val", "num_images": 50000}, "quantisation": "upstream"}
GENEVAL_KNOBS = {"n_samples": 4, "prompts": {"file": "evaluation_metadata.jsonl", "num_prompts": 553}}


def call(module, argv: list[str], capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    code = module.run(parser.parse_args(argv))
    return code, capsys.readouterr().out


def claims_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def recon_run(tmp_path):
    metrics = {
        "psnr": {"value": 23.0, "se": 0.05, "n": 50000},
        "ssim": {"value": 0.75, "se": 0.001, "n": 50000},
        "rfid": {"status": "not_computed", "reason": "Inception-v3 weights not found\nsecond line"},
    }
    return write_result(tmp_path / "run", "recon@upstream", metrics, RECON_KNOBS)


def test_within_tolerance_is_consistent_and_exits_0(recon_run, tmp_path, capsys):
    claims = claims_file(
        tmp_path,
        "budgets: {hardware: 0.005}\n"
        "claims:\n"
        "  - {model: tok, benchmark: recon@upstream, metric: psnr, value: 22.95, source: README,\n"
        "     knobs: {resolution: 256}}\n",
    )
    out_json = tmp_path / "v.json"
    code, out = call(verify, [str(recon_run), "--claims", claims, "--json", str(out_json)], capsys)
    assert code == 0, out
    verdict = json.loads(out_json.read_text())["claims"][0]
    assert verdict["verdict"] == "consistent"
    assert verdict["tolerance"] == pytest.approx(2 * 0.05 + 0.005)
    assert "hardware" in out and "2 x se" in out  # every tolerance term is stated
    assert verdict["knobs"]["resolution"] == {"claim": 256, "run": 256}
    assert verdict["knobs"]["num_images"]["run"] == 50000  # the run's knobs that matter are listed too


def test_outside_tolerance_is_inconsistent_and_exits_1(recon_run, tmp_path, capsys):
    claims = claims_file(
        tmp_path, "- {model: tok, benchmark: recon@upstream, metric: psnr, value: 24.0, source: README}\n"
    )
    code, out = call(verify, [str(recon_run), "--claims", claims, "--json", str(tmp_path / "v.json")], capsys)
    assert code == 1
    assert "**inconsistent**" in out


def test_a_differing_knob_or_variant_is_not_comparable_naming_both_values(recon_run, tmp_path, capsys):
    claims = claims_file(
        tmp_path,
        "- {model: tok, benchmark: recon@upstream, metric: psnr, value: 23.0, source: s, knobs: {resolution: 448}}\n"
        "- {model: tok, benchmark: recon@standard, metric: psnr, value: 23.0, source: s}\n",
    )
    code, out = call(verify, [str(recon_run), "--claims", claims, "--json", str(tmp_path / "v.json")], capsys)
    assert code == 1
    first, second = json.loads((tmp_path / "v.json").read_text())["claims"]
    assert first["verdict"] == second["verdict"] == "not comparable"
    assert "resolution: claim 448, run 256" in first["reasons"][0]
    assert "variant: claim standard, run upstream" in second["reasons"][0]


def test_no_run_or_metric_not_computed_is_not_run(recon_run, tmp_path, capsys):
    claims = claims_file(
        tmp_path,
        "- {model: m, benchmark: wise@legacy, metric: overall, value: 0.6, source: s}\n"
        "- {model: m, benchmark: recon@upstream, metric: rfid, value: 0.3, source: s}\n",
    )
    code, out = call(verify, [str(recon_run), "--claims", claims, "--json", str(tmp_path / "v.json")], capsys)
    assert code == 1
    wise, rfid = json.loads((tmp_path / "v.json").read_text())["claims"]
    assert wise["verdict"] == rfid["verdict"] == "not run"
    assert "no run of wise" in wise["reasons"][0]
    assert "rfid not computed" in rfid["reasons"][0] and "Inception" in rfid["reasons"][0]


def test_default_json_goes_next_to_the_first_run(recon_run, tmp_path, capsys):
    claims = claims_file(tmp_path, "- {model: m, benchmark: recon, metric: ssim, value: 0.75, source: s}\n")
    code, _ = call(verify, [str(recon_run), "--claims", claims, "--report", str(tmp_path / "r.md")], capsys)
    assert code == 0
    assert json.loads((recon_run / "verify.json").read_text())["exit_code"] == 0
    assert "consistent" in (tmp_path / "r.md").read_text()


def test_a_metric_without_se_gets_the_budgets_only(tmp_path, capsys):
    run = write_result(tmp_path / "run", "imgedit@basic", {"overall": {"value": 3.9, "n": 737}})
    claims = claims_file(
        tmp_path,
        "- {model: m, benchmark: imgedit@basic, metric: overall, value: 3.94, source: s, budgets: {j: 0.05}}\n",
    )
    code, out = call(verify, [str(run), "--claims", claims, "--json", str(tmp_path / "v.json")], capsys)
    assert code == 0
    assert "no se: tolerance = budgets only" in out


@pytest.mark.parametrize(
    "text",
    [
        "claims: [unclosed\n",
        "- {model: m, benchmark: recon@upstream, metric: psnr, value: high, source: s}\n",
        "- {model: m, benchmark: nosuchbench, metric: x, value: 1, source: s}\n",
        "- {model: m, benchmark: recon@upstream, metric: psnr, value: 1, source: s, colour: red}\n",
        "[]\n",
        "- {model: m, benchmark: recon, metric: psnr, value: 1, source: s, budgets: {hw: -1}}\n",
    ],
)
def test_a_malformed_claims_file_is_refused(recon_run, tmp_path, capsys, text):
    with pytest.raises(ValueError):
        call(
            verify,
            [str(recon_run), "--claims", claims_file(tmp_path, text), "--json", str(tmp_path / "v.json")],
            capsys,
        )


def test_published_mode_maps_a_unilip_geneval_row(tmp_path, capsys):
    metrics = {"overall": {"value": 0.895, "se": 0.01, "n": 2212}, "color_attr": {"value": 0.7, "se": 0.03, "n": 400}}
    run = write_result(tmp_path / "run", "geneval@official", metrics, GENEVAL_KNOBS)
    argv = [str(run), "--claims", "published", "--model", "UniLIP-3B", "--benchmark", "GenEval"]
    code, out = call(verify, argv + ["--subtask", "overall", "--json", str(tmp_path / "v.json")], capsys)
    assert code == 0, out
    (verdict,) = json.loads((tmp_path / "v.json").read_text())["claims"]
    assert verdict["verdict"] == "consistent"
    assert verdict["claim"]["value"] == 0.9 and verdict["claim"]["reference"] == "geneval@official"
    assert verdict["knobs"]["n_samples"] == {"claim": 4, "run": 4}
    # A rewritten-prompt row of the same benchmark is not comparable with a plain-prompt run.
    argv = [str(run), "--claims", "published", "--model", "BAGEL (rewriter)", "--subtask", "overall"]
    code, out = call(verify, argv + ["--json", str(tmp_path / "v2.json")], capsys)
    assert code == 1
    (verdict,) = json.loads((tmp_path / "v2.json").read_text())["claims"]
    assert verdict["verdict"] == "not comparable" and "prompts: claim rewritten" in verdict["reasons"][0]


def test_published_mode_unmapped_rows_are_skipped_or_reported_when_selected(recon_run, tmp_path, capsys):
    argv = [str(recon_run), "--claims", "published", "--model", "UniLIP-3B", "--json", str(tmp_path / "v.json")]
    code, out = call(verify, argv, capsys)
    assert code == 1  # GenEval/WISE/... are not run here
    assert json.loads((tmp_path / "v.json").read_text())["skipped_unmapped_rows"] == 0
    argv = [str(recon_run), "--claims", "published", "--benchmark", "DPG-Bench", "--model", "BAGEL"]
    code, out = call(verify, argv + ["--json", str(tmp_path / "v2.json")], capsys)
    (verdict,) = json.loads((tmp_path / "v2.json").read_text())["claims"]
    assert verdict["verdict"] == "not comparable" and "no mapping" in verdict["reasons"][0]
    with pytest.raises(ValueError, match="unknown benchmark"):
        call(verify, [str(recon_run), "--claims", "published", "--benchmark", "NoSuchBench"], capsys)
    with pytest.raises(ValueError, match="no published claims"):
        call(verify, [str(recon_run), "--claims", "published", "--model", "nobody"], capsys)


def test_every_unilip_row_of_the_shipped_csv_maps(capsys):
    frame = leaderboard.load_published()
    bench_map = leaderboard.load_map()
    unilip = frame[frame.model.str.startswith("UniLIP")].to_dict("records")
    assert len(unilip) >= 20
    unmapped = [f"{r['benchmark']}/{r['subtask']}" for r in unilip if leaderboard.map_row(r, bench_map) is None]
    assert not unmapped


def test_leaderboard_puts_published_unilip_rows_beside_the_run(recon_run, capsys):
    code, out = call(leaderboard, [str(recon_run), "--subtask", "PSNR"], capsys)
    assert code == 0
    assert "UniLIP (tokenizer)" in out and "this run" in out and "recon@upstream" in out
    code, out = call(leaderboard, [str(recon_run), "--format", "csv"], capsys)
    frame = pd.read_csv(io.StringIO(out))
    assert pd.api.types.is_numeric_dtype(frame["score"])
    psnr = frame[frame.metric == "psnr"]
    assert list(psnr.score) == sorted(psnr.score, reverse=True)  # higher is better
    mine = frame[frame.source == "this run"]
    assert set(mine.metric) >= {"psnr", "ssim", "rfid"} and mine[mine.metric == "psnr"].score.iloc[0] == 23.0
    rfid = frame[(frame.metric == "rfid") & frame.score.notna()]
    assert list(rfid.score) == sorted(rfid.score)  # lower is better
    assert ((frame.model == "UniLIP (tokenizer)") & (frame.score == 0.31)).any()
    for fmt in ("tex", "html"):
        code, out = call(leaderboard, [str(recon_run), "--format", fmt, "--subtask", "SSIM"], capsys)
        assert code == 0 and "UniLIP (tokenizer)" in out
