"""Saved-model persistence: the on-disk format is unchanged, and a Hugging Face repo id loads from the local
cache only (a fake cache built in tmp_path; nothing touches the network)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from unilip.checkpoints import CheckpointNotFoundError
from unilip.generator import UniLIPGenerator
from unilip.persistence import hf_hub_cache, is_repo_id, resolve_pretrained
from unilip.tokenizer import UniLIPTokenizer
from unilip.variants import PRETRAINED_DIR, is_generator_reference, load_generator, load_tokenizer, probe_reference

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache named by $HF_HUB_CACHE, offline."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    for name in ("HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _cache_repo(cache: Path, repo_id: str, source: Path) -> Path:
    """Put ``source``'s files in the cache as ``hf download repo_id`` leaves them (refs/main -> a snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(source, snapshot)
    return snapshot


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tokenizer_directory_format_is_unchanged(tmp_path):
    model = load_tokenizer("tiny", random_init=True, seed=1)
    directory = model.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    expected = {"model_type": "unilip_tokenizer", "format_version": 1, **model.config.to_dict()}
    assert (directory / "config.json").read_text() == json.dumps(expected, indent=2) + "\n"
    with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "layout": "unilip"}
        assert set(handle.keys()) == set(model.state_dict())


def test_shipped_generator_loads_and_saves_back_to_the_same_files(tmp_path):
    model = UniLIPGenerator.from_pretrained(PRETRAINED_DIR / "tiny-digits")
    directory = model.save_pretrained(tmp_path / "gen")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    assert (directory / "config.json").read_text() == (PRETRAINED_DIR / "tiny-digits" / "config.json").read_text()
    with (
        safe_open(str(directory / "model.safetensors"), framework="pt") as ours,
        safe_open(str(PRETRAINED_DIR / "tiny-digits" / "model.safetensors"), framework="pt") as shipped,
    ):
        assert ours.metadata() == shipped.metadata() == {"format": "pt", "layout": "unilip"}
        assert set(ours.keys()) == set(shipped.keys())
        assert all(torch.equal(ours.get_tensor(k), shipped.get_tensor(k)) for k in ours.keys())


def test_repo_id_spelling():
    assert is_repo_id("kanashi6/UniLIP-1B") and is_repo_id(Path("someone/model.v2"))
    for not_a_repo in (
        "tiny",
        "unilip-1b",
        "a/b/c",
        "/abs/path",
        "./rel",
        "x/weights.pth",
        "x/v.yaml",
        "a--b/c",
        "a/b..c",
        "",
    ):
        assert not is_repo_id(not_a_repo), not_a_repo


def test_cache_location_follows_the_environment_at_call_time(tmp_path, monkeypatch):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_hub_cache() == tmp_path / "hub"


def test_tokenizer_repo_id_loads_from_the_local_cache(hf_cache, tmp_path):
    model = load_tokenizer("tiny", random_init=True, seed=2)
    snapshot = _cache_repo(hf_cache, "someone/tiny-tokenizer", model.save_pretrained(tmp_path / "tok"))
    assert resolve_pretrained("someone/tiny-tokenizer") == snapshot
    assert _same_state(UniLIPTokenizer.from_pretrained("someone/tiny-tokenizer"), model)
    assert _same_state(load_tokenizer("someone/tiny-tokenizer"), model)  # the factory takes a repo id too
    info = probe_reference("someone/tiny-tokenizer")
    assert info.kind == "tokenizer" and info.tokenizer == model.config


def test_repo_id_found_through_hf_home(tmp_path, monkeypatch):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    model = load_tokenizer("tiny", random_init=True, seed=3)
    _cache_repo(tmp_path / "hf-home" / "hub", "someone/tok", model.save_pretrained(tmp_path / "tok"))
    assert _same_state(UniLIPTokenizer.from_pretrained("someone/tok"), model)


def test_generator_repo_id_loads_from_the_local_cache(hf_cache):
    snapshot = _cache_repo(hf_cache, "someone/tiny-digits", PRETRAINED_DIR / "tiny-digits")
    assert is_generator_reference("someone/tiny-digits")
    info = probe_reference("someone/tiny-digits")
    assert info.kind == "generator"
    model, text_dir = load_generator("someone/tiny-digits")
    assert text_dir == snapshot  # the text tokenizer is the repo's own
    assert _same_state(model, UniLIPGenerator.from_pretrained(PRETRAINED_DIR / "tiny-digits"))
    assert _same_state(UniLIPGenerator.from_pretrained("someone/tiny-digits"), model)


def test_repo_id_not_in_the_cache_names_the_repo_and_the_download_command(hf_cache):
    for load in (
        UniLIPTokenizer.from_pretrained,
        UniLIPGenerator.from_pretrained,
        load_tokenizer,
        lambda name: load_generator(name),
        probe_reference,
    ):
        with pytest.raises(CheckpointNotFoundError) as excinfo:
            load("kanashi6/UniLIP-1B")
        message = str(excinfo.value)
        assert isinstance(excinfo.value, FileNotFoundError)
        for needle in (
            "kanashi6/UniLIP-1B",
            "hf download kanashi6/UniLIP-1B",
            "huggingface-cli download kanashi6/UniLIP-1B",
            str(hf_cache),
            "Nothing is downloaded",
        ):
            assert needle in message, needle
    assert not is_generator_reference("kanashi6/UniLIP-1B")  # the loader then says how to get it
    assert not any(hf_cache.iterdir())  # looking wrote nothing into the cache


def test_a_local_directory_wins_over_a_repo_of_the_same_name(hf_cache, tmp_path, monkeypatch):
    local = load_tokenizer("tiny", random_init=True, seed=4)
    cached = load_tokenizer("tiny", random_init=True, seed=5)
    _cache_repo(hf_cache, "runs/final", cached.save_pretrained(tmp_path / "cached"))
    monkeypatch.chdir(tmp_path)
    local.save_pretrained(tmp_path / "runs" / "final")
    assert _same_state(UniLIPTokenizer.from_pretrained("runs/final"), local)
    assert _same_state(load_tokenizer("runs/final"), local)


def test_generate_command_takes_a_repo_id_from_the_local_cache(hf_cache, tmp_path):
    """The README's `unilip generate --model ORG/NAME`: the whole command, offline, from the cache."""
    from unilip.cli import main

    _cache_repo(hf_cache, "someone/tiny-digits", PRETRAINED_DIR / "tiny-digits")
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--model",
            "someone/tiny-digits",
            "--prompt",
            "a handwritten digit seven",
            "-n",
            "1",
            "--steps",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0 and (out / "00000" / "00000.png").is_file()
