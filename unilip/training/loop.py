"""The training loop both trainers share: run or resume to a step count, log, checkpoint, save.

:class:`TrainingLoop` is the base of ``TokenizerTrainer`` and ``GeneratorTrainer``. It owns what does not
depend on the model:

* the run directory: the run's config is recorded (a resume with another config is refused), the newest
  complete checkpoint is resumed from, and ``log.jsonl`` is trimmed to the steps a resume does not redo;
* the loop: one batch per step (the trainer's :meth:`~TrainingLoop.next_batch`), one optimisation step
  (its ``training_step``), one JSON line per step on the main process, a progress bar, a checkpoint every
  ``checkpoint_every`` steps and at the last one, then the trainer's ``save_final``; Ctrl-C becomes
  ``Interrupted`` naming the step reached and the checkpoint kept;
* checkpoints: the trainer's tensors (:meth:`~TrainingLoop.write_weights`), then the optimizer, the
  LR scheduler, the step and every RNG state, written whole or not at all; a resume restores them all, so
  a resumed run's numbers equal an uninterrupted one's;
* the shared optimisation rules: upstream's weight-decay rule and its warm-up + cosine schedule.

A trainer sets ``config``, ``out_dir``, ``progress``, ``accelerator``, ``optimizer``, ``scheduler`` and
``step`` (0) in its ``__init__`` and implements the abstract methods below.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from unilip.training.checkpointing import (
    check_or_write_config,
    interruption_reported,
    list_checkpoints,
    load_optimizer,
    rng_state,
    save_optimizer,
    set_rng_state,
    trim_log,
    write_checkpoint,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

    from unilip.training.config import OptimConfig

logger = logging.getLogger(__name__)

__all__ = [
    "NO_DECAY_SUBSTRINGS",
    "TrainingLoop",
    "clear_out_dir",
    "lr_factor",
    "start_accelerator",
    "uses_weight_decay",
    "warmup_cosine_schedule",
]

# Upstream's no-decay rule: parameters of dimension < 2, and names containing any of these.
NO_DECAY_SUBSTRINGS = ("ln", "bias", "embedding", "norm", "gamma", "embed")


# ----------------------------------------------------------------------------------- optimisation rules
def uses_weight_decay(name: str, parameter: torch.Tensor) -> bool:
    """Upstream's rule: decay only weights of dimension >= 2 that are not norms, biases or embeddings."""
    return parameter.ndim >= 2 and not any(part in name for part in NO_DECAY_SUBSTRINGS)


def lr_factor(step: int, optim: OptimConfig) -> float:
    """Linear warm-up to 1, then cosine down to ``end_lr / lr`` at ``max_steps``."""
    if step < optim.warmup_steps:
        return step / max(1, optim.warmup_steps)
    end = optim.end_lr / optim.lr
    progress = min(1.0, (step - optim.warmup_steps) / max(1, optim.max_steps - optim.warmup_steps))
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, optim: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule of both trainers: each group's rate times :func:`lr_factor` of the step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, optim))


# ----------------------------------------------------------------------------------- run set-up
def start_accelerator(mixed_precision: str, seed: int) -> Accelerator:
    """The run's ``Accelerator`` (the CPU when there is no CUDA device), then the global torch seed."""
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())
    torch.manual_seed(seed)
    return accelerator


def clear_out_dir(out_dir: str | Path, fresh: bool) -> Path:
    """``out_dir`` as a Path, emptied first when ``fresh`` (``--fresh``: start over instead of resuming)."""
    out_dir = Path(out_dir)
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    return out_dir


