"""LPIPS: equal to the lpips package called directly, with a backbone file in torchvision's format.

The ImageNet backbones cannot be downloaded here, so the tests save *random* torchvision AlexNet / VGG16
state dicts (the full ``torchvision.models.alexnet().state_dict()``, classifier included, exactly the
format of ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``) and load them through the real code path.
The linear heads are the real ones shipped inside the lpips package.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from evals.metrics import LPIPS_BACKBONES, LPIPSMetric, MetricUnavailable, WeightsKeyError, WeightsNotFoundError


def _torchvision_state_dict(net: str, seed: int) -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.alexnet() if net == "alex" else torchvision.models.vgg16()
    return model.state_dict()


@pytest.fixture(scope="module")
def backbone_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lpips")
    files = {}
    for net in ("alex", "vgg"):
        path = root / LPIPS_BACKBONES[net]["filename"]
        torch.save(_torchvision_state_dict(net, seed=7), path)
        files[net] = path
    return files


@pytest.fixture(scope="module")
def images01() -> tuple[torch.Tensor, torch.Tensor]:
    """Real photo crops in [0, 1] (B x 3 x 64 x 64) and noisy versions of them."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    target = torch.from_numpy(np.stack([p[100:228:2, 100:228:2] for p in photos])).permute(0, 3, 1, 2) / 255.0
    generator = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.02, 0.05, 0.1, 0.3]).view(4, 1, 1, 1)
    preds = (target + torch.randn(target.shape, generator=generator) * levels).clamp(0.0, 1.0)
    return preds.float(), target.float()


def _reference_lpips(net: str, backbone: dict[str, torch.Tensor]) -> torch.nn.Module:
    """lpips.LPIPS with the backbone copied in by hand: each conv of each slice from torchvision's index."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained=` deprecation, from lpips
        reference = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    copied = 0
    with torch.no_grad():
        for slice_module in (getattr(reference.net, f"slice{i}") for i in range(1, reference.net.N_slices + 1)):
            for index, layer in slice_module.named_children():
                if isinstance(layer, torch.nn.Conv2d):
                    layer.weight.copy_(backbone[f"features.{index}.weight"])
                    layer.bias.copy_(backbone[f"features.{index}.bias"])
                    copied += 1
    assert copied == (5 if net == "alex" else 13)  # AlexNet has 5 convs, VGG16 13
    return reference.eval()


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_equals_lpips_package(net, backbone_files, images01):
    preds, target = images01
    metric = LPIPSMetric(net, backbone_weights_path=backbone_files[net])
    ours = metric(preds, target)
    assert ours.dtype == torch.float64 and ours.shape == (4,)

    backbone = torch.load(backbone_files[net], map_location="cpu", weights_only=True)
    reference = _reference_lpips(net, backbone)
    with torch.no_grad():
        expected = reference(preds * 2 - 1, target * 2 - 1).flatten().double()
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert len(set(np.round(expected.numpy(), 4))) == 4  # distinct, non-trivial distances
    assert (ours[1:] > 0).all()

    same = metric(target, target)
    torch.testing.assert_close(same, torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-7)

    fingerprint = metric.fingerprint
    assert fingerprint["net"] == net
    assert fingerprint["backbone_sha256"] == hashlib.sha256(backbone_files[net].read_bytes()).hexdigest()
    assert fingerprint["backbone_file"] == LPIPS_BACKBONES[net]["filename"]


def test_missing_backbone_raises_metric_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for net in ("alex", "vgg"):
        spec = LPIPS_BACKBONES[net]
        monkeypatch.delenv(spec["env_var"], raising=False)
        with pytest.raises(MetricUnavailable) as excinfo:
            LPIPSMetric(net)
        message = str(excinfo.value)
        assert spec["filename"] in message and spec["env_var"] in message
        assert str(tmp_path / "hub" / "checkpoints" / spec["filename"]) in message
    # A named path that does not exist is an error (FileNotFoundError), never "not computed".
    with pytest.raises(WeightsNotFoundError, match="absent.pth") as excinfo:
        LPIPSMetric("alex", backbone_weights_path=tmp_path / "absent.pth")
    assert isinstance(excinfo.value, FileNotFoundError) and not isinstance(excinfo.value, MetricUnavailable)


def test_backbone_env_var(backbone_files, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(LPIPS_BACKBONES["alex"]["env_var"], str(backbone_files["alex"]))
    assert LPIPSMetric("alex").backbone_path == backbone_files["alex"]


def test_backbone_keys_are_checked(backbone_files, tmp_path):
    state = torch.load(backbone_files["alex"], map_location="cpu", weights_only=True)
    del state["features.3.weight"]
    state["features.99.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(WeightsKeyError) as excinfo:
        LPIPSMetric("alex", backbone_weights_path=broken)
    assert "features.3.weight" in str(excinfo.value) and "features.99.weight" in str(excinfo.value)


def test_input_contract(backbone_files, images01):
    metric = LPIPSMetric("alex", backbone_weights_path=backbone_files["alex"])
    preds, target = images01
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric(preds * 2 - 1, target)
    with pytest.raises(ValueError, match="floating"):
        metric((preds * 255).to(torch.uint8), target)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        metric(preds[:, :1], target[:, :1])
    with pytest.raises(ValueError, match="differ"):
        metric(preds[:2], target)
    with pytest.raises(ValueError, match="net"):
        LPIPSMetric("squeeze", backbone_weights_path=backbone_files["alex"])


def test_legacy_format_backbone_gives_the_same_distances(backbone_files, images01, tmp_path):
    state = torch.load(backbone_files["alex"], map_location="cpu", weights_only=True)
    legacy = tmp_path / "alexnet-legacy.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    preds, target = images01
    expected = LPIPSMetric("alex", backbone_weights_path=backbone_files["alex"])(preds, target)
    torch.testing.assert_close(
        LPIPSMetric("alex", backbone_weights_path=legacy)(preds, target), expected, rtol=0, atol=0
    )


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unusable_backbone_files_are_one_line_errors(tmp_path):
    from unilip.checkpoints import CheckpointError

    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "payload": _Payload()}, evil)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    for path, needle in ((evil, "pickled Python objects"), (garbage, "not a torch.save checkpoint")):
        with pytest.raises(CheckpointError, match=needle) as excinfo:
            LPIPSMetric("alex", backbone_weights_path=path)
        assert str(path) in str(excinfo.value) and "alexnet-owt-7be5be79.pth" in str(excinfo.value)
