"""Prompts and token ids, released-layout loading, the InternVL3 view, and the generation pipeline."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from unilip import checkpoints
from unilip.generator import UniLIPGenerator
from unilip.pipelines import UniLIPPipeline, load_pipeline
from unilip.prompts import (
    NULL_EDIT_PROMPT,
    NULL_T2I_PROMPT,
    edit_text,
    generation_prompt,
    load_text_tokenizer,
    t2i_text,
    tokenize,
)
from unilip.variants import get_variant, load_generator, load_released_generator


@pytest.fixture(scope="module")
def tiny_pipeline():
    return load_pipeline("tiny", random_init=True, seed=0)


def test_prompt_strings_follow_upstream():
    assert t2i_text("a cat") == "Generate an image: a cat"
    assert edit_text("make it red") == "Edit the image: make it red\n<image>"
    assert NULL_T2I_PROMPT == "Generate an image." and NULL_EDIT_PROMPT == "Edit the image.\n<image>"
    assert generation_prompt(t2i_text("a cat"), 256) == (
        "<|im_start|>user\nGenerate an image: a cat<|im_end|>\n<|im_start|>assistant\n<img>"
    )
    edit = generation_prompt(edit_text("make it red"), 3)
    assert edit == (
        "<|im_start|>user\nEdit the image: make it red\n<img><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT></img>"
        "<|im_end|>\n<|im_start|>assistant\n<img>"
    )
    assert "system" not in edit
    with pytest.raises(ValueError, match="one reference image"):
        generation_prompt("<image><image>", 2)


def test_token_ids_of_the_tiny_tokenizer():
    spec = get_variant("tiny")
    tokenizer = load_text_tokenizer(spec.text_tokenizer)
    text = generation_prompt(edit_text("make it the digit three"), 2)
    batch = tokenize(tokenizer, [text, generation_prompt(NULL_T2I_PROMPT, 2)])
    ids = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids[0] == im_start and ids[-1] == 3  # starts with <|im_start|>, ends with <img>
    assert ids.count(5) == 2 and ids.count(im_end) == 1  # two <IMG_CONTEXT>, one closed user turn
    context = ids.index(5)
    assert ids[context - 1] == 3 and ids[context + 2] == 4  # <img> <IMG_CONTEXT> x 2 </img>
    assert tokenizer.decode(ids) == text  # byte-level: nothing lost
    # Right padding with <|endoftext|>, mask 0 there.
    short = batch.attention_mask[1]
    assert short.sum() < batch.attention_mask[0].sum()
    assert (batch.input_ids[1][~short.bool()] == tokenizer.pad_token_id).all()


def test_pipeline_refuses_a_foreign_tokenizer(tiny_pipeline):
    class Wrong:
        unk_token_id = 0

        def convert_tokens_to_ids(self, token):
            return 0

    with pytest.raises(ValueError, match="not an InternVL3 tokenizer"):
        UniLIPPipeline(tiny_pipeline.model, Wrong())


def test_mllm_view_shares_weights_and_matches_encode_features(tiny_pipeline):
    model = tiny_pipeline.model
    mllm = model.mllm
    assert mllm.model.vision_tower is model.tokenizer.encoder and mllm.lm_head is model.lm_head
    assert not any(name.startswith("_mllm") for name in model.state_dict())
    images = torch.rand(2, 3, 56, 56)
    pixels = (images - model.tokenizer.image_mean) / model.tokenizer.image_std
    with torch.no_grad():
        ours = model.tokenizer.encode_features(images)
        theirs = mllm.model.get_image_features(
            pixels, vision_feature_layer=-1, vision_feature_select_strategy="default"
        ).pooler_output
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_generated_image_k_is_the_same_whatever_the_batch(tiny_pipeline):
    together = tiny_pipeline.generate(["a handwritten digit seven", "a handwritten digit one"], n=3, seed=10, steps=3)
    alone = tiny_pipeline.generate(["a handwritten digit one"], n=3, seed=10, steps=3)
    assert [len(images) for images in together] == [3, 3]
    for k in range(3):
        difference = np.abs(np.asarray(together[1][k], dtype=int) - np.asarray(alone[0][k], dtype=int))
        assert difference.max() <= 1  # float32 rounding across batch shapes, at most one grey level
    assert np.asarray(together[1][0]).tolist() != np.asarray(together[1][1]).tolist()  # seed + k differ
    with pytest.raises(TypeError):
        tiny_pipeline.generate("a handwritten digit one")


def test_every_sampler_argument_is_honoured(tiny_pipeline):
    base = np.asarray(tiny_pipeline.generate(["a"], seed=1, steps=2)[0][0], dtype=int)
    for changed in ({"steps": 3}, {"guidance": 1.0}, {"flow_shift": 1.0}, {"seed": 2}):
        other = np.asarray(tiny_pipeline.generate(["a"], **{"seed": 1, "steps": 2, **changed})[0][0], dtype=int)
        assert np.abs(other - base).max() > 0, changed


def test_edit_reads_the_reference_image(tiny_pipeline):
    from PIL import Image

    first = Image.fromarray(np.zeros((56, 56, 3), np.uint8))
    second = Image.fromarray(np.full((56, 56, 3), 255, np.uint8))
    a = np.asarray(tiny_pipeline.edit(first, "make it the digit three", seed=4, steps=2), dtype=int)
    b = np.asarray(tiny_pipeline.edit(second, "make it the digit three", seed=4, steps=2), dtype=int)
    assert a.shape == (56, 56, 3) and np.abs(a - b).max() > 0
    with pytest.raises(ValueError, match="one of each"):
        tiny_pipeline.edit_many([first], ["a", "b"], [0])


def _write_released_dir(model: UniLIPGenerator, directory, legacy=False, shards=2, factor=2.5):
    """A model directory in the released layout: sharded safetensors with an index, config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.contiguous()
        for k, v in checkpoints.to_released_generator_state_dict(model.weights_state_dict(), legacy=legacy).items()
    }
    keys = sorted(state)
    weight_map = {}
    for index in range(shards):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[index::shards]
        save_file({k: state[k] for k in part}, str(directory / name))
        weight_map.update({k: name for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "unilip_internvl",
                "unilip_factor": factor,
                "n_query": model.config.n_query,
                "image_token_id": 5,
            }
        )
    )
    return state