# ----------------------------------------------------------------------------------- the loop
class TrainingLoop:
    """Run or resume a training stage into ``out_dir``: the loop, logging, checkpoints and resume of both trainers.

    Attributes a subclass sets in ``__init__``: ``config`` (``name``, ``stage``, ``optim.max_steps``,
    ``checkpoint_every``, ``keep_checkpoints``, ``to_dict()``), ``out_dir``, ``progress``, ``accelerator``,
    ``optimizer``, ``scheduler`` and ``step`` (0).
    """

    #: What is trained, for messages: ``"train {kind} (name, stage N): interrupted at ..."``.
    kind: ClassVar[str]
    #: The step record's entry shown in the progress bar.
    loss_key: ClassVar[str]

    config: Any
    out_dir: Path
    progress: bool
    accelerator: Accelerator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int

    # ------------------------------------------------------------------ what a trainer implements
    def next_batch(self, step: int) -> Any:
        """The batch of ``step`` for this process, on the training device."""
        raise NotImplementedError

    def training_step(self, batch: Any) -> dict[str, Any]:
        """One optimisation step on ``batch`` (``self.step`` += 1); returns the step's log record."""
        raise NotImplementedError

    def write_weights(self, directory: Path) -> None:
        """Write the trainer's tensors (model, EMA, discriminator ...) into a checkpoint directory."""
        raise NotImplementedError

    def read_weights(self, directory: Path, state: dict[str, Any]) -> None:
        """Restore what :meth:`write_weights` wrote (``state`` is the checkpoint's ``state.json``)."""
        raise NotImplementedError

    def checkpoint_state(self) -> dict[str, Any]:
        """Entries a trainer adds to a checkpoint's ``state.json`` (after step, scheduler and RNG states)."""
        return {}

    def prepare_data(self) -> None:
        """Called after the resume, before the first step (a trainer may open its data here)."""

    def save_final(self) -> Path:
        """Save the trained model once the stage is done; returns its directory."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the loop
    def train(self, max_steps: int | None = None) -> Path:
        """Run (or resume) until ``max_steps`` (default: the config's); returns what :meth:`save_final` saved.

        Raises:
            Interrupted: on Ctrl-C, saying the step reached and the checkpoint a rerun resumes from
                (checkpoints are written whole or not at all, so nothing partial is kept).
        """
        total = max_steps or self.config.optim.max_steps
        with interruption_reported(
            f"train {self.kind} ({self.config.name}, stage {self.config.stage})", self.out_dir, total, lambda: self.step
        ):
            return self._train(total)

    def _train(self, total: int) -> Path:
        from tqdm.auto import tqdm

        self.out_dir.mkdir(parents=True, exist_ok=True)
        check_or_write_config(self.out_dir, {k: v for k, v in self.config.to_dict().items() if k != "source"})
        self._resume()
        if self.accelerator.is_main_process:
            trim_log(self.out_dir, self.step)  # also without a checkpoint: a rerun from step 0 logs afresh
        self.prepare_data()
        bar = tqdm(
            total=total,
            initial=self.step,
            desc=f"{self.config.name} stage {self.config.stage}",
            unit="step",
            disable=not (self.progress and self.accelerator.is_main_process),
        )
        with (self.out_dir / "log.jsonl").open("a") as log:
            while self.step < total:
                batch = self.next_batch(self.step)
                started = time.perf_counter()
                record = self.training_step(batch)
                record.update({"step": self.step, "seconds": time.perf_counter() - started})
                if self.accelerator.is_main_process:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{record[self.loss_key]:.4f}", refresh=False)
                if self.step % self.config.checkpoint_every == 0 or self.step == total:
                    self.save_checkpoint()
        bar.close()
        return self.save_final()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Weights, optimizer, scheduler, step and RNG states: written whole or not at all (main process).

        Returns:
            The checkpoint directory on the main process, ``out_dir`` on the others.
        """
        written = self.out_dir
        if self.accelerator.is_main_process:
            written = write_checkpoint(self.out_dir, self.step, self.config.keep_checkpoints, self._write_checkpoint)
        self.accelerator.wait_for_everyone()
        return written

    def _write_checkpoint(self, directory: Path) -> None:
        self.write_weights(directory)
        save_optimizer(self.optimizer, directory, "optimizer")
        state = {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            **self.checkpoint_state(),
        }
        (directory / "state.json").write_text(json.dumps(state))

    def _resume(self) -> None:
        checkpoints = list_checkpoints(self.out_dir)
        if not checkpoints:
            return
        latest = checkpoints[-1]
        state = json.loads((latest / "state.json").read_text())
        self.read_weights(latest, state)
        load_optimizer(self.optimizer, latest, "optimizer")
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step = state["step"]
        logger.info("resumed %s from %s (step %d)", self.config.name, latest, self.step)
