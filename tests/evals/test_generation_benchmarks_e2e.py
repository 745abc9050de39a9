"""Issue 7's acceptance: the tiny generator through GenEval, WISE and ImgEdit in one `unilip eval run`,
against a loopback judge and tiny random detector/CLIP (the numbers mean nothing; the plumbing must hold),
then `unilip eval compare` beside a reconstruction run."""

import json
import re

import pytest
from harness_helpers import run_cli, run_tiny_recon
from judge_server import JudgeServer, answer
from test_geneval_benchmark import save_tiny_clip, save_tiny_detector
from test_imgedit import write_imgedit
from test_wise import write_wise_repo


def _judge(call):
    """WISE's three 0-2 scores, or ImgEdit's three 1-5 axes, by the template the call carries."""
    if "Consistency" in call.text:
        return answer("Consistency: 1\nRealism: 2\nAesthetic Quality: 1")
    key = int(re.search(r"Instruction (\d+):", call.text).group(1))
    return answer(f"Brief reasoning: ok.\nAxis One: {1 + key % 5}\nAxis Two: 3\nAxis Three: 4")


@pytest.mark.slow
def test_tiny_generator_runs_geneval_wise_and_imgedit_end_to_end(tmp_path):
    import torch

    torch.manual_seed(0)
    detector, clip = save_tiny_detector(tmp_path / "detector"), save_tiny_clip(tmp_path / "clip")
    wise = write_wise_repo(tmp_path / "WISE")
    write_imgedit(tmp_path / "ImgEdit", tmp_path / "imgedit-images")
    run = tmp_path / "run"
    with JudgeServer(_judge) as server:
        done = run_cli(
            "eval",
            "run",
            "--model",
            "tiny-digits",
            "--bench",
            "geneval@hf-mask2former,wise@legacy,imgedit",
            "--out",
            str(run),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-progress",
            "--steps",
            "4",
            "--opt",
            f"detector={detector}",
            "--opt",
            f"clip={clip}",
            "--opt",
            "limit=2",
            "--opt",
            "n_samples=2",
            "--opt",
            "scorer_device=cpu",
            "--opt",
            f"wise.data={wise}",
            "--opt",
            f"imgedit.data={tmp_path / 'ImgEdit'}",
            "--opt",
            f"imgedit_images={tmp_path / 'imgedit-images'}",
            "--opt",
            f"judge_base_url={server.base_url}",
            "--opt",
            "judge_max_retries=1",
        )
        calls = server.total_calls
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    by_bench = {line["benchmark"]: line for line in lines}
    assert set(by_bench) == {"geneval@hf-mask2former", "wise@legacy", "imgedit@basic"}, done.stderr[-3000:]
    assert by_bench["geneval@hf-mask2former"]["coverage"]["ok"] == 2
    # WISE: 2 of the fake repo's prompts (limit); ImgEdit: 2 edits. Every judged item was asked once.
    assert by_bench["wise@legacy"]["coverage"]["ok"] == 2 and by_bench["imgedit@basic"]["coverage"]["ok"] >= 1
    assert calls == by_bench["wise@legacy"]["coverage"]["ok"] + by_bench["imgedit@basic"]["coverage"]["ok"]
    layout = run / "geneval@hf-mask2former" / "images" / "00000"
    assert (layout / "metadata.jsonl").is_file() and (layout / "samples" / "00001.png").is_file()
    model = json.loads((run / "run.json").read_text())["model"]
    assert model["adapter"] == "unilip-generator" and model["sampler"]["steps"] == 4

    recon = run_tiny_recon(tmp_path / "recon", tmp_path / "cache")
    assert recon.returncode == 0, recon.stderr[-3000:]
    table = run_cli("eval", "compare", str(run), str(tmp_path / "recon"))
    assert table.returncode == 0, table.stderr
    for name in ("geneval@hf-mask2former", "wise@legacy", "imgedit@basic", "recon@standard"):
        assert name in table.stdout
    assert "2/2" in table.stdout  # coverage beside the scores
