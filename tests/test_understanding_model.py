"""The understanding model: a stock InternVL3 (tiny, random, saved in transformers' layout) loaded from its
directory, with a tiny UniLIP tokenizer's encoder swapped in (``unilip.understanding``)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image
from tiny_internvl import SPEC, save_tiny_internvl, save_tiny_internvl_chat
from torchvision.transforms.functional import to_tensor

from unilip import build_tokenizer, load_tokenizer
from unilip.checkpoints import CheckpointError, CheckpointNotFoundError
from unilip.internvl import IMAGE, build_chat_prompt, layout_question, tiles_to_tensor
from unilip.prompts import IMG_CONTEXT, load_text_tokenizer
from unilip.understanding import (
    ChatRequest,
    InternVLChat,
    load_internvl,
    load_understanding_model,
    swap_vision_encoder,
)

TILE = SPEC.tokenizer.image_size  # 56 px tiles: 8 x 8 patches, 4 x 4 = 16 tokens after the pixel shuffle
TOKENS_PER_TILE = (TILE // SPEC.tokenizer.token_stride) ** 2


@pytest.fixture(scope="module")
def internvl_dir(tmp_path_factory):
    """A tiny random InternVL3 saved as users have a stock one (``save_pretrained``)."""
    return save_tiny_internvl(tmp_path_factory.mktemp("internvl3-tiny-hf"))


def tile_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One random RGB tile as InternVL3 gets it (ImageNet-normalised) and as the tokenizer does ([0, 1])."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (TILE, TILE, 3), generator=generator, dtype=torch.uint8)
    tile = Image.fromarray(pixels.numpy(), "RGB")
    return tiles_to_tensor([tile], image_size=TILE), to_tensor(tile).unsqueeze(0)


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.get_image_features(pixel_values=pixel_values).pooler_output


def test_swapped_model_sees_exactly_encode_features(internvl_dir):
    tokenizer = load_tokenizer("tiny", random_init=True, seed=0)
    model = swap_vision_encoder(load_internvl(internvl_dir), tokenizer)
    pixel_values, images = tile_inputs()
    got = image_features(model, pixel_values)
    with torch.no_grad():
        want = tokenizer.encode_features(images)
    assert got.shape == (1, TOKENS_PER_TILE, SPEC.tokenizer.llm_hidden_size)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert model.vision_encoder_source == tokenizer.weights_source
    # InternVL3's own vision weights are gone; the tokenizer's modules are used in place (shared, not copied).
    assert model.model.multi_modal_projector is tokenizer.mlp1
    assert model.model.vision_tower.encoder is tokenizer.encoder


def test_swapped_encoder_is_really_used(internvl_dir):
    pixel_values, _ = tile_inputs()
    stock = image_features(load_internvl(internvl_dir), pixel_values)
    first = image_features(
        swap_vision_encoder(load_internvl(internvl_dir), load_tokenizer("tiny", random_init=True, seed=1)),
        pixel_values,
    )
    second = image_features(
        swap_vision_encoder(load_internvl(internvl_dir), load_tokenizer("tiny", random_init=True, seed=2)),
        pixel_values,
    )
    assert (first - second).abs().max() > 1e-3
    assert (first - stock).abs().max() > 1e-3


def test_width_mismatch_is_refused_by_name(internvl_dir):
    narrow = build_tokenizer(dataclasses.replace(SPEC.tokenizer, llm_hidden_size=32), seed=0)
    with pytest.raises(ValueError, match=r"llm_hidden_size=32 .*hidden_size=64"):
        swap_vision_encoder(load_internvl(internvl_dir), narrow)
    with pytest.raises(ValueError, match="llm_hidden_size=32"):
        load_understanding_model(internvl_dir, narrow)


def test_other_mismatches_are_refused_by_name(internvl_dir):
    bigger_tiles = dataclasses.replace(SPEC.tokenizer, image_size=2 * TILE)
    with pytest.raises(ValueError, match="image_size=112"):
        swap_vision_encoder(load_internvl(internvl_dir), build_tokenizer(bigger_tiles, seed=0))
    with pytest.raises(TypeError, match="UniLIPTokenizer"):
        swap_vision_encoder(load_internvl(internvl_dir), torch.nn.Linear(2, 2))


def test_non_imagenet_tokenizer_is_renormalised_once(internvl_dir):
    config = dataclasses.replace(SPEC.tokenizer, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    tokenizer = build_tokenizer(config, seed=0).eval()
    model = swap_vision_encoder(load_internvl(internvl_dir), tokenizer)
    assert model.model.vision_tower.renormalizes
    pixel_values, images = tile_inputs()
    with torch.no_grad():
        want = tokenizer.encode_features(images)
    torch.testing.assert_close(image_features(model, pixel_values), want, atol=1e-5, rtol=1e-5)


def test_load_understanding_model_composes_both(internvl_dir):
    stock = load_understanding_model(internvl_dir)
    assert stock.vision_encoder_source.startswith("InternVL3")
    model = load_understanding_model(internvl_dir, "tiny")  # a variant name, as load_tokenizer takes it
    pixel_values, images = tile_inputs()
    reference = load_tokenizer("tiny", random_init=True, seed=0)  # what load_tokenizer("tiny") builds
    with torch.no_grad():
        want = reference.encode_features(images)
    torch.testing.assert_close(image_features(model, pixel_values), want, atol=1e-6, rtol=0)


def test_missing_files_are_named(tmp_path, internvl_dir):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_internvl(tmp_path / "nowhere")
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        load_internvl(tmp_path)
    (tmp_path / "config.json").write_text((internvl_dir / "config.json").read_text())
    with pytest.raises(CheckpointNotFoundError, match="model.safetensors"):
        load_internvl(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(CheckpointNotFoundError, match="model-00001-of-00002.safetensors"):
        load_internvl(tmp_path)
    remote_code = tmp_path / "remote"
    remote_code.mkdir()
    (remote_code / "config.json").write_text(json.dumps({"model_type": "internvl_chat"}))
    with pytest.raises(CheckpointError, match="InternVL3-1B-hf"):
        load_internvl(remote_code)


def test_swapped_model_chats_about_an_image(internvl_dir):
    tokenizer = load_tokenizer("tiny", random_init=True, seed=0)
    model = swap_vision_encoder(load_internvl(internvl_dir), tokenizer)
    text_tokenizer = load_text_tokenizer(SPEC.text_tokenizer)
    prompt = build_chat_prompt(layout_question([IMAGE, "What is in the image?"]), [1], tokens_per_tile=TOKENS_PER_TILE)
    input_ids = torch.tensor([text_tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    assert int((input_ids == text_tokenizer.convert_tokens_to_ids(IMG_CONTEXT)).sum()) == TOKENS_PER_TILE
    assert text_tokenizer.convert_tokens_to_ids(IMG_CONTEXT) == model.config.image_token_id
    attention_mask = torch.ones_like(input_ids)
    pixel_values, images = tile_inputs()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        # What the LLM received at the <IMG_CONTEXT> positions is the UniLIP understanding feature.
        torch.testing.assert_close(out.image_hidden_states, tokenizer.encode_features(images), atol=1e-6, rtol=0)
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            max_new_tokens=2,
            do_sample=False,
            pad_token_id=text_tokenizer.pad_token_id,
        )
    assert out.logits.shape == (1, input_ids.shape[1], SPEC.generator["llm"]["vocab_size"])
    assert generated.shape == (1, input_ids.shape[1] + 2)
    assert torch.equal(generated[:, : input_ids.shape[1]], input_ids)
    # Greedy: the first new token is the argmax of the forward pass's last logits.
    assert int(generated[0, input_ids.shape[1]]) == int(out.logits[0, -1].argmax())


def test_bfloat16_swap_matches_encode_features_exactly(internvl_dir):
    """In bfloat16 too: the pixel shuffle only moves values, so both paths round the same way.

    The tokenizer is built in float32 and cast by the swap (encoder and mlp1 only): a tokenizer cast whole to
    bfloat16 also rounds its ImageNet mean/std buffers (0.485 -> 0.484375), which InternVL3 never does.
    """
    tokenizer = load_tokenizer("tiny", random_init=True, seed=0)
    model = swap_vision_encoder(load_internvl(internvl_dir, dtype=torch.bfloat16), tokenizer)
    pixel_values, images = tile_inputs()
    got = image_features(model, pixel_values)
    with torch.no_grad():
        want = tokenizer.encode_features(images)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_swap_moves_the_tokenizer_to_the_llm_dtype(internvl_dir):
    tokenizer = load_tokenizer("tiny", random_init=True, seed=0)  # float32
    model = swap_vision_encoder(load_internvl(internvl_dir, dtype=torch.bfloat16), tokenizer)
    assert tokenizer.encoder.embeddings.patch_embeddings.projection.weight.dtype == torch.bfloat16
    assert tokenizer.mlp1.linear_1.weight.dtype == torch.bfloat16
    assert not model.training and not model.model.vision_tower.training


# ------------------------------------------------------------------------------------------------- chat answers


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory, internvl_dir):
    """A tiny InternVL3 directory with its text tokenizer, whose answers depend on the prompt and images."""
    return save_tiny_internvl_chat(internvl_dir, tmp_path_factory.mktemp("internvl3-tiny-chat"))


@pytest.fixture(scope="module")
def chat(chat_dir):
    return InternVLChat.from_directory(chat_dir, "tiny")


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def three_requests() -> list[ChatRequest]:
    return [
        ChatRequest("<image>\nWhat is in the image?", [noise_image(2 * TILE, TILE, 1)], max_num=6),  # 2 + thumbnail
        ChatRequest("Say something about colours."),  # no image, the shortest prompt: most left padding
        ChatRequest("Describe it.", [noise_image(TILE, TILE, 2)], max_num=1, system_message="Be brief."),
    ]


def test_chat_reads_tile_size_and_tokens_per_tile_from_the_config(chat):
    assert (chat.tile_size, chat.tokens_per_tile) == (TILE, TOKENS_PER_TILE)
    assert chat.eos_token_id == chat.text_tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_answers_do_not_depend_on_the_batch(chat):
    requests = three_requests()
    batch = chat.prepare(requests)
    assert batch.tiles_per_request == [[3], [], [1]]
    assert batch.attention_mask[1, 0] == 0 and batch.attention_mask[:, -1].all()  # left padding
    batched = chat.answer(requests, max_new_tokens=8)
    alone = [chat.answer([request], max_new_tokens=8)[0] for request in requests]
    assert batched == alone
    assert len(set(batched)) == 3 and all(batched)  # distinct, non-empty: the check is not vacuous
    # The image is read: the same question about another image gets another answer.
    other = ChatRequest(requests[0].question, [noise_image(2 * TILE, TILE, 9)], max_num=6)
    assert chat.answer([other], max_new_tokens=8) != batched[:1]


def test_batched_tokens_equal_single_tokens(chat, monkeypatch):
    """Token ids too (the text could hide differences in special tokens): the new tokens of each row, up to its
    ``<|im_end|>``, are those of the request run alone."""
    generated = []
    original = chat.model.generate

    def spy(**kwargs):
        out = original(**kwargs)
        new = out[:, kwargs["input_ids"].shape[1] :].tolist()
        generated.append([row[: row.index(chat.eos_token_id) + 1] if chat.eos_token_id in row else row for row in new])
        return out

    monkeypatch.setattr(chat.model, "generate", spy)
    requests = three_requests()
    chat.answer(requests, max_new_tokens=8)
    for request in requests:
        chat.answer([request], max_new_tokens=8)
    assert generated[0] == [rows[0] for rows in generated[1:]]
    assert len({tuple(row) for row in generated[0]}) == 3


def spy_on_generate(chat, monkeypatch) -> dict:
    """The keyword arguments of the chat model's last ``generate`` call (it still runs)."""
    fed = {}
    original = chat.model.generate

    def spy(**kwargs):
        fed.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(chat.model, "generate", spy)
    return fed


