"""``diffusers-pipe:DIR``: a diffusers pipeline generates (text to image) or edits (image + instruction).

``DIR`` is a pipeline directory (``model_index.json`` and one subfolder per component) or a repo id of one in the
local Hugging Face cache (never downloaded). What the pipeline can do is read from its class, before any weight
loads: a pipeline whose ``__call__`` takes an ``image`` edits, any other that takes a ``prompt`` generates.

What it does that a bare ``pipe(prompt)`` call does not, so that its images are reproducible and comparable:

- One ``torch.Generator`` (on the CPU, whatever the device) per image: image ``k`` of a prompt uses seed
  ``seed + k``, as UniLIP's pipeline does, and comes from a call of its own. A batched call
  (``num_images_per_prompt=n`` with ``n`` generators) is not bit-identical to a call of one image, even in
  float32 on a CPU (the matmuls of a bigger batch round differently), and the protocol promises that image ``k``
  depends only on (prompt, seed, k).
- Images are made at the model's native size when its configs give one (the denoiser's ``sample_size`` times
  the VAE's spatial compression: 1024 for SANA-1024, 512 for SANA-512), not at a ``__call__`` default that
  ignores the checkpoint (SANA's is 1024 for every checkpoint). Edits keep the pipeline's own handling of the
  input image's size.
- ``--steps`` and ``--guidance`` become ``num_inference_steps`` and ``guidance_scale``; without them the
  pipeline's own defaults apply, and :meth:`DiffusersPipelineAdapter.describe` records the values used either
  way (they change every image, so they enter every stage fingerprint).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch

from evals.adapter import ModelAdapter, ModelInfo, local_model_path, portable_config

_WHAT = "a diffusers pipeline directory (with model_index.json)"
# Denoiser components whose config's ``sample_size`` is the latent size of the pipeline's default image.
_DENOISERS = ("transformer", "unet")
# Libraries whose model components are loaded with a loading report (see ``_load_modules_strictly``).
_LIBRARIES = ("diffusers", "transformers")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pipeline_dir(model: str) -> tuple[Path, dict[str, Any]]:
    """(the pipeline directory, its model_index.json) for a path or a cached repo id."""
    path = local_model_path(model, _WHAT)
    index = _read_json(path / "model_index.json") if path.is_dir() else None
    if index is None:
        raise FileNotFoundError(
            f"{path}: no model_index.json, so not {_WHAT} (a single autoencoder directory is --model diffusers-ae:DIR)"
        )
    return path, index


def _pipeline_class(path: Path, index: dict[str, Any]) -> type:
    """The diffusers class model_index.json names, checked to be a pipeline that takes a prompt."""
    import diffusers

    name = index.get("_class_name")
    found = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(found, type) and issubclass(found, diffusers.DiffusionPipeline)):
        raise ValueError(
            f"{path / 'model_index.json'}: _class_name {name!r} is not a pipeline class of the installed diffusers "
            f"{diffusers.__version__} (a newer diffusers, or a custom pipeline, which this adapter does not run)"
        )
    parameters = inspect.signature(found.__call__).parameters
    if "prompt" not in parameters:
        raise ValueError(f"{path}: {name} takes no prompt: neither a text-to-image nor an editing pipeline")
    if "mask_image" in parameters:
        raise ValueError(f"{path}: {name} needs a mask (inpainting), which neither generate nor edit gives")
    return found


def _load_modules_strictly(path: Path, index: dict[str, Any], dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Every model component (diffusers or transformers) of the pipeline, each loaded with its loading report.

    ``DiffusionPipeline.from_pretrained`` alone would start a transformers component whose weights miss a key
    from random values with only a log line; here a missing, unexpected or mis-shaped weight is an error.
    Tokenizers, schedulers and processors are left to the pipeline's loader.
    """
    import importlib

    modules: dict[str, torch.nn.Module] = {}
    for name, spec in index.items():
        if name.startswith("_") or not (isinstance(spec, list) and len(spec) == 2 and spec[0] in _LIBRARIES):
            continue
        found = getattr(importlib.import_module(spec[0]), str(spec[1]), None)
        if not (isinstance(found, type) and issubclass(found, torch.nn.Module) and hasattr(found, "from_pretrained")):
            continue
        module, info = found.from_pretrained(path / name, dtype=dtype, output_loading_info=True)
        problems = {
            k: sorted(map(str, info[k])) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)
        }
        if problems:
            raise ValueError(f"{path / name}: the weights do not fill {found.__name__} exactly: {problems}")
        modules[name] = module
    return modules


