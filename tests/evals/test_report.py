"""Comparison tables and the regression gate."""

import copy

import pytest

from evals.report.compare import build_table, render
from evals.report.gate import FAIL, PASS, REFUSED, judge, load_rules

RULES = {"benchmark": "recon@standard", "metrics": {"psnr": {"max_drop": 0.05}, "ssim": {"max_drop": 0.002}}}


def _result(psnr=20.0, ssim=0.6, fingerprint="f" * 16, variant="standard", model="tiny", missing=0):
    return {
        "benchmark": f"recon@{variant}",
        "spec": {"fingerprint": fingerprint, "knobs": {"resolution": 56}},
        "model": {"model": model, "weights_sha256": "ab" * 32},
        "coverage": {
            "expected": 10,
            "ok": 10 - missing,
            "failed": 0,
            "missing": missing,
            "fraction": (10 - missing) / 10,
        },
        "metrics": {
            "psnr": {"value": psnr, "se": 0.1, "n": 10},
            "ssim": {"value": ssim, "se": 0.01, "n": 10},
            "rfid": {"status": "not_computed", "reason": "no Inception weights here"},
        },
        "_path": "x",
    }


def test_gate_passes_identical_run():
    verdict = judge(_result(), _result(), RULES)
    assert verdict.code == PASS and all(c["ok"] for c in verdict.checks)


def test_gate_fails_degraded_run():
    verdict = judge(_result(psnr=19.9), _result(), RULES)
    assert verdict.code == FAIL
    assert [c["metric"] for c in verdict.checks if not c["ok"]] == ["psnr"]
    assert "BROKEN" in verdict.markdown()


def test_gate_tolerates_change_within_rule():
    assert judge(_result(psnr=19.96, ssim=0.599), _result(), RULES).code == PASS


def test_gate_refuses_incomplete_or_mismatched_runs():
    assert judge(_result(missing=1), _result(), RULES).code == REFUSED
    other = judge(_result(fingerprint="0" * 16), _result(), RULES)
    assert other.code == REFUSED and "fingerprint" in other.reasons[0]
    rules = copy.deepcopy(RULES)
    rules["metrics"]["rfid"] = {"max_increase": 0.05}
    refused = judge(_result(), _result(), rules)
    assert refused.code == REFUSED and "rfid is not computed" in refused.reasons[0]


def test_rules_are_validated(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("metrics:\n  psnr: {max_fall: 0.1}\n")
    with pytest.raises(ValueError, match="max_drop or max_increase"):
        load_rules(path)


def test_compare_never_mixes_variants_in_a_column():
    results = [
        _result(variant="standard", fingerprint="a" * 16),
        _result(variant="upstream", fingerprint="b" * 16),
        _result(model="other", variant="standard", fingerprint="a" * 16, psnr=21.0),
    ]
    header, rows, notes = build_table(results)
    assert "psnr [recon@standard aaaaaaaa]" in header and "psnr [recon@upstream bbbbbbbb]" in header
    assert len(rows) == 2  # one row per model
    assert any("rfid: not computed" in n for n in notes)
    for fmt in ("md", "csv", "tex", "html"):
        text = render(results, fmt)
        assert "recon@upstream" in text and ("21" in text)
    assert render(results, "md").count("\n|") >= 3
