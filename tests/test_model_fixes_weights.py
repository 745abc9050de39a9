"""Weights files: a named path must exist (never "not found, use another"), and an unusable file (pickled
objects, damaged, foreign, the wrong keys) is one line naming it; the legacy torch.save format is read."""

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from unilip.checkpoints import (
    CheckpointError,
    CheckpointKeyError,
    CheckpointNotFoundError,
    load_pth_state_dict,
    load_safetensors_state_dict,
)
from unilip.weights import WeightsNotFoundError, WeightsUnavailable, resolve_weights


class _Payload:
    """An arbitrary object: unpickling it could run code."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture
def state():
    return {"a.weight": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), "a.steps": torch.arange(5)}


def test_legacy_torch_save_format_is_read_without_mmap(state, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02"  # really the pre-1.6 format, not a zip archive
    loaded = load_pth_state_dict(path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("legacy", [False, True])
def test_pickled_objects_are_refused_in_either_format(state, tmp_path, legacy):
    path = tmp_path / "evil.pth"
    torch.save({**state, "payload": _Payload()}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match=r"pickled Python objects \((builtins\.)?print\)") as excinfo:
        load_pth_state_dict(path, what="the X weights", source="Get X from Y.")
    message = str(excinfo.value)
    assert str(path) in message and "the X weights" in message and "Get X from Y." in message


def _damaged_files(state, tmp_path):
    zipped, legacy = tmp_path / "zip.pth", tmp_path / "legacy.pth"
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    files = {
        "truncated zip": zipped.read_bytes()[:200],
        "truncated legacy": legacy.read_bytes()[:60],
        "garbage": os.urandom(4096),
        "empty": b"",
        "text": b"hello, not weights\n",
        "plain pickle": pickle.dumps({"a": [1, 2, 3]}),
        "pickled payload": pickle.dumps(_Payload()),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.pth"
        paths[name].write_bytes(data)
    return paths


def test_damaged_or_foreign_pth_files_are_one_line_errors_naming_the_file(state, tmp_path):
    for name, path in _damaged_files(state, tmp_path).items():
        with pytest.raises(CheckpointError) as excinfo:
            load_pth_state_dict(path, what="the X weights", source="Get X from Y.")
        message = str(excinfo.value)
        assert str(path) in message and "Get X from Y." in message and "\n" not in message, name
        # A damaged legacy stream can look like a pickled global ("GLOBAL ."); it is reported as damage.
        assert "pickled Python objects" not in message, name


def test_a_missing_pth_says_what_it_should_be(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="the X weights"):
        load_pth_state_dict(tmp_path / "absent.pth", what="the X weights", source="Get X from Y.")


def test_damaged_safetensors_and_index_are_one_line_errors(state, tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(state, str(good))
    for name, data in {"truncated": good.read_bytes()[:-8], "garbage": os.urandom(2048), "empty": b""}.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match="not a readable safetensors file") as excinfo:
            load_safetensors_state_dict(path)
        assert str(path) in str(excinfo.value), name
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a safetensors index"):
        load_safetensors_state_dict(tmp_path)


def test_legacy_tokenizer_checkpoint_loads_through_load_tokenizer(tiny_config, tmp_path):
    from test_checkpoints import _synth_official_state_dict

    from unilip import load_tokenizer
    from unilip.checkpoints import to_official_tokenizer_state_dict

    official = _synth_official_state_dict(tiny_config, seed=5)
    torch.save(official, tmp_path / "tiny_unilip.pth", _use_new_zipfile_serialization=False)
    back = to_official_tokenizer_state_dict(load_tokenizer("tiny", weights=tmp_path / "tiny_unilip.pth").state_dict())
    assert all(torch.equal(back[k], official[k]) for k in official)


# ------------------------------------------------------------------------------ one rule for named paths
@pytest.fixture
def everywhere(tmp_path, monkeypatch):
    """The file is in the hub cache and the variable names another copy: a typo must still be an error."""
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "net.pth").write_bytes(b"hub")
    (tmp_path / "env.pth").write_bytes(b"env")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("UNILIP_TEST_NET", str(tmp_path / "env.pth"))
    return tmp_path


def test_an_explicit_path_that_does_not_exist_is_an_error_not_a_fallback(everywhere):
    typo = everywhere / "nett.pth"
    with pytest.raises(WeightsNotFoundError) as excinfo:
        resolve_weights(
            typo, "UNILIP_TEST_NET", ("net.pth",), "the Net weights", "Get it from Z.", setting="losses.net_weights"
        )
    assert isinstance(excinfo.value, FileNotFoundError) and not isinstance(excinfo.value, WeightsUnavailable)
    message = str(excinfo.value)
    assert str(typo) in message and "losses.net_weights" in message and "net.pth" in message and "the Net" in message
    assert resolve_weights(everywhere / "env.pth", "UNILIP_TEST_NET", ("net.pth",), "w", "s") == everywhere / "env.pth"
    assert resolve_weights(None, "UNILIP_TEST_NET", ("net.pth",), "w", "s") == everywhere / "env.pth"


def test_nothing_named_and_nothing_cached_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("UNILIP_TEST_NET", raising=False)
    with pytest.raises(WeightsUnavailable, match="UNILIP_TEST_NET: not set") as excinfo:
        resolve_weights(
            None,
            "UNILIP_TEST_NET",
            ("net.pth",),
            "the Net weights",
            "Get it from Z.",
            switch_off="losses.net_weight: 0",
        )
    assert "Get it from Z." in str(excinfo.value) and "losses.net_weight: 0" in str(excinfo.value)
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "net.pth").write_bytes(b"x")
    assert resolve_weights(None, "UNILIP_TEST_NET", ("net.pth",), "w", "s") == hub / "net.pth"


def test_training_loss_config_path_typo_is_an_error(everywhere, monkeypatch):
    from unilip.training.losses import LPIPS_VGG_ENV, LPIPS_VGG_FILENAME, LPIPSLoss

    hub = everywhere / "torch_home" / "hub" / "checkpoints"
    (hub / LPIPS_VGG_FILENAME).write_bytes(b"would be found by the old fallback")
    monkeypatch.setenv(LPIPS_VGG_ENV, str(hub / LPIPS_VGG_FILENAME))
    with pytest.raises(FileNotFoundError, match="losses.lpips_vgg_weights") as excinfo:
        LPIPSLoss(backbone_weights=everywhere / "vgg16-typo.pth")
    assert "vgg16-typo.pth" in str(excinfo.value) and LPIPS_VGG_FILENAME in str(excinfo.value)


def test_convnext_weights_with_the_wrong_keys_or_objects_are_one_line_errors(tmp_path):
    from unilip.training.losses import ConvNeXtLogitLoss

    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.0.weight": torch.zeros(96, 3, 4, 4), "head.weight": torch.zeros(2)}, wrong)
    with pytest.raises(CheckpointKeyError, match="missing") as excinfo:
        ConvNeXtLogitLoss(weights=wrong)
    assert "head.weight" in str(excinfo.value) and "ConvNeXt" in str(excinfo.value)
    evil = tmp_path / "evil.pth"
    torch.save({"payload": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        ConvNeXtLogitLoss(weights=evil)
