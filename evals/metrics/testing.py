"""Stand-in weights for tests and benchmarks: the right architectures with random values, made offline."""

from __future__ import annotations

from unittest import mock

import torch


def random_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of torch-fidelity's Inception-v3 architecture with random, scale-preserving values."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    # Only the architecture is wanted here: stub the constructor's two loading steps (the download and the
    # load_state_dict) so nothing is fetched. The tests then load the saved file through the real path.
    with (
        mock.patch.object(tfi, "load_state_dict_from_url", return_value={}),
        mock.patch.object(
            tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state_dict, strict=True: None
        ),
    ):
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
            elif isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 2048**-0.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
    return net.state_dict()