def _capabilities(pipeline_class: type) -> frozenset[str]:
    return frozenset({"edit" if "image" in inspect.signature(pipeline_class.__call__).parameters else "generate"})


def _sampler(pipeline_class: type, steps: int | None, guidance: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the keywords every call gets, the effective {"steps", "guidance"}): given values, else ``__call__``'s defaults.

    Raises:
        ValueError: a setting the pipeline has no parameter for (refused, never ignored).
    """
    if steps is not None and steps < 1:
        raise ValueError(f"--steps is at least 1; got {steps}")
    parameters = inspect.signature(pipeline_class.__call__).parameters
    kwargs: dict[str, Any] = {}
    effective: dict[str, Any] = {}
    for key, parameter, value, flag in (
        ("steps", "num_inference_steps", steps, "--steps"),
        ("guidance", "guidance_scale", guidance, "--guidance"),
    ):
        if parameter not in parameters:
            if value is not None:
                raise ValueError(f"{flag} does not apply to {pipeline_class.__name__} (no {parameter}); drop it")
            effective[key] = None
            continue
        if value is not None:
            kwargs[parameter] = value
        default = parameters[parameter].default
        effective[key] = value if value is not None else (None if default is inspect.Parameter.empty else default)
    return kwargs, effective


def _scalar_size(size: Any) -> int | None:
    """A square size from a config value (an int, or a list/tuple of equal ints), else None."""
    if isinstance(size, (list, tuple)):
        return int(size[0]) if size and len(set(size)) == 1 else None
    return int(size) if isinstance(size, int) and size > 0 else None


def _geometry(path: Path, index: dict[str, Any]) -> tuple[int | None, int]:
    """(native size, size multiple) from the component configs, without loading a weight.

    The native size is the denoiser's ``sample_size`` (in latent pixels) times the VAE's spatial compression
    (``2 ** (len(block channels) - 1)``, as the diffusers pipelines compute it); the multiple is that
    compression times the denoiser's patch size. None / 1 where the configs do not say (FLUX has no sample_size).
    """
    vae = _read_json(path / "vae" / "config.json") if "vae" in index else None
    channels = None if vae is None else vae.get("block_out_channels") or vae.get("encoder_block_out_channels")
    compression = 2 ** (len(channels) - 1) if isinstance(channels, (list, tuple)) and channels else None
    for name in _DENOISERS:
        config = _read_json(path / name / "config.json") if name in index else None
        if config is None:
            continue
        latent = _scalar_size(config.get("sample_size"))
        patch = _scalar_size(config.get("patch_size")) or 1
        native = latent * compression if latent and compression else None
        return native, (compression or 1) * patch
    return None, compression or 1


class DiffusersPipelineAdapter(ModelAdapter):
    """Any diffusers text-to-image pipeline behind ``generate``, or image-editing pipeline behind ``edit``."""

    capabilities = frozenset({"generate"})
    offers = frozenset({"generate", "edit"})
    summary = "any diffusers text-to-image pipeline (SANA, SD, PixArt ...) generates; an image-editing pipeline edits"

    def __init__(
        self,
        pipeline: Any,
        model_ref: str,
        directory: Path,
        dtype: str,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> None:
        pipeline_class = type(pipeline)
        self.pipeline = pipeline
        self.model_ref = model_ref
        self.directory = directory
        self.dtype = dtype
        # Per instance: what this pipeline can do (the class attribute is the default for listings).
        self.capabilities = _capabilities(pipeline_class)
        self.call_kwargs, self.sampler = _sampler(pipeline_class, steps, guidance)
        index = _read_json(directory / "model_index.json") or {}
        self.native_size, self.size_multiple = _geometry(directory, index)
        parameters = inspect.signature(pipeline_class.__call__).parameters
        if self.native_size is not None and "height" in parameters and "width" in parameters:
            self.size_kwargs = {"height": self.native_size, "width": self.native_size}
        else:
            self.size_kwargs = {}

    @classmethod
    def probe(
        cls,
        model: str,
        seed: int = 0,
        device: str = "cpu",
        dtype: str = "float32",
        steps: int | None = None,
        guidance: float | None = None,
    ) -> ModelInfo:
        """What the pipeline does, from model_index.json, the class and the component configs (no weights)."""
        path, index = _pipeline_dir(model)
        pipeline_class = _pipeline_class(path, index)
        _sampler(pipeline_class, steps, guidance)  # refuses a setting the pipeline has no parameter for
        native, multiple = _geometry(path, index)
        return ModelInfo(
            "diffusers-pipe", f"diffusers-pipe:{model}", _capabilities(pipeline_class), native, size_multiple=multiple
        )

    @classmethod
    def load(
        cls,
        model: str,
        seed: int = 0,
        device: str = "cpu",
        dtype: str = "float32",
        steps: int | None = None,
        guidance: float | None = None,
    ) -> DiffusersPipelineAdapter:
        """The pipeline, loaded in ``dtype`` on ``device`` (``seed`` plays no part: every call is seeded)."""
        from diffusers import DiffusionPipeline

        path, index = _pipeline_dir(model)
        pipeline_class = _pipeline_class(path, index)
        _sampler(pipeline_class, steps, guidance)  # before minutes of loading
        weights_dtype = getattr(torch, dtype)
        modules = _load_modules_strictly(path, index, weights_dtype)
        # ``dtype=``: diffusers 0.42 deprecates ``torch_dtype=``. The modules loaded above are passed in as they are.
        pipeline = DiffusionPipeline.from_pretrained(path, dtype=weights_dtype, **modules)
        # A diffusers that does not know ``dtype=`` would drop it quietly, and describe() must not claim a dtype that
        # did not run. (Some modules keep a few layers in float32 on purpose: a module with none in ``dtype`` is wrong.)
        ignored = sorted(
            name for name, module in modules.items() if all(p.dtype != weights_dtype for p in module.parameters())
        )
        if ignored:
            raise ValueError(f"{path}: --dtype {dtype} did not reach {', '.join(ignored)}")
        pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)  # the harness shows its own progress
        return cls(pipeline, model, path, dtype, steps, guidance)

    def _modules(self) -> dict[str, torch.nn.Module]:
        components = self.pipeline.components
        return {name: components[name] for name in sorted(components) if isinstance(components[name], torch.nn.Module)}

    def describe(self) -> dict[str, Any]:
        modules = self._modules()
        config: dict[str, Any] = {}
        for name in sorted(self.pipeline.components):
            component = self.pipeline.components[name]
            raw = getattr(component, "config", None)
            if hasattr(raw, "to_dict"):  # transformers models
                config[name] = portable_config(raw.to_dict())
            elif isinstance(raw, dict):  # diffusers models and schedulers (a FrozenDict)
                config[name] = portable_config(dict(raw))
            else:  # tokenizers, image processors, absent components: the class says what they are
                config[name] = None if component is None else type(component).__name__
        return {
            "adapter": "diffusers-pipe",
            "model": f"diffusers-pipe:{self.model_ref}",
            "pipeline_class": type(self.pipeline).__name__,
            "weights_source": str(self.directory),
            "weights_sha256": self.weights_digest(*modules.values()),
            "digested_components": list(modules),
            "config": config,
            "dtype": self.dtype,
            "native_size": self.native_size,
            "size_multiple": self.size_multiple,
            "sampler": portable_config(self.sampler),
            "seeding": "one torch.Generator per image, seed + k",
        }

    @staticmethod
    def _generator(seed: int) -> torch.Generator:
        # On the CPU whatever the device: the same seed gives the same noise on every machine.
        return torch.Generator(device="cpu").manual_seed(int(seed))

    def generate(self, prompts: list[str], n: int, seed: int) -> list[list[Any]]:
        """``n`` PIL images per prompt; image ``k`` uses seed ``seed + k`` and a call of its own."""
        self.require("generate")
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings (got one string)")
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        out: list[list[Any]] = []
        for prompt in prompts:
            images = []
            for k in range(n):
                result = self.pipeline(
                    prompt=prompt,
                    generator=self._generator(seed + k),
                    output_type="pil",
                    **self.size_kwargs,
                    **self.call_kwargs,
                )
                images.append(result.images[0])
            out.append(images)
        return out

    def edit(self, image: Any, instruction: str, seed: int) -> Any:
        """One edited PIL image of ``image`` following ``instruction``, seeded by ``seed``."""
        self.require("edit")
        if hasattr(image, "convert"):
            image = image.convert("RGB")  # pipelines expect 3 channels; a palette or RGBA source would not do
        result = self.pipeline(
            prompt=instruction,
            image=image,
            generator=self._generator(seed),
            output_type="pil",
            **self.call_kwargs,
        )
        return result.images[0]
