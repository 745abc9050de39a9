"""The distillation study's report: table (Markdown, CSV), figure, and the HTML page with its Markdown twin."""

import csv
import dataclasses
import html
import math
import re

import numpy as np
import pytest
from PIL import Image

from evals.studies.html_report import write_study_report
from evals.studies.report import (
    CONTROL_MARK,
    NOT_COMPUTED,
    STUDY_METRICS,
    MetricSpec,
    format_cell,
    markdown_table,
    write_sweep_report,
)

CONTROL = "positive control: stage 1, encoder + 0.5 × noise"
TEACHER_REASON = "the teacher's decoder was never trained"


def _cell(mean, se=None, values=None, reason=None):
    if mean is None:
        return {"mean": None, "se": None, "n": 0, "values": [], "reason": reason}
    values = [mean] if values is None else values
    return {"mean": mean, "se": se, "n": len(values), "values": values}


def _seeds(values):
    mean = sum(values) / len(values)
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
    return {"mean": mean, "se": se, "n": len(values), "values": values}


def _single_row(name, role, token_cosine, accuracy, psnr, ssim):
    """A reference or control row: one run, accuracies with their own SE (over questions)."""
    not_trained = _cell(None, reason=TEACHER_REASON)
    return {
        "name": name,
        "role": role,
        "distill_weight": None,
        "seeds": 1,
        "metrics": {
            "token_cosine": _cell(token_cosine),
            "mcq": _cell(accuracy, 1.4),
            "yes_no": _cell(accuracy - 4.0, 1.7),
            "pairs": _cell(accuracy - 10.0, 2.1),
            "psnr": not_trained if psnr is None else _cell(psnr, 0.1),
            "ssim": not_trained if ssim is None else _cell(ssim, 0.002),
        },
    }


def _variant(weight, cosine, accuracy):
    return {
        "name": "stage 2",
        "role": "variant",
        "distill_weight": weight,
        "seeds": 3,
        "metrics": {
            "token_cosine": _seeds([cosine - 0.001, cosine, cosine + 0.0013]),
            "mcq": _seeds([accuracy - 1.0, accuracy, accuracy + 2.0]),
            "yes_no": _seeds([accuracy - 5.0, accuracy - 4.0, accuracy - 2.0]),
            # One seed's pairs were not computed: n=2 of 3 seeds.
            "pairs": _seeds([accuracy - 11.0, accuracy - 8.0]),
            "psnr": _seeds([30.0 - weight, 30.2 - weight, 29.9 - weight]),
            "ssim": _seeds([0.951, 0.949, 0.953]),
        },
    }


def study_rows():
    # Deliberately not in display order: the report orders references, the control, then λ.
    return [
        _variant(1.0, 0.9991, 91.5),
        _single_row("teacher", "reference", 1.0, 92.5, None, None),
        _variant(0.0, 0.9682, 85.0),
        _single_row(CONTROL, "control", 0.62, 35.0, 14.1, 0.41),
        _single_row("stage 1 (frozen encoder)", "reference", 1.0, 92.5, 26.2, 0.8907),
        _variant(0.1, 0.9987, 90.0),
    ]


def _markdown_body(table: str) -> list[list[str]]:
    """The cells of each body line of the first Markdown table."""
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def _spec(key):
    return next(spec for spec in STUDY_METRICS if spec.key == key)


def test_study_metrics_are_the_callers():
    assert [m.key for m in STUDY_METRICS] == ["token_cosine", "mcq", "yes_no", "pairs", "psnr", "ssim"]
    assert all(m.higher_is_better for m in STUDY_METRICS)
    assert _spec("token_cosine").decimals == 4 and _spec("token_cosine").scale == (0.0, 1.0)
    assert _spec("mcq").scale == (0.0, 100.0) and _spec("psnr").scale[0] == 0.0
    assert _spec("psnr").heading == "PSNR (dB) ↑"
    assert MetricSpec("loss", "loss", higher_is_better=False).heading == "loss ↓"
    with pytest.raises(dataclasses.FrozenInstanceError):
        _spec("psnr").decimals = 3


