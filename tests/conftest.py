"""Test-wide settings: offline, float32 on CPU, default threads, fixed seed."""

import os
import shutil
import subprocess

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_key, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_config():
    from unilip import get_variant

    return get_variant("tiny").tokenizer


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, installed here when missing (the test setup installs it; it is not assumed)."""
    found = shutil.which("chromium")
    if found is None:
        install = (
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
            "apt-get install -y -qq --no-install-recommends chromium"
        )
        result = subprocess.run(["bash", "-c", install], capture_output=True, text=True, timeout=900)
        found = shutil.which("chromium")
        if found is None:
            pytest.fail(f"could not install Debian's chromium for the report test:\n{result.stderr[-2000:]}")
    return found


@pytest.fixture(autouse=True)
def _results_follow_the_schema(tmp_path):
    """Every results.json a test writes is checked against evals/report/results.schema.json (all writers, in
    every test), so a change to what runs record cannot drift from the published schema unnoticed."""
    yield
    found = sorted(tmp_path.rglob("results.json"))
    if not found:
        return
    import json

    import jsonschema

    from evals.report.results import SCHEMA_FILE

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for path in found:
        try:
            document = json.loads(path.read_text())
        except ValueError:
            continue  # a test's deliberately broken file (an unreadable-results case)
        if not isinstance(document, dict) or str(document.get("schema_version", "")).split(".")[0] != "1":
            continue  # hand-written fixtures: older results, another major version (refused by readers), non-results
        errors = sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
        assert not errors, f"{path} breaks the results schema: " + "; ".join(
            f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}" for error in errors[:5]
        )
