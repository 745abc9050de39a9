"""The exit-code contract (README: Exit codes; ``unilip.errors``), for every command.

0 success; 1 work done but items failed, or the gate says FAIL; 2 usage error, refused request or I/O
error (one line on stderr, no traceback); 3 internal error (traceback); 130 interrupted.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import unilip.cli as unilip_cli
from unilip.errors import Interrupted

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *argv):
    code = unilip_cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_usage_error(code, err, *expected):
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("unilip ") and ": error: " in last, last
    for text in expected:
        assert text in last, last


@pytest.fixture
def blocker(tmp_path):
    """A file where a folder is expected: nothing can be written beneath it (tests run as root, so
    permissions cannot make a folder unwritable)."""
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


@pytest.fixture
def digit_png(tmp_path):
    path = tmp_path / "digit.png"
    Image.fromarray(np.full((56, 56, 3), 200, np.uint8)).save(path)
    return path


def test_variants_and_list_succeed(capsys):
    assert cli(capsys, "variants")[0] == 0
    code, out, _ = cli(capsys, "eval", "list")
    assert code == 0 and "recon@standard" in out


def test_eval_adapters_lists_the_builtins_and_an_unknown_prefix_is_a_usage_error(capsys, tmp_path, digit_png):
    code, out, _ = cli(capsys, "eval", "adapters")
    assert code == 0 and all(name in out for name in ("unilip", "diffusers-ae", "hf-vlm", "folder"))
    code, out, _ = cli(capsys, "eval", "adapters", "--json")
    assert code == 0 and {row["adapter"] for row in json.loads(out)} >= {"internvl", "diffusers-pipe"}
    one_line_usage_error(
        *cli(capsys, "reconstruct", "--model", "diffusers-a:/x", digit_png, "--out", tmp_path / "o")[::2],
        "unknown adapter 'diffusers-a'",
        "Did you mean diffusers-ae:",
    )
    one_line_usage_error(
        *cli(capsys, "reconstruct", "--model", "./no/such/model", digit_png, "--out", tmp_path / "o")[::2],
        "./no/such/model does not exist",
    )


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as raised:
        unilip_cli.main(["eval", "run", "--bench", "recon"])  # --model missing: argparse's own usage error
    assert raised.value.code == 2


def test_reconstruct(capsys, tmp_path, digit_png):
    one_line_usage_error(*cli(capsys, "reconstruct", "--model", "tiny", "--out", tmp_path / "o")[::2], "--builtin")
    one_line_usage_error(
        *cli(capsys, "reconstruct", "--model", "tny", digit_png, "--out", tmp_path / "o")[::2],
        "unknown model variant 'tny'",
        "Did you mean tiny",
    )
    out = tmp_path / "recon"
    assert cli(capsys, "reconstruct", "--model", "tiny", digit_png, "--out", out, "--no-progress")[0] == 0
    # The same command again rewrites its own files; another invocation is refused, or --overwrite replaces.
    assert cli(capsys, "reconstruct", "--model", "tiny", digit_png, "--out", out, "--no-progress")[0] == 0
    code, _, err = cli(capsys, "reconstruct", "--model", "tiny", "--seed", "1", digit_png, "--out", out)
    one_line_usage_error(code, err, "already holds the outputs of another invocation", "--overwrite")
    before = json.loads((out / "run.json").read_text())["seed"]
    assert before == 0
    assert (
        cli(
            capsys,
            "reconstruct",
            "--model",
            "tiny",
            "--seed",
            "1",
            digit_png,
            "--out",
            out,
            "--overwrite",
            "--no-progress",
        )[0]
        == 0
    )
    assert json.loads((out / "run.json").read_text())["seed"] == 1


def test_reconstruct_with_a_damaged_weights_file_is_one_line(capsys, tmp_path, digit_png):
    damaged = tmp_path / "1b_unilip.pth"
    damaged.write_bytes(b"PK\x03\x04 this zip ends here")
    one_line_usage_error(
        *cli(capsys, "reconstruct", "--model", "unilip-1b", "--weights", damaged, digit_png, "--out", tmp_path / "o")[
            ::2
        ],
        "1b_unilip.pth",
    )


def test_reconstruct_warns_about_a_tiny_input(capsys, tmp_path, caplog):
    small = tmp_path / "small.png"
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(small)
    assert cli(capsys, "reconstruct", "--model", "tiny", small, "--out", tmp_path / "o", "--no-progress")[0] == 0
    assert "small.png is 24x20: enlarged 2.8x to reach 56 px" in caplog.text


def test_reconstruct_refuses_a_folder_of_someone_else_s_files(capsys, tmp_path, digit_png):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    one_line_usage_error(
        *cli(capsys, "reconstruct", "--model", "tiny", digit_png, "--out", out)[::2], "not written by a unilip command"
    )
    assert (out / "holiday.jpg").read_bytes() == b"precious"


def test_reconstruct_with_failed_items_exits_1(capsys, tmp_path, digit_png):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert (
        cli(capsys, "reconstruct", "--model", "tiny", digit_png, broken, "--out", tmp_path / "o", "--no-progress")[0]
        == 1
    )


def test_generate_and_edit(capsys, tmp_path, digit_png):
    one_line_usage_error(*cli(capsys, "generate", "--model", "tiny-digits", "--out", tmp_path / "g")[::2], "--prompt")
    out = tmp_path / "gen"
    common = ["generate", "--model", "tiny-digits", "--steps", "2", "--out", out, "--no-progress"]
    assert cli(capsys, *common, "--prompt", "a handwritten digit seven")[0] == 0
    code, _, err = cli(capsys, *common, "--prompt", "a handwritten digit three")
    one_line_usage_error(code, err, "another invocation", "--overwrite")
    assert cli(capsys, *common, "--prompt", "a handwritten digit three", "--overwrite")[0] == 0
    run = json.loads((out / "run.json").read_text())
    assert [o["prompt"] for o in run["outputs"]] == ["a handwritten digit three"]
    one_line_usage_error(
        *cli(
            capsys,
            "edit",
            "--model",
            "tiny-digits",
            "--image",
            tmp_path / "none.png",
            "--instruction",
            "make it the digit three",
            "--out",
            tmp_path / "e",
        )[::2],
        "none.png",
    )
    one_line_usage_error(
        *cli(
            capsys,
            "generate",
            "--model",
            "tiny-digits",
            "--prompt",
            "x",
            "--out",
            tmp_path / "a-file-parent" / "x",
            "--device",
            "cuda:7",
        )[::2],
        "--device cuda:7",
    )


def test_training_commands(capsys, tmp_path, blocker):
    for command in (["train", "tokenizer"], ["train", "generator"], ["train", "sweep"]):
        one_line_usage_error(
            *cli(capsys, *command, "--config", "no-such-recipe", "--out", tmp_path / "t")[::2], "no-such-recipe"
        )
    one_line_usage_error(*cli(capsys, "train", "generator-study", "--out", blocker / "study")[::2], str(blocker))
    one_line_usage_error(*cli(capsys, "quickstart", "--out", blocker / "quick")[::2], str(blocker))


def test_eval_status_compare_gate_plan(capsys, tmp_path, blocker):
    one_line_usage_error(*cli(capsys, "eval", "status", tmp_path / "nowhere")[::2])
    one_line_usage_error(*cli(capsys, "eval", "compare", tmp_path / "nowhere")[::2], "nowhere")
    one_line_usage_error(
        *cli(capsys, "eval", "plan", "--bench", "recon", "--out", tmp_path / "p")[::2], "not scored by a judge"
    )
    baseline = ROOT / "leaderboards" / "baselines" / "tiny-digits-recon-standard.json"
    rules = ROOT / "leaderboards" / "baselines" / "recon-gate.yaml"
    bad_rules = tmp_path / "rules.yaml"
    bad_rules.write_text("metrics: {psnr: {drop: 1}}\n")
    one_line_usage_error(
        *cli(capsys, "eval", "gate", baseline, "--baseline", baseline, "--rules", bad_rules)[::2],
        "max_drop or max_increase",
    )
    # A verdict that cannot be recorded is an I/O error: exit 2, and no PASS printed before it.
    code, out, err = cli(
        capsys, "eval", "gate", baseline, "--baseline", baseline, "--rules", rules, "--json", blocker / "gate.json"
    )
    one_line_usage_error(code, err, "gate.json")
    assert "PASS" not in out
    code, out, _ = cli(
        capsys, "eval", "gate", baseline, "--baseline", baseline, "--rules", rules, "--json", tmp_path / "gate.json"
    )
    assert code == 0 and "PASS" in out


def test_eval_aggregate_joins_shards_or_names_the_missing_ones(capsys, caplog, tmp_path, blocker):
    """``eval aggregate``: 0 once every shard is done, 1 (incomplete) naming the shards with items to do, 2 for
    what is not a run directory."""
    out = tmp_path / "run"

    def shard(index):
        return cli(
            capsys, "eval", "run", "--model", "tiny-digits", "--bench", "recon@standard", "--data", "builtin",
            "--num-images", "2", "--no-progress", "--out", out, "--cache-dir", tmp_path / "cache",
            "--shard", f"{index}/2",
        )  # fmt: skip

    assert shard(0)[0] == 0
    code, printed, err = cli(capsys, "eval", "aggregate", out)
    assert code == 1 and printed == "" and "Traceback" not in err
    assert "1 of 2 item(s) not finished (shard 1/2: 1)" in caplog.text
    assert not (out / "recon@standard" / "results.json").exists()
    assert shard(1)[0] == 0
    code, printed, _ = cli(capsys, "eval", "aggregate", out, "--bench", "recon@standard")
    assert code == 0 and json.loads(printed)["coverage"]["ok"] == 2
    one_line_usage_error(*cli(capsys, "eval", "aggregate", tmp_path / "nowhere")[::2], "not a run directory")
    one_line_usage_error(*cli(capsys, "eval", "aggregate", out, "--bench", "wise@legacy")[::2], "holds no run of")
    one_line_usage_error(*cli(capsys, "eval", "run", "--model", "tiny", "--bench", "recon", "--out", blocker,
                              "--shard", "2/2")[::2], "--shard 2/2")  # fmt: skip


def test_a_failing_gate_exits_1(capsys, tmp_path):
    baseline = ROOT / "leaderboards" / "baselines" / "tiny-digits-recon-standard.json"
    worse = json.loads(baseline.read_text())
    worse["metrics"]["psnr"]["value"] -= 1.0
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    code, out, _ = cli(
        capsys,
        "eval",
        "gate",
        tmp_path / "worse.json",
        "--baseline",
        baseline,
        "--rules",
        ROOT / "leaderboards" / "baselines" / "recon-gate.yaml",
        "--json",
        tmp_path / "g.json",
    )
    assert code == 1 and "FAIL" in out


def test_the_gate_refuses_what_it_cannot_judge_with_exit_2(capsys, tmp_path):
    """Malformed rules, a file that is not a results.json, unreadable JSON and a NaN metric: exit 2, never 3."""
    baseline = ROOT / "leaderboards" / "baselines" / "tiny-digits-recon-standard.json"
    rules = ROOT / "leaderboards" / "baselines" / "recon-gate.yaml"

    def gate(run, rules_path, *extra):
        return cli(capsys, "eval", "gate", run, "--baseline", baseline, "--rules", rules_path, *extra)[::2]

    for text, expected in (
        ("metrics: {psnr: {max_drop: [1\n", "not valid YAML"),
        ("metrics: {psnr: {max_drop: lots}}\n", "must be a number >= 0"),
        ("metrics: {psnr: {max_drop: -1}}\n", "must be a number >= 0"),
        ("min_coverage: 2\nmetrics: {psnr: {max_drop: 1}}\n", "min_coverage must be a fraction"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        one_line_usage_error(*gate(baseline, bad), expected)
    (tmp_path / "torn.json").write_text('{"benchmark": "recon@standard", ')
    one_line_usage_error(*gate(tmp_path / "torn.json", rules))
    (tmp_path / "other.json").write_text(json.dumps({"benchmark": "recon@standard", "hello": 1}))
    code, out, _ = cli(
        capsys,
        "eval",
        "gate",
        tmp_path / "other.json",
        "--baseline",
        baseline,
        "--rules",
        rules,
        "--json",
        tmp_path / "g1.json",
    )
    assert code == 2 and "not a results file" in out
    assert json.loads((tmp_path / "g1.json").read_text())["verdict"] == "refused"
    nan = json.loads(baseline.read_text())
    nan["metrics"]["psnr"]["value"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(nan))
    code, out, _ = cli(
        capsys,
        "eval",
        "gate",
        tmp_path / "nan.json",
        "--baseline",
        baseline,
        "--rules",
        rules,
        "--json",
        tmp_path / "g2.json",
    )
    assert code == 2 and "psnr is nan" in out


def test_verify_and_leaderboard_exit_codes(capsys, tmp_path):
    """verify: 0 all consistent, 1 otherwise, 2 refused; leaderboard: 0, or 2 for a benchmark nothing matches."""
    baseline = ROOT / "leaderboards" / "baselines" / "tiny-digits-recon-standard.json"
    psnr = json.loads(baseline.read_text())["metrics"]["psnr"]["value"]
    claims = tmp_path / "claims.yaml"
    claims.write_text(f"- {{model: tiny-digits, benchmark: recon@standard, metric: psnr, value: {psnr}, source: s}}\n")
    verdicts = tmp_path / "verify.json"
    assert cli(capsys, "eval", "verify", baseline, "--claims", claims, "--json", verdicts)[0] == 0
    claims.write_text(f"- {{model: x, benchmark: recon@standard, metric: psnr, value: {psnr + 50}, source: s}}\n")
    assert cli(capsys, "eval", "verify", baseline, "--claims", claims, "--json", verdicts)[0] == 1
    claims.write_text("claims: 5\n")
    one_line_usage_error(*cli(capsys, "eval", "verify", baseline, "--claims", claims, "--json", verdicts)[::2])
    assert cli(capsys, "eval", "leaderboard", baseline)[0] == 0
    one_line_usage_error(*cli(capsys, "eval", "leaderboard", baseline, "--benchmark", "NoSuchBench")[::2])


def test_eval_report_writes_a_page_or_refuses(capsys, tmp_path):
    baseline = ROOT / "leaderboards" / "baselines" / "tiny-digits-recon-standard.json"
    run = tmp_path / "run" / "recon@standard"
    run.mkdir(parents=True)
    (run / "results.json").write_text(baseline.read_text())
    one_line_usage_error(*cli(capsys, "eval", "report", tmp_path / "nowhere", "--out", tmp_path / "p.html")[::2])
    code, _, err = cli(capsys, "eval", "report", tmp_path / "run", "--out", tmp_path / "page.html")
    assert code == 0, err
    assert "<table" in (tmp_path / "page.html").read_text()


def _fake_command(monkeypatch, raised):
    def build_parser():
        parser = argparse.ArgumentParser(prog="unilip")
        parser.add_argument("-v", "--verbose", action="store_true")
        parser.set_defaults(command="fake", func=lambda args: (_ for _ in ()).throw(raised))
        return parser

    monkeypatch.setattr(unilip_cli, "build_parser", build_parser)


def test_interrupted_exits_130_saying_what_is_kept(capsys, monkeypatch):
    _fake_command(monkeypatch, Interrupted("recon@standard: 100/1500 items finished and kept"))
    code, _, err = cli(capsys)
    assert code == 130
    assert err.strip() == (
        "unilip fake: interrupted: recon@standard: 100/1500 items finished and kept; run the same command to resume"
    )


def test_a_bug_is_a_traceback_and_exit_3(capsys, monkeypatch):
    _fake_command(monkeypatch, ZeroDivisionError("a bug"))
    code, _, err = cli(capsys)
    assert code == 3 and "Traceback" in err and "internal error" in err


def test_every_command_is_covered():
    """Each subcommand the parser knows has a case in this file (a new command must add one)."""
    parser = unilip_cli.build_parser()
    commands = set()
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
            commands |= {f"{name} {child}" for a in nested for child in a.choices} if nested else {name}
    text = Path(__file__).read_text()
    missing = [command for command in sorted(commands) if f'"{command.split()[-1]}"' not in text]
    assert not missing, f"no exit-code case for: {missing}"
