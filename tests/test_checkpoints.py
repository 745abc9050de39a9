"""Loading the released layouts: strict key handling, exact round trips, and numerical parity of the
converted encoder with a direct re-computation in the original parameterisation."""

import json
import pickle

import pytest
import torch
from official_reference import official_features, official_key_shapes, official_latent
from safetensors.torch import save_file

from unilip import load_tokenizer
from unilip.checkpoints import (
    CheckpointError,
    CheckpointKeyError,
    from_model_dir_state_dict,
    from_official_tokenizer_state_dict,
    to_model_dir_state_dict,
    to_official_tokenizer_state_dict,
)
from unilip.tokenizer import load_strict


def _synth_official_state_dict(config, seed=0):
    """Random tensors for every key of an official tokenizer checkpoint of ``config``'s size."""
    from diffusers.models.autoencoders.autoencoder_dc import Decoder

    gen = torch.Generator().manual_seed(seed)
    vision = config.vision
    shapes = official_key_shapes(
        width=vision["hidden_size"],
        layers=vision["num_hidden_layers"],
        mlp=vision["intermediate_size"],
        patch=vision["patch_size"],
        native=vision["image_size"],
        llm=config.llm_hidden_size,
    )
    state = {}
    for key, shape in shapes.items():
        value = torch.randn(shape, generator=gen) * 0.05
        if key.endswith(("norm1.weight", "norm2.weight", "mlp1.0.weight", ".mlp.0.weight", "down_mlp.0.weight")):
            value = 1 + value
        state[key] = value
    decoder = Decoder(in_channels=3, latent_channels=32, **config.decoder)  # diffusers' own key names
    for key, value in decoder.state_dict().items():
        state["decoder." + key] = torch.randn(value.shape, generator=gen) * 0.05
    return state


@pytest.fixture(scope="module")
def official(tiny_config):
    return _synth_official_state_dict(tiny_config)


def test_official_layout_loads_strictly_and_converts_back_identically(tiny_config, official):
    model = load_strict(tiny_config, from_official_tokenizer_state_dict(official))
    back = to_official_tokenizer_state_dict(model.state_dict())
    assert back.keys() == official.keys()
    assert all(torch.equal(back[k], official[k]) for k in official)


@pytest.mark.parametrize("size", [56, 42, 28])  # native, and two sizes that interpolate the position table
def test_converted_encoder_matches_original_parameterisation(tiny_config, official, size):
    model = load_strict(tiny_config, from_official_tokenizer_state_dict(official))
    images = torch.rand(2, 3, size, size)
    vision = tiny_config.vision
    with torch.no_grad():
        expected = official_features(
            official,
            images,
            heads=vision["num_attention_heads"],
            patch=vision["patch_size"],
            layers=vision["num_hidden_layers"],
        )
        features = model.encode_features(images)
        latent = model.encode(images)
    assert features.shape == expected.shape
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(latent, official_latent(official, expected), rtol=1e-5, atol=1e-5)


def test_model_dir_layout_loads_and_converts_back(tiny_config, official, tmp_path):
    from_pth = load_strict(tiny_config, from_official_tokenizer_state_dict(official))
    model_dir_state = to_model_dir_state_dict(from_pth.state_dict())
    assert any(k.startswith("model.vision_tower.encoder.layers.0.attn.qkv") for k in model_dir_state)
    assert "model.multi_modal_projector.1.weight" in model_dir_state
    assert any(k.startswith("model.vae_decoder.down_blocks.0.mlp.1") for k in model_dir_state)
    # The generator's weights share the file; the tokenizer loader skips them on purpose.
    generator_keys = {
        "model.language_model.embed_tokens.weight": torch.zeros(10, 4),
        "model.latent_queries": torch.zeros(1, 4, 4),
        "model.dit.proj_out.weight": torch.zeros(2, 2),
        "model.llm_connector.norm.weight": torch.zeros(4),
        "model.projector.weight": torch.zeros(8, 4),
        "lm_head.weight": torch.zeros(10, 4),
    }
    # Two shards with an index, as save_pretrained writes large models.
    keys = sorted({**model_dir_state, **generator_keys})
    shard_a = {k: v for k, v in {**model_dir_state, **generator_keys}.items() if keys.index(k) % 2 == 0}
    shard_b = {k: v for k, v in {**model_dir_state, **generator_keys}.items() if keys.index(k) % 2 == 1}
    save_file({k: v.contiguous() for k, v in shard_a.items()}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({k: v.contiguous() for k, v in shard_b.items()}, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {k: "model-00001-of-00002.safetensors" for k in shard_a}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in shard_b})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = load_tokenizer("tiny", weights=tmp_path)
    ours, theirs = from_pth.state_dict(), loaded.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    back = to_model_dir_state_dict(loaded.state_dict())
    assert all(torch.equal(back[k], model_dir_state[k]) for k in model_dir_state)


