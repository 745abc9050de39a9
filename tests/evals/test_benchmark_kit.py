"""The benchmark kit: a new benchmark is one folder; options are typed, parsed once and namespaced."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import evals
import evals.benchmark as core
import evals.benchmarks as package
from evals.benchmark import check_option_names, get_benchmark, list_benchmarks, parse_opts, select_options

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def copied_recon(tmp_path, monkeypatch):
    """The recon folder copied, under another folder name only, beside the shipped benchmarks."""
    plugins = tmp_path / "more-benchmarks"
    shutil.copytree(
        ROOT / "evals" / "benchmarks" / "recon", plugins / "recon_copy", ignore=shutil.ignore_patterns("__pycache__")
    )
    core._discover()  # the shipped benchmarks registered before the registry is set aside
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(plugins)])
    monkeypatch.setattr(core, "_REGISTRY", dict(core._REGISTRY))
    yield plugins / "recon_copy"
    for name in [name for name in sys.modules if name.startswith("evals.benchmarks.recon_copy")]:
        del sys.modules[name]


def test_a_copied_benchmark_folder_registers_and_runs_with_no_edit_outside_it(copied_recon, tmp_path):
    assert not any(
        "evals.benchmarks.recon" in line
        for path in copied_recon.glob("*.py")
        for line in path.read_text().splitlines()
        if line.lstrip().startswith(("from ", "import "))
    ), "the recon folder imports itself by absolute name: a copy would run the original's code"
    assert {"recon_copy@standard", "recon_copy@upstream"} <= set(list_benchmarks())
    bench, variant = get_benchmark("recon_copy@standard")
    assert type(bench).__module__ == "evals.benchmarks.recon_copy.benchmark" and variant == "standard"

    flags = dict(dataset="builtin", num_images=2, size=32, no_progress=True)
    (copy,) = evals.run("tiny", "recon_copy@standard", tmp_path / "copy", **flags)
    (original,) = evals.run("tiny", "recon@standard", tmp_path / "original", **flags)
    assert copy["benchmark"] == "recon_copy@standard" and copy["coverage"]["ok"] == 2
    assert copy["metrics"]["psnr"] == original["metrics"]["psnr"]
    assert copy["spec"]["knobs"] == original["spec"]["knobs"]
    assert (tmp_path / "copy" / "recon_copy@standard" / "results.json").is_file()


def test_options_are_typed_and_a_typo_names_the_closest_option():
    geneval, _ = get_benchmark("geneval@official")
    options = geneval.parse_options({"limit": "5", "n_samples": 2})
    assert options.limit == 5 and options.n_samples == 2 and options.seed == 0
    with pytest.raises(ValueError, match=r"unknown options n_sample \(did you mean n_samples\?\)"):
        geneval.parse_options({"n_sample": 2})
    with pytest.raises(ValueError, match="option limit must be an integer, got 'five'"):
        geneval.parse_options({"limit": "five"})
    recon, _ = get_benchmark("recon@standard")
    parsed = recon.parse_options({"inception_score": "false", "lpips_nets": "alex"})
    assert parsed.inception_score is False and parsed.lpips_nets == ["alex"]
    with pytest.raises(ValueError, match="must be true or false"):
        recon.parse_options({"inception_score": "maybe"})


def test_options_are_namespaced_per_benchmark_where_names_clash():
    wise, _ = get_benchmark("wise@legacy")
    imgedit, _ = get_benchmark("imgedit@basic")
    given = parse_opts(["data=/shared", "wise.data=/src/WISE", "imgedit.imgedit_images=/img", "limit=3"])
    assert select_options(wise, given) == {"data": "/src/WISE", "limit": 3}
    assert select_options(imgedit, given) == {"data": "/shared", "imgedit_images": "/img", "limit": 3}
    benches = [(wise, "legacy"), (imgedit, "basic")]
    check_option_names(given, benches)
    with pytest.raises(ValueError, match=r"--opt wise.dta \(did you mean wise.data\?\)"):
        check_option_names({"wise.dta": "x"}, benches)
    with pytest.raises(ValueError, match=r"takes --size;"):
        check_option_names({"resolution": 64}, benches, spelled={"resolution": "--size"})


def test_a_resolved_benchmark_is_frozen_and_the_benchmark_object_keeps_no_state(tmp_path):
    import dataclasses

    from evals.adapter import ModelInfo

    bench, variant = get_benchmark("recon@standard")
    before = dict(vars(bench))
    info = ModelInfo(adapter="unilip", model="tiny", capabilities=frozenset({"reconstruct"}), native_size=32)
    resolved = bench.resolve(variant, {"data_kind": "builtin", "num_images": 2}, info)
    assert vars(bench) == before  # nothing stored on the benchmark
    assert resolved.spec.knobs["resolution"] == 32 and len(resolved.items) == 2
    assert resolved.protocol.ssim_data_range == 1.0 and resolved.stages == ("produce", "score")
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.spec = None  # type: ignore[misc]


def test_a_flag_no_selected_benchmark_takes_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import evals.registry
    from unilip.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the request was checked")

    monkeypatch.setattr(evals.registry, "load_adapter", refuse)
    code = main(
        [
            "eval",
            "run",
            "--model",
            "tiny-digits",
            "--bench",
            "geneval@official",
            "--size",
            "64",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no selected benchmark (geneval@official) takes --size" in err, err
