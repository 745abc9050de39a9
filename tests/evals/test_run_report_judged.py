"""``unilip eval report`` on judged runs: WISE and ImgEdit (images from a ``folder:`` model) and MM-Vet (a scripted
model), all graded by a loopback judge that also fails: a reply that never parses, an HTTP error, a missing source.
Checked as text (tables, embedded images, every rationale with its state, links) and in headless Chromium."""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from judge_server import JudgeServer, answer, http_error
from PIL import Image
from test_imgedit import EDITS, write_imgedit
from test_understanding_benchmarks import scripted
from test_wise import PROMPTS, write_wise_repo
from vlm_tsv import write_mmvet

import evals
from evals.report import run_report
from evals.runtime.runner import load_record

ROOT = Path(__file__).resolve().parents[2]
BENCHES = {"wise": "wise@legacy", "imgedit": "imgedit@basic", "mmvet": "mmvet@default"}
# Replies that are data, not markup: the page must show them escaped.
UNPARSABLE_EDIT = "Brief reasoning: <b>no numbers</b> & no axes today."
UNPARSABLE_WISE = "This image is lovely <i>indeed</i>."
JUDGE_ENV = ("UNILIP_JUDGE_API_KEY", "OPENAI_API_KEY", "UNILIP_JUDGE_MODEL", "UNILIP_JUDGE_BASE_URL", "LMUData")


def _judge(call):
    """ImgEdit by its instruction (801 never parses, 700 an HTTP 400), MM-Vet by its question (v3 never a
    number), WISE by its prompt (3 never parses)."""
    edit = re.search(r"Instruction (\d+):", call.text)
    if edit:
        key = edit.group(1)
        if key == "801":
            return answer(UNPARSABLE_EDIT)
        if key == "700":
            return http_error(400, "injected bad request")
        return answer(f"Brief reasoning: edit {key} fine.\nAxis One: 4\nAxis Two: 3\nAxis Three: 5")
    if "| What is written? |" in call.text:
        return answer("1.0")
    if "| How much is it in total? |" in call.text:
        return answer("0.4")
    if "| What is it for? |" in call.text:
        return answer("excellent")
    pid = next(pid for pid, prompt in PROMPTS.items() if f"PROMPT: {prompt}\n" in call.text)
    if pid == 3:
        return answer(UNPARSABLE_WISE)
    return answer(f"Consistency: 2\nRealism: 1\nAesthetic Quality: {pid % 3}\nPrompt {pid} judged.")


