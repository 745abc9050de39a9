"""Variants as data: listing, validation, errors for unknown names and missing weights."""

import subprocess
import sys

import pytest

from unilip import get_variant, list_variants, load_tokenizer
from unilip.checkpoints import CheckpointNotFoundError


def test_list_variants_has_real_and_tiny():
    assert {"unilip-1b", "unilip-3b", "tiny"} <= set(list_variants())


def test_import_and_list_from_a_fresh_interpreter():
    out = subprocess.run(
        [sys.executable, "-c", "import unilip; print(unilip.list_variants())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "unilip-1b" in out and "unilip-3b" in out and "tiny" in out


def test_real_variants_match_the_spec():
    one, three = get_variant("unilip-1b"), get_variant("unilip-3b")
    assert (one.tokenizer.llm_hidden_size, three.tokenizer.llm_hidden_size) == (896, 1536)
    for spec in (one, three):
        assert spec.tokenizer.vision["hidden_size"] == 1024 and spec.tokenizer.vision["num_hidden_layers"] == 24
        assert spec.tokenizer.patch_size == 14 and spec.tokenizer.token_stride == 28
        assert spec.tokenizer.decoder_stride == 32 and spec.tokenizer.latent_channels == 32
    assert one.weights["tokenizer_file"] == "1b_unilip.pth" and three.weights["tokenizer_file"] == "2b_unilip.pth"


def test_unknown_variant_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean unilip-1b"):
        get_variant("unilip-1")


def test_invalid_variant_file_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ntokenizer:\n  llm_hidden_size: 8\n  colour: blue\n")
    with pytest.raises(ValueError, match="colour"):
        get_variant(path)


def test_real_variant_without_weights_names_the_file_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("UNILIP_WEIGHTS", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as error:
        load_tokenizer("unilip-1b")
    message = str(error.value)
    assert "1b_unilip.pth" in message and "kanashi6/UniLIP" in message and str(tmp_path) in message


def test_missing_weights_path_is_named(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="nope.pth"):
        load_tokenizer("unilip-1b", weights=tmp_path / "nope.pth")