def test_cells_are_mean_plus_minus_se_with_the_metrics_decimals():
    cosine, psnr = _spec("token_cosine"), _spec("psnr")
    assert format_cell({"mean": 0.96821, "se": 0.00123, "n": 3}, cosine, 3) == "0.9682 ± 0.0012"
    assert format_cell({"mean": 29.8765, "se": 0.1, "n": 3}, psnr, 3) == "29.88 ± 0.10"
    assert format_cell({"mean": 1.0, "se": None, "n": 1}, cosine, 1) == "1.0000"  # no SE: no ±
    assert format_cell({"mean": 84.0, "se": 1.5, "n": 2}, _spec("pairs"), 3) == "84.0 ± 1.5 (n=2)"
    assert format_cell({"mean": None, "se": None, "n": 0}, psnr, 1) == NOT_COMPUTED


def test_markdown_table_rows_cells_labels_and_control(tmp_path):
    paths = write_sweep_report(study_rows(), tmp_path, title="The study")
    assert set(paths) == {"markdown", "csv", "plot"} and all(p.is_file() for p in paths.values())
    text = paths["markdown"].read_text()
    assert text.count("\n# ") + text.startswith("# ") == 1  # one title
    body = _markdown_body(text)
    headers = [line for line in text.splitlines() if line.startswith("| ")][0]
    # Labels with units and arrows, never the internal keys.
    for spec in STUDY_METRICS:
        assert spec.heading in headers
    for spec in STUDY_METRICS:
        assert not re.search(rf"\b{spec.key}\b", headers)
    assert [row[0].split(" **")[0] for row in body][:2] == ["teacher", "stage 1 (frozen encoder)"]
    assert [(row[1], row[2]) for row in body] == [
        ("—", "1"),
        ("—", "1"),
        ("—", "1"),
        ("0", "3"),
        ("0.1", "3"),
        ("1", "3"),
    ]
    teacher, stage1, control, lam0 = body[0], body[1], body[2], body[3]
    column = {spec.key: 3 + i for i, spec in enumerate(STUDY_METRICS)}
    expected = _variant(0.0, 0.9682, 85.0)["metrics"]["token_cosine"]
    assert lam0[column["token_cosine"]] == f"{expected['mean']:.4f} ± {expected['se']:.4f}"
    assert re.fullmatch(r"\d+\.\d ± \d+\.\d \(n=2\)", lam0[column["pairs"]])
    assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", lam0[column["psnr"]])
    assert teacher[column["psnr"]] == NOT_COMPUTED and teacher[column["ssim"]] == NOT_COMPUTED
    assert stage1[column["psnr"]] == "26.20 ± 0.10" and teacher[column["mcq"]] == "92.5 ± 1.4"
    assert TEACHER_REASON in text  # why it was not computed
    # The control: exactly one row, marked, between the references and the variants.
    assert sum(CONTROL in " ".join(row) for row in body) == 1
    assert control[0] == f"**{CONTROL}** {CONTROL_MARK}" and f"{CONTROL_MARK}: the positive control" in text
    assert "metrics_vs_lambda.png" in text


def test_csv_round_trips_the_numbers(tmp_path):
    rows = study_rows()
    paths = write_sweep_report(rows, tmp_path)
    with paths["csv"].open() as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == len(rows)
    by_key = {(r["name"], r["distill_weight"]): r for r in records}
    for row in rows:
        weight = "" if row["distill_weight"] is None else repr(float(row["distill_weight"]))
        record = by_key[(row["name"], weight)]
        assert record["role"] == row["role"] and int(record["seeds"]) == row["seeds"]
        for spec in STUDY_METRICS:
            cell = row["metrics"][spec.key]
            for field in ("mean", "se"):
                text = record[f"{spec.key}_{field}"]
                assert (text == "") if cell[field] is None else float(text) == cell[field]  # exact
            assert int(record[f"{spec.key}_n"]) == cell["n"]
    assert [r["role"] for r in records] == ["reference", "reference", "control", "variant", "variant", "variant"]


def test_plot_is_a_png_of_reasonable_size_and_output_is_deterministic(tmp_path):
    first = write_sweep_report(study_rows(), tmp_path / "a")
    second = write_sweep_report(study_rows(), tmp_path / "b")
    with Image.open(first["plot"]) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 1000 <= width <= 3000 and 500 <= height <= 2000  # six panels, readable, not a poster
        assert np.asarray(image.convert("L")).std() > 10  # drawn, not blank
    assert 20_000 < first["plot"].stat().st_size < 1_000_000
    for key in first:
        assert first[key].read_bytes() == second[key].read_bytes(), key