def _noise(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """The three runs (one run directory each: three models) and their page, written by the CLI's ``run``."""
    tmp = tmp_path_factory.mktemp("judged-report")
    wise = write_wise_repo(tmp / "WISE")
    write_imgedit(tmp / "ImgEdit", tmp / "imgedit-images")
    for number, pid in enumerate(PROMPTS):  # the generations, one <prompt id>.png each (folder: adapter)
        _noise(tmp / "wise-out" / f"{pid}.png", number)
    for number, key in enumerate(EDITS):  # the edits, one <key>.png each
        _noise(tmp / "edit-out" / f"{key}.png", 100 + number)
    tsv = write_mmvet(tmp / "LMUData")
    model = scripted(tmp, tsv, "MMVet", {"v1": "STOP", "v2": "It is 12.", "v3": "no idea"})
    with pytest.MonkeyPatch.context() as patch, JudgeServer(_judge) as server:
        for name in JUDGE_ENV:  # no key or endpoint of this machine reaches the runs
            patch.delenv(name, raising=False)
        opts = [f"judge_base_url={server.base_url}", "judge_max_retries=1"]
        common = {"no_progress": True, "cache_dir": str(tmp / "cache")}
        evals.run(f"folder:{tmp / 'wise-out'}", BENCHES["wise"], tmp / "wise", data=str(wise), opt=opts, **common)
        evals.run(
            f"folder:{tmp / 'edit-out'}",
            BENCHES["imgedit"],
            tmp / "imgedit",
            data=str(tmp / "ImgEdit"),
            opt=[*opts, f"imgedit_images={tmp / 'imgedit-images'}"],
            **common,
        )
        evals.run(
            f"scripted-vlm:{model.name}", BENCHES["mmvet"], tmp / "mmvet", data=str(tsv.parent), opt=opts, **common
        )
    page = tmp / "page.html"
    parser = argparse.ArgumentParser()
    run_report.add_arguments(parser)
    runs = [str(tmp / name) for name in BENCHES]
    assert run_report.run(parser.parse_args([*runs, "--out", str(page)])) == 0
    return tmp, page, page.read_text(encoding="utf-8")


def _section(page: str, bench: str) -> str:
    """The run section of ``bench`` (its cards or rows and its failed items)."""
    anchor = f"bench-{run_report._slug(bench)}-run1"
    return page.split(f"<section id='{anchor}'>", 1)[1].split("</section>", 1)[0]


def _card(section: str, bench_dir: Path, item_id: str) -> str:
    """The card (or table row) of one item: from its anchor to the next item's."""
    from evals.runtime.records import safe_item_name

    marker = f"-item-{safe_item_name(item_id)}'"
    start = section.index(marker)
    following = section.find("-item-", start + len(marker))
    return section[start : following if following != -1 else len(section)]


def _judge_records(tmp: Path, bench: str, stage: str, ids) -> dict[str, dict]:
    bench_dir = tmp / bench.split("@")[0] / bench
    return {item_id: load_record(bench_dir, stage, item_id) for item_id in ids}


def test_each_benchmark_has_its_table_with_every_cell_a_link(judged):
    _, _, page = judged
    assert page.count('<table id="T_compare_bench_') == 3
    for bench in BENCHES.values():
        assert f"<h2>{bench}</h2>" in page and f"{bench} coverage (items scored / expected)" in page
    assert "wise@legacy coverage (items scored / expected): 8/9" in page  # item 3 never parsed
    assert "imgedit@basic coverage (items scored / expected): 9/12" in page  # 700, 801, 802 failed
    cells = re.findall(r"<td id=\"T_compare[^\"]*\" class=\"data[^>]*>(.*?)</td>", page)
    assert cells and all(cell.startswith("<a href='#bench-") for cell in cells)


def test_every_link_target_exists_and_failed_items_link_to_their_cards(judged):
    _, _, page = judged
    anchors = re.findall(r"\bid='([^']+)'", page)
    assert len(anchors) == len(set(anchors))  # ids are unique, so a link has one target
    links = re.findall(r"href='#([^']+)'", page)
    assert links and set(links) <= set(anchors)
    for bench, failed in (("wise@legacy", {"3"}), ("imgedit@basic", {"700", "801", "802"}), ("mmvet@default", {"v3"})):
        table = _section(page, bench).split("Failed items", 1)[1]
        linked = re.findall(r"<td><a href='#[^']+-item-[^']+'>([^<]+)</a></td>", table)
        assert set(linked) == failed, (bench, linked)


def test_generated_and_edited_images_are_embedded_as_the_files_the_runs_made(judged):
    tmp, _, page = judged
    assert not re.search(r"""(src|href)=['"](https?:|file:|/)""", page)  # nothing the page fetches
    sources = re.findall(r"<img src='([^']*)'", page)
    assert sources and all(re.match(r"data:image/(png|jpeg);base64,", source) for source in sources)

    def embedded(card: str) -> list[bytes]:
        return [base64.b64decode(uri.split(",", 1)[1]) for uri in re.findall(r"<img src='([^']*)'", card)]

    wise_dir = tmp / "wise" / "wise@legacy"
    wise = _section(page, "wise@legacy")
    for pid, prompt in PROMPTS.items():
        card = _card(wise, wise_dir, str(pid))
        assert embedded(card) == [(wise_dir / "images" / f"{pid}.png").read_bytes()]
        assert run_report._esc(prompt) in card  # the prompt read again from the WISE data
    edit_dir = tmp / "imgedit" / "imgedit@basic"
    edits = _section(page, "imgedit@basic")
    for key, (edit_type, _) in EDITS.items():
        card = _card(edits, edit_dir, key)
        assert f"Instruction {key}: change something" in card
        if key == "802":  # no source image: nothing produced, and the card says why
            assert embedded(card) == [] and "missing_image: source image action/802.png is absent" in card
            continue
        source = tmp / "imgedit-images" / edit_type / f"{key}.{'jpg' if int(key) % 2 else 'png'}"
        assert embedded(card) == [source.read_bytes(), (edit_dir / "images" / f"{key}.png").read_bytes()]


def test_every_judge_rationale_shows_with_its_state_and_a_failure_with_its_error(judged):
    tmp, _, page = judged
    checked = {}
    for key, stage, ids in (
        ("wise", "judge", PROMPTS),
        ("imgedit", "judge", EDITS),
        ("mmvet", "score", ("v1", "v2", "v3")),
    ):
        bench = BENCHES[key]
        section = _section(page, bench)
        bench_dir = tmp / key / bench
        for item_id, record in _judge_records(tmp, bench, stage, [str(i) for i in ids]).items():
            if record is None:  # 802: never judged (no image), shown as such
                assert "not judged" in _card(section, bench_dir, item_id)
                continue
            card = _card(section, bench_dir, item_id)
            css = "failed" if record["status"] == "failed" else "ok"
            assert f"<div class='judge-state {css}'>state: <b>{record['state']}</b>" in card, (bench, item_id)
            if "raw" in record:  # the reply, escaped: the page shows the judge's text, never its markup
                assert f"<pre class='rationale'>{run_report._esc(record['raw'])}</pre>" in card
            if record["status"] == "failed":
                assert f"error: {run_report._esc(record['error'])}" in card
            checked[(key, item_id)] = record["state"]
    # The failures the judge was scripted to make, each with its own state.
    assert checked[("wise", "3")] == "parse_failed" and checked[("imgedit", "801")] == "parse_failed"
    assert checked[("imgedit", "700")] == "judge_error" and checked[("mmvet", "v3")] == "parse_failed"
    assert sum(state == "ok" for state in checked.values()) == 8 + 9 + 2
    assert "&lt;b&gt;no numbers&lt;/b&gt; &amp; no axes" in page and "<b>no numbers</b>" not in page
    assert "&lt;i&gt;indeed&lt;/i&gt;" in page and "HTTP 400: injected bad request" in page
    # MM-Vet: the gold answers and questions read again from the TSV, beside the grades.
    mmvet = _section(page, "mmvet@default")
    assert "gold answers unavailable" not in mmvet and "12&lt;OR&gt;12.0" in mmvet and "grade 0.400" in mmvet


def _chromium_run(chromium: str, *args: str) -> str:
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=3000"]
    done = subprocess.run([*flags, *args], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_images_decode_in_headless_chromium(judged, chromium, tmp_path):
    _, page_path, page = judged
    # A copy that, once loaded, writes each image's natural width into the DOM (read back with --dump-dom).
    probe = (
        "<script>window.addEventListener('load',function(){var d=document.createElement('div');"
        "d.id='widths';d.textContent='WIDTHS='+JSON.stringify(Array.from(document.images,function(i)"
        "{return i.naturalWidth}))+';TEXT='+document.body.innerText.length+';';document.body.appendChild(d);});"
        "</script>"
    )
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe + "</body>"), encoding="utf-8")
    dom = _chromium_run(chromium, "--window-size=1200,1600", "--dump-dom", probed.as_uri())
    found = re.search(r"WIDTHS=(\[[^\]]*\]);TEXT=(\d+);", dom)
    assert found, dom[-2000:]
    widths = json.loads(found.group(1))
    assert len(widths) == page.count("<img ") and widths and all(width > 0 for width in widths)
    assert set(widths) == {28, 32}  # the 32 px outputs and the 28x20 edit sources
    assert int(found.group(2)) > 2000  # the tables, prompts and rationales are laid out, not a blank page


