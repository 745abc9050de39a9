"""Understanding preservation, small scale: a digit-trained teacher, a frozen head, and the metrics.

UniLIP fine-tunes InternVL3's vision encoder for reconstruction while a self-distillation loss keeps
its ``mlp1`` features close to the original encoder's, so that InternVL3's *frozen* LLM still
understands them. The CPU analogue built here:

1. ``train_teacher``: a tiny tokenizer's encoder (+ ``mlp1``) is trained to classify scikit-learn's
   handwritten digits, so that its features carry information worth preserving. This is the original
   encoder, the distillation target.
2. ``train_frozen_head``: a ``FeatureHead`` is trained once on the frozen teacher's features; it stands
   in for the frozen LLM and is never trained again.
3. ``token_cosine``: how close a reconstruction-fine-tuned tokenizer's features stayed to the teacher's.

The distillation study measures understanding itself with a frozen tiny MLLM (:mod:`evals.studies.tiny_mllm`);
the frozen head is the generator study's digit classifier.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unilip.tokenizer import UniLIPTokenizer
from unilip.training.digits import DIGIT_NAMES, load_digits_split
from unilip.variants import load_tokenizer

NUM_CLASSES = len(DIGIT_NAMES)
TEACHER_INFO = "teacher.json"
# Digit strokes are at least ~7 px wide at 56 px; shifting by up to 1/14 of the side keeps them whole.
_MAX_SHIFT_FRACTION = 1 / 14


def _random_shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by a random integer offset, filling with black (the digits' background).

    The only augmentation: 1,437 training images are few for a ViT, and small translations are the
    variation handwritten digits actually have.
    """
    batch, _, height, width = images.shape
    pad = max(1, int(round(height * _MAX_SHIFT_FRACTION)))
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets)])


def _flat_features(tokenizer: UniLIPTokenizer, images: torch.Tensor) -> torch.Tensor:
    return tokenizer.encode_features(images).flatten(1)


