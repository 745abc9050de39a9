"""``hf-vlm:``: a tiny transformers VLM (LLaVA: a tiny CLIP vision tower and a tiny Llama, random weights, saved
with its processor as a user has a model directory) probed from its config, loaded strictly through the registry,
answering batched, multi-image and text-only requests, and answering a synthetic MCQ benchmark end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evals
from evals.adapter import AnswerRequest
from evals.adapters.hf_vlm import HFVisionLanguageAdapter
from evals.benchmarks.digits_vqa.data import write_part
from evals.registry import load_adapter, probe_adapter

TINY_TOKENIZER = Path(__file__).resolve().parents[2] / "unilip" / "configs" / "text_tokenizers" / "tiny"
# A ChatML-like template: system/user/assistant turns, an <image> placeholder where each image part is.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_llava(directory: Path, seed: int = 0) -> Path:
    """A tiny random LLaVA with its processor (16 px images, 4 tokens each), saved with ``save_pretrained``.

    The text model's matrices are redrawn larger than transformers' init (std 0.02), under which a tiny model
    answers every prompt alike; at this scale its greedy tokens depend on the prompt and the images.
    """
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
    )
    vision = CLIPVisionConfig(
        image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn_like(parameter) * (1.0 if "embed" in name else 0.3))
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("hf-vlm") / "tiny-llava")


@pytest.fixture(scope="module")
def adapter(tiny_vlm) -> HFVisionLanguageAdapter:
    loaded = load_adapter(f"hf-vlm:{tiny_vlm}", seed=0, device="cpu", dtype="float32")
    assert isinstance(loaded, HFVisionLanguageAdapter)
    return loaded


def images(count: int) -> list[Image.Image]:
    """``count`` different random RGB images of different sizes."""
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 256, (20 + 5 * k, 24 + 3 * k, 3), dtype=np.uint8)) for k in range(count)]


# ---------------------------------------------------------------------------------------------------- probe
def test_probe_reads_only_the_config(tiny_vlm, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    def refuse(*args, **kwargs):
        raise AssertionError("probe must not load the model")

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", refuse)
    monkeypatch.setattr(AutoProcessor, "from_pretrained", refuse)
    info = probe_adapter(f"hf-vlm:{tiny_vlm}", seed=0, device="cpu", dtype="float32")
    assert (info.adapter, info.model, info.capabilities) == ("hf-vlm", f"hf-vlm:{tiny_vlm}", frozenset({"answer"}))
    assert info.loaded is None
    info.require("answer")


def test_a_model_type_that_is_not_image_text_to_text_is_refused_by_name(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError, match=r"'bert'.*AutoModelForImageTextToText"):
        probe_adapter(f"hf-vlm:{tmp_path / 'bert'}", seed=0, device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="'bert'"):
        HFVisionLanguageAdapter.load(str(tmp_path / "bert"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        HFVisionLanguageAdapter.probe(str(tmp_path))  # a directory without one
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HFVisionLanguageAdapter.probe(str(tmp_path / "nowhere"))


# ---------------------------------------------------------------------------------------------------- load
def test_loads_through_the_registry_and_refuses_settings_it_does_not_take(tiny_vlm, adapter):
    assert type(adapter.model).__name__ == "LlavaForConditionalGeneration"
    assert adapter.processor.tokenizer.padding_side == "left"
    with pytest.raises(ValueError, match="--steps"):
        load_adapter(f"hf-vlm:{tiny_vlm}", seed=0, device="cpu", dtype="float32", steps=3)
    with pytest.raises(ValueError, match="--encoder"):
        probe_adapter(f"hf-vlm:{tiny_vlm}", seed=0, device="cpu", dtype="float32", encoder="x")


def _rewrite_weights(source: Path, target: Path, change) -> Path:
    """A copy of ``source`` whose ``model.safetensors`` went through ``change`` (state dict -> state dict)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    save_file(change(load_file(weights)), weights, metadata={"format": "pt"})
    return target


def test_a_missing_or_misshapen_weight_is_refused_by_name(tiny_vlm, tmp_path):
    def drop(state):
        name = next(key for key in state if key.endswith("lm_head.weight"))
        return {key: value for key, value in state.items() if key != name}

    missing = _rewrite_weights(tiny_vlm, tmp_path / "missing", drop)
    with pytest.raises(ValueError, match=r"missing weights \['lm_head.weight'\]"):
        load_adapter(f"hf-vlm:{missing}", seed=0, device="cpu", dtype="float32")

    def narrow(state):
        name = next(key for key in state if key.endswith("lm_head.weight"))
        return {**state, name: state[name][:, :5].contiguous()}

    misshapen = _rewrite_weights(tiny_vlm, tmp_path / "misshapen", narrow)
    with pytest.raises(ValueError, match=r"another shape \['lm_head.weight \(file \(321, 5\)"):
        load_adapter(f"hf-vlm:{misshapen}", seed=0, device="cpu", dtype="float32")


