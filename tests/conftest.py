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
