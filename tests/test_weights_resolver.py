"""One home per concern: the local-weights rule, file fingerprints and the ImageNet statistics are defined once
and every front end (training losses, evaluation metrics) uses that one definition."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import evals.metrics.weights as metric_weights
import unilip.training.losses as losses
import unilip.weights as weights
from unilip.weights import WeightsNotFoundError, WeightsUnavailable, file_sha256

NAME = "net-1234.pth"
ENV = "UNILIP_TEST_RESOLVER_WEIGHTS"

# The three ways the project resolves a weights file, each with its own "not found anywhere" error type.
FRONT_ENDS = {
    "unilip.weights": (
        lambda explicit: weights.resolve_weights(explicit, ENV, (NAME,), "the Net weights", "Get it from Z."),
        WeightsUnavailable,
    ),
    "training losses": (
        lambda explicit: losses.resolve_loss_weights(explicit, ENV, NAME, "the Net weights"),
        losses.LossWeightsUnavailable,
    ),
    "evals metrics": (
        lambda explicit: metric_weights.resolve_weights(explicit, ENV, (NAME,), "the Net weights", "Get it from Z."),
        metric_weights.MetricUnavailable,
    ),
}


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A torch hub cache holding the file, a folder named by the variable holding it, and an explicit file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(ENV, raising=False)
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / NAME).write_bytes(b"hub")
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    (env_dir / NAME).write_bytes(b"env")
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"explicit")
    return {"hub": hub / NAME, "env_dir": env_dir, "explicit": explicit, "root": tmp_path}


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_one_rule_for_every_front_end(front_end, places, monkeypatch):
    resolve, unavailable = FRONT_ENDS[front_end]
    assert resolve(None) == places["hub"]  # nothing named: the torch hub cache
    monkeypatch.setenv(ENV, str(places["env_dir"]))
    assert resolve(None) == places["env_dir"] / NAME  # the variable, before the cache
    assert resolve(places["explicit"]) == places["explicit"]  # an explicit path, before both
    # An explicit path that does not exist is an error naming it, even though the variable and the cache
    # both hold a file: never replaced by another place.
    typo = places["root"] / "typo.pth"
    with pytest.raises(WeightsNotFoundError, match="typo.pth") as excinfo:
        resolve(typo)
    assert isinstance(excinfo.value, FileNotFoundError) and NAME in str(excinfo.value)
    # A variable that is set but points nowhere is an error naming it, though the cache holds the file.
    monkeypatch.setenv(ENV, str(places["root"] / "nowhere"))
    with pytest.raises(WeightsNotFoundError, match=ENV):
        resolve(None)
    # Neither named nor cached: the front end's own "unavailable" error, saying where it looked.
    monkeypatch.delenv(ENV)
    places["hub"].unlink()
    with pytest.raises(unavailable, match=f"\\${ENV}: not set") as excinfo:
        resolve(None)
    assert isinstance(excinfo.value, WeightsUnavailable) and str(places["hub"]) in str(excinfo.value)


def test_file_sha256_has_one_home_and_follows_rewrites(tmp_path):
    from evals.metrics import file_sha256 as exported

    assert exported is file_sha256 and metric_weights.file_sha256 is file_sha256
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # more than one 1 MiB block, not a whole number of them
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()  # the cached digest, by another spelling
    path.write_bytes(b"rewritten")
    assert file_sha256(path) == hashlib.sha256(b"rewritten").hexdigest()  # a rewrite is never served stale
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "absent.bin")


def test_imagenet_statistics_are_defined_once():
    import unilip.pixels
    import unilip.tokenizer

    assert unilip.tokenizer.IMAGENET_MEAN is unilip.pixels.IMAGENET_MEAN is losses.IMAGENET_MEAN
    assert unilip.tokenizer.IMAGENET_STD is unilip.pixels.IMAGENET_STD is losses.IMAGENET_STD
    assert unilip.pixels.IMAGENET_MEAN == (0.485, 0.456, 0.406) and unilip.pixels.IMAGENET_STD == (0.229, 0.224, 0.225)


def test_lpips_backbones_are_one_table():
    from evals.metrics import LPIPS_BACKBONES
    from unilip import lpips

    assert LPIPS_BACKBONES is lpips.LPIPS_BACKBONES
    assert (losses.LPIPS_VGG_FILENAME, losses.LPIPS_VGG_ENV) == (
        lpips.LPIPS_BACKBONES["vgg"]["filename"],
        lpips.LPIPS_BACKBONES["vgg"]["env_var"],
    )
