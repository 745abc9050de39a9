"""The tokenizer's structure: pixel shuffle, shapes, resize/pad paths, real-size parameter counts, persistence."""

import pytest
import torch
import torch.nn.functional as F
from official_reference import internvl_pixel_shuffle

from unilip import build_tokenizer, get_variant, load_tokenizer, pixel_shuffle
from unilip.tokenizer import UniLIPTokenizer


def test_pixel_shuffle_known_tensor():
    grid = torch.arange(16.0).reshape(1, 4, 4, 1)  # value = 4 * row + col
    out = pixel_shuffle(grid)
    # Token (i, j) holds the 2x2 block (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1), in that order.
    expected = torch.tensor([[[0, 1, 4, 5], [2, 3, 6, 7]], [[8, 9, 12, 13], [10, 11, 14, 15]]], dtype=torch.float)
    assert torch.equal(out[0], expected)


def test_pixel_shuffle_matches_internvl_and_transformers():
    from transformers.models.internvl.modeling_internvl import InternVLModel

    grid = torch.randn(2, 6, 6, 5)
    ours = pixel_shuffle(grid)
    assert ours.shape == (2, 3, 3, 20)
    assert torch.equal(ours, internvl_pixel_shuffle(grid))
    assert torch.equal(ours, InternVLModel.pixel_shuffle(None, grid, 0.5))


def test_pixel_shuffle_rejects_odd_grid():
    with pytest.raises(ValueError, match="divisible"):
        pixel_shuffle(torch.randn(1, 3, 4, 2))


