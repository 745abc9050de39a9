"""The distillation study's frozen tiny MLLM (digits-vqa instruction tuning) and its positive control."""

import json
import math

import pytest
import torch

from evals.studies.tiny_mllm import (
    CONTROL_RELATIVE_NOISE,
    MLLM_INFO,
    PERTURBATION_INFO,
    _collate,
    _shared_prefix,
    _target_loss,
    _training_items,
    perturbed_encoder,
    score_digits_vqa,
    tiny_internvl_config,
    train_tiny_mllm,
)
from evals.studies.understanding import train_teacher
from unilip import get_variant
from unilip.prompts import load_text_tokenizer
from unilip.tokenizer import UniLIPTokenizer
from unilip.understanding import ChatRequest, InternVLChat, load_internvl, swap_vision_encoder


def _digit_requests(data_dir, count=12):
    """The first ``count`` mcq and yes-no test questions, as the benchmark asks them."""
    from evals.benchmarks.digits_vqa import DigitsVQABenchmark
    from evals.benchmarks.digits_vqa.data import write_part
    from evals.benchmarks.vlm import read_tsv

    benchmark = DigitsVQABenchmark()
    requests = []
    for part in ("mcq", "yes-no"):
        protocol = benchmark.variants[part]
        for row in read_tsv(write_part(data_dir, part))[:count]:
            requests.append(ChatRequest.from_parts([benchmark.prompt(row, protocol), *row.images()], protocol.dataset))
    return requests


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """A 4-step teacher and a 4-step MLLM on a few rows of each part: the mechanics, not the quality."""
    root = tmp_path_factory.mktemp("tiny-mllm")
    teacher_dir = train_teacher(root / "teacher", steps=4, batch_size=16, progress=False)
    mllm_dir = train_tiny_mllm(
        teacher_dir,
        root / "mllm",
        data_dir=root / "data",
        steps=4,
        batch_size=8,
        max_rows_per_part=24,
        evaluate=False,
        progress=False,
    )
    return {"root": root, "teacher_dir": teacher_dir, "mllm_dir": mllm_dir, "data_dir": root / "data"}


def test_short_run_saves_a_stock_internvl_that_answers(short):
    from transformers import InternVLForConditionalGeneration

    mllm_dir, teacher_dir = short["mllm_dir"], short["teacher_dir"]
    info = json.loads((mllm_dir / MLLM_INFO).read_text())
    assert info["steps"] == 4 and info["seed"] == 0 and info["batch_size"] == 8
    assert info["num_train_items"] == 3 * 24 and math.isfinite(info["final_train_loss"])
    assert info["shared_prefix_tokens"] > 100 and "teacher_scores" not in info
    model = load_internvl(mllm_dir)  # a stock directory: transformers' classes and layout
    saved = model.state_dict()

    torch.manual_seed(0)  # train_tiny_mllm's init (seed=0), before any training
    initial = InternVLForConditionalGeneration(tiny_internvl_config()).state_dict()
    assert saved.keys() == initial.keys()
    llm = [k for k in saved if k.startswith("model.language_model.")]
    assert llm and any(not torch.equal(saved[k], initial[k]) for k in llm)
    # The vision tower and projector saved are InternVL3's own init, not the teacher's encoder and mlp1.
    vision = [k for k in saved if k.startswith(("model.vision_tower.", "model.multi_modal_projector."))]
    assert vision and all(torch.equal(saved[k], initial[k]) for k in vision)
    teacher = UniLIPTokenizer.from_pretrained(teacher_dir).state_dict()
    patch = "model.vision_tower.embeddings.patch_embeddings.projection.weight"
    assert not torch.equal(saved[patch], teacher["encoder.embeddings.patch_embeddings.projection.weight"])

    chat = InternVLChat.from_directory(mllm_dir, teacher_dir)
    answers = chat.answer(_digit_requests(short["data_dir"], count=2), max_new_tokens=4)
    assert len(answers) == 4 and all(isinstance(answer, str) for answer in answers)


def test_training_items_match_prepare_and_the_shared_prefix_is_exact(short):
    """The cached items are what ``prepare`` gives each request; the shared-prefix loss equals the plain one."""
    from transformers import InternVLForConditionalGeneration

    from evals.benchmarks.digits_vqa import DigitsVQABenchmark
    from evals.benchmarks.vlm import read_tsv

    torch.manual_seed(0)
    model = InternVLForConditionalGeneration(tiny_internvl_config())
    swap_vision_encoder(model, UniLIPTokenizer.from_pretrained(short["teacher_dir"]))
    chat = InternVLChat(model, load_text_tokenizer(get_variant("tiny").text_tokenizer))
    items = _training_items(chat, short["data_dir"], 6)
    assert items.parts == ["mcq"] * 6 + ["yes-no"] * 6 + ["pairs"] * 6

    benchmark = DigitsVQABenchmark()
    protocol = benchmark.variants["yes-no"]
    row = read_tsv(short["data_dir"] / "DigitsVQA_YN_train.tsv")[3]
    batch = chat.prepare([ChatRequest.from_parts([benchmark.prompt(row, protocol), *row.images()], protocol.dataset)])
    assert items.prompts[9] == batch.input_ids[0].tolist()
    assert torch.equal(items.pixels[items.tiles[9]], batch.pixel_values)
    assert chat.text_tokenizer.decode(items.targets[9]) == f"{row.answer}<|im_end|>"

    prefix = torch.tensor(_shared_prefix(items, chat.image_token_id))
    assert 0 < len(prefix) < min(len(p) for p in items.prompts) and chat.image_token_id not in prefix.tolist()
    model.train()
    collated = _collate(items, [0, 7, 13, 17, 2], chat.pad_token_id)
    weight = model.model.language_model.embed_tokens.weight
    plain = _target_loss(model, collated)
    (plain_grad,) = torch.autograd.grad(plain, [weight])
    shared = _target_loss(model, collated, prefix)
    (shared_grad,) = torch.autograd.grad(shared, [weight])
    assert shared.item() == pytest.approx(plain.item(), rel=1e-5)
    assert torch.allclose(shared_grad, plain_grad, atol=1e-6, rtol=1e-4)


