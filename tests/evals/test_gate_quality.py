"""The CI gate guards reconstruction quality: a trained tokenizer (tiny-digits') on digits it learned to
reconstruct, against a committed baseline; a small damage to the tokenizer fails it."""

import json
from pathlib import Path

import torch
from harness_helpers import ROOT, run_cli

BASELINE = ROOT / "leaderboards" / "baselines" / "tiny-digits-recon-standard.json"
RULES = ROOT / "leaderboards" / "baselines" / "recon-gate.yaml"
NO_WEIGHTS = {"UNILIP_INCEPTION_WEIGHTS": "", "UNILIP_LPIPS_ALEX_WEIGHTS": "", "UNILIP_LPIPS_VGG_WEIGHTS": ""}


def _evaluate(model: str, out: Path, tmp_path: Path):
    return run_cli(
        "eval",
        "run",
        "--model",
        model,
        "--bench",
        "recon@standard",
        "--dataset",
        "digits",
        "--out",
        str(out),
        "--no-progress",
        "--cache-dir",
        str(tmp_path / "cache"),
        env_extra={"TORCH_HOME": str(tmp_path / "no-weights"), **NO_WEIGHTS},
    )


def _gate(run: Path):
    return run_cli("eval", "gate", str(run), "--baseline", str(BASELINE), "--rules", str(RULES))


def test_ci_gate_passes_for_the_shipped_tokenizer_and_fails_a_damaged_one(tmp_path):
    baseline = json.loads(BASELINE.read_text())
    # The baseline is a meaningful reconstruction, not arithmetic on random weights.
    assert baseline["metrics"]["psnr"]["value"] > 20 and baseline["metrics"]["ssim"]["value"] > 0.8
    assert baseline["coverage"]["ok"] == baseline["coverage"]["expected"] == 360

    run = _evaluate("tiny-digits", tmp_path / "run", tmp_path)
    assert run.returncode == 0, run.stderr
    gate = _gate(tmp_path / "run")
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "PASS" in gate.stdout

    # The same tokenizer with its pixel decoder's last convolution scaled by 1.05: a small regression.
    from unilip.pipelines import load_pipeline

    tokenizer = load_pipeline("tiny-digits").model.tokenizer
    with torch.no_grad():
        tokenizer.decoder.conv_out.weight.mul_(1.05)
    tokenizer.save_pretrained(tmp_path / "damaged")
    damaged = _evaluate(str(tmp_path / "damaged"), tmp_path / "damaged-run", tmp_path)
    assert damaged.returncode == 0, damaged.stderr
    verdict = _gate(tmp_path / "damaged-run")
    assert verdict.returncode == 1, verdict.stdout + verdict.stderr
    assert "FAIL" in verdict.stdout and "psnr" in verdict.stdout
