"""Released model directories in mixed key layouts: each part's prefix (current ``model.*`` or legacy
InternVL) is chosen on its own, as the official loader reads them; a part present twice is refused by name."""

import itertools
import re

import pytest
import torch
from safetensors.torch import save_file
from test_checkpoints import _synth_official_state_dict

from unilip import get_variant, load_tokenizer
from unilip.checkpoints import (
    CheckpointKeyError,
    from_model_dir_state_dict,
    from_official_tokenizer_state_dict,
    from_released_generator_state_dict,
    to_model_dir_state_dict,
    to_released_generator_state_dict,
)
from unilip.generator import GeneratorConfig, build_generator
from unilip.tokenizer import load_strict

# (current prefix, legacy prefix) of each part a model directory may hold under either.
TOKENIZER_PARTS = {
    "encoder": ("model.vision_tower.", "vision_tower."),
    "mlp1": ("model.multi_modal_projector.", "multi_modal_projector."),
    "vae": ("model.vae_decoder.", "vae_decoder."),
}
GENERATOR_PARTS = {
    "llm": ("model.language_model.", "language_model.model."),
    "lm_head": ("lm_head.", "language_model.lm_head."),
    "queries": ("model.latent_queries", "latent_queries"),
    "rest": ("model.", ""),
}  # connector, projector, DiT


def _relabel(state: dict[str, torch.Tensor], choices: dict[str, int], parts: dict[str, tuple[str, str]]):
    """Move each part from its current prefix to the one ``choices`` picks (0 current, 1 legacy)."""
    out = {}
    for key, value in state.items():
        for part, (current, legacy) in parts.items():
            if part == "rest":
                if key.startswith(("model.llm_connector.", "model.projector.", "model.dit.")):
                    key = (legacy if choices[part] else current) + key[len(current) :]
                    break
            elif key == current or key.startswith(current) and current.endswith("."):
                key = (legacy if choices[part] else current) + key[len(current) :]
                break
        out[key] = value
    return out


@pytest.fixture(scope="module")
def official(tiny_config):
    return _synth_official_state_dict(tiny_config, seed=11)


@pytest.mark.parametrize("choice", list(itertools.product((0, 1), repeat=3)))
def test_tokenizer_parts_load_bit_exactly_in_every_prefix_combination(tiny_config, official, choice):
    expected = from_official_tokenizer_state_dict(official)
    model_dir = to_model_dir_state_dict(load_strict(tiny_config, expected).state_dict())
    mixed = _relabel(model_dir, dict(zip(TOKENIZER_PARTS, choice, strict=True)), TOKENIZER_PARTS)
    converted = from_model_dir_state_dict(mixed)
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


def test_newer_transformers_layout_loads_through_load_tokenizer(tiny_config, official, tmp_path):
    # vision_tower.* and multi_modal_projector.* without "model.", but model.vae_decoder.* with it.
    expected = load_strict(tiny_config, from_official_tokenizer_state_dict(official))
    mixed = _relabel(
        to_model_dir_state_dict(expected.state_dict()), {"encoder": 1, "mlp1": 1, "vae": 0}, TOKENIZER_PARTS
    )
    assert any(k.startswith("vision_tower.") for k in mixed) and any(k.startswith("model.vae_decoder.") for k in mixed)
    save_file({k: v.contiguous() for k, v in mixed.items()}, str(tmp_path / "model.safetensors"))
    loaded = load_tokenizer("tiny", weights=tmp_path / "model.safetensors")
    ours = expected.state_dict()
    assert all(torch.equal(value, ours[key]) for key, value in loaded.state_dict().items())


@pytest.mark.parametrize("part,prefixes", list(TOKENIZER_PARTS.items()))
def test_a_tokenizer_part_under_both_prefixes_is_refused_by_name(tiny_config, official, part, prefixes):
    model_dir = to_model_dir_state_dict(
        load_strict(tiny_config, from_official_tokenizer_state_dict(official)).state_dict()
    )
    current, legacy = prefixes
    doubled = {**model_dir, **{legacy + k[len(current) :]: v for k, v in model_dir.items() if k.startswith(current)}}
    with pytest.raises(CheckpointKeyError, match=rf"twice, under {re.escape(current)}\* and {re.escape(legacy)}\*"):
        from_model_dir_state_dict(doubled)


@pytest.fixture(scope="module")
def generator_state():
    spec = get_variant("tiny")
    model = build_generator(spec.tokenizer, GeneratorConfig.from_dict(spec.generator), seed=2)
    state = dict(model.weights_state_dict())
    state["lm_head.weight"] = torch.randn_like(state["language_model.embed_tokens.weight"])  # an untied head
    return state


def test_generator_parts_convert_bit_exactly_in_every_prefix_combination(generator_state):
    released = to_released_generator_state_dict(generator_state)
    parts = {**TOKENIZER_PARTS, **GENERATOR_PARTS}
    for choice in itertools.product((0, 1), repeat=len(parts)):  # 128 layouts, one loop (milliseconds each)
        mixed = _relabel(released, dict(zip(parts, choice, strict=True)), parts)
        converted = from_released_generator_state_dict(mixed)
        assert converted.keys() == generator_state.keys(), choice
        assert all(
            converted[k] is generator_state[k] or torch.equal(converted[k], generator_state[k]) for k in generator_state
        ), choice


def test_newer_transformers_generator_directory_loads_strictly(tmp_path):
    import json

    from unilip.variants import load_released_generator

    spec = get_variant("tiny")
    model = build_generator(spec.tokenizer, GeneratorConfig.from_dict(spec.generator), seed=4)
    released = to_released_generator_state_dict(model.weights_state_dict())
    parts = {**TOKENIZER_PARTS, **GENERATOR_PARTS}
    mixed = _relabel(
        released, {"encoder": 1, "mlp1": 1, "vae": 0, "llm": 1, "lm_head": 1, "queries": 0, "rest": 0}, parts
    )
    assert any(k.startswith("language_model.model.") for k in mixed) and "model.latent_queries" in mixed
    directory = tmp_path / "UniLIP-mixed"
    directory.mkdir()
    save_file({k: v.contiguous() for k, v in mixed.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"model_type": "unilip_internvl", "unilip_factor": 3.0}))
    loaded = load_released_generator(directory, spec)
    ours = model.state_dict()
    assert all(torch.equal(value, ours[key]) for key, value in loaded.state_dict().items())


@pytest.mark.parametrize("part", ["llm", "queries", "lm_head"])
def test_a_generator_part_under_two_prefixes_is_refused_by_name(generator_state, part):
    released = to_released_generator_state_dict(generator_state)
    current, legacy = GENERATOR_PARTS[part]
    moved = {
        legacy + k[len(current) :]: v
        for k, v in released.items()
        if k == current or (current.endswith(".") and k.startswith(current))
    }
    names = {"llm": "language model", "queries": "latent_queries", "lm_head": "lm_head"}
    with pytest.raises(CheckpointKeyError, match=f"holds its {names[part]}.* twice"):
        from_released_generator_state_dict({**released, **moved})
