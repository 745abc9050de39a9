"""Tokenizer training: freezing, LR groups, distillation, EMA, resume, a loss that falls, real recipes."""

import dataclasses
from pathlib import Path

import pytest
import torch

from unilip.training.config import DataConfig, LossConfig, OptimConfig, TrainConfig, load_train_config
from unilip.training.tokenizer_trainer import TokenizerTrainer, build_optimizer, configure_trainable, uses_weight_decay

RECIPES = Path(__file__).resolve().parents[1] / "unilip" / "configs" / "train"


def _config(stage=1, distill=1.0, steps=4, init=None, lr=2e-3, batch=4, seed=0, checkpoint_every=100):
    return TrainConfig(
        name="test",
        variant="tiny",
        stage=stage,
        init=init,
        seed=seed,
        data=DataConfig(sources=[{"kind": "builtin"}], size=56, batch_size=batch, hflip=True),
        optim=OptimConfig(lr=lr, end_lr=lr / 10, warmup_steps=2, max_steps=steps, ema_decay=0.999),
        losses=LossConfig(lpips_weight=0, convnext_weight=0, gan_weight=0, distill_weight=distill),
        checkpoint_every=checkpoint_every,
    )


@pytest.fixture(scope="module")
def stage1_dir(tmp_path_factory):
    """A short stage-1 run whose result stage-2 tests start from."""
    out = tmp_path_factory.mktemp("stage1")
    trainer = TokenizerTrainer(_config(stage=1, steps=3), out, progress=False)
    return trainer.train()


def test_stage1_freezes_encoder_without_optimizer_state(tmp_path):
    trainer = TokenizerTrainer(_config(stage=1, steps=3), tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    for name, parameter in trainer.model.named_parameters():
        if name.startswith(("encoder.", "mlp1.")):
            assert torch.equal(before[name], after[name]), name
            assert id(parameter) not in optimized and parameter.grad is None
    assert not torch.equal(before["down_mlp.1.weight"], after["down_mlp.1.weight"])
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])
    assert trainer.teacher is None  # stage 1 never distils