def test_prompt_holds_tiles_times_tokens_per_tile_image_tokens(chat, monkeypatch):
    fed = spy_on_generate(chat, monkeypatch)
    requests = three_requests()
    chat.answer(requests, max_new_tokens=1)
    image_tokens = (fed["input_ids"] == chat.image_token_id).sum(dim=1).tolist()
    assert image_tokens == [3 * TOKENS_PER_TILE, 0, 1 * TOKENS_PER_TILE]
    assert fed["pixel_values"].shape == (4, 3, TILE, TILE)
    assert fed["do_sample"] is False and fed["eos_token_id"] == chat.eos_token_id


def test_a_request_with_two_images(chat, monkeypatch):
    fed = spy_on_generate(chat, monkeypatch)
    images = [noise_image(TILE, 2 * TILE, 3), noise_image(TILE, TILE, 4)]
    request = ChatRequest(layout_question([IMAGE, IMAGE, "Which one is brighter?"]), images, max_num=4)
    (answer,) = chat.answer([request], max_new_tokens=4)
    assert isinstance(answer, str)
    assert chat.prepare([request]).tiles_per_request == [[3, 1]]
    assert int((fed["input_ids"] == chat.image_token_id).sum()) == 4 * TOKENS_PER_TILE
    assert fed["pixel_values"].shape[0] == 4
    prompt = chat.text_tokenizer.decode(fed["input_ids"][0])
    assert prompt.index("Image-1: <img>") < prompt.index("Image-2: <img>") < prompt.index("Which one")
    # The images are both seen: swapping them changes the input the LLM gets.
    swapped = chat.prepare([ChatRequest(request.question, images[::-1], max_num=4)])
    assert not torch.equal(swapped.input_ids, chat.prepare([request]).input_ids)


