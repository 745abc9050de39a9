"""Tokenizer training losses: LPIPS / ConvNeXt parity with hand-built references, GAN pieces, weights files.

The frozen backbones get random weights of the real torchvision architectures, saved under
torchvision's file names in a temporary folder and read through the same code path as real weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unilip.checkpoints import CheckpointKeyError
from unilip.training.losses import (
    CONVNEXT_S_ENV,
    CONVNEXT_S_FILENAME,
    LPIPS_VGG_ENV,
    LPIPS_VGG_FILENAME,
    BlurPool2d,
    ConvNeXtLogitLoss,
    LeCamEMA,
    LossWeightsUnavailable,
    LPIPSLoss,
    PatchDiscriminator,
    discriminator_loss,
    generator_adversarial_loss,
    hinge_d_loss,
    l2_loss,
    resolve_loss_weights,
)
from unilip.weights import WeightsNotFoundError

# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loss_weights")


@pytest.fixture(scope="module")
def vgg_state(weights_dir: Path) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    import torchvision

    torch.manual_seed(1234)
    state = torchvision.models.vgg16().state_dict()
    # torchvision zero-initialises biases; make them random so the bias mapping is exercised too.
    state = {k: (v + 0.05 * torch.randn_like(v)) if k.endswith("bias") else v for k, v in state.items()}
    path = weights_dir / LPIPS_VGG_FILENAME
    torch.save(state, path)
    yield path, state
    path.unlink()  # 528 MB; pytest keeps the last few temp folders around


@pytest.fixture(scope="module")
def lpips_loss(vgg_state) -> LPIPSLoss:
    return LPIPSLoss(backbone_weights=vgg_state[0])


@pytest.fixture(scope="module")
def convnext_state(weights_dir: Path) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    import torchvision

    torch.manual_seed(4321)
    state = torchvision.models.convnext_small().state_dict()
    # Default init has layer scale 1e-6 and zero biases (blocks ~ identity); randomise both.
    for key, value in state.items():
        if "layer_scale" in key:
            state[key] = torch.empty_like(value).uniform_(0.05, 0.2)
        elif key.endswith("bias"):
            state[key] = 0.05 * torch.randn_like(value)
    path = weights_dir / CONVNEXT_S_FILENAME
    torch.save(state, path)
    yield path, state
    path.unlink()  # 200 MB; pytest keeps the last few temp folders around


@pytest.fixture
def no_weights_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment where neither env var nor the torch hub cache holds any file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(LPIPS_VGG_ENV, raising=False)
    monkeypatch.delenv(CONVNEXT_S_ENV, raising=False)
    return tmp_path


def _images(batch: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator)


# -------------------------------------------------------------------------------------------- LPIPS


@pytest.mark.filterwarnings("ignore::UserWarning:torchvision.models._utils")
def test_lpips_matches_lpips_package_with_hand_loaded_backbone(lpips_loss: LPIPSLoss, vgg_state) -> None:
    import lpips

    _, state = vgg_state
    reference = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    # Hand mapping, independent of the module's: torchvision features 0-3 / 4-8 / 9-15 / 16-22 / 23-29.
    bounds = [(1, 0, 4), (2, 4, 9), (3, 9, 16), (4, 16, 23), (5, 23, 30)]
    target = reference.net.state_dict()
    filled = 0
    with torch.no_grad():
        for key, value in state.items():
            if not key.startswith("features."):
                continue
            index = int(key.split(".")[1])
            (slice_no,) = [s for s, lo, hi in bounds if lo <= index < hi]
            target[f"slice{slice_no}.{key.split('.', 1)[1]}"].copy_(value)
            filled += 1
    assert filled == len(target) == 26
    reference.eval()

    x, y = _images(2, 64, 0), _images(2, 64, 1)
    ours = lpips_loss(x, y)
    expected = reference(2 * x - 1, 2 * y - 1).mean()
    assert ours.shape == () and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
    assert ours.item() > 0
    # And the loaded heads are the package's v0.1 VGG heads.
    for k in range(5):
        torch.testing.assert_close(
            getattr(lpips_loss.model, f"lin{k}").model[1].weight, getattr(reference, f"lin{k}").model[1].weight
        )


def test_lpips_frozen_eval_and_gradient_reaches_reconstruction(lpips_loss: LPIPSLoss) -> None:
    assert not any(p.requires_grad for p in lpips_loss.parameters())
    lpips_loss.train()
    assert not lpips_loss.training and not any(m.training for m in lpips_loss.modules())
    x = _images(2, 32, 2)
    r = _images(2, 32, 3).requires_grad_(True)
    lpips_loss(x, r).backward()
    assert r.grad is not None and torch.isfinite(r.grad).all() and r.grad.abs().sum() > 0
    assert lpips_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_lpips_backbone_key_mismatch_is_listed(vgg_state, tmp_path: Path) -> None:
    _, state = vgg_state
    # classifier.* may be absent (unused); a missing backbone key and a stray key must be named.
    bad = {k: v for k, v in state.items() if k.startswith("features.") and k != "features.28.bias"}
    bad["features.99.weight"] = torch.zeros(1)
    path = tmp_path / LPIPS_VGG_FILENAME
    torch.save(bad, path)
    try:
        with pytest.raises(CheckpointKeyError) as info:  # one line on the command line, not a traceback
            LPIPSLoss(backbone_weights=path)
    finally:
        path.unlink()  # 58 MB
    # Named as in the file (torchvision's names), which is what the user can check.
    assert "features.28.bias" in str(info.value) and "features.99.weight" in str(info.value)


# ---------------------------------------------------------------------------------------- ConvNeXt


def test_convnext_logit_loss_matches_hand_computation(convnext_state) -> None:
    import torchvision

    path, state = convnext_state
    loss = ConvNeXtLogitLoss(weights=path)
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not any(m.training for m in loss.modules())

    x, r = _images(2, 64, 4), _images(2, 64, 5)
    with torch.no_grad():
        assert loss(x[:1], x[:1]).item() == 0.0
    r.requires_grad_(True)
    value = loss(x, r)
    value.backward()
    assert r.grad is not None and torch.isfinite(r.grad).all() and r.grad.abs().sum() > 0

    reference = torchvision.models.convnext_small()
    reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    reference.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def logits(images: torch.Tensor) -> torch.Tensor:
        resized = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return reference((resized - mean) / std)

    with torch.no_grad():
        expected = F.mse_loss(logits(x), logits(r))
    assert value.shape == () and value.item() > 0
    torch.testing.assert_close(value.detach(), expected, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------ weight files


def test_missing_weights_raise_with_file_places_and_switch(no_weights_anywhere: Path, monkeypatch) -> None:
    with pytest.raises(LossWeightsUnavailable) as info:
        LPIPSLoss()
    message = str(info.value)
    for needle in (
        LPIPS_VGG_FILENAME,
        "VGG16_Weights.IMAGENET1K_V1",
        f"${LPIPS_VGG_ENV}: not set",
        str(no_weights_anywhere / "torch_home" / "hub" / "checkpoints" / LPIPS_VGG_FILENAME),
        "losses.lpips_vgg_weights",
        "losses.lpips_weight: 0",
    ):
        assert needle in message, needle

    with pytest.raises(LossWeightsUnavailable) as info:
        ConvNeXtLogitLoss()
    message = str(info.value)
    for needle in (
        CONVNEXT_S_FILENAME,
        "ConvNeXt_Small_Weights.IMAGENET1K_V1",
        f"${CONVNEXT_S_ENV}: not set",
        str(no_weights_anywhere / "torch_home" / "hub" / "checkpoints" / CONVNEXT_S_FILENAME),
        "losses.convnext_weight: 0",
    ):
        assert needle in message, needle
    assert isinstance(info.value, RuntimeError)


def test_resolve_order_explicit_env_hub(no_weights_anywhere: Path, monkeypatch) -> None:
    name = "weights.pth"
    hub = no_weights_anywhere / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / name).write_bytes(b"hub")
    env_dir = no_weights_anywhere / "env"
    env_dir.mkdir()
    (env_dir / name).write_bytes(b"env")
    explicit = no_weights_anywhere / "explicit.pth"
    explicit.write_bytes(b"explicit")

    assert resolve_loss_weights(None, "UNILIP_TEST_WEIGHTS", name, "a file") == hub / name
    monkeypatch.setenv("UNILIP_TEST_WEIGHTS", str(env_dir))  # a folder holding the file
    assert resolve_loss_weights(None, "UNILIP_TEST_WEIGHTS", name, "a file") == env_dir / name
    assert resolve_loss_weights(explicit, "UNILIP_TEST_WEIGHTS", name, "a file") == explicit
    # A named path that does not exist is an error, never replaced by the variable's or the cache's file.
    with pytest.raises(WeightsNotFoundError, match="gone.pth"):
        resolve_loss_weights(explicit.with_name("gone.pth"), "UNILIP_TEST_WEIGHTS", name, "a file")
    monkeypatch.setenv("UNILIP_TEST_WEIGHTS", str(env_dir / "typo"))
    with pytest.raises(WeightsNotFoundError, match="UNILIP_TEST_WEIGHTS"):
        resolve_loss_weights(None, "UNILIP_TEST_WEIGHTS", name, "a file")


# ----------------------------------------------------------------------------------- discriminator


@pytest.mark.parametrize("size", [32, 64, 256])
def test_discriminator_output_shape(size: int) -> None:
    disc = PatchDiscriminator(base=16)
    assert disc(_images(2, size, size)).shape == (2, 1, 16, 16)


def test_discriminator_parameter_count_base128() -> None:
    disc = PatchDiscriminator()
    conv = lambda cin, cout, k: cin * cout * k * k + cout  # noqa: E731
    norm = lambda c: 2 * c  # noqa: E731
    expected = (
        conv(3, 128, 5)
        + conv(128, 128, 3) + norm(128)
        + conv(128, 256, 3) + norm(256)
        + conv(256, 512, 3) + norm(512)
        + conv(512, 512, 1)
        + conv(512, 1, 5)
    )  # fmt: skip
    count = sum(p.numel() for p in disc.parameters())
    print(f"PatchDiscriminator(base=128) parameters: {count}")
    assert count == expected == 1_909_889
    # Upstream NLayerDiscriminator's names, so its checkpoints load unchanged.
    keys = set(disc.state_dict())
    assert {"block_in.0.weight", "blocks.0.0.weight", "blocks.0.1.kernel", "blocks.2.2.weight"} <= keys
    assert {"to_logits.0.weight", "to_logits.2.weight", "to_logits.2.bias"} <= keys
    assert disc.blocks[2][2].num_groups == 32 and disc.to_logits[2].in_channels == 512


def test_blurpool_matches_tf_same_padding() -> None:
    x = torch.randn(1, 2, 5, 6)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps) / 64.0
    # SAME padding with a 4-tap kernel, stride 2: odd 5 -> 1 top / 2 bottom, even 6 -> 1 / 1.
    padded = F.pad(x, [1, 1, 1, 2])
    expected = torch.stack(
        [F.conv2d(padded[:, c : c + 1], kernel[None, None], stride=2)[:, 0] for c in range(2)], dim=1
    )
    out = BlurPool2d()(x)
    assert out.shape == (1, 2, 3, 3)
    torch.testing.assert_close(out, expected)


def test_generator_gradient_flows_through_discriminator() -> None:
    disc = PatchDiscriminator(base=16)
    for p in disc.parameters():
        p.requires_grad_(False)
    r = _images(1, 32, 7).requires_grad_(True)
    generator_adversarial_loss(disc(r)).backward()
    assert r.grad is not None and r.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- GAN losses


def test_hinge_and_generator_losses_on_known_logits() -> None:
    real = torch.tensor([[2.0, 0.5], [1.0, -1.0]])
    fake = torch.tensor([[-2.0, 0.0], [0.5, -0.5]])
    # real: relu(1 - r) = 0, 0.5, 0, 2 -> 0.625; fake: relu(1 + f) = 0, 1, 1.5, 0.5 -> 0.75
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.625 + 0.75))
    assert generator_adversarial_loss(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx(-2.0)
    assert generator_adversarial_loss(torch.tensor([1.0, 2.0], dtype=torch.bfloat16)).dtype == torch.float32


def test_l2_loss() -> None:
    x = torch.zeros(1, 3, 2, 2)
    y = torch.full((1, 3, 2, 2), 0.5)
    assert l2_loss(x, y).item() == pytest.approx(0.25)


def test_lecam_ema_three_steps() -> None:
    ema = LeCamEMA(decay=0.9)
    assert ema.ema_real_logits_mean.tolist() == [0.0] and ema.ema_fake_logits_mean.tolist() == [0.0]
    steps = [
        (torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -3.0])),  # means 2, -2
        (torch.tensor([4.0, 4.0]), torch.tensor([1.0, -1.0])),  # means 4, 0
        (torch.tensor([[-1.0]]), torch.tensor([[0.0, 2.0]])),  # means -1, 1
    ]
    real_ema = fake_ema = 0.0
    for real, fake in steps:
        ema.update(real, fake)
        real_ema = 0.9 * real_ema + 0.1 * real.mean().item()
        fake_ema = 0.9 * fake_ema + 0.1 * fake.mean().item()
        assert ema.ema_real_logits_mean.item() == pytest.approx(real_ema, abs=1e-6)
        assert ema.ema_fake_logits_mean.item() == pytest.approx(fake_ema, abs=1e-6)
    assert (real_ema, fake_ema) == pytest.approx((0.422, -0.062))


def test_lecam_regularizer_on_known_tensors_and_order() -> None:
    ema = LeCamEMA(decay=0.5)
    ema.load_state_dict({"ema_real_logits_mean": torch.tensor([0.5]), "ema_fake_logits_mean": torch.tensor([-0.25])})
    real = torch.tensor([0.0, 2.0])  # mean 1
    fake = torch.tensor([0.0, 0.5])  # mean 0.25
    # relu(1 - (-0.25))^2 + relu(0.5 - 0.25)^2 = 1.5625 + 0.0625
    assert ema.regularizer(real, fake).item() == pytest.approx(1.625)
    # Both terms clipped: relu(-1 + 0.25) = 0, relu(0.5 - 1) = 0.
    assert ema.regularizer(torch.tensor([-1.0]), torch.tensor([1.0])).item() == 0.0

    # The D loss uses the EMAs from before the step, then updates them.
    total, parts = discriminator_loss(real, fake, ema, lecam_weight=0.001)
    expected_hinge = 0.5 * ((1.0 + 0.0) / 2 + (1.0 + 1.5) / 2)
    assert parts["hinge"].item() == pytest.approx(expected_hinge)
    assert parts["lecam"].item() == pytest.approx(0.001 * 1.625)
    assert total.item() == pytest.approx(expected_hinge + 0.001 * 1.625)
    assert ema.ema_real_logits_mean.item() == pytest.approx(0.75)
    assert ema.ema_fake_logits_mean.item() == pytest.approx(0.0)

    # Gradient reaches the logits, and weight 0 leaves the EMAs alone.
    logits = torch.tensor([3.0, 1.0], requires_grad=True)
    ema.regularizer(logits, torch.tensor([0.0])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    before = ema.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    _, parts = discriminator_loss(real, fake, ema, lecam_weight=0.0)
    assert parts["lecam"].item() == 0.0
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in before.items())


def test_lecam_state_dict_round_trip(tmp_path: Path) -> None:
    ema = LeCamEMA()
    for step in range(3):
        ema.update(torch.full((2, 1, 16, 16), float(step + 1)), torch.full((2, 1, 16, 16), -float(step)))
    assert set(ema.state_dict()) == {"ema_real_logits_mean", "ema_fake_logits_mean"}
    path = tmp_path / "lecam.pt"
    torch.save(ema.state_dict(), path)
    restored = LeCamEMA()
    restored.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    for key, value in ema.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key])
    expected_real = sum(0.001 * 0.999 ** (2 - s) * (s + 1) for s in range(3))
    assert restored.ema_real_logits_mean.item() == pytest.approx(expected_real, rel=1e-5)
    assert not math.isclose(restored.ema_fake_logits_mean.item(), 0.0)


# ------------------------------------------------------------------------------------ self-distillation


def test_self_distillation_is_the_feature_mse_to_a_frozen_copy_of_the_encoder() -> None:
    from unilip.training.losses import FeatureTeacher, self_distillation_loss
    from unilip.variants import load_tokenizer

    student = load_tokenizer("tiny", random_init=True, seed=0)
    teacher = FeatureTeacher(student)
    # The copy holds the understanding path only, and the student keeps every part.
    assert teacher.tokenizer.decoder is None and teacher.tokenizer.down_mlp is None
    assert student.decoder is not None and student.down_mlp is not None
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.tokenizer.training

    images = _images(2, 56, 6)
    with torch.no_grad():
        student.mlp1.linear_2.bias.add_(0.1)  # the student moves; the teacher must not
    features = student.encode_features(images)
    loss = self_distillation_loss(features, teacher, images)
    expected = F.mse_loss(features.float(), load_tokenizer("tiny", random_init=True, seed=0).encode_features(images))
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    loss.backward()
    assert student.mlp1.linear_2.bias.grad is not None and teacher.calls == 1