def test_legacy_model_dir_prefixes(tiny_config, official):
    model_dir_state = to_model_dir_state_dict(
        load_strict(tiny_config, from_official_tokenizer_state_dict(official)).state_dict()
    )
    legacy = {k.removeprefix("model."): v for k, v in model_dir_state.items()}
    legacy["language_model.model.embed_tokens.weight"] = torch.zeros(3, 3)
    converted = from_model_dir_state_dict(legacy)
    assert converted.keys() == from_official_tokenizer_state_dict(official).keys()


def test_pth_file_round_trip_through_load_tokenizer(tiny_config, official, tmp_path):
    torch.save(official, tmp_path / "tiny_unilip.pth")
    model = load_tokenizer("tiny", weights=tmp_path / "tiny_unilip.pth")
    assert model.weights_source.endswith("tiny_unilip.pth")
    back = to_official_tokenizer_state_dict(model.state_dict())
    assert all(torch.equal(back[k], official[k]) for k in official)


def test_unknown_width_without_variant_is_refused(official, tmp_path):
    torch.save(official, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="matches no released variant"):
        load_tokenizer(tmp_path / "x.pth")


def test_missing_key_fails_and_names_it(tiny_config, official):
    state = dict(official)
    del state["encoder.encoder.layers.1.ls2"]
    with pytest.raises(CheckpointKeyError, match=r"missing 1 key\(s\): encoder\.encoder\.layer\.1\.lambda_2"):
        load_strict(tiny_config, from_official_tokenizer_state_dict(state))


def test_extra_key_fails_and_names_it(official):
    state = dict(official)
    state["encoder.encoder.layers.0.attn.q_norm.weight"] = torch.ones(64)
    with pytest.raises(CheckpointKeyError, match="attn.q_norm.weight"):
        from_official_tokenizer_state_dict(state)
    state = dict(official)
    state["decoder.extra.weight"] = torch.ones(3)
    with pytest.raises(CheckpointKeyError, match=r"unexpected 1 key\(s\): decoder\.extra\.weight"):
        load_strict(load_tokenizer("tiny").config, from_official_tokenizer_state_dict(state))
    state = dict(official)
    state["discriminator.weight"] = torch.ones(3)  # not a tokenizer part, not on the ignorable list
    with pytest.raises(CheckpointKeyError, match="discriminator.weight"):
        from_official_tokenizer_state_dict(state)


def test_ignorable_keys_are_skipped_explicitly(official):
    state = dict(official)
    state["regressor.0.weight"] = torch.ones(3)
    assert "regressor.0.weight" not in from_official_tokenizer_state_dict(state)


def test_shape_mismatch_fails(tiny_config, official):
    state = dict(official)
    state["down_mlp.3.weight"] = torch.zeros(16, 32)
    with pytest.raises(CheckpointKeyError, match="shape mismatch"):
        load_strict(tiny_config, from_official_tokenizer_state_dict(state))


class _Payload:
    """An arbitrary object: unpickling it could run code, so it must be refused."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_arbitrary_objects_is_refused(official, tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        torch.save({**official, "payload": _Payload()}, handle)
    with pytest.raises(CheckpointError, match="not unpickled"):
        load_tokenizer("tiny", weights=path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError):
        load_tokenizer("tiny", weights=plain)


def test_nested_checkpoint_is_explained(official, tmp_path):
    torch.save({"model": official}, tmp_path / "nested.pth")
    with pytest.raises(CheckpointError, match="flat state dict"):
        load_tokenizer("tiny", weights=tmp_path / "nested.pth")
