"""``diffusers-ae:DIR``: a diffusers image autoencoder reconstructs (SD / SDXL / FLUX VAEs, DC-AE).

What it does that a bare ``vae(x)`` call does not, so that its numbers compare with UniLIP's:

- Images enter in [-1, 1] (the diffusers convention) and leave clamped to [0, 1].
- ``AutoencoderKL`` encodes to the posterior *mode* (its mean), not a sample: reconstructions are
  deterministic and do not depend on a seed. ``AutoencoderDC``'s encoder is deterministic already.
- The latent goes through the model's own conventions, as its diffusion pipelines use it: ``shift_factor``,
  ``latents_mean``/``latents_std`` when the config has them, and ``scaling_factor``; the decoder gets the
  inverse. For reconstruction they cancel up to float rounding; they are applied so that the latent is the
  one a diffusion model of this VAE sees.
- Resolutions must be a multiple of the spatial compression (8 for SD-VAE, 32 for DC-AE f32): checked
  before the model loads. The native size is the config's ``sample_size`` (DC-AE configs have none: pass
  ``--size``).
- ``float16`` with ``force_upcast`` in the config runs in float32, as the diffusers pipelines do.

``DIR`` is an autoencoder directory (``config.json`` + weights), a pipeline directory with a ``vae/``
subfolder, or a repo id of either in the local Hugging Face cache. Loading is strict: a missing, unexpected
or mis-shaped weight is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from evals.adapter import ModelAdapter, ModelInfo, local_model_path, portable_config

# class name -> how its config gives the spatial compression (the factor every resolution must be a multiple of)
SUPPORTED = {
    "AutoencoderKL": lambda config: 2 ** (len(config["block_out_channels"]) - 1),
    "AutoencoderDC": lambda config: 2 ** (len(config["encoder_block_out_channels"]) - 1),
}


def _autoencoder_dir(model: str) -> tuple[Path, dict[str, Any]]:
    """(directory holding the autoencoder's config.json, that config), for ``DIR`` or ``DIR/vae``."""
    path = local_model_path(model, "a diffusers autoencoder directory (config.json + weights) or a pipeline with vae/")
    for directory in (path, path / "vae"):
        config_path = directory / "config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            name = config.get("_class_name")
            if name not in SUPPORTED:
                raise ValueError(
                    f"{config_path}: _class_name {name!r} is not a diffusers image autoencoder this adapter takes "
                    f"(it takes {', '.join(SUPPORTED)})"
                )
            return directory, config
    raise FileNotFoundError(f"{path}: no config.json (nor vae/config.json): not a diffusers autoencoder directory")


def _native_size(config: dict[str, Any]) -> int | None:
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)):
        return int(size[0]) if len(set(size)) == 1 else None
    return int(size) if size else None


class DiffusersAutoencoderAdapter(ModelAdapter):
    """Any diffusers ``AutoencoderKL`` (SD, SDXL, FLUX VAEs) or ``AutoencoderDC`` (DC-AE) behind ``reconstruct``."""

    capabilities = frozenset({"reconstruct"})
    summary = "diffusers AutoencoderKL (SD/SDXL/FLUX VAEs) or AutoencoderDC (DC-AE): posterior mode, own scaling"

    def __init__(self, vae: Any, model_ref: str, directory: Path, dtype: str) -> None:
        self.vae = vae
        self.model_ref = model_ref
        self.directory = directory
        self.dtype = dtype
        self.config = dict(vae.config)
        self.size_multiple = SUPPORTED[type(vae).__name__](self.config)
        self.native_size = _native_size(self.config)

    @classmethod
    def probe(cls, model: str, seed: int = 0, device: str = "cpu", dtype: str = "float32") -> ModelInfo:
        _, config = _autoencoder_dir(model)
        return ModelInfo(
            "diffusers-ae",
            f"diffusers-ae:{model}",
            cls.capabilities,
            _native_size(config),
            size_multiple=SUPPORTED[config["_class_name"]](config),
        )

    @classmethod
    def load(
        cls, model: str, seed: int = 0, device: str = "cpu", dtype: str = "float32"
    ) -> DiffusersAutoencoderAdapter:
        import diffusers

        directory, config = _autoencoder_dir(model)
        vae_class = getattr(diffusers, config["_class_name"])
        weights_dtype = getattr(torch, dtype)
        if weights_dtype == torch.float16 and config.get("force_upcast"):
            weights_dtype = torch.float32  # as the diffusers pipelines run such VAEs: float16 overflows
        vae, info = vae_class.from_pretrained(directory, torch_dtype=weights_dtype, output_loading_info=True)
        problems = {k: info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
        if problems:
            raise ValueError(f"{directory}: the weights do not fill {vae_class.__name__} exactly: {problems}")
        return cls(vae.to(device).eval(), model, directory, str(weights_dtype).removeprefix("torch."))

    def describe(self) -> dict[str, Any]:
        kl = isinstance(self.config.get("block_out_channels"), (list, tuple))
        return {
            "adapter": "diffusers-ae",
            "model": f"diffusers-ae:{self.model_ref}",
            "class": type(self.vae).__name__,
            "weights_source": str(self.directory),
            "weights_sha256": self.weights_digest(self.vae),
            "config": portable_config(self.config),
            "dtype": self.dtype,
            "native_size": self.native_size,
            "size_multiple": self.size_multiple,
            "encoding": "posterior mode (mean), not a sample" if kl else "deterministic encoder",
            "latent_conventions": self._conventions(),
        }

    def _conventions(self) -> dict[str, Any]:
        return {
            "scaling_factor": self.config.get("scaling_factor"),
            "shift_factor": self.config.get("shift_factor"),
            "latents_mean": self.config.get("latents_mean"),
            "latents_std": self.config.get("latents_std"),
        }

    def _latents(self, encoded: Any) -> torch.Tensor:
        if hasattr(encoded, "latent_dist"):
            return encoded.latent_dist.mode()
        return encoded.latent

    def to_latent(self, z: torch.Tensor) -> torch.Tensor:
        """The encoder output in the space the model's diffusion pipelines use."""
        c = self._conventions()
        if c["latents_mean"] is not None and c["latents_std"] is not None:
            mean = torch.tensor(c["latents_mean"], dtype=z.dtype, device=z.device).view(1, -1, 1, 1)
            std = torch.tensor(c["latents_std"], dtype=z.dtype, device=z.device).view(1, -1, 1, 1)
            return (z - mean) * c["scaling_factor"] / std
        return (z - (c["shift_factor"] or 0.0)) * c["scaling_factor"]

    def from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_latent`: what the decoder takes."""
        c = self._conventions()
        if c["latents_mean"] is not None and c["latents_std"] is not None:
            mean = torch.tensor(c["latents_mean"], dtype=latent.dtype, device=latent.device).view(1, -1, 1, 1)
            std = torch.tensor(c["latents_std"], dtype=latent.dtype, device=latent.device).view(1, -1, 1, 1)
            return latent * std / c["scaling_factor"] + mean
        return latent / c["scaling_factor"] + (c["shift_factor"] or 0.0)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(
                f"{self.model_ref}: {height}x{width} images are not a multiple of its spatial compression "
                f"{self.size_multiple}; choose --size as a multiple of {self.size_multiple}"
            )
        parameter = next(self.vae.parameters())
        with torch.inference_mode():
            pixels = images.to(parameter.device, parameter.dtype) * 2 - 1
            latent = self.to_latent(self._latents(self.vae.encode(pixels)))
            decoded = self.vae.decode(self.from_latent(latent)).sample
        return ((decoded.float().clamp(-1, 1) + 1) / 2).cpu()
