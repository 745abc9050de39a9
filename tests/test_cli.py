"""``unilip reconstruct`` end to end, in a subprocess, on a real photo and a corrupt file."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _run(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "unilip", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.fixture
def photo_and_corrupt(tmp_path):
    from skimage import data

    photo = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return photo, corrupt


def test_reconstruct_real_photo_and_corrupt_file(photo_and_corrupt, tmp_path):
    photo, corrupt = photo_and_corrupt
    out = tmp_path / "out"
    result = _run("reconstruct", "--model", "tiny", str(photo), str(corrupt), "--out", str(out), "--no-progress")
    assert result.returncode == 1, result.stderr  # one image failed: the run says so in its exit code
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["ok", "failed"]
    ok, failed = records
    assert isinstance(ok["psnr_db"], float) and 0 < ok["psnr_db"] < 60
    assert "corrupt.jpg" in failed["error"] and "not a readable image" in failed["error"]
    assert "corrupt.jpg" in result.stderr
    recon = np.asarray(Image.open(ok["output_path"]))
    original = np.asarray(Image.open(ok["input_path"]))
    assert recon.shape == original.shape == (56, 56, 3)  # tiny's native size, centre-cropped
    from skimage.metrics import peak_signal_noise_ratio

    assert ok["psnr_db"] == pytest.approx(peak_signal_noise_ratio(original, recon, data_range=255))
    run = json.loads((out / "run.json").read_text())
    assert run["n_ok"] == 1 and run["n_failed"] == 1 and run["size"] == 56
    assert run["weights_source"] == "random init (seed 0)"
    assert "git" in run["environment"] and run["environment"]["packages"]["torch"]


def test_reconstruct_size_option_and_builtin(tmp_path):
    result = _run(
        "reconstruct", "--model", "tiny", "--builtin", "--size", "64", "--out", str(tmp_path), "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 7 and all(r["status"] == "ok" for r in records)
    assert Image.open(records[0]["output_path"]).size == (64, 64)


def test_reconstruct_reports_missing_weights_clearly(tmp_path, photo_and_corrupt):
    result = _run(
        "reconstruct",
        "--model",
        "unilip-1b",
        "--weights",
        str(tmp_path / "1b_unilip.pth"),
        str(photo_and_corrupt[0]),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.returncode == 2
    assert "1b_unilip.pth" in result.stderr and "does not exist" in result.stderr


def test_console_script_is_installed():
    script = shutil.which("unilip", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the project is not installed in this interpreter's environment (scripts/test installs it)")
    result = subprocess.run([script, "variants"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "unilip-3b" in result.stdout


def test_list_recipes_lists_exactly_the_shipped_yaml_files():
    import unilip
    from unilip.training.config import RECIPES_DIR, list_recipes, recipe_path

    shipped = sorted(p.stem for p in (Path(unilip.__file__).parent / "configs" / "train").glob("*.yaml"))
    assert list_recipes() == shipped and len(shipped) >= 2 and "tiny-digits" in shipped
    assert unilip.list_recipes() == shipped  # exported beside list_variants
    for name in shipped:
        assert recipe_path(name) == RECIPES_DIR / f"{name}.yaml" and recipe_path(name).is_file()


def test_recipe_path_names_the_recipes_when_nothing_matches(tmp_path):
    from unilip.training.config import list_recipes, recipe_path

    own = tmp_path / "mine.yaml"
    own.write_text("name: x\nvariant: tiny\n")
    assert recipe_path(own) == own  # a file is taken as given
    with pytest.raises(FileNotFoundError, match="no-such-recipe") as error:
        recipe_path("no-such-recipe")
    assert all(name in str(error.value) for name in list_recipes())


def test_train_tokenizer_help_lists_its_recipes(capsys, monkeypatch):
    from unilip.cli import build_parser

    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps help at hyphens otherwise
    from unilip.training.config import list_recipes

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "tokenizer", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    tokenizer_recipes = [name for name in list_recipes() if "generator" not in name]
    assert "tiny-digits" in tokenizer_recipes and all(name in text for name in tokenizer_recipes)
    assert "unilip-1b-generator-stage2" not in text  # generator recipes belong to `train generator`


def test_checkpoint_errors_are_usage_errors_without_importing_torch_first(capsys):
    import argparse

    from unilip.checkpoints import CheckpointError
    from unilip.cli import run_command

    def broken(args):
        raise CheckpointError("model.pth holds pickled objects")

    args = argparse.Namespace(command="reconstruct", func=broken, verbose=False)
    assert run_command(args) == 2
    assert "unilip reconstruct: error: model.pth holds pickled objects" in capsys.readouterr().err
