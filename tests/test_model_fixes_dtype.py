"""dtypes as upstream: the generator's pixel decoder stays float32 in a bfloat16 model (however it is
loaded or cast), and InternViT interpolates its position table in float32 before casting back."""

import pytest
import torch
import torch.nn.functional as F

from unilip import load_tokenizer
from unilip.generator import UniLIPGenerator
from unilip.pipelines import load_pipeline
from unilip.tokenizer import UniLIPTokenizer


def _decoder_dtypes(model) -> set[torch.dtype]:
    return {tensor.dtype for tensor in model.tokenizer.decoder.state_dict().values()}


@pytest.fixture(scope="module")
def float32_pipeline():
    return load_pipeline("tiny-digits")


@pytest.mark.parametrize("reference", ["tiny-digits", "tiny"])  # from_pretrained, and a variant built then cast
def test_bfloat16_pipeline_keeps_the_pixel_decoder_float32(float32_pipeline, reference):
    pipeline = load_pipeline(reference, random_init=reference == "tiny", dtype=torch.bfloat16)
    model = pipeline.model
    assert _decoder_dtypes(model) == {torch.float32}
    assert {p.dtype for p in model.dit.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.tokenizer.encoder.parameters()} == {torch.bfloat16}
    latent = torch.randn(2, 32, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = model.latent_to_image(latent)
    assert images.dtype == torch.float32 and images.shape == (2, 3, 56, 56)
    if reference == "tiny-digits":  # same weights as the float32 load: the same pixels, bit for bit
        with torch.no_grad():
            torch.testing.assert_close(images, float32_pipeline.model.latent_to_image(latent), rtol=0, atol=0)


def test_later_casts_move_but_never_round_the_decoder(float32_pipeline, tmp_path):
    model = load_pipeline("tiny-digits").model
    before = {k: v.clone() for k, v in model.tokenizer.decoder.state_dict().items()}
    for cast in (lambda m: m.to(torch.bfloat16), lambda m: m.half(), lambda m: m.to(dtype=torch.float16)):
        cast(model)
        assert _decoder_dtypes(model) == {torch.float32}
        assert all(torch.equal(before[k], v) for k, v in model.tokenizer.decoder.state_dict().items())
    assert model.language_model.embed_tokens.weight.dtype == torch.float16
    # Saved and reloaded in bfloat16: still float32, still the same values.
    model.save_pretrained(tmp_path / "gen")
    reloaded = UniLIPGenerator.from_pretrained(tmp_path / "gen", dtype=torch.bfloat16)
    assert all(torch.equal(before[k], v) for k, v in reloaded.tokenizer.decoder.state_dict().items())


def test_a_tokenizer_alone_still_takes_the_dtype_it_is_given():
    # Only the generator pins its decoder (upstream's generation path); a tokenizer follows its dtype.
    tokenizer = load_tokenizer("tiny", random_init=True, dtype=torch.bfloat16)
    assert {p.dtype for p in tokenizer.decoder.parameters()} == {torch.bfloat16}


def _original_position_embedding(table: torch.Tensor, grid: int) -> torch.Tensor:
    """InternViT's ``_get_pos_embed``: interpolate the patch rows in float32, cast back, CLS row first."""
    side = int((table.shape[1] - 1) ** 0.5)
    patches = table[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.reshape(1, table.shape[-1], grid * grid).permute(0, 2, 1).to(table.dtype)
    return torch.cat([table[:, :1], patches], dim=1)


@pytest.mark.parametrize("size", [42, 70, 84])  # native is 56 (8 x 8 patches of 7 px)
def test_bfloat16_position_interpolation_is_done_in_float32(size):
    tokenizer = load_tokenizer("tiny", random_init=True, seed=3)
    embeddings = tokenizer.encoder.embeddings
    with torch.no_grad():
        embeddings.position_embeddings.normal_(0, 1)  # the random init is zeros: give it values to interpolate
    tokenizer = tokenizer.to(torch.bfloat16)
    table = embeddings.position_embeddings
    patches = size // 7
    tokens = torch.zeros(1, 1 + patches * patches, table.shape[-1], dtype=torch.bfloat16)
    with torch.no_grad():
        ours = embeddings.interpolate_pos_encoding(tokens, size, size)
        expected = _original_position_embedding(table, patches)
    assert ours.dtype == torch.bfloat16
    assert torch.equal(ours, expected)
    # And the interpolation in bfloat16 (what transformers does) really differs, so this test can fail.
    side = int((table.shape[1] - 1) ** 0.5)
    grid = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    in_bf16 = F.interpolate(grid, size=(patches, patches), mode="bicubic", align_corners=False)
    assert not torch.equal(in_bf16.permute(0, 2, 3, 1).reshape(1, -1, table.shape[-1]), expected[:, 1:])


def test_native_size_uses_the_table_as_is_and_keys_are_unchanged():
    tokenizer = load_tokenizer("tiny", random_init=True)
    embeddings = tokenizer.encoder.embeddings
    tokens = torch.zeros(1, 65, embeddings.position_embeddings.shape[-1])
    assert embeddings.interpolate_pos_encoding(tokens, 56, 56) is embeddings.position_embeddings
    assert "encoder.embeddings.position_embeddings" in tokenizer.state_dict()


def _imagenet_float32() -> tuple[torch.Tensor, torch.Tensor]:
    from unilip.pixels import IMAGENET_MEAN, IMAGENET_STD

    return (
        torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1),
    )


@pytest.mark.parametrize("how", ["load_tokenizer", "to", "half", "from_pretrained"])
def test_bfloat16_tokenizer_normalises_in_float32(how, tmp_path):
    # InternVL3's image processor normalises in float32; a cast must not round the ImageNet constants
    # (0.485 -> 0.484375 in bfloat16), so the encoder sees the float32 normalisation cast afterwards.
    if how == "load_tokenizer":
        tokenizer = load_tokenizer("tiny", random_init=True, dtype=torch.bfloat16)
    elif how == "to":
        tokenizer = load_tokenizer("tiny", random_init=True).to(torch.bfloat16)
    elif how == "half":
        tokenizer = load_tokenizer("tiny", random_init=True).half()
    else:
        load_tokenizer("tiny", random_init=True).save_pretrained(tmp_path / "tok")
        tokenizer = UniLIPTokenizer.from_pretrained(tmp_path / "tok", dtype=torch.bfloat16)
    encoder_dtype = torch.float16 if how == "half" else torch.bfloat16
    assert tokenizer.encoder.embeddings.patch_embeddings.projection.weight.dtype == encoder_dtype
    mean, std = _imagenet_float32()
    assert tokenizer.image_mean.dtype == tokenizer.image_std.dtype == torch.float32
    assert torch.equal(tokenizer.image_mean, mean) and torch.equal(tokenizer.image_std, std)
    assert not {"image_mean", "image_std"} & set(tokenizer.state_dict())  # still non-persistent

    images = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    expected = (images - mean) / std
    normalised = tokenizer.normalize(images)
    assert normalised.dtype == torch.float32 and torch.equal(normalised, expected)
    seen = []
    hook = tokenizer.encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["pixel_values"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            tokenizer.encode_features(images)
    finally:
        hook.remove()
    assert seen[0].dtype == encoder_dtype and torch.equal(seen[0], expected.to(encoder_dtype))
