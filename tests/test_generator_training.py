"""Generator training: the objective, what trains in each stage, strict tokenizer hand-off, resume."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from unilip.training.config import load_generator_train_config
from unilip.training.generator_trainer import GeneratorTrainer, flow_matching_loss, sample_sigmas, train_generator
from unilip.variants import load_tokenizer


def _recipe(tmp_path, **changes):
    recipe = {
        "name": "t",
        "variant": "tiny",
        "stage": 2,
        "seed": 0,
        "data": {"dataset": "digits", "size": 56, "batch_size": 8, "edit_fraction": 0.5},
        "optim": {"lr": 2e-3, "end_lr": 2e-4, "warmup_steps": 2, "max_steps": 30},
        "checkpoint_every": 3,
    }
    for key, value in changes.items():
        if isinstance(value, dict):
            recipe[key] = {**recipe.get(key, {}), **value}
        else:
            recipe[key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    load_tokenizer("tiny", random_init=True, seed=5).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dcae_dir(tmp_path_factory):
    from diffusers import AutoencoderDC

    torch.manual_seed(0)
    three = ("ResBlock",) * 3
    model = AutoencoderDC(
        in_channels=3,
        latent_channels=32,
        attention_head_dim=8,
        encoder_block_types=three,
        decoder_block_types=three,
        encoder_block_out_channels=(8, 16, 32),
        decoder_block_out_channels=(8, 16, 32),
        encoder_layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), ()),
        decoder_qkv_multiscales=((), (), ()),
        upsample_block_type="interpolate",
        downsample_block_type="Conv",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
    )
    path = tmp_path_factory.mktemp("dcae") / "dcae"
    model.save_pretrained(path)
    return path


def test_logit_normal_sigmas_sit_on_the_1000_step_grid():
    sigmas = sample_sigmas(20000, torch.Generator().manual_seed(0))
    assert sigmas.min() >= 0.001 and sigmas.max() <= 1.0
    torch.testing.assert_close(sigmas * 1000, (sigmas * 1000).round())
    assert abs(float(sigmas.median()) - 0.5) < 0.02  # sigmoid(N(0, 1)) is symmetric about 1/2


def test_flow_matching_target_is_noise_minus_data():
    x0, noise = torch.randn(3, 32, 4, 4), torch.randn(3, 32, 4, 4)
    sigmas = torch.tensor([0.1, 0.5, 1.0])
    seen = {}

    def perfect(noisy, encoder_hidden_states, timestep, encoder_attention_mask, return_dict):
        seen["noisy"], seen["t"] = noisy, timestep
        return (noise - x0,)

    loss = flow_matching_loss(perfect, x0, torch.zeros(3, 2, 8), torch.ones(3, 2), sigmas, noise)
    assert float(loss) == 0.0
    torch.testing.assert_close(seen["noisy"], (1 - sigmas.view(-1, 1, 1, 1)) * x0 + sigmas.view(-1, 1, 1, 1) * noise)
    torch.testing.assert_close(seen["t"], sigmas * 1000)


@pytest.mark.slow
def test_short_tiny_training_lowers_the_loss(tmp_path, tokenizer_dir):
    config = load_generator_train_config(_recipe(tmp_path, checkpoint_every=100), tokenizer=str(tokenizer_dir))
    final = train_generator(config, tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    first, last = [r["loss"] for r in log[:8]], [r["loss"] for r in log[-8:]]
    assert sum(last) / 8 < 0.8 * sum(first) / 8
    assert {r["task"] for r in log} == {"t2i", "edit"}
    assert (final / "tokenizer.json").is_file() and (final / "model.safetensors").is_file()


def test_stage_two_trains_the_right_parts_and_loads_the_tokenizer_strictly(tmp_path, tokenizer_dir):
    config = load_generator_train_config(_recipe(tmp_path), tokenizer=str(tokenizer_dir))
    trainer = GeneratorTrainer(config, tmp_path / "run", progress=False)
    reference = load_tokenizer(tokenizer_dir)
    ours = trainer.model.tokenizer.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in reference.state_dict().items())  # the hand-off fix
    roots = {name.split(".")[0] for name in trainer.trainable}
    assert roots == {"latent_queries", "llm_connector", "projector", "dit"}
    frozen = {n: p.clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trainer.train(2)
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(value, after[name]) for name, value in frozen.items())  # LLM, tokenizer, lm_head


def test_stage_two_refuses_a_tokenizer_of_another_architecture(tmp_path):
    other = tmp_path / "other"
    spec = yaml.safe_load(open(load_tokenizer.__globals__["CONFIG_DIR"] / "tiny.yaml"))
    spec["tokenizer"]["bridge_blocks"] = 2
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(spec))
    load_tokenizer(tmp_path / "other.yaml", random_init=True).save_pretrained(other)
    config = load_generator_train_config(_recipe(tmp_path), tokenizer=str(other))
    with pytest.raises(ValueError, match="another architecture"):
        GeneratorTrainer(config, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="needs 'tokenizer'"):
        GeneratorTrainer(load_generator_train_config(_recipe(tmp_path)), tmp_path / "run2", progress=False)


def test_stage_one_learns_dcae_latents_with_the_dit_frozen(tmp_path, dcae_dir):
    recipe = _recipe(tmp_path, stage=1, dcae=str(dcae_dir), dcae_size=16, data={"edit_fraction": 0.0})
    trainer = GeneratorTrainer(load_generator_train_config(recipe), tmp_path / "run", progress=False)
    assert {name.split(".")[0] for name in trainer.trainable} == {"latent_queries", "llm_connector", "projector"}
    dit = {n: p.clone() for n, p in trainer.model.dit.named_parameters()}
    queries = trainer.model.latent_queries.detach().clone()
    trainer.train(2)
    assert all(torch.equal(p, dit[n]) for n, p in trainer.model.dit.named_parameters())
    assert not torch.equal(trainer.model.latent_queries, queries)  # gradients reach the queries through the LLM
    with pytest.raises(ValueError, match="text-to-image only"):
        load_generator_train_config(_recipe(tmp_path, stage=1, dcae=str(dcae_dir)))


@pytest.mark.slow
def test_resume_gives_exactly_the_uninterrupted_weights(tmp_path, tokenizer_dir):
    config = load_generator_train_config(_recipe(tmp_path), tokenizer=str(tokenizer_dir))
    train_generator(config, tmp_path / "straight", max_steps=6, progress=False)
    train_generator(config, tmp_path / "resumed", max_steps=3, progress=False)
    train_generator(config, tmp_path / "resumed", max_steps=6, progress=False)  # a new process would do the same
    straight = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_jsonl_examples_are_read_lazily_and_batches_are_single_task(tmp_path):
    import numpy as np
    from PIL import Image

    from unilip.training.config import GeneratorDataConfig
    from unilip.training.generator_data import GenerationData

    for name, value in (("a", 0), ("b", 128), ("c", 255)):
        Image.fromarray(np.full((30, 40, 3), value, np.uint8)).save(tmp_path / f"{name}.png")
    lines = [
        {"image": "a.png", "caption": "black"},
        {"image": "b.png", "caption": "grey"},
        {"image": "c.png", "caption": "white"},
        {"image": "c.png", "source": "a.png", "instruction": "invert"},
        {"image": "a.png", "source": "c.png", "instruction": "invert"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    data = GenerationData(GeneratorDataConfig(dataset="jsonl", path=str(path), size=56, edit_fraction=None))
    assert len(data) == 5 and data.edit_fraction == pytest.approx(0.4)
    tasks = set()
    for step in range(12):
        batch = data.batch(step, 4, seed=0)
        tasks.add(batch.task)
        assert batch.targets.shape == (4, 3, 56, 56)
        assert (batch.sources is not None) == (batch.task == "edit")
        repeat = data.batch(step, 4, seed=0)
        assert repeat.texts == batch.texts and torch.equal(repeat.targets, batch.targets)  # deterministic
    assert tasks == {"t2i", "edit"}
    path.write_text('{"image": "a.png"}\n')
    with pytest.raises(ValueError, match=r"data.jsonl:1: not a generator example"):
        GenerationData(GeneratorDataConfig(dataset="jsonl", path=str(path), size=56))


@pytest.mark.parametrize("size", ["1b", "3b"])
def test_real_generator_recipes_parse_and_name_what_is_missing(size, tmp_path, monkeypatch):
    from unilip.training.config import recipe_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text("")
    stages = [
        load_generator_train_config(recipe_path(f"unilip-{size}-generator-stage{n}"), data_path="data.jsonl")
        for n in (1, 2, 3)
    ]
    assert [c.stage for c in stages] == [1, 2, 3]
    assert stages[0].data.edit_fraction == 0 and stages[1].data.edit_fraction is None
    assert all(c.optim.epochs == 5 and c.optim.warmup_ratio == 0.003 and c.optim.lr == 1e-4 for c in stages)
    with pytest.raises(FileNotFoundError, match="OpenGVLab/InternVL3"):
        GeneratorTrainer(stages[0], tmp_path / "run", progress=False)


def test_tiny_llm_pretraining_lowers_its_loss_then_freezes_it_and_seeds_the_connector():
    from evals.studies.tiny_llm import digit_corpus, pretrain_llm
    from unilip.prompts import load_text_tokenizer
    from unilip.variants import load_generator

    model, text_dir = load_generator("tiny", random_init=True, seed=0)
    corpus = digit_corpus(model.config.image_tokens)
    assert len(corpus) == 20 and corpus[7].endswith("<img>3<|im_end|>") and "seven" not in corpus[7]
    assert all(text.count("<img>") == 1 for text in corpus)  # no reference image in the pretraining text
    summary = pretrain_llm(model, load_text_tokenizer(text_dir), corpus, steps=40, progress=False)
    assert summary["last_loss"] < 0.5 * summary["first_loss"]
    assert not any(p.requires_grad for p in model.language_model.parameters())
    last = model.language_model.layers[-1].state_dict()
    assert all(torch.equal(v, model.llm_connector.layers[-1].state_dict()[k]) for k, v in last.items())