def test_no_requests_no_answers(chat):
    assert chat.answer([]) == []


# ------------------------------------------------------------------------------------- requests from benchmarks
def test_requests_from_parts_follow_vlmevalkit_per_benchmark(chat):
    square = noise_image(TILE, TILE, 5)
    mmmu = ChatRequest.from_parts(["Compare <image 1> and <image 2>.", square, square], "MMMU_DEV_VAL")
    # text first then the images (VLMEvalKit's message): a header per image, the trailing marks removed
    assert mmmu.question == "Image-1: <image>\nImage-2: <image>\nCompare <image 1> and <image 2>."
    assert (mmmu.max_num, mmmu.upscale_first) == (12, True)  # set_max_num's 12 for MMMU; its first image upscaled
    mmb = ChatRequest.from_parts(["Which one?", square], "MMBench_DEV_EN", system_message="Be brief.")
    assert (mmb.question, mmb.max_num, mmb.upscale_first, mmb.system_message) == (
        "<image>\nWhich one?",
        6,
        False,
        "Be brief.",
    )
    text_only = ChatRequest.from_parts(["Hello?"], None)
    assert (text_only.question, text_only.images, text_only.upscale_first) == ("Hello?", (), False)
    # The upscale changes the tiling: a square tile-sized image is one tile; doubled, the area rule picks the
    # 2 x 2 grid, plus the thumbnail: five tiles.
    assert chat.prepare([ChatRequest.from_parts(["q", square], "MMBench_DEV_EN")]).tiles_per_request == [[1]]
    assert chat.prepare([ChatRequest.from_parts(["q", square], "MMMU_DEV_VAL")]).tiles_per_request == [[5]]


