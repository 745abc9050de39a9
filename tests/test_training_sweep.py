"""The distillation sweep end to end, with a handful of steps per phase (plumbing, not results)."""

import json
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "unilip" / "configs" / "train" / "tiny-digits.yaml"


@pytest.mark.slow
def test_sweep_writes_table_and_plot_and_resumes(tmp_path, capsys):
    from unilip.training.sweep import run_sweep

    kwargs = dict(stage1_steps=3, stage2_steps=2, teacher_steps=4, head_steps=4, progress=False)
    files = run_sweep(RECIPE, [0.0, 1.0], tmp_path, **kwargs)
    table = files["markdown"].read_text()
    assert "stage 2, λ=0" in table and "stage 2, λ=1" in table and "teacher" in table and "stage 1" in table
    assert files["plot"].stat().st_size > 10_000 and files["csv"].read_text().count("\n") == 5
    sweep = json.loads((tmp_path / "report" / "sweep.json").read_text())
    rows = {row["name"]: row for row in sweep["rows"]}
    assert rows["teacher"]["token_cosine"] == pytest.approx(1.0)
    assert rows["stage 1 (frozen encoder)"]["token_cosine"] == pytest.approx(1.0)  # stage 1 froze the encoder
    assert rows["stage 2, λ=0"]["psnr"] is not None and rows["stage 2, λ=0"]["coverage"] == "360/360"
    logs = {p: p.read_text() for p in tmp_path.glob("stage*/log.jsonl")}
    assert len(logs) == 3
    capsys.readouterr()
    run_sweep(RECIPE, [0.0, 1.0], tmp_path, **kwargs)  # everything reused: no phase trains again
    assert "reused" in capsys.readouterr().err
    assert all(p.read_text() == text for p, text in logs.items())