def test_plot_handles_a_single_metric_without_variants(tmp_path):
    spec = MetricSpec("score", "score (points)", higher_is_better=False, decimals=1)
    rows = [{"name": "only", "role": "reference", "seeds": 1, "metrics": {"score": {"mean": 3.0, "se": None, "n": 1}}}]
    paths = write_sweep_report(rows, tmp_path, [spec])
    assert "score (points) ↓" in paths["markdown"].read_text()
    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and image.size[0] > 400


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (lambda r: r.pop("seeds"), r"row 0 \('stage 2'\) is missing required field\(s\): seeds"),
        (lambda r: r.pop("metrics"), r"row 0 \('stage 2'\) is missing required field\(s\): metrics"),
        (lambda r: r.pop("distill_weight"), r"row 0 \('stage 2'\) is missing required field\(s\): distill_weight"),
        (lambda r: r.pop("name"), r"row 0 is missing required field\(s\): name"),
        (lambda r: r.update(role="baseline"), r"row 0 \('stage 2'\): role must be one of"),
        (lambda r: r["metrics"].pop("psnr"), r"row 0 \('stage 2'\): 'metrics' is missing psnr"),
        (lambda r: r["metrics"]["ssim"].pop("mean"), r"row 0 \('stage 2'\): metric 'ssim' must be a dict"),
        (lambda r: r.update(distill_weight=None), r"row 0 \('stage 2'\): a variant needs"),
        (lambda r: r.update(seeds=0), r"row 0 \('stage 2'\): 'seeds' must be"),
    ],
)
def test_a_broken_row_raises_naming_it(tmp_path, broken, message):
    rows = study_rows()
    broken(rows[0])
    with pytest.raises(ValueError, match=message):
        write_sweep_report(rows, tmp_path)
    assert not (tmp_path / "results.md").exists()  # checked before anything is written


def test_html_report_escapes_and_shows_labels_table_control_and_images(tmp_path):
    rows = study_rows()
    files = write_sweep_report(rows, tmp_path, title="Study title")
    grid = (["original", "stage 1 (frozen encoder)"], Image.new("RGB", (120, 60), (30, 30, 30)))
    what = "Not the paper's experiment: x < y & a tiny model.\n\nSecond paragraph."
    findings = "MCQ (%): teacher 92.5 ± 1.4.\nPositive control <detected>."
    provenance = {"seed": 0, "command": ["unilip", "quickstart"]}

    def write(out):
        return write_study_report(
            out, rows, files["markdown"].read_text(), files["plot"], grid, provenance,
            what_this_is=what, findings=findings, title="Study title",
        )  # fmt: skip

    out = write(tmp_path)
    page = out["html"].read_text()
    assert page.count("<h1>") == 1 and "Study title" in page
    assert "x &lt; y &amp; a tiny model" in page and "x < y" not in page  # escaped
    assert "Positive control &lt;detected&gt;." in page
    assert html.unescape(page).count(what.split("\n")[0]) == 1
    assert page.count("data:image/png;base64,") == 2 and 'src="http' not in page and "<link" not in page
    for spec in STUDY_METRICS:
        assert html.escape(spec.heading) in page
    assert "token_cosine" not in page and "yes_no" not in page
    table = page[page.index('<table id="results">') : page.index("</table>")]
    assert table.count("<tr>") == 1 + len(rows)
    control_rows = [r for r in table.split("<tr>") if html.escape(CONTROL) in r]
    assert len(control_rows) == 1 and 'class="model control"' in control_rows[0] and 'class="tag"' in control_rows[0]
    assert "92.5 ± 1.4" in table and f'title="{html.escape(TEACHER_REASON)}"' in table
    markdown = out["report_markdown"].read_text()
    assert markdown.startswith("# Study title\n") and markdown.count("\n# ") == 0  # one title
    assert markdown.count("metrics_vs_lambda.png") == 1 and "x \\< y" in markdown
    assert f"**{CONTROL}** {CONTROL_MARK}" in markdown and _spec("mcq").heading in markdown
    assert "What it found" in markdown and "Positive control" in markdown and '"seed": 0' in markdown
    again = write(tmp_path)  # rewritten from the same inputs: the same bytes
    assert again["html"].read_text() == page and again["report_markdown"].read_bytes() == markdown.encode()


def test_html_report_builds_its_markdown_table_when_none_is_given(tmp_path):
    rows = study_rows()
    files = write_sweep_report(rows, tmp_path)
    grid = (["original"], Image.new("RGB", (40, 20)))
    out = write_study_report(tmp_path, rows, None, files["plot"], grid, {}, what_this_is="w", findings="f")
    assert markdown_table(rows) in out["report_markdown"].read_text()
