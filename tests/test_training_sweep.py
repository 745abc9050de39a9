"""The distillation study end to end with a handful of steps per phase (plumbing, not results), and its
HTML report opened in a real headless browser."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RECIPE = Path(__file__).resolve().parents[1] / "unilip" / "configs" / "train" / "tiny-digits.yaml"
# eval_limit: the plumbing on the first 40 held-out units (the study's numbers need all 360; the quickstart has them)
STEPS = dict(stage1_steps=3, stage2_steps=2, teacher_steps=4, mllm_steps=4, seeds=2, progress=False, eval_limit=40)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from evals.studies.sweep import run_sweep

    out = tmp_path_factory.mktemp("study")
    return out, run_sweep(RECIPE, [0.0, 1.0], out, **STEPS)


@pytest.mark.slow
def test_sweep_writes_table_plot_and_report_and_resumes(study, capsys):
    from evals.studies.sweep import run_sweep

    out, files = study
    table = files["markdown"].read_text()
    for name in ("teacher", "stage 1 (frozen encoder)", "positive control", "stage 2", "digits MCQ circular accuracy"):
        assert name in table, name
    assert files["plot"].stat().st_size > 10_000 and files["csv"].read_text().count("\n") == 6  # header + 5 rows
    sweep = json.loads((out / "report" / "sweep.json").read_text())
    rows = {(row["name"], row["distill_weight"]): row for row in sweep["rows"]}
    assert rows[("teacher", None)]["metrics"]["token_cosine"]["mean"] == pytest.approx(1.0)
    # stage 1 froze the encoder: its understanding is the teacher's, answer for answer
    stage1 = rows[("stage 1 (frozen encoder)", None)]["metrics"]
    assert stage1["token_cosine"]["mean"] == pytest.approx(1.0)
    assert stage1["mcq"]["mean"] == rows[("teacher", None)]["metrics"]["mcq"]["mean"]
    for weight in (0.0, 1.0):
        variant = rows[("stage 2", weight)]
        assert variant["seeds"] == 2 and variant["metrics"]["psnr"]["n"] == 2 and variant["metrics"]["mcq"]["n"] == 2
    control = next(row for row in sweep["rows"] if row["role"] == "control")
    assert control["metrics"]["token_cosine"]["mean"] < 0.99  # its encoder really is damaged
    assert sweep["seeds"] == [0, 1] and sweep["environment"]["packages"]["torch"] and "git" in sweep["environment"]
    assert "MCQ circular accuracy" in (out / "report" / "findings.txt").read_text()
    # λ=1 against λ=0 on the same units: with every unit scored, the mean paired difference is the difference of
    # the two rows' means (each seed's metric is its mean over units); token cosine is not a harness benchmark.
    paired = {entry["column"]: entry for entry in sweep["paired"]}
    assert sorted(paired) == ["mcq", "pairs", "psnr", "ssim", "yes_no"]
    for column in ("mcq", "pairs", "psnr", "ssim"):
        entry = paired[column]
        assert entry["distill_weight"] == 1.0 and entry["baseline"] == 0.0, entry
        expected = rows[("stage 2", 1.0)]["metrics"][column]["mean"] - rows[("stage 2", 0.0)]["metrics"][column]["mean"]
        assert entry["difference"] == pytest.approx(expected, abs=1e-9), column
        assert entry["ci"][0] <= entry["difference"] <= entry["ci"][1] and 0 < entry["p"] <= 1
        assert "2 vs 2 seeds averaged per unit" in entry["test"]
    assert paired["mcq"]["unit"] == "question" and paired["psnr"]["unit"] == "image"
    assert paired["psnr"]["n"] == 40 and paired["mcq"]["n"] == 40  # every evaluated unit, in both arms
    report = (out / "report" / "report.md").read_text()
    assert "## Paired against λ = 0" in report and "1 vs 0" in report
    grid = Image.open(files["grid"])
    # the first 40 held-out images in file order: the 36 zeros and 4 ones, so 2 digits x (original + 4 models), 2x
    assert grid.size == (4 + 2 * (112 + 4), 4 + 5 * (112 + 4))
    assert "first 40 units only" in sweep["heldout"]
    logs = {p: p.read_text() for p in out.glob("stage*/log.jsonl")}
    assert len(logs) == 1 + 2 * 2  # stage 1, and stage 2 for 2 λ x 2 seeds
    capsys.readouterr()
    run_sweep(RECIPE, [0.0, 1.0], out, **STEPS)  # everything reused: no phase trains again
    assert "reused" in capsys.readouterr().err
    assert all(p.read_text() == text for p, text in logs.items())


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(study, chromium, tmp_path):
    _, files = study
    page = files["html"].read_text()
    assert "data:image/png;base64," in page and 'src="http' not in page  # self-contained
    import html

    assert "not the paper's experiment or numbers" in html.unescape(page)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    url = files["html"].resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images-rendered="2/2"' in dom  # both embedded images decoded in the browser
    results = dom[dom.index('<table id="results"') : dom.index("</table>")]
    assert results.count("<tr>") == 1 + 5 and "positive control" in dom
    paired = dom[dom.index('<table id="paired"') :]
    assert paired[: paired.index("</table>")].count("<tr>") == 1 + 5  # λ=1 vs λ=0: 5 columns
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, "--window-size=1200,2000", f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1200) and pixels.std() > 20  # text, table and images, not a blank page
