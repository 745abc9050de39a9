"""Lazy imports: ``import unilip``, ``unilip --help`` and the CI fast path (``unilip eval compare`` / ``gate``)
never load the model stack (torch, transformers, diffusers, the tokenizer and generator modules).

Each check runs in a fresh interpreter and looks at ``sys.modules`` afterwards: a set of modules, never a
timing (timings are flaky on shared machines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_STACK = ("torch", "transformers", "diffusers")
MODEL_CODE = ("transformers", "diffusers", "unilip.tokenizer", "unilip.generator")
WATCHED = sorted({*MODEL_STACK, *MODEL_CODE, "numpy", "evals.cli", "unilip.training.config"})

_PROBE = """
import contextlib, io, json, sys
{setup}
print("@@MODULES@@" + json.dumps({{"loaded": [m for m in {watched!r} if m in sys.modules], "rc": rc}}))
"""


def _loaded(setup: str) -> tuple[set[str], object]:
    """Run ``setup`` (which sets ``rc``) in a fresh interpreter; the watched modules it left loaded, and ``rc``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    code = _PROBE.format(setup=setup, watched=WATCHED)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=300
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("@@MODULES@@")]
    assert result.returncode == 0 and lines, f"probe failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
    report = json.loads(lines[-1][len("@@MODULES@@") :])
    return set(report["loaded"]), report["rc"]


def _main(argv: list[str]) -> str:
    """Probe code running ``unilip ARGV`` in-process, its output swallowed; ``rc`` is its exit code."""
    return (
        f"from unilip.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    try:\n"
        f"        rc = main({argv!r})\n"
        f"    except SystemExit as exit:\n"
        f"        rc = exit.code\n"
    )


def test_import_unilip_is_lazy():
    loaded, _ = _loaded("import unilip\nrc = sorted(unilip.__all__)")
    assert not loaded & set(MODEL_CODE + MODEL_STACK), loaded


def test_lazy_names_still_resolve():
    # The lazy names are the real objects, listed by dir(), and list_recipes sits beside list_variants.
    import unilip
    from unilip.training.config import list_recipes
    from unilip.variants import list_variants

    assert unilip.list_recipes is list_recipes and unilip.list_variants is list_variants
    assert set(unilip.__all__) <= set(dir(unilip)) and "list_recipes" in unilip.__all__
    assert all(getattr(unilip, name) is not None for name in unilip.__all__)
    with pytest.raises(AttributeError, match="no_such_name"):
        unilip.no_such_name  # noqa: B018


def test_import_cli_is_lazy():
    loaded, _ = _loaded("import unilip.cli\nrc = 0")
    assert not loaded & set(MODEL_CODE + MODEL_STACK + ("numpy", "evals.cli")), loaded


def test_help_builds_the_full_parser_without_the_model_stack():
    loaded, rc = _loaded(_main(["--help"]))
    assert rc == 0
    assert "evals.cli" in loaded  # the entry points were loaded: this is the full parser
    assert not loaded & set(MODEL_CODE + MODEL_STACK), loaded


def test_train_tokenizer_help_lists_the_recipes_without_the_model_stack():
    loaded, rc = _loaded(_main(["train", "tokenizer", "--help"]))
    assert rc == 0 and not loaded & set(MODEL_CODE + MODEL_STACK), loaded


# ----------------------------------------------------------------------------- the CI fast path
def _result(psnr: float = 20.0) -> dict:
    return {
        "benchmark": "recon@standard",
        "spec": {"fingerprint": "f" * 16, "knobs": {"resolution": 56}},
        "model": {"model": "tiny", "weights_sha256": "ab" * 32},
        "coverage": {"expected": 10, "ok": 10, "failed": 0, "missing": 0, "fraction": 1.0},
        "metrics": {"psnr": {"value": psnr, "se": 0.1, "n": 10}, "ssim": {"value": 0.6, "se": 0.01, "n": 10}},
    }


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, psnr in (("run", 20.0), ("baseline", 20.01)):
        folder = tmp_path / name / "recon@standard"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(_result(psnr)))
        paths[name] = tmp_path / name
    paths["rules"] = tmp_path / "rules.yaml"
    paths["rules"].write_text("benchmark: recon@standard\nmetrics:\n  psnr: {max_drop: 0.05}\n")
    return paths


def test_eval_compare_skips_the_model_code(runs):
    loaded, rc = _loaded(_main(["eval", "compare", str(runs["run"]), str(runs["baseline"])]))
    assert rc == 0 and not loaded & set(MODEL_CODE), loaded


def test_eval_gate_skips_the_model_code(runs):
    loaded, rc = _loaded(
        _main(["eval", "gate", str(runs["run"]), "--baseline", str(runs["baseline"]), "--rules", str(runs["rules"])])
    )
    assert rc == 0 and not loaded & set(MODEL_CODE), loaded


def test_eval_compare_and_gate_skip_torch(runs):
    loaded, rc = _loaded(
        _main(["eval", "compare", str(runs["run"]), str(runs["baseline"])])
        + "first = rc\n"
        + _main(["eval", "gate", str(runs["run"]), "--baseline", str(runs["baseline"]), "--rules", str(runs["rules"])])
        + "rc = [first, rc]\n"
    )
    assert rc == [0, 0] and "torch" not in loaded, loaded


def test_eval_list_skips_the_model_stack():
    """Listing benchmarks (and their options) imports every benchmark folder, each light to import."""
    loaded, rc = _loaded(_main(["eval", "list", "--options"]))
    assert rc == 0 and not loaded & set(MODEL_CODE + MODEL_STACK), loaded
