"""Each benchmark variant's default spec, pinned: a change to what moves scores needs a version bump.

The spec fingerprint of every ``NAME@VARIANT`` is computed from fixed inputs (the built-in photos,
fake release files, no metric weights) and compared with ``spec_pins.json``, which keeps one
fingerprint per version. Changing a knob (a default, a protocol value, a scorer setting) fails here
until the benchmark's ``version`` is bumped, the change is logged in its README's change log, and the
new version is pinned with::

    python tests/evals/test_spec_pins.py --add

(which adds missing versions and never rewrites a pinned one).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_imgedit import write_imgedit  # noqa: E402
from test_wise import write_wise_repo  # noqa: E402
from vlm_tsv import write_all  # noqa: E402

from evals.adapter import ModelInfo  # noqa: E402
from evals.benchmark import benchmark_classes, get_benchmark, list_benchmarks  # noqa: E402

PINS = Path(__file__).parent / "spec_pins.json"
HERMETIC_ENV = (
    "UNILIP_INCEPTION_WEIGHTS",
    "UNILIP_LPIPS_ALEX_WEIGHTS",
    "UNILIP_LPIPS_VGG_WEIGHTS",
    "UNILIP_JUDGE_MODEL",
    "UNILIP_JUDGE_BASE_URL",
)


def fixed_inputs(root: Path) -> dict[str, dict]:
    """Options per benchmark that make its default spec depend on nothing of this machine."""
    wise = write_wise_repo(root / "WISE")
    (wise / "data_verified").mkdir()
    (wise / "data_verified" / "merge.json").write_text(
        json.dumps(
            [
                {"prompt_id": pid, "Prompt": f"prompt {pid}", "Explanation": "e", "Category": "c", "Subcategory": "s"}
                for pid in (1, 401, 641)
            ]
        )
    )
    write_imgedit(root / "ImgEdit", root / "imgedit-images")
    detector, clip = root / "detector", root / "clip"
    for folder in (detector, clip):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"fixed bytes standing for weights")
    official = root / "geneval"
    (official / "evaluation").mkdir(parents=True)
    (official / "evaluation" / "evaluate_images.py").write_text("# a fixed stand-in for the official scorer\n")
    from evals.benchmarks.geneval.official import OFFICIAL_CHECKPOINT

    (root / "mmdet").mkdir()
    (root / "mmdet" / OFFICIAL_CHECKPOINT).write_bytes(b"fixed checkpoint bytes")
    lmu_data = str(write_all(root / "LMUData"))
    return {
        **{name: {"data": lmu_data} for name in ("mme", "mmbench", "mmvp", "ai2d", "seed", "mmmu", "mmvet")},
        "digits-vqa": {"data": str(root / "digits-vqa")},
        "recon": {"data_kind": "builtin"},
        "geneval@hf-mask2former": {"detector": str(detector), "clip": str(clip), "scorer_device": "cpu"},
        "geneval@official": {
            "official_scorer": sys.executable,
            "official_repo": str(official),
            "detector": str(root / "mmdet"),
        },
        "wise": {"data": str(wise)},
        "imgedit": {"data": str(root / "ImgEdit"), "imgedit_images": str(root / "imgedit-images")},
    }


def current_fingerprints(root: Path) -> dict[str, tuple[str, str]]:
    """``NAME@VARIANT`` -> (version, spec fingerprint) from the fixed inputs."""
    inputs = fixed_inputs(root)
    model = ModelInfo(adapter="unilip", model="tiny", capabilities=frozenset({"reconstruct"}), native_size=64)
    found = {}
    for reference in list_benchmarks():
        bench, variant = get_benchmark(reference)
        options = inputs.get(reference, inputs.get(bench.name, {}))
        spec = bench.resolve(variant, options, model).spec
        found[reference] = (spec.version, spec.fingerprint)
    return found


@pytest.fixture
def hermetic(monkeypatch, tmp_path):
    for name in HERMETIC_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))  # no metric weights anywhere
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_variant_default_spec_is_pinned_for_its_version(hermetic):
    pins = json.loads(PINS.read_text())
    problems = []
    for reference, (version, fingerprint) in current_fingerprints(hermetic / "inputs").items():
        pinned = pins.get(reference, {})
        if version not in pinned:
            problems.append(
                f"{reference} version {version} is not pinned: log it in the benchmark's README change "
                "log, then run `python tests/evals/test_spec_pins.py --add`"
            )
        elif pinned[version] != fingerprint:
            problems.append(
                f"{reference}: its default spec changed but its version is still {version}: bump the "
                "benchmark's version, log the change in its README, then run "
                "`python tests/evals/test_spec_pins.py --add`"
            )
    assert not problems, "\n".join(problems)


def test_every_benchmark_logs_its_current_version():
    for name, cls in benchmark_classes().items():
        readme = Path(sys.modules[cls.__module__].__file__).parent / "README.md"  # its folder's (digits_vqa/)
        assert readme.is_file(), f"{name} has no README.md (with a '## Change log' section)"
        log = readme.read_text().partition("## Change log")[2]
        assert log, f"{readme}: no '## Change log' section"
        assert re.search(rf"^- \*\*{re.escape(cls.version)}\*\*:", log, re.MULTILINE), (
            f"{readme}: the change log has no entry '- **{cls.version}**: ...' for the current version"
        )


def test_a_changed_knob_with_the_same_version_is_caught(hermetic, monkeypatch):
    from dataclasses import replace

    bench_class = benchmark_classes()["recon"]
    changed = {**bench_class.variants, "standard": replace(bench_class.variants["standard"], ssim_data_range=2.0)}
    monkeypatch.setattr(bench_class, "variants", changed)
    with pytest.raises(AssertionError, match="recon@standard: its default spec changed but its version is still"):
        test_every_variant_default_spec_is_pinned_for_its_version(hermetic)


def _add_missing_pins() -> None:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        os.environ["TORCH_HOME"] = str(Path(folder) / "no-torch-home")  # as the test: no metric weights
        os.chdir(folder)
        current = current_fingerprints(Path(folder) / "inputs")
    pins = json.loads(PINS.read_text()) if PINS.is_file() else {}
    for reference, (version, fingerprint) in current.items():
        entry = pins.setdefault(reference, {})
        if version in entry and entry[version] != fingerprint:
            raise SystemExit(
                f"{reference} version {version} is pinned with another fingerprint: bump the version "
                "instead of re-pinning it"
            )
        entry.setdefault(version, fingerprint)
    PINS.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
    print(f"pinned {len(current)} variants in {PINS}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--add"]:
        raise SystemExit("usage: python tests/evals/test_spec_pins.py --add")
    import os

    for name in HERMETIC_ENV:
        os.environ.pop(name, None)
    _add_missing_pins()
