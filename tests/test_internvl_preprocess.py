"""InternVL3's conventions under VLMEvalKit (``unilip.internvl``): tiling, tile budgets, pixels and the chat text,
each on a known input with the expected output worked out by hand in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

from unilip.internvl import (
    IMAGE,
    INTERNVL3_SYSTEM_MESSAGE,
    build_chat_prompt,
    candidate_grids,
    dynamic_preprocess,
    find_closest_aspect_ratio,
    image_placeholder,
    layout_question,
    max_tiles_for,
    preprocess_image,
    preprocess_images,
    tiles_to_tensor,
    upscales_first_image,
)

# InternVL3's default system message, written out here so that a change to the module's constant shows.
SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _torchvision_transform() -> T.Compose:
    """VLMEvalKit's ``build_transform(448)`` written with torchvision (RGB input assumed)."""
    return T.Compose(
        [
            T.Resize((448, 448), interpolation=InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ]
    )


# ------------------------------------------------------------------------------------------------ tiling


def test_candidate_grids_are_every_grid_of_at_most_max_tiles_ordered_by_tile_count():
    # Grids (columns, rows) with 1 <= columns * rows <= 6; equal tile counts in the order of InternVL's set.
    assert candidate_grids(1, 6) == [
        (1, 1),
        (1, 2), (2, 1),
        (3, 1), (1, 3),
        (4, 1), (1, 4), (2, 2),
        (1, 5), (5, 1),
        (6, 1), (2, 3), (1, 6), (3, 2),
    ]  # fmt: skip
    grids_12 = candidate_grids(1, 12)
    # Every (columns, rows) with a product of at most 12, once: the divisor counts of 1..12 sum to 35.
    assert len(grids_12) == len(set(grids_12)) == 35
    assert all(c * r <= 12 for c, r in grids_12)
    assert [c * r for c, r in grids_12] == sorted(c * r for c, r in grids_12)
    with pytest.raises(ValueError, match="min_num"):
        candidate_grids(0, 6)


def test_800x600_with_max_6_takes_the_3x2_grid_and_a_thumbnail():
    # Aspect 4/3. (1,1) is 1/3 away; (2,2) ties at 1/3 and 800*600 = 480000 > 0.5*448^2*4 = 401408, so (2,2)
    # replaces it; then (3,2) at |1.5 - 4/3| = 1/6 is strictly closer and wins. 3 x 2 = 6 tiles + 1 thumbnail.
    assert find_closest_aspect_ratio(800 / 600, candidate_grids(1, 6), 800, 600, 448) == (3, 2)
    image = _noise(800, 600)
    tiles = dynamic_preprocess(image, max_num=6)
    assert len(tiles) == 7
    assert all(tile.size == (448, 448) for tile in tiles)
    # The tiles are crops of the image resized to 1344 x 896, row by row; the thumbnail is the whole image.
    resized = np.asarray(image.resize((1344, 896), Image.Resampling.BICUBIC))
    for index, tile in enumerate(tiles[:6]):
        row, column = divmod(index, 3)
        expected = resized[row * 448 : (row + 1) * 448, column * 448 : (column + 1) * 448]
        np.testing.assert_array_equal(np.asarray(tile), expected)
    np.testing.assert_array_equal(np.asarray(tiles[6]), np.asarray(image.resize((448, 448), Image.Resampling.BICUBIC)))


def test_tiles_come_row_by_row():
    # A 896 x 896 image of four coloured quadrants: aspect 1, (2,2) ties with (1,1) and 802816 > 401408, so 2 x 2.
    quadrants = np.zeros((896, 896, 3), dtype=np.uint8)
    colours = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (1, 1): (255, 255, 0)}
    for (row, column), colour in colours.items():
        quadrants[row * 448 : (row + 1) * 448, column * 448 : (column + 1) * 448] = colour
    tiles = dynamic_preprocess(Image.fromarray(quadrants), max_num=6)
    assert len(tiles) == 5
    # Resizing 896 -> 896 is the identity, so each tile is one flat quadrant: top-left, top-right, bottom-left, ...
    for tile, position in zip(tiles[:4], [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
        assert np.all(np.asarray(tile) == colours[position])


@pytest.mark.parametrize(
    ("side", "max_num", "tile_count"),
    [
        # Square images tie between (1,1) and (2,2); (2,2) wins only above 0.5 * 448^2 * 4 = 401408 pixels.
        (448, 6, 1),  # 200704 pixels: one tile, and no thumbnail for a single tile
        (633, 6, 1),  # 400689 <= 401408
        (634, 6, 5),  # 401956 > 401408: 2 x 2 + thumbnail
        (800, 6, 5),
        # With max_num 12, (3,3) ties too, and wins above 0.5 * 448^2 * 9 = 903168 pixels.
        (900, 12, 5),  # 810000: stays 2 x 2
        (1000, 12, 10),  # 1000000: 3 x 3 + thumbnail
    ],
)
def test_equally_close_grids_go_to_the_larger_only_when_the_image_covers_half_its_area(side, max_num, tile_count):
    assert len(dynamic_preprocess(_noise(side, side), max_num=max_num)) == tile_count


def test_tiny_images_are_upsampled_onto_their_grid():
    # 10 x 10: aspect 1 and far below every area threshold, so one tile. 20 x 10: aspect 2 matches (2,1) exactly
    # (no other grid of <= 6 tiles has ratio 2), so 2 tiles + thumbnail, though the image is smaller than a tile.
    assert [tile.size for tile in dynamic_preprocess(_noise(10, 10))] == [(448, 448)]
    assert len(dynamic_preprocess(_noise(20, 10))) == 3
    assert len(dynamic_preprocess(_noise(20, 10), use_thumbnail=False)) == 2


# ------------------------------------------------------------------------------------------------ pixels


def test_a_tile_tensor_matches_internvl_torchvision_transform_exactly():
    image = _noise(300, 200, seed=1)  # not 448 square: exercises the bicubic resize
    tensor = tiles_to_tensor([image])
    assert tensor.shape == (1, 3, 448, 448) and tensor.dtype == torch.float32
    assert torch.equal(tensor, _torchvision_transform()(image).unsqueeze(0))
    # ImageNet normalisation: a white pixel becomes (1 - mean) / std per channel.
    white = tiles_to_tensor([Image.new("RGB", (448, 448), (255, 255, 255))])
    expected = torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    torch.testing.assert_close(white[0, :, 0, 0], expected)
    with pytest.raises(ValueError, match="no tiles"):
        tiles_to_tensor([])


def test_preprocess_image_stacks_every_tile_with_the_thumbnail_last():
    image = _noise(800, 600, seed=2)
    pixels = preprocess_image(image, max_num=6)
    assert pixels.shape == (7, 3, 448, 448)
    thumbnail = _torchvision_transform()(image.resize((448, 448), Image.Resampling.BICUBIC))
    assert torch.equal(pixels[6], thumbnail)
    # A grey image with alpha is converted to RGB first, like VLMEvalKit's ``convert("RGB")``.
    grey = Image.new("LA", (448, 448), (128, 0))
    assert torch.equal(preprocess_image(grey), tiles_to_tensor([Image.new("RGB", (448, 448), (128, 128, 128))]))


# ------------------------------------------------------------------------------------- per-item tile budget


@pytest.mark.parametrize(
    ("benchmark", "num_images", "expected"),
    [
        ("MMBench_DEV_EN", 1, 6),  # the default
        (None, 1, 6),
        ("MME", 1, 6),  # "MME-RealWorld" is not a substring of "MME"
        ("MME-RealWorld", 1, 12),
        ("mmmu_dev_val", 1, 6),  # names match case-sensitively, as VLMEvalKit's listinstr
        ("MMMU_DEV_VAL", 1, 12),
        ("MMMU_DEV_VAL", 3, 12),  # 64 // 3 = 21 does not bite: min(12, 21) = 12
        ("MMBench_DEV_EN", 3, 6),  # min(6, 21) = 6
        ("MMMU_DEV_VAL", 6, 10),  # 64 // 6 = 10 < 12
        ("AI2D_TEST", 11, 5),  # 64 // 11 = 5 < 6
        ("OCRBench", 2, 24),  # min(24, 32)
        ("DocVQA_VAL", 4, 16),  # min(18, 16)
        ("AI2D_TEST", 65, 1),  # 64 // 65 = 0, raised to 1
    ],
)
def test_max_tiles_is_the_benchmark_value_capped_by_64_shared_across_the_images(benchmark, num_images, expected):
    assert max_tiles_for(benchmark, num_images) == expected


def test_max_tiles_refuses_an_item_without_images():
    with pytest.raises(ValueError, match="0 images"):
        max_tiles_for("MMBench_DEV_EN", 0)


def test_mmmu_upscales_its_first_image_only():
    assert upscales_first_image("MMMU_DEV_VAL") and upscales_first_image("MMMU_TEST")
    assert not upscales_first_image("MMBench_DEV_EN") and not upscales_first_image(None)
    # A 400 x 400 image is one tile (160000 pixels). Upscaled 2x it is 800 x 800 = 640000 > 401408: 2 x 2 +
    # thumbnail = 5. Only the first image of an MMMU item is upscaled, so MMMU gives [5, 1], MMBench [1, 1].
    square = _noise(400, 400, seed=3)
    pixels, counts = preprocess_images([square, square], "MMMU_DEV_VAL")
    assert counts == [5, 1] and pixels.shape == (6, 3, 448, 448)
    upscaled = square.resize((800, 800), Image.Resampling.BILINEAR)
    assert torch.equal(pixels[:5], preprocess_image(upscaled, max_num=12))
    assert torch.equal(pixels[5:], preprocess_image(square, max_num=12))
    assert preprocess_images([square, square], "MMBench_DEV_EN")[1] == [1, 1]
    # The single image of an MMMU item is its first image too.
    assert preprocess_images([square], "MMMU_DEV_VAL")[1] == [5]


def test_preprocess_images_uses_the_capped_budget_per_image_and_handles_no_images():
    # 800 x 600 has aspect 4/3, which the (4,3) grid matches exactly when 12 tiles are allowed: 12 + 1 = 13.
    # Five images in MMMU: max_num = min(12, 64 // 5 = 12) = 12, so 13 tiles each (the upscaled first image too).
    # Six: max_num = min(12, 64 // 6 = 10) = 10 rules (4,3) out; (3,2) at |1.5 - 4/3| = 1/6 is closest: 7 each.
    image = _noise(800, 600, seed=4)
    assert preprocess_images([image] * 5, "MMMU_DEV_VAL")[1] == [13] * 5
    assert preprocess_images([image] * 6, "MMMU_DEV_VAL")[1] == [7] * 6
    pixels, counts = preprocess_images([], "MMBench_DEV_EN")
    assert counts == [] and pixels.shape == (0, 3, 448, 448)


# ---------------------------------------------------------------------------------------------- the text


def test_layout_question_follows_vlmevalkit_for_one_several_and_no_images():
    # One image: the tag first, then the texts joined by newlines, wherever the image was.
    assert layout_question(["What is this?", IMAGE]) == "<image>\nWhat is this?"
    assert layout_question([IMAGE, "Hint", "Question"]) == "<image>\nHint\nQuestion"
    # Several images after the text (how VLMEvalKit's InternVL prompts come, MMMU included): numbered tags first.
    assert (
        layout_question(["Compare <image 1> and <image 2>.", IMAGE, IMAGE])
        == "Image-1: <image>\nImage-2: <image>\nCompare <image 1> and <image 2>."
    )
    # Interleaved images keep their <Image-k> marks in the text.
    assert (
        layout_question(["Look at ", IMAGE, " then ", IMAGE, "."])
        == "Image-1: <image>\nImage-2: <image>\nLook at <Image-1> then <Image-2>."
    )
    assert layout_question(["a", "b"]) == "ab"
    with pytest.raises(TypeError, match="IMAGE"):
        layout_question(["a", 3])


def test_image_placeholder_is_256_context_tokens_per_tile():
    assert image_placeholder(1, tokens_per_tile=2) == "<img><IMG_CONTEXT><IMG_CONTEXT></img>"
    seven = image_placeholder(7)
    assert seven.startswith("<img>") and seven.endswith("</img>") and seven.count("<IMG_CONTEXT>") == 7 * 256
    assert len(seven) == len("<img>") + 1792 * len("<IMG_CONTEXT>") + len("</img>")
    with pytest.raises(ValueError, match="at least one tile"):
        image_placeholder(0)


def test_chat_prompt_is_internvl3_template_with_its_system_message():
    assert INTERNVL3_SYSTEM_MESSAGE == SYSTEM
    prompt = build_chat_prompt("<image>\nWhat colour is it?", [2], tokens_per_tile=3)
    assert prompt == (
        "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
        "<|im_start|>user\n<img>" + "<IMG_CONTEXT>" * 6 + "</img>\nWhat colour is it?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Text only, and an explicit (even empty) system message: the system turn is always written.
    assert build_chat_prompt("Hi", system_message="") == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_prompt_of_an_mme_item_end_to_end():
    # MME: question + " Answer the question using a single word or phrase.", one 800 x 600 image -> 7 tiles.
    question = "Is there a dog in this image? Answer the question using a single word or phrase."
    _, counts = preprocess_images([_noise(800, 600, seed=5)], "MME")
    assert counts == [7]
    prompt = build_chat_prompt(layout_question([question, IMAGE]), counts)
    assert prompt == (
        "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
        "<|im_start|>user\n<img>" + "<IMG_CONTEXT>" * 1792 + "</img>\n" + question + "<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_prompt_expands_several_images_in_order_and_adds_a_missing_tag():
    question = layout_question(["Which is larger?", IMAGE, IMAGE])
    prompt = build_chat_prompt(question, [2, 1], tokens_per_tile=1)
    assert prompt == (
        "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
        "<|im_start|>user\nImage-1: <img><IMG_CONTEXT><IMG_CONTEXT></img>\nImage-2: <img><IMG_CONTEXT></img>\n"
        "Which is larger?<|im_end|>\n<|im_start|>assistant\n"
    )
    # Like InternVL's chat, images with no tag in the question go in front of it.
    assert build_chat_prompt("What?", [1]) == build_chat_prompt("<image>\nWhat?", [1])


def test_chat_prompt_refuses_tags_that_do_not_match_the_images():
    with pytest.raises(ValueError, match="2 '<image>' tags for 1 images"):
        build_chat_prompt("<image> and <image>", [1])
    with pytest.raises(ValueError, match="1 '<image>' tags for 0 images"):
        build_chat_prompt("<image>\nWhat?")
    with pytest.raises(ValueError, match="empty"):
        build_chat_prompt("")
    with pytest.raises(ValueError, match="system message"):
        build_chat_prompt("Hi", system_message="<image>")
