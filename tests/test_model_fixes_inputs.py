"""The tokenizer's input contract: B x 3 x H x W, float in [0, 1] or uint8 in 0..255; anything else is
refused with what was expected (never silently encoded as if it were [0, 1])."""

import numpy as np
import pytest
import torch
from PIL import Image

from unilip import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny", random_init=True, seed=1)


@pytest.fixture(scope="module")
def pixels():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, 56, 56), generator=generator, dtype=torch.uint8)


@pytest.mark.parametrize("method", ["encode_features", "encode", "reconstruct"])
def test_uint8_images_are_read_as_eight_bit(tokenizer, pixels, method):
    run = getattr(tokenizer, method)
    with torch.no_grad():
        assert torch.equal(run(pixels), run(pixels.float() / 255))
    if method == "reconstruct":  # the padded path (a size that is not a multiple of the token stride) too
        with torch.no_grad():
            assert torch.equal(run(pixels[..., :50, :50]), run(pixels[..., :50, :50].float() / 255))


@pytest.mark.parametrize("method", ["encode_features", "encode", "reconstruct"])
@pytest.mark.parametrize(
    "convention,hint", [("minus_one_one", "normalise"), ("zero_255", "divide by 255"), ("imagenet", "normalise")]
)
def test_floats_outside_unit_range_are_refused_with_the_expected_range(tokenizer, pixels, method, convention, hint):
    unit = pixels.float() / 255
    images = {
        "minus_one_one": unit * 2 - 1,
        "zero_255": pixels.float(),
        "imagenet": (unit - tokenizer.image_mean) / tokenizer.image_std,
    }[convention]
    with pytest.raises(ValueError, match=r"outside \[0, 1\]") as excinfo:
        getattr(tokenizer, method)(images)
    assert hint in str(excinfo.value) and "float tensor in [0, 1]" in str(excinfo.value)


def test_rounding_overshoot_is_accepted_but_nan_is_not(tokenizer, pixels):
    unit = pixels.float() / 255
    unit[0, 0, 0, 0], unit[0, 0, 0, 1] = 1 + 1e-4, -1e-4  # a resize's or a normalisation round trip's rounding
    with torch.no_grad():
        tokenizer.encode(unit)
    unit[0, 0, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="outside"):
        tokenizer.encode(unit)


def test_a_pil_image_or_other_dtypes_get_a_type_error_saying_what_to_pass(tokenizer):
    image = Image.fromarray(np.zeros((56, 56, 3), np.uint8))
    for method in ("encode_features", "encode", "reconstruct"):
        with pytest.raises(TypeError, match="to_tensor converts a PIL image"):
            getattr(tokenizer, method)(image)
    with pytest.raises(TypeError, match="int64"):
        tokenizer.encode(torch.zeros(1, 3, 56, 56, dtype=torch.int64))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        tokenizer.encode(torch.zeros(3, 56, 56))