def test_the_adapter_answers_in_order_one_generate_per_token_budget(chat, monkeypatch):
    from evals.adapter import AnswerRequest
    from evals.adapters.internvl import InternVLAdapter

    adapter = InternVLAdapter(chat, "tiny-internvl")
    requests = [
        AnswerRequest(("What is it?", noise_image(TILE, TILE, 1)), "MMBench_DEV_EN", max_new_tokens=2),
        AnswerRequest(("Say something.",), None, max_new_tokens=3),
        AnswerRequest(("Describe it.", noise_image(2 * TILE, TILE, 2)), "MME", max_new_tokens=2),
    ]
    alone = [adapter.answer([request])[0] for request in requests]
    budgets = []
    original = chat.answer

    def spy(chats, max_new_tokens=64, **kwargs):
        budgets.append((len(chats), max_new_tokens))
        return original(chats, max_new_tokens=max_new_tokens, **kwargs)

    monkeypatch.setattr(chat, "answer", spy)
    assert adapter.answer(requests) == alone
    assert sorted(budgets) == [(1, 3), (2, 2)]
    assert adapter.describe()["adapter"] == "internvl" and adapter.describe()["vision_encoder"] == "InternVL3's own"
    with pytest.raises(ValueError, match="needs some text"):
        AnswerRequest((noise_image(TILE, TILE, 1),))