@pytest.mark.slow
def test_report_screenshot_takes_a_full_page_picture_that_is_not_blank(judged, chromium, tmp_path):
    _, page_path, _ = judged
    out = tmp_path / "shots" / "page.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report_screenshot"), str(page_path), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": str(Path(chromium).parent), "HOME": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pixels = np.asarray(Image.open(out).convert("RGB"))
    # 1200 px wide, and taller than one window: the whole page (three benchmarks of cards) was shot.
    assert pixels.shape[1] == 1200 and pixels.shape[0] > 2000
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50 and pixels.std() > 20
    # The bottom of the page (MM-Vet's failed item) holds text too: the shot is not cut at the first screen.
    assert pixels[-300:].std() > 5
    # --height keeps the top of the page only (a README picture): the same pixels as the full shot's top.
    top = tmp_path / "shots" / "top.png"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report_screenshot"), str(page_path), str(top), "--height", "600"],
        capture_output=True,
        timeout=300,
        env={"PATH": str(Path(chromium).parent), "HOME": str(tmp_path)},
        check=True,
    )
    cut = np.asarray(Image.open(top).convert("RGB"))
    assert cut.shape == (600, 1200, 3) and np.mean(cut[:500] == pixels[:500]) > 0.99


def test_report_screenshot_says_in_one_line_when_no_chromium_is_found(judged, tmp_path):
    _, page_path, _ = judged
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report_screenshot"), str(page_path), str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 1 and not (tmp_path / "x.png").exists()
    assert done.stderr.strip().count("\n") == 0 and "no Chromium found" in done.stderr