def test_perturbed_encoder_adds_relative_noise_to_encoder_matrices_only(short, tmp_path):
    source = short["teacher_dir"]
    out = perturbed_encoder(source, tmp_path / "control", relative_noise=0.3, seed=1)
    info = json.loads((out / PERTURBATION_INFO).read_text())
    assert info["relative_noise"] == 0.3 and info["seed"] == 1 and CONTROL_RELATIVE_NOISE == 1.5
    before = UniLIPTokenizer.from_pretrained(source).state_dict()
    after = UniLIPTokenizer.from_pretrained(out).state_dict()
    assert before.keys() == after.keys()
    touched = set()
    for name, value in before.items():
        matrix = name.startswith(("encoder.", "mlp1.")) and value.dim() >= 2 and value.is_floating_point()
        if not matrix:
            assert torch.equal(after[name], value), name
            continue
        noise = after[name] - value
        if value.numel() >= 1000:  # enough draws for the empirical ratio to be close to the rule
            assert (noise.std() / value.std()).item() == pytest.approx(0.3, rel=0.1), name
        else:
            assert not torch.equal(after[name], value), name
        touched.add(name)
    assert touched == set(info["tensors"]) and any(k.startswith("mlp1.") for k in touched)
    again = perturbed_encoder(source, tmp_path / "again", relative_noise=0.3, seed=1)
    assert all(torch.equal(v, UniLIPTokenizer.from_pretrained(again).state_dict()[k]) for k, v in after.items())
    with pytest.raises(ValueError, match="relative_noise"):
        perturbed_encoder(source, tmp_path / "bad", relative_noise=-1.0)


def test_another_encoder_changes_what_the_mllm_reads(short, tmp_path):
    """Fast check: the same MLLM and items, another encoder: other next-token logits (answers: the slow test)."""
    control = perturbed_encoder(short["teacher_dir"], tmp_path / "control")
    requests = _digit_requests(short["data_dir"], count=3)
    logits = []
    for encoder in (short["teacher_dir"], control):
        chat = InternVLChat.from_directory(short["mllm_dir"], encoder)
        batch = chat.prepare(requests)
        with torch.no_grad():
            output = chat.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=batch.pixel_values
            )
        logits.append(output.logits[:, -1])
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)


# ------------------------------------------------------------------ slow: quality and the positive control


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The study's teacher, an MLLM trained 600 steps (about a minute; the study's 1,000 score higher), scored on
    the held-out split with the teacher."""
    root = tmp_path_factory.mktemp("tiny-mllm-full")
    teacher_dir = train_teacher(root / "teacher", progress=False)
    mllm_dir = train_tiny_mllm(teacher_dir, root / "mllm", data_dir=root / "data", steps=600, lr=3e-3, progress=False)
    control = perturbed_encoder(teacher_dir, root / "control")
    return {"teacher_dir": teacher_dir, "mllm_dir": mllm_dir, "data_dir": root / "data", "control": control}


@pytest.mark.slow
def test_trained_mllm_answers_differ_between_encoders(full):
    requests = _digit_requests(full["data_dir"], count=40)
    answers = [
        InternVLChat.from_directory(full["mllm_dir"], encoder).answer(requests, max_new_tokens=4)
        for encoder in (full["teacher_dir"], full["control"])
    ]
    assert answers[0] != answers[1]
    assert len(set(answers[0])) > 2  # image-dependent answers, not one constant letter


@pytest.mark.slow
def test_positive_control_is_detected(full):
    """The MLLM reads the teacher's digits, and the noisy copy (the study's control) significantly worse.

    Detected means teacher - control > 3 * sqrt(se_teacher^2 + se_control^2) (independent-samples approximation;
    the items are the same, so this is conservative). The yes/no comparison is not learned in the MLLM's budget
    (its acc+ is near 0 for every encoder, see train_tiny_mllm), so it is not asserted here.
    """
    teacher = json.loads((full["mllm_dir"] / MLLM_INFO).read_text())["teacher_scores"]
    control = score_digits_vqa(full["mllm_dir"], full["control"], full["data_dir"])
    # The benchmark reports percentages.
    assert teacher["circular_accuracy"]["value"] > 60  # it reads the digits: chance is ~0.4
    for measure in ("circular_accuracy", "pair_accuracy"):
        ours, theirs = teacher[measure], control[measure]
        assert ours["value"] - theirs["value"] > 3 * math.hypot(ours["se"], theirs["se"]), measure