# ---------------------------------------------------------------------------------------------------- answer
def test_answers_are_strings_in_order_and_do_not_depend_on_the_batch(adapter):
    one, two, three, four = images(4)
    requests = [
        AnswerRequest(("Which digit is shown?", one), max_new_tokens=6),
        AnswerRequest(
            ("Compare the two pictures, and say which one is darker.", two, three), system="Be brief.", max_new_tokens=9
        ),
        AnswerRequest(("A question without any image at all?",), max_new_tokens=6),
        AnswerRequest(("Describe", four, "then this one", one), max_new_tokens=6),  # interleaved parts
    ]
    alone = [adapter.answer([request])[0] for request in requests]
    assert all(isinstance(text, str) for text in alone)
    assert len(set(alone)) == len(alone)  # the random model's answers depend on the prompt: equality means something
    # the same request inside batches of other lengths, image counts and max_new_tokens (one generate per budget)
    assert adapter.answer(requests) == alone
    assert adapter.answer(requests[::-1]) == alone[::-1]
    assert adapter.answer([requests[2], requests[0], requests[3]]) == [alone[2], alone[0], alone[3]]
    assert adapter.answer([]) == []


def test_max_new_tokens_bounds_each_answer(adapter):
    (image,) = images(1)
    short, long = (AnswerRequest(("Which digit is shown?", image), max_new_tokens=n) for n in (1, 12))
    answers = adapter.answer([long, short, long])
    assert answers[0] == answers[2]
    tokenizer = adapter.processor.tokenizer
    assert len(tokenizer(answers[1], add_special_tokens=False)["input_ids"]) <= 2  # one token (may re-split)
    assert answers[0] != answers[1]


def test_a_system_message_changes_the_prompt(adapter):
    (image,) = images(1)
    plain = AnswerRequest(("Which digit is shown?", image), max_new_tokens=8)
    with_system = AnswerRequest(("Which digit is shown?", image), system="You read digits.", max_new_tokens=8)
    assert adapter.answer([plain]) != adapter.answer([with_system])


# ---------------------------------------------------------------------------------------------------- describe
def test_describe_is_json_and_names_the_weights_and_the_prompts(tiny_vlm, adapter, tmp_path):
    description = adapter.describe()
    json.dumps(description)
    assert description["adapter"] == "hf-vlm" and description["model"] == f"hf-vlm:{tiny_vlm}"
    assert description["model_class"] == "LlavaForConditionalGeneration"
    assert description["weights_source"] == str(tiny_vlm) and description["dtype"] == "float32"
    assert description["config"]["model_type"] == "llava"
    assert "generic chat template" in description["prompts"] and "VLMEvalKit" in description["prompts"]
    assert len(description["chat_template_sha256"]) == 64

    def nudge(state):
        name = next(key for key in state if key.endswith("embed_tokens.weight"))
        changed = state[name].clone()
        changed[0, 0] += 1.0
        return {**state, name: changed}

    other = load_adapter(f"hf-vlm:{_rewrite_weights(tiny_vlm, tmp_path / 'nudged', nudge)}", seed=0, dtype="float32")
    assert other.describe()["weights_sha256"] != description["weights_sha256"]
    assert other.describe()["chat_template_sha256"] == description["chat_template_sha256"]


# ---------------------------------------------------------------------------------------------------- end to end
def test_the_tiny_vlm_answers_a_synthetic_mcq_benchmark(tiny_vlm, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cache of this machine
    data = tmp_path / "digits-vqa"
    write_part(data, "mcq")

    def run() -> dict:
        (result,) = evals.run(
            f"hf-vlm:{tiny_vlm}",
            "digits-vqa@mcq",
            tmp_path / "run",
            data=str(data),
            batch_size=6,
            no_progress=True,
            cache_dir=str(tmp_path / "cache"),
            opt=["limit=5", "max_new_tokens=3"],
        )
        return result

    result = run()
    # 5 questions x 4 rotations of the options, all answered and scored (a random model's answers are junk)
    assert result["coverage"]["ok"] == result["coverage"]["expected"] == 20
    assert result["stages"]["answer"]["done"] == result["stages"]["score"]["done"] == 20
    circular = result["metrics"]["circular_accuracy"]
    assert 0.0 <= circular["value"] <= 100.0
    assert circular["coverage"]["items"] == 20 and circular["coverage"]["units_scored"] == 5
    model = result["model"]
    assert (model["adapter"], model["model"]) == ("hf-vlm", f"hf-vlm:{tiny_vlm}")
    assert model["model_class"] == "LlavaForConditionalGeneration" and "generic chat template" in model["prompts"]
    answers = sorted((tmp_path / "run" / "digits-vqa@mcq" / "answer").glob("*.json"))
    records = [json.loads(path.read_text()) for path in answers]
    assert len(records) == 20 and all(isinstance(record["prediction"], str) for record in records)
    written = [path.stat().st_mtime_ns for path in answers]
    # Run again: the model loads afresh with the same identity (describe), so every answer is reused, none redone.
    again = run()
    assert again["model"] == model and again["metrics"]["circular_accuracy"]["value"] == circular["value"]
    assert [path.stat().st_mtime_ns for path in answers] == written