def _vit_params(width, layers, mlp, patch, native):
    n_pos = (native // patch) ** 2 + 1
    embeddings = width + width * 3 * patch * patch + width + n_pos * width
    per_layer = (
        (3 * width * width + 3 * width)
        + (width * width + width)
        + (mlp * width + mlp)
        + (width * mlp + width)
        + 4 * width
        + 2 * width
    )
    return embeddings + layers * per_layer


@pytest.mark.parametrize("name,llm", [("unilip-1b", 896), ("unilip-3b", 1536)])
def test_real_size_parameter_counts_on_meta(name, llm):
    from diffusers import AutoencoderDC

    model = load_tokenizer(name, random_init=True, device="meta")
    count = {
        part: sum(p.numel() for p in getattr(model, part).parameters())
        for part in ("encoder", "mlp1", "down_blocks", "down_mlp", "decoder")
    }
    vit = _vit_params(1024, 24, 4096, 14, 448)
    assert count["encoder"] == vit
    assert abs(vit - 304e6) / 304e6 < 0.002  # InternViT-300M-448px: 304.0M
    assert count["mlp1"] == 2 * 4096 + 4096 * llm + llm + llm * llm + llm
    assert count["down_blocks"] == 3 * (2 * llm + 2 * (llm * llm + llm))
    assert count["down_mlp"] == 2 * llm + llm * 32 + 32 + 32 * 32 + 32
    # The decoder is diffusers' DC-AE f32c32-sana decoder, built by diffusers itself from the released config.
    config = get_variant(name).tokenizer.decoder
    with torch.device("meta"):
        reference = AutoencoderDC(
            latent_channels=32,
            decoder_block_types=config["block_type"],
            encoder_block_types=config["block_type"],
            decoder_block_out_channels=config["block_out_channels"],
            encoder_block_out_channels=config["block_out_channels"],
            decoder_layers_per_block=config["layers_per_block"],
            decoder_qkv_multiscales=config["qkv_multiscales"],
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            upsample_block_type="interpolate",
        ).decoder
    assert count["decoder"] == sum(p.numel() for p in reference.parameters())
    assert abs(count["decoder"] - 159.2e6) / 159.2e6 < 0.001


@pytest.mark.parametrize("name", ["unilip-1b", "unilip-3b"])
def test_real_size_shapes_on_meta(name):
    model = load_tokenizer(name, random_init=True, device="meta")
    llm = model.config.llm_hidden_size
    seen = {}
    model.decoder.register_forward_hook(lambda m, i, o: seen.update(latent=tuple(i[0].shape), decoded=tuple(o.shape)))
    for size, grid in ((224, 8), (448, 16)):
        images = torch.empty(2, 3, size, size, device="meta")
        assert model.encode_features(images).shape == (2, grid * grid, llm)
        latent = model.encode(images)
        assert latent.shape == (2, 32, grid, grid)
        assert model.decode(latent).shape == (2, 3, size, size)
        assert seen["decoded"] == (2, 3, 32 * grid, 32 * grid)  # 256 / 512 px before the 28/32 resize
    # 256 px: reflect-padded to 280 (10 x 10 latent), decoded to 320, resized and cropped back to 256.
    out = model.reconstruct(torch.empty(1, 3, 256, 256, device="meta"))
    assert out.shape == (1, 3, 256, 256)
    assert seen == {"latent": (1, 32, 10, 10), "decoded": (1, 3, 320, 320)}
    assert model.latent_shape(256) == (32, 10, 10)


def test_tiny_shapes_and_range(tiny_config):
    model = build_tokenizer(tiny_config, seed=0).eval()
    images = torch.rand(3, 3, 56, 56)
    assert model.encode_features(images).shape == (3, 16, tiny_config.llm_hidden_size)
    assert model.encode(images).shape == (3, 32, 4, 4)
    recon = model.reconstruct(images)
    assert recon.shape == images.shape and recon.min() >= 0 and recon.max() <= 1


def test_decode_resizes_decoder_output_bilinearly(tiny_config):
    model = build_tokenizer(tiny_config, seed=0).eval()
    latent = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        raw = model.decoder(latent)
        assert raw.shape[-1] == 64  # decoder stride 16
        expected = F.interpolate(raw, size=(56, 56), mode="bilinear", align_corners=False)
        assert torch.allclose(model.decode(latent), expected)


def test_unaligned_size_uses_reflect_padding_and_crop(tiny_config, monkeypatch):
    model = build_tokenizer(tiny_config, seed=0).eval()
    images = torch.rand(1, 3, 64, 64)  # 64 is not a multiple of 14: pad 3 px each side to 70
    encoded = []
    original_encode = UniLIPTokenizer.encode
    monkeypatch.setattr(UniLIPTokenizer, "encode", lambda self, x: encoded.append(x) or original_encode(self, x))
    out = model.reconstruct(images)
    assert out.shape == images.shape
    padded = encoded[0]
    assert padded.shape == (1, 3, 70, 70)
    assert torch.equal(padded[..., 3:67, 3:67], images)
    # reflect (edge excluded), not replicate: padded rows 2, 1, 0 mirror image rows 1, 2, 3
    assert torch.equal(padded[..., 2, 3:67], images[..., 1, :])
    assert torch.equal(padded[..., 0, 3:67], images[..., 3, :])
    with pytest.raises(ValueError, match="multiple of the token stride"):
        model.encode(images)


def test_save_and_load_round_trip_exactly(tiny_config, tmp_path):
    model = build_tokenizer(tiny_config, seed=3).eval()
    model.save_pretrained(tmp_path / "tok")
    loaded = UniLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.config == model.config
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    images = torch.rand(2, 3, 56, 56)
    assert torch.equal(model.reconstruct(images), loaded.reconstruct(images))
    via_factory = load_tokenizer(tmp_path / "tok")
    assert torch.equal(via_factory.encode(images), model.encode(images))


def test_from_pretrained_refuses_incomplete_directory(tiny_config, tmp_path):
    from safetensors.torch import load_file, save_file

    from unilip.checkpoints import CheckpointKeyError

    build_tokenizer(tiny_config, seed=0).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["down_mlp.3.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointKeyError, match="down_mlp.3.bias"):
        UniLIPTokenizer.from_pretrained(tmp_path)