def _feature_shape(tokenizer: UniLIPTokenizer, size: int) -> tuple[int, int]:
    """(N, H) of ``encode_features`` at ``size`` px: the token grid is (size / token stride)^2."""
    stride = tokenizer.config.token_stride
    if size % stride:
        raise ValueError(f"size {size} is not a multiple of the tokenizer's token stride {stride}")
    return (size // stride) ** 2, tokenizer.config.llm_hidden_size


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def _accuracy(predict, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device) -> float:
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = predict(images[start : start + batch_size].to(device))
        correct += int((logits.argmax(-1).cpu() == labels[start : start + batch_size]).sum())
    return correct / max(1, len(images))


def take_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler: Any) -> float:
    """One optimisation step on ``loss`` (gradients cleared first), the schedule advanced; the loss's value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def warmup_cosine(steps: int, warmup_fraction: float = 0.05):
    """The learning-rate factor of step k: linear warm-up over ``warmup_fraction`` of ``steps``, then cosine to 0."""
    warmup = max(1, int(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return factor


def train_teacher(
    out_dir: str | Path,
    *,
    variant: str = "tiny",
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    size: int = 56,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> Path:
    """Train a tokenizer's encoder to classify digits, making it a teacher worth preserving.

    Only ``encoder`` and ``mlp1`` are trained, together with a temporary linear classifier on the
    flattened ``encode_features`` tokens (``N*H -> 10``, cross-entropy, AdamW with a cosine schedule,
    random-shift augmentation). The bridge and decoder keep their random initialisation: the
    reconstruction training that starts from this teacher fills them. The classifier is discarded;
    the frozen head that stands in for the LLM is trained separately (``train_frozen_head``).

    Args:
        out_dir: where to write the tokenizer (``save_pretrained``) and ``teacher.json``.
        variant: tokenizer variant to build with random weights (``load_tokenizer(variant, seed=seed)``).
        steps: optimisation steps.
        batch_size: images per step, drawn with replacement-free epochs from the train split.
        lr: peak AdamW learning rate (cosine decay to 0 after a 5 % warm-up).
        seed: seed of the initialisation, the batch order and the augmentation; also the split seed.
        size: image side in pixels (a multiple of the variant's token stride).
        progress: show a tqdm bar on stderr.
        device: where to train; the saved tokenizer is the same on any device.

    Returns:
        ``out_dir`` as a ``Path``; ``teacher.json`` there records steps, seed, the final train loss
        (mean of the last 10 % of steps) and the temporary classifier's test accuracy.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    device = torch.device(device)
    started = time.perf_counter()
    train_images, train_labels = load_digits_split("train", size=size, seed=seed)
    test_images, test_labels = load_digits_split("test", size=size, seed=seed)

    # fork_rng: the caller's global RNG stream is left as it was; everything here is seeded by `seed`.
    with torch.random.fork_rng(devices=[]):
        tokenizer = load_tokenizer(variant, random_init=True, seed=seed).to(device)
        num_tokens, width = _feature_shape(tokenizer, size)
        torch.manual_seed(seed)
        classifier = nn.Linear(num_tokens * width, NUM_CLASSES).to(device)
        generator = torch.Generator().manual_seed(seed)

        # Everything but encoder + mlp1 is frozen, so the saved bridge/decoder are exactly the init.
        tokenizer.requires_grad_(False)
        trainable = [*tokenizer.encoder.parameters(), *tokenizer.mlp1.parameters()]
        for parameter in trainable:
            parameter.requires_grad_(True)
        optimizer = torch.optim.AdamW([*trainable, *classifier.parameters()], lr=lr, weight_decay=0.05)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))

        tokenizer.train()
        classifier.train()
        losses: list[float] = []
        order = torch.empty(0, dtype=torch.long)
        bar = tqdm(range(steps), desc="teacher", file=sys.stderr, disable=not progress, dynamic_ncols=True)
        for _ in bar:
            if len(order) < batch_size:  # a fresh permutation each epoch: every image seen equally often
                order = torch.cat([order, torch.randperm(len(train_images), generator=generator)])
            batch, order = order[:batch_size], order[batch_size:]
            images = _random_shift(train_images[batch], generator).to(device)
            logits = classifier(_flat_features(tokenizer, images))
            loss = F.cross_entropy(logits, train_labels[batch].to(device))
            losses.append(take_step(loss, optimizer, scheduler))
            # refresh=False: the bar redraws at tqdm's own rate, not once per step (keeps logs short).
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        bar.close()

    tokenizer.requires_grad_(True)
    tokenizer.eval()
    classifier.eval()
    test_accuracy = _accuracy(
        lambda x: classifier(_flat_features(tokenizer, x)), test_images, test_labels, batch_size=128, device=device
    )
    tail = losses[-max(1, len(losses) // 10) :] if losses else [float("nan")]
    tokenizer.cpu().save_pretrained(out_dir)
    info = {
        "variant": variant,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "size": size,
        "final_train_loss": sum(tail) / len(tail),
        "test_accuracy": test_accuracy,
        "num_train": len(train_images),
        "num_test": len(test_images),
        "trained": ["encoder", "mlp1"],
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    (out_dir / TEACHER_INFO).write_text(json.dumps(info, indent=2) + "\n")
    if progress:
        print(
            f"teacher: test accuracy {test_accuracy:.4f}, final train loss {info['final_train_loss']:.4f}, "
            f"{info['wall_seconds']:.1f} s -> {out_dir}",
            file=sys.stderr,
        )
    return out_dir


class FeatureHead(nn.Module):
    """The frozen downstream reader of understanding tokens: LayerNorm over all ``N*H`` values, then Linear.

    It stands in for InternVL3's frozen LLM: trained once on the teacher's features, then applied
    unchanged to every fine-tuned encoder's features. The LayerNorm spans the whole flattened token
    sequence (not each token) so that the head sees the features' relative layout, as a linear probe
    on the raw features would, without depending on their overall scale.

    Args:
        num_tokens: N, tokens per image.
        width: H, the token width.
        num_classes: output classes (10 digits).
    """

    def __init__(self, num_tokens: int, width: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.num_tokens = int(num_tokens)
        self.width = int(width)
        self.num_classes = int(num_classes)
        self.norm = nn.LayerNorm(self.num_tokens * self.width)
        self.linear = nn.Linear(self.num_tokens * self.width, self.num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``B x num_classes`` of ``B x N x H`` features (or already flattened ``B x N*H``)."""
        flat = features.flatten(1)
        if flat.shape[1] != self.num_tokens * self.width:
            raise ValueError(
                f"FeatureHead expects {self.num_tokens} x {self.width} features; got shape {tuple(features.shape)}"
            )
        return self.linear(self.norm(flat))

    @staticmethod
    def _json_path(path: Path) -> Path:
        return path.with_suffix(".json")

    def save(self, path: str | Path, info: dict | None = None) -> Path:
        """Write the weights to ``path`` (safetensors) and the shape to ``path`` with suffix ``.json``.

        Args:
            path: weights file, e.g. ``head.safetensors`` (its ``.json`` sibling holds the shape).
            info: extra JSON-serialisable facts to record next to the shape (how it was trained).

        Returns:
            ``path`` as a ``Path``.
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix == ".json":
            raise ValueError(f"{path}: the weights file cannot end in .json (that is the shape file's name)")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
            str(path),
            metadata={"format": "pt", "model_type": "unilip_feature_head"},
        )
        payload = {
            "model_type": "unilip_feature_head",
            "num_tokens": self.num_tokens,
            "width": self.width,
            "num_classes": self.num_classes,
            **(info or {}),
        }
        self._json_path(path).write_text(json.dumps(payload, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureHead:
        """Load a head written by ``save``, in eval mode and with gradients off (it is frozen).

        Args:
            path: the weights file given to ``save``.

        Returns:
            The head.
        """
        from safetensors.torch import load_file

        path = Path(path)
        shape_path = cls._json_path(path)
        if not path.is_file() or not shape_path.is_file():
            raise FileNotFoundError(
                f"a saved FeatureHead is {path} plus {shape_path}; missing {path if not path.is_file() else shape_path}"
            )
        shape = json.loads(shape_path.read_text())
        head = cls(shape["num_tokens"], shape["width"], shape["num_classes"])
        head.load_state_dict(load_file(str(path)), strict=True)
        return head.eval().requires_grad_(False)


@torch.no_grad()
def _encode_all(tokenizer: UniLIPTokenizer, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = _device_of(tokenizer)
    return torch.cat(
        [
            tokenizer.encode_features(images[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


def train_frozen_head(
    teacher_dir: str | Path,
    out_path: str | Path,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    size: int = 56,
) -> FeatureHead:
    """Train the head that stands in for the frozen LLM, on the frozen teacher's features.

    The teacher is loaded, frozen and put in eval mode; its features of the digits train split are
    computed once (no augmentation: the head reads the encoder's features, as the LLM reads
    InternVL3's) and a fresh ``FeatureHead`` is trained on them with AdamW and cross-entropy.

    Args:
        teacher_dir: a directory written by ``train_teacher``.
        out_path: weights file to save the head to (``FeatureHead.save``).
        steps: optimisation steps.
        batch_size: features per step.
        lr: AdamW learning rate (cosine decay to 0).
        seed: seed of the head's initialisation and the batch order; also the split seed.
        size: image side in pixels (as the teacher was trained).

    Returns:
        The trained head, in eval mode with gradients off. Its JSON records the train and test accuracy.
    """
    teacher = UniLIPTokenizer.from_pretrained(teacher_dir).eval().requires_grad_(False)
    train_images, train_labels = load_digits_split("train", size=size, seed=seed)
    test_images, test_labels = load_digits_split("test", size=size, seed=seed)
    num_tokens, width = _feature_shape(teacher, size)
    train_features = _encode_all(teacher, train_images, batch_size=128)
    test_features = _encode_all(teacher, test_images, batch_size=128)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = FeatureHead(num_tokens, width)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
        head.train()
        order = torch.empty(0, dtype=torch.long)
        for _ in range(steps):
            if len(order) < batch_size:
                order = torch.cat([order, torch.randperm(len(train_features), generator=generator)])
            batch, order = order[:batch_size], order[batch_size:]
            loss = F.cross_entropy(head(train_features[batch]), train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

    head.eval().requires_grad_(False)
    with torch.no_grad():
        train_accuracy = int((head(train_features).argmax(-1) == train_labels).sum()) / len(train_labels)
        test_accuracy = int((head(test_features).argmax(-1) == test_labels).sum()) / len(test_labels)
    head.save(
        out_path,
        info={
            "teacher": str(teacher_dir),
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "size": size,
            "train_accuracy": train_accuracy,
            "test_accuracy": test_accuracy,
        },
    )
    return head


@torch.no_grad()
def token_cosine(
    tokenizer: UniLIPTokenizer, teacher: UniLIPTokenizer, images: torch.Tensor, batch_size: int = 128
) -> float:
    """Mean over images and tokens of the cosine similarity between ``tokenizer``'s and ``teacher``'s
    ``encode_features`` of ``images`` (``B x 3 x S x S`` in [0, 1]): how close the understanding tokens stayed.

    Both models are evaluated in eval mode under ``no_grad``; their train/eval modes are restored afterwards.
    """
    if len(images) == 0:
        raise ValueError("token_cosine needs at least one image")
    modes = [tokenizer.training, teacher.training]
    tokenizer.eval()
    teacher.eval()
    try:
        total, count = 0.0, 0
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            features = tokenizer.encode_features(chunk.to(_device_of(tokenizer))).float()
            target = teacher.encode_features(chunk.to(_device_of(teacher))).float().to(features.device)
            total += float(F.cosine_similarity(features, target, dim=-1).sum())
            count += features.shape[0] * features.shape[1]
    finally:
        tokenizer.train(modes[0])
        teacher.train(modes[1])
    return total / count