def test_learning_rate_groups_and_weight_decay_rule(stage1_dir):
    model = torch.nn.Module()
    from unilip import load_tokenizer

    model = load_tokenizer("tiny")
    config = _config(stage=2)
    configure_trainable(model, 2)
    optimizer, scheduler = build_optimizer(model, config)
    groups = {g["group_name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"base", "base_no_decay", "encoder", "encoder_no_decay"}
    assert groups["encoder"]["initial_lr"] == pytest.approx(0.1 * groups["base"]["initial_lr"])
    assert groups["base_no_decay"]["weight_decay"] == 0 and groups["base"]["weight_decay"] == 1e-4
    names = {name: group for group in optimizer.param_groups for name in group["names"]}
    assert names["encoder.encoder.layer.0.attention.q_proj.weight"]["group_name"] == "encoder"
    for no_decay in (
        "encoder.embeddings.cls_token",
        "encoder.embeddings.position_embeddings",
        "encoder.embeddings.patch_embeddings.projection.weight",
        "encoder.encoder.layer.0.lambda_1",
        "mlp1.layer_norm.weight",
        "down_mlp.1.bias",
        "decoder.norm_out.weight",
    ):
        assert names[no_decay]["group_name"].endswith("no_decay"), no_decay
    assert names["decoder.conv_in.weight"]["group_name"] == "base"
    assert uses_weight_decay("down_blocks.0.mlp.1.weight", torch.zeros(2, 2))
    # Warm-up (2 steps) then cosine from the group's own rate to end_lr / lr of it.
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["initial_lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([0.0, 0.5, 1.0])


def test_distillation_starts_at_zero_and_teacher_stays_fixed(stage1_dir, tmp_path):
    trainer = TokenizerTrainer(_config(stage=2, init=str(stage1_dir), steps=3), tmp_path, progress=False)
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    from unilip.training.data import TrainImages, make_batch

    images = TrainImages(trainer.config.data.sources, 56)
    first = trainer.training_step(make_batch(images, 0, 4, 0))
    assert first["loss/distill"] == 0.0  # student and teacher are the same weights at the start
    for step in (1, 2):
        record = trainer.training_step(make_batch(images, step, 4, 0))
    assert record["loss/distill"] > 0  # the student moved
    assert all(torch.equal(v, trainer.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    assert trainer.teacher.calls == 3
    assert {g["group_name"] for g in trainer.optimizer.param_groups} >= {"encoder", "base"}


def test_lambda_zero_never_runs_the_teacher(stage1_dir, tmp_path, monkeypatch):
    from unilip.training import tokenizer_trainer

    calls = []
    monkeypatch.setattr(tokenizer_trainer.FeatureTeacher, "forward", lambda self, x: calls.append(1))
    trainer = TokenizerTrainer(_config(stage=2, distill=0.0, init=str(stage1_dir), steps=2), tmp_path, progress=False)
    trainer.train()
    assert trainer.teacher is None and calls == []
    log = (tmp_path / "log.jsonl").read_text()
    assert "loss/distill" not in log and log.count("\n") == 2


def test_ema_follows_the_warm_up_recurrence(tmp_path):
    trainer = TokenizerTrainer(_config(stage=1, steps=3), tmp_path, progress=False)
    from unilip.training.data import TrainImages, make_batch

    images = TrainImages(trainer.config.data.sources, 56)
    name = "down_mlp.3.weight"
    index = [n for n, _ in trainer.model.named_parameters()].index(name)
    expected = None
    for step in range(3):
        trainer.training_step(make_batch(images, step, 4, 0))
        value = dict(trainer.model.named_parameters())[name].detach().clone()
        k = step + 1  # the k-th update uses decay 0 for k = 1, then min(0.999, k / (k + 9))
        decay = 0.0 if k == 1 else min(0.999, k / (k + 9))
        expected = value if expected is None else decay * expected + (1 - decay) * value
        torch.testing.assert_close(trainer.ema.shadow_params[index], expected, rtol=0, atol=1e-7)


def test_resume_after_kill_equals_uninterrupted(stage1_dir, tmp_path, monkeypatch):
    config = _config(stage=2, init=str(stage1_dir), steps=4, checkpoint_every=2)
    straight = TokenizerTrainer(config, tmp_path / "straight", progress=False)
    straight.train()

    from unilip.training import tokenizer_trainer

    original = tokenizer_trainer.make_batch

    def dies_at_step_3(images, step, *args, **kwargs):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(images, step, *args, **kwargs)

    monkeypatch.setattr(tokenizer_trainer, "make_batch", dies_at_step_3)
    killed = TokenizerTrainer(config, tmp_path / "resumed", progress=False)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    monkeypatch.setattr(tokenizer_trainer, "make_batch", original)
    resumed = TokenizerTrainer(config, tmp_path / "resumed", progress=False)
    resumed.train()
    assert resumed.step == straight.step == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(x, y) for x, y in zip(straight.ema.shadow_params, resumed.ema.shadow_params, strict=True))
    log = (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in log] == [1, 2, 3, 4]


def test_changed_config_in_same_directory_is_refused(tmp_path):
    TokenizerTrainer(_config(steps=1), tmp_path, progress=False).train()
    with pytest.raises(ValueError, match="another configuration"):
        TokenizerTrainer(_config(steps=1, lr=1e-3), tmp_path, progress=False).train()


def test_tiny_stage1_lowers_reconstruction_loss_on_real_photos(tmp_path):
    import torch.nn.functional as F

    from unilip.training.data import TrainImages, make_batch

    config = _config(stage=1, steps=40, batch=8, lr=3e-3)
    trainer = TokenizerTrainer(config, tmp_path, progress=False)
    images = TrainImages([{"kind": "builtin"}], 56, hflip=False)
    fixed = make_batch(images, 0, 7, seed=123)

    def loss():
        with torch.no_grad():
            return F.mse_loss((trainer.model(fixed) + 1) / 2, fixed).item()

    before = loss()
    trainer.train()
    assert loss() < 0.7 * before


def test_missing_perceptual_weights_fail_at_start_up(tmp_path, monkeypatch):
    from unilip.training.losses import LossWeightsUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("UNILIP_LPIPS_VGG_WEIGHTS", raising=False)
    config = _config()
    config = dataclasses.replace(config, losses=dataclasses.replace(config.losses, lpips_weight=1.0))
    with pytest.raises(LossWeightsUnavailable, match="lpips_weight"):
        TokenizerTrainer(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "log.jsonl").exists()


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("unilip-*.yaml") if "generator" not in p.name))
def test_real_recipes_build_their_optimizers_on_meta(recipe):
    from unilip import load_tokenizer

    config = load_train_config(RECIPES / recipe)
    model = load_tokenizer(config.variant, random_init=True, device="meta")
    configure_trainable(model, config.stage)
    optimizer, _ = build_optimizer(model, config)
    names = {n for g in optimizer.param_groups for n in g["names"]}
    trainable = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert config.mixed_precision == "bf16" and config.data.batch_size == 64
    if config.stage == 1:
        assert not any(n.startswith(("encoder.", "mlp1.")) for n in names)
        assert trainable < 200e6  # bridge + decoder only
        assert config.losses.distill_weight == 0 and config.data.size == 224
    else:
        assert any(n.startswith("encoder.") for n in names) and trainable > 450e6
        lrs = {g["group_name"]: g["initial_lr"] for g in optimizer.param_groups}
        assert lrs["encoder"] == pytest.approx(1e-5) and lrs["base"] == pytest.approx(1e-4)
        assert config.data.size == (448 if config.stage == 3 else 224)


def test_gan_phase_trains_the_discriminator_and_resumes_exactly(tmp_path, monkeypatch):
    config = _config(stage=1, steps=4, checkpoint_every=2)
    config = dataclasses.replace(
        config, losses=dataclasses.replace(config.losses, gan_weight=0.1, discriminator_start=1, discriminator_base=16)
    )
    straight = TokenizerTrainer(config, tmp_path / "straight", progress=False)
    disc_before = {k: v.clone() for k, v in straight.discriminator.state_dict().items()}
    straight.train()
    log = [line for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert "gan_g" not in log[0] and all("loss/gan_g" in line and "loss/lecam" in line for line in log[1:])
    assert any(not torch.equal(v, straight.discriminator.state_dict()[k]) for k, v in disc_before.items())

    from unilip.training import tokenizer_trainer

    original = tokenizer_trainer.make_batch
    monkeypatch.setattr(
        tokenizer_trainer,
        "make_batch",
        lambda images, step, *a, **k: (
            (_ for _ in ()).throw(KeyboardInterrupt()) if step == 3 else original(images, step, *a, **k)
        ),
    )
    with pytest.raises(KeyboardInterrupt):
        TokenizerTrainer(config, tmp_path / "resumed", progress=False).train()
    monkeypatch.setattr(tokenizer_trainer, "make_batch", original)
    resumed = TokenizerTrainer(config, tmp_path / "resumed", progress=False)
    resumed.train()
    for a, b in (
        (straight.model, resumed.model),
        (straight.discriminator, resumed.discriminator),
        (straight.lecam, resumed.lecam),
    ):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
