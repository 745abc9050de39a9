"""``unilip eval report``: one self-contained HTML page of real runs, checked as text and in headless Chromium."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_understanding_benchmarks import scripted

import evals
from evals.benchmark import get_benchmark
from evals.benchmarks.digits_vqa.data import PARTS, write_part
from evals.benchmarks.vlm import read_tsv
from evals.report import run_report

MAX_ITEMS = 5  # recon on the built-in photos has 7 items: 2 left out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real tiny-model reconstruction run, and digits-vqa@mcq (2 questions) answered by a scripted model with
    one wrong answer (a run directory holds one model's runs: two directories)."""
    tmp = tmp_path_factory.mktemp("report")
    evals.run("tiny", "recon@standard", tmp / "recon", data="builtin", no_progress=True)
    data = tmp / "digits"
    write_part(data, "mcq")
    tsv = data / f"{PARTS['mcq']}.tsv"
    bench, variant = get_benchmark("digits-vqa@mcq")
    rows = read_tsv(tsv)
    first = rows[0]
    # Right everywhere but the first row, answered with a letter that is not its gold: one miss, shown as such.
    answers = {row.index: row.answer for row in rows}
    answers[first.index] = next(letter for letter in first.options if letter != first.answer)
    model = scripted(tmp, tsv, PARTS["mcq"], answers, lambda row, dataset: bench.prompt(row, bench.variants[variant]))
    evals.run(
        f"scripted-vlm:{model.name}",
        "digits-vqa@mcq",
        tmp / "vqa",
        data=str(data),
        opt=["limit=2"],
        no_progress=True,
        cache_dir=str(tmp / "cache"),
    )
    page = tmp / "page.html"
    args = argparse.ArgumentParser()
    run_report.add_arguments(args)
    assert (
        run_report.run(
            args.parse_args([str(tmp / "recon"), str(tmp / "vqa"), "--out", str(page), "--max-items", str(MAX_ITEMS)])
        )
        == 0
    )
    return page


def test_page_is_self_contained_with_tables_grids_and_working_links(runs):
    page_path = runs
    page = page_path.read_text(encoding="utf-8")
    assert 'src="http' not in page and "src='http" not in page and "src='file" not in page and 'src="file' not in page
    sources = re.findall(r"<img src='([^']*)'", page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    # The comparison tables, one per benchmark, with their footnotes.
    assert page.count('<table id="T_compare_bench_') == 2
    assert "recon@standard coverage (items scored / expected): 7/7" in page
    # The recon grid: MAX_ITEMS pairs (reference and reconstruction), the rest counted.
    recon = page.split("id='bench-recon-standard-run1'", 1)[1].split("</section>", 1)[0]
    assert recon.count("class='card'") == MAX_ITEMS and recon.count("<img ") == 2 * MAX_ITEMS
    assert f"{MAX_ITEMS} of 7 items shown" in recon and "2 left out" in recon and "PSNR" in recon
    # Understanding: both rows, the scripted miss marked as one, gold answers read again from the data.
    vqa = page.split("id='bench-digits-vqa-mcq-run1'", 1)[1].split("</section>", 1)[0]
    assert vqa.count("<tr id='bench-digits-vqa-mcq-run1-item-") >= 2
    assert "class='miss'" in vqa and "class='hit'" in vqa and "gold answers unavailable" not in vqa
    # Every link of the page points at an anchor the page has; every table cell is a link.
    anchors = set(re.findall(r"\bid='([^']+)'", page))
    links = re.findall(r"href='#([^']+)'", page)
    assert links and set(links) <= anchors
    cells = re.findall(r"<td id=\"T_compare[^\"]*\" class=\"data[^>]*>(.*?)</td>", page)
    assert cells and all(cell.startswith("<a href='#bench-") for cell in cells)


def test_a_run_without_results_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no results.json"):
        run_report.build_page([tmp_path])


def test_page_renders_with_its_images_in_headless_chromium(runs, chromium, tmp_path):
    page_path = runs
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=3000"]

    def shot(page: Path, name: str) -> np.ndarray:
        out = tmp_path / name
        subprocess.run(
            [*flags, "--window-size=1200,1600", f"--screenshot={out}", page.resolve().as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )
        return np.asarray(Image.open(out).convert("RGB"), dtype=float)

    full = shot(page_path, "full.png")
    assert full.shape == (1600, 1200, 3) and full.std() > 20  # text, tables and images, not a blank page
    # The same page with every image source emptied: the pixels that differ are the images the browser drew.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"src='data:[^']*'", "src=''", page_path.read_text(encoding="utf-8")), encoding="utf-8")
    without = shot(bare, "bare.png")
    changed = np.abs(full - without).max(axis=2) > 30
    assert changed.sum() > MAX_ITEMS * 2 * 64 * 64  # ten 128 px thumbnails drawn, at least a quarter each
    colours = {tuple(pixel) for pixel in full[changed].astype(int)[::7]}
    assert len(colours) > 50  # photographs and reconstructions, not a flat placeholder


def test_a_recon_run_whose_data_moved_shows_its_reconstructions_and_says_the_references_are_gone(
    photo_folder, tmp_path
):
    import shutil

    import evals
    from evals.report.run_report import build_page

    data = tmp_path / "data"
    shutil.copytree(photo_folder, data)
    evals.run("tiny", "recon@standard", tmp_path / "run", data=str(data), no_progress=True)
    complete = build_page([tmp_path / "run"])
    assert "unavailable" not in complete and complete.count("data:image/png;base64,") == 12  # 6 pairs
    data.rename(tmp_path / "moved")
    page = build_page([tmp_path / "run"])
    assert "cannot be listed now" in page and "those items show the reconstruction alone" in page
    assert page.count("[reference unavailable]") == 6
    assert page.count("data:image/png;base64,") == 6  # the reconstructions alone


def test_labels_name_the_rows_of_every_benchmark_table(runs):
    """One --label per run directory, each of another benchmark: each table takes its own runs' labels."""
    folder = runs.parent
    recon, vqa = folder / "recon", folder / "vqa"
    page = run_report.build_page([recon, vqa], max_items=0, labels=[f"{recon}=recon label", f"{vqa}=vqa label"])
    recon_table = page.split("<h2>recon@standard</h2>", 1)[1].split("</table>", 1)[0]
    vqa_table = page.split("<h2>digits-vqa@mcq</h2>", 1)[1].split("</table>", 1)[0]
    assert "recon label" in recon_table and "vqa label" not in recon_table
    assert "vqa label" in vqa_table and "recon label" not in vqa_table
    with pytest.raises(ValueError, match="names none of the runs given"):
        run_report.build_page([recon], labels=[f"{folder / 'elsewhere'}=x"])