@pytest.mark.parametrize("legacy", [False, True])
def test_released_layout_loads_strictly(tiny_pipeline, tmp_path, legacy):
    model = tiny_pipeline.model
    state = _write_released_dir(model, tmp_path / "UniLIP-tiny", legacy=legacy)
    prefix = "" if legacy else "model."
    assert f"{prefix}latent_queries" in state and f"{prefix}dit.proj_out.weight" in state
    assert ("language_model.model.norm.weight" if legacy else "model.language_model.norm.weight") in state
    assert ("vision_tower." if legacy else "model.vision_tower.") + "encoder.layers.0.attn.qkv.weight" in state
    loaded = load_released_generator(tmp_path / "UniLIP-tiny", get_variant("tiny"))
    assert loaded.config.unilip_factor == 2.5  # read from the directory, not the variant
    assert loaded.ties_lm_head  # no lm_head.weight in the file: tied, as Qwen2.5 is
    ours = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_released_layout_errors_name_the_keys(tiny_pipeline, tmp_path):
    model = tiny_pipeline.model
    directory = tmp_path / "broken"
    state = _write_released_dir(model, directory, shards=1)
    (directory / "model.safetensors.index.json").unlink()
    (directory / "model-00001-of-00001.safetensors").unlink()
    state.pop("model.llm_connector.norm.weight")
    state["model.extra_head.weight"] = torch.zeros(1)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(checkpoints.CheckpointKeyError, match="model.extra_head.weight"):
        load_released_generator(directory, get_variant("tiny"))
    state.pop("model.extra_head.weight")
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(checkpoints.CheckpointKeyError, match="missing 1 key.*llm_connector.norm.weight"):
        load_released_generator(directory, get_variant("tiny"))
    with pytest.raises(FileNotFoundError, match="config"):
        load_released_generator(tmp_path / "nowhere", get_variant("tiny"))


def test_save_and_load_pretrained_round_trip(tiny_pipeline, tmp_path):
    model = tiny_pipeline.model
    model.save_pretrained(tmp_path / "gen")
    loaded, tokenizer_dir = load_generator(tmp_path / "gen")
    assert tokenizer_dir == tmp_path / "gen"
    ours = model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in loaded.state_dict().items())
    assert loaded.lm_head.weight is loaded.language_model.embed_tokens.weight


def test_real_variant_without_its_directory_says_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("UNILIP_WEIGHTS", str(tmp_path))
    with pytest.raises(checkpoints.CheckpointNotFoundError, match="kanashi6/UniLIP-1B"):
        load_generator("unilip-1b")


def test_answer_is_greedy_internvl_chat_over_the_unilip_encoder(tiny_pipeline):
    from PIL import Image

    from unilip.pipelines import pil_to_tensor
    from unilip.prompts import chat_prompt

    model, text = tiny_pipeline.model, tiny_pipeline.text_tokenizer
    images = [Image.fromarray(np.full((56, 56, 3), value, np.uint8)) for value in (0, 255)]
    batch = tokenize(text, [chat_prompt("Which digit is this?", model.config.image_tokens)])
    first_tokens = []
    for image in images:
        pixels = (pil_to_tensor(image, 56) - model.tokenizer.image_mean) / model.tokenizer.image_std
        with torch.no_grad():
            logits = model.mllm(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=pixels
            ).logits[0, -1]
        first_tokens.append(int(logits.argmax()))
        expected = text.decode([first_tokens[-1]], skip_special_tokens=True).strip()
        assert tiny_pipeline.answer(image, "Which digit is this?", max_new_tokens=1) == expected
    with torch.no_grad():  # the image reaches the LLM: two images, two different next-token distributions

        def probabilities(image):
            pixels = (pil_to_tensor(image, 56) - model.tokenizer.image_mean) / model.tokenizer.image_std
            return (
                model.mllm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=pixels)
                .logits[0, -1]
                .softmax(-1)
            )

        assert not torch.allclose(probabilities(images[0]), probabilities(images[1]))
