"""Generator training: the objective, what trains in each stage, strict tokenizer hand-off, resume."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from unilip.training.config import load_generator_train_config
from unilip.training.generator_trainer import (GeneratorTrainer, flow_matching_loss, sample_sigmas,
                                               train_generator)
from unilip.variants import load_tokenizer


def _recipe(tmp_path, **changes):
    recipe = {"name": "t", "variant": "tiny", "stage": 2, "seed": 0,
              "data": {"dataset": "digits", "size": 56, "batch_size": 8, "edit_fraction": 0.5},
              "optim": {"lr": 2e-3, "end_lr": 2e-4, "warmup_steps": 2, "max_steps": 30},
              "checkpoint_every": 3}
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
    model = AutoencoderDC(in_channels=3, latent_channels=32, attention_head_dim=8, encoder_block_types=three,
                          decoder_block_types=three, encoder_block_out_channels=(8, 16, 32),
                          decoder_block_out_channels=(8, 16, 32), encoder_layers_per_block=(1, 1, 1),
                          decoder_layers_per_block=(1, 1, 1), encoder_qkv_multiscales=((), (), ()),
                          decoder_qkv_multiscales=((), (), ()), upsample_block_type="interpolate",
                          downsample_block_type="Conv", decoder_norm_types="rms_norm", decoder_act_fns="silu")
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
