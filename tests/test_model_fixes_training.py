"""Training runs that die or are stopped: each step logged once and in order after any resume, and Ctrl-C
raises ``Interrupted`` saying the step reached and the checkpoint kept (never a partial one)."""

import json

import pytest
import torch
import yaml

from unilip.errors import Interrupted
from unilip.training.checkpointing import list_checkpoints, trim_log
from unilip.training.config import DataConfig, LossConfig, OptimConfig, TrainConfig, load_generator_train_config


def _tokenizer_trainer(out):
    from unilip.training.tokenizer_trainer import TokenizerTrainer

    config = TrainConfig(
        name="fix",
        variant="tiny",
        stage=1,
        seed=0,
        data=DataConfig(sources=[{"kind": "builtin"}], size=56, batch_size=2, hflip=True),
        optim=OptimConfig(lr=1e-3, end_lr=1e-4, warmup_steps=1, max_steps=4),
        losses=LossConfig(lpips_weight=0, convnext_weight=0, gan_weight=0, distill_weight=0),
        checkpoint_every=2,
    )
    return TokenizerTrainer(config, out, progress=False)


@pytest.fixture(scope="module")
def generator_recipe(tmp_path_factory):
    from unilip.variants import load_tokenizer

    root = tmp_path_factory.mktemp("generator")
    load_tokenizer("tiny", random_init=True, seed=5).save_pretrained(root / "tokenizer")
    recipe = {
        "name": "fix",
        "variant": "tiny",
        "stage": 2,
        "seed": 0,
        "tokenizer": str(root / "tokenizer"),
        "data": {"dataset": "digits", "size": 56, "batch_size": 2, "edit_fraction": 0.0},
        "optim": {"lr": 1e-3, "end_lr": 1e-4, "warmup_steps": 1, "max_steps": 4},
        "checkpoint_every": 2,
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root / "recipe.yaml"


def _trainer(kind, out, generator_recipe):
    if kind == "tokenizer":
        return _tokenizer_trainer(out)
    from unilip.training.generator_trainer import GeneratorTrainer

    return GeneratorTrainer(load_generator_train_config(generator_recipe), out, progress=False)


def _dies_before_step(trainer, step: int, error: BaseException):
    """Make ``trainer`` raise ``error`` when it is about to run step ``step`` (1-based)."""
    original = trainer.training_step

    def step_or_die(batch):
        if trainer.step + 1 == step:
            raise error
        return original(batch)

    trainer.training_step = step_or_die
    return trainer


def _interruption(trainer) -> KeyboardInterrupt:
    """What ``trainer.train()`` raises on Ctrl-C (caught here, so a bare KeyboardInterrupt fails the test
    instead of stopping the test session)."""
    try:
        trainer.train()
    except KeyboardInterrupt as error:
        return error
    raise AssertionError("train() returned although Ctrl-C came")


def _logged_steps(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["tokenizer", "generator"])
def test_each_step_is_logged_once_after_crashes_with_and_without_a_checkpoint(kind, tmp_path, generator_recipe):
    out = tmp_path / "run"
    crash = RuntimeError("simulated crash")  # a kill or an OOM: the run stops without any clean-up
    # Dies at step 2: step 1 was logged, no checkpoint yet (the first comes at step 2).
    with pytest.raises(RuntimeError, match="simulated"):
        _dies_before_step(_trainer(kind, out, generator_recipe), 2, crash).train()
    assert _logged_steps(out) == [1] and not list_checkpoints(out)
    # Rerun: starts at step 0 again, so the log starts afresh; dies at step 4 after the checkpoint at 2.
    with pytest.raises(RuntimeError, match="simulated"):
        _dies_before_step(_trainer(kind, out, generator_recipe), 4, crash).train()
    assert _logged_steps(out) == [1, 2, 3] and [c.name for c in list_checkpoints(out)] == ["step-00000002"]
    finished = _trainer(kind, out, generator_recipe)
    finished.train()
    assert finished.step == 4 and _logged_steps(out) == [1, 2, 3, 4]


def test_trim_drops_a_line_cut_short_by_the_kill_and_refuses_a_damaged_log(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')
    trim_log(tmp_path, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
    trim_log(tmp_path, 0)
    assert log.read_text() == ""
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        trim_log(tmp_path, 5)


@pytest.mark.parametrize("kind", ["tokenizer", "generator"])
def test_ctrl_c_raises_interrupted_naming_the_step_and_the_checkpoint_kept(kind, tmp_path, generator_recipe):
    out = tmp_path / "run"
    error = _interruption(_dies_before_step(_trainer(kind, out, generator_recipe), 4, KeyboardInterrupt()))
    assert isinstance(error, Interrupted)
    message = str(error)
    assert message.startswith(f"train {kind} (fix, stage ")
    assert "interrupted at step 3 of 4; last checkpoint step 2" in message
    assert [c.name for c in list_checkpoints(out)] == ["step-00000002"]


def test_ctrl_c_during_a_checkpoint_write_keeps_only_complete_checkpoints(tmp_path):
    out = tmp_path / "run"
    trainer = _tokenizer_trainer(out)
    original = trainer._write_checkpoint

    def write_then_interrupt(tmp):
        original(tmp)
        if trainer.step == 4:  # the final checkpoint's files are written, the rename has not happened
            raise KeyboardInterrupt

    trainer._write_checkpoint = write_then_interrupt
    error = _interruption(trainer)
    assert isinstance(error, Interrupted) and "interrupted at step 4 of 4; last checkpoint step 2" in str(error)
    assert [c.name for c in list_checkpoints(out)] == ["step-00000002"]
    resumed = _tokenizer_trainer(out)
    resumed.train()
    assert resumed.step == 4 and _logged_steps(out) == [1, 2, 3, 4]
    assert [c.name for c in list_checkpoints(out)] == ["step-00000002", "step-00000004"]
    assert torch.isfinite(resumed.model.decoder.conv_out.weight).all()
