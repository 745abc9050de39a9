"""Inference pipelines: preprocessing, the model call, sampling, postprocessing.

Reconstruction (``reconstruct_files``, used by ``unilip reconstruct``) and the generator's
text-to-image, editing and chat (``UniLIPPipeline``, used by ``unilip generate`` / ``unilip edit``).
The sampler lives here, not in the model file (the diffusers way): ``flow_dpm_solver`` (the scheduler),
``initial_noise`` (one noise tensor per seed) and ``sample_latents`` (the denoising loop with CFG).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from unilip.data import MAX_UPSCALE, ImageReadError, eval_transform, printable, read_image, upscale_factor
from unilip.pixels import to_uint8
from unilip.tokenizer import UniLIPTokenizer

if TYPE_CHECKING:
    from diffusers import DPMSolverMultistepScheduler, SanaTransformer2DModel

    from unilip.generator import UniLIPGenerator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructionRecord:
    """What happened to one input image."""

    image: str
    status: str  # "ok" or "failed"
    psnr_db: float | None = None
    input_path: str | None = None
    output_path: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if v is not None})


def psnr_uint8(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (data range 255); inf when they are identical."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(reference, reconstruction, data_range=255))


Reconstructor = Callable[[torch.Tensor], torch.Tensor]


def tokenizer_reconstructor(model: UniLIPTokenizer) -> Reconstructor:
    """``1 x 3 x H x W`` float32 images in [0, 1] (CPU) -> the tokenizer's reconstructions, float32 on the CPU."""

    def reconstruct(pixels: torch.Tensor) -> torch.Tensor:
        parameter = next(model.parameters())
        with torch.inference_mode():
            return model.reconstruct(pixels.to(parameter.device, parameter.dtype)).float().cpu()

    return reconstruct


def reconstruct_image(
    model: UniLIPTokenizer | Reconstructor, image: Image.Image, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess (shorter-side resize, centre crop), reconstruct; returns (input, reconstruction) uint8 HWC.

    ``model``: a UniLIP tokenizer, or any function from ``1 x 3 x S x S`` images in [0, 1] to reconstructions
    (an ``ADAPTER:MODEL``'s ``reconstruct``)."""
    reconstruct = tokenizer_reconstructor(model) if isinstance(model, torch.nn.Module) else model
    pixels = eval_transform(image, size).unsqueeze(0)
    recon = reconstruct(pixels)
    return to_uint8(pixels.float())[0].cpu().numpy(), to_uint8(recon.float())[0].cpu().numpy()


def _unique_stem(name: str, used: set[str]) -> str:
    stem, index = name, 1
    while stem in used:
        index += 1
        stem = f"{name}-{index}"
    used.add(stem)
    return stem


def reconstruct_files(
    model: UniLIPTokenizer | Reconstructor,
    sources: Iterable[tuple[str, Path | Image.Image] | tuple[str, Path | Image.Image, str]],
    out_dir: Path,
    size: int,
    progress: bool = True,
) -> list[ReconstructionRecord]:
    """Reconstruct each source (a file path or an in-memory image, with a display name) into ``out_dir``.

    Writes ``<stem>.input.png`` (the preprocessed input) and ``<stem>.recon.png``; the stem is the name's file
    stem, or a source's third element when it has one (a relative path without extension, for the images of a
    folder: their reconstructions keep the folder's layout). An unreadable file becomes a ``failed`` record
    with its reason, and the rest go on.
    """
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[ReconstructionRecord] = []
    used: set[str] = set()
    for name, source, *output in tqdm(list(sources), desc="reconstruct", unit="img", disable=not progress):
        try:
            image = source if isinstance(source, Image.Image) else read_image(source)
        except ImageReadError as error:
            logger.error("skipping %s", error)
            records.append(ReconstructionRecord(image=name, status="failed", error=str(error)))
            continue
        enlarged = upscale_factor(*image.size, size)
        if enlarged > MAX_UPSCALE:
            logger.warning(
                "%s is %dx%d: enlarged %.1fx to reach %d px; its reconstruction says little about the tokenizer",
                printable(name),
                *image.size,
                enlarged,
                size,
            )
        original, recon = reconstruct_image(model, image, size)
        stem = _unique_stem(output[0] if output else Path(name).stem, used)
        input_path, output_path = out_dir / f"{stem}.input.png", out_dir / f"{stem}.recon.png"
        output_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(original).save(input_path)
        Image.fromarray(recon).save(output_path)
        records.append(
            ReconstructionRecord(
                image=name,
                status="ok",
                psnr_db=psnr_uint8(original, recon),
                input_path=str(input_path),
                output_path=str(output_path),
            )
        )
    return records


# ----------------------------------------------------------------------------------- generation
def pil_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """A reference image as the generator reads it: RGB, resized straight to ``size`` x ``size``
    (bicubic, aspect not kept, as upstream's ``PIL.resize((448, 448))``), ``1 x 3 x S x S`` in [0, 1]."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``B x 3 x H x W`` in [0, 1] -> PIL images (``round(x * 255)``, as upstream's ``numpy_to_pil``)."""
    return [Image.fromarray(array) for array in to_uint8(images.float().cpu()).numpy()]


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample: upstream's defaults are 20 DPM-Solver++ steps, CFG 4.5 and flow shift 3.0."""

    steps: int = 20
    guidance: float = 4.5
    flow_shift: float = 3.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1; got {self.steps}")
        if self.flow_shift <= 0:
            raise ValueError(f"flow_shift must be > 0; got {self.flow_shift}")


# ----------------------------------------------------------------------------------- sampling
def flow_dpm_solver(num_train_timesteps: int = 1000, flow_shift: float = 3.0) -> DPMSolverMultistepScheduler:
    """SANA-512's inference scheduler as UniLIP uses it: DPM-Solver++ (2M, midpoint) on flow sigmas, shift 3."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=num_train_timesteps,
        solver_order=2,
        prediction_type="flow_prediction",
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        use_flow_sigmas=True,
        flow_shift=flow_shift,
        final_sigmas_type="zero",
    )


def initial_noise(
    seeds: list[int], shape: tuple[int, ...], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """One noise tensor per seed, each drawn from its own generator: image k depends only on its seed,
    not on how many images are generated together (upstream draws them in sequence from one RNG)."""
    noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed))) for seed in seeds]
    return torch.stack(noise).to(device=device, dtype=dtype)


@torch.no_grad()
def sample_latents(
    dit: SanaTransformer2DModel,
    condition: torch.Tensor,
    condition_mask: torch.Tensor,
    null_condition: torch.Tensor,
    null_mask: torch.Tensor,
    seeds: list[int],
    steps: int = 20,
    guidance: float = 4.5,
    flow_shift: float = 3.0,
    progress: bool = False,
) -> torch.Tensor:
    """Denoise one latent per seed with classifier-free guidance; both branches run in one batch.

    Args:
        condition, condition_mask: ``B x L x C`` and ``B x L`` from :meth:`UniLIPGenerator.condition`.
        null_condition, null_mask: the same for the null prompts (``"Generate an image."`` /
            ``"Edit the image.\\n<image>"`` with the same reference image), padded to the same length L.
        seeds: one per latent; the conditional and null branches share each latent's noise.
        steps, guidance, flow_shift: sampler settings (upstream: 20, 4.5, 3.0), all honoured.

    Returns:
        ``B x 32 x h x w`` latents in the DiT's space (divide by ``unilip_factor`` to decode).
    """
    if condition.shape != null_condition.shape:
        raise ValueError(
            f"condition {tuple(condition.shape)} and null condition {tuple(null_condition.shape)} "
            "must be padded to the same shape"
        )
    if len(seeds) != condition.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {condition.shape[0]} conditions")
    config = dit.config
    shape = (config.in_channels, config.sample_size, config.sample_size)
    parameter = next(dit.parameters())
    latents = initial_noise(seeds, shape, parameter.device, torch.float32)
    scheduler = flow_dpm_solver(flow_shift=flow_shift)
    scheduler.set_timesteps(steps, device=parameter.device)
    both_condition = torch.cat([null_condition, condition]).to(parameter.dtype)
    both_mask = torch.cat([null_mask, condition_mask])
    from tqdm.auto import tqdm

    for timestep in tqdm(scheduler.timesteps, desc="denoise", disable=not progress):
        model_input = torch.cat([latents, latents]).to(parameter.dtype)
        velocity = dit(
            model_input,
            encoder_hidden_states=both_condition,
            timestep=timestep.expand(model_input.shape[0]),
            encoder_attention_mask=both_mask,
            return_dict=False,
        )[0].float()
        null_velocity, conditional_velocity = velocity.chunk(2)
        guided = null_velocity + guidance * (conditional_velocity - null_velocity)
        latents = scheduler.step(guided, timestep, latents, return_dict=False)[0]
    return latents


class UniLIPPipeline:
    """Text-to-image, editing and image chat with one UniLIP generator and its text tokenizer.

    Every argument is honoured (upstream fixes the step count at 20 and drops some guidance scales and
    generators). Each image has its own seed: image ``k`` of a prompt uses ``seed + k`` for its initial
    noise (a generator of its own), shared by the conditional and null branches.

    An image is bit-identical whatever else is generated with it, because every model call has one shape
    whatever the request: CPU and GPU kernels pick their blocking by shape (a 1-row GEMM is a GEMV), so the
    same row computed in batches of 1, 3 or 8 differs in the last float bits, and now and then by a grey
    level in the PNG. So (1) images are batched only with images whose prompt pair (conditional, null) has
    the same padded token length, which each row has alone (right padding changes the LLM's and the DiT's
    attention sums at float rounding), and (2) every batch is filled up to ``batch_size`` rows by repeating
    its last row, whose outputs are dropped. The price is the filler rows of a short batch; ``batch_size=1``
    never pays it (and never batches). Images depend on ``batch_size`` at float rounding, never on the call.
    """

    def __init__(self, model: UniLIPGenerator, text_tokenizer, batch_size: int = 8) -> None:
        from unilip.prompts import IMG_CONTEXT, IMG_END, IMG_START, special_token_ids

        ids = special_token_ids(text_tokenizer)
        expected = {
            IMG_START: model.config.image_start_id,
            IMG_END: model.config.image_end_id,
            IMG_CONTEXT: model.config.image_context_id,
        }
        if ids != expected:
            raise ValueError(
                f"the text tokenizer's image tokens {ids} differ from the model's {expected}: "
                "this tokenizer does not belong to this model"
            )
        vocab = model.language_model.embed_tokens.num_embeddings
        if len(text_tokenizer) > vocab:
            raise ValueError(
                f"the text tokenizer has {len(text_tokenizer)} tokens but the LLM's embedding only {vocab}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.model, self.text_tokenizer, self.batch_size = model.eval(), text_tokenizer, batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        return self.model.tokenizer.config.image_size

    # ------------------------------------------------------------------ the shared sampler
    @torch.no_grad()
    def _sample(
        self,
        user_texts: list[str],
        null_texts: list[str],
        images: torch.Tensor | None,
        seeds: list[int],
        settings: SamplerSettings,
        progress: bool = False,
    ) -> torch.Tensor:
        from unilip.prompts import TokenizedPrompts, generation_prompt, tokenize

        tokens = self.model.config.image_tokens
        prompts = [generation_prompt(text, tokens) for text in user_texts]
        nulls = [generation_prompt(text, tokens) for text in null_texts]
        # Tokenised together: one padded length for both branches, so they stack into one batch.
        both = tokenize(self.text_tokenizer, prompts + nulls).to(self.device)
        count = len(prompts)
        conditional = TokenizedPrompts(both.input_ids[:count], both.attention_mask[:count])
        null = TokenizedPrompts(both.input_ids[count:], both.attention_mask[count:])
        if images is not None:
            images = images.to(self.device, next(self.model.tokenizer.encoder.parameters()).dtype)
        condition, mask = self.model.condition(conditional.input_ids, conditional.attention_mask, images)
        null_condition, null_mask = self.model.condition(null.input_ids, null.attention_mask, images)
        latents = sample_latents(
            self.model.dit,
            condition,
            mask,
            null_condition,
            null_mask,
            seeds,
            steps=settings.steps,
            guidance=settings.guidance,
            flow_shift=settings.flow_shift,
            progress=progress,
        )
        return self.model.latent_to_image(latents)

    def _pair_length(self, user_text: str, null_text: str) -> int:
        """The padded token length of one (conditional, null) prompt pair, as tokenised alone."""
        from unilip.prompts import generation_prompt

        tokens = self.model.config.image_tokens
        return max(
            len(self.text_tokenizer(generation_prompt(text, tokens), add_special_tokens=False)["input_ids"])
            for text in (user_text, null_text)
        )

    def _sample_rows(
        self,
        user_texts: list[str],
        null_texts: list[str],
        images: list[torch.Tensor] | None,
        seeds: list[int],
        settings: SamplerSettings,
        progress: bool = False,
    ) -> list[torch.Tensor]:
        """One ``3 x H x W`` image per row, each computed in a batch of exactly ``batch_size`` rows of its
        own padded length (see the class docstring), so that it does not depend on the other rows."""
        out: list[torch.Tensor | None] = [None] * len(seeds)
        groups: dict[int, list[int]] = {}
        for row, (user, null) in enumerate(zip(user_texts, null_texts, strict=True)):
            groups.setdefault(self._pair_length(user, null), []).append(row)
        for rows in groups.values():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                # Filler rows repeat the last one: the call's shape is the same for every chunk.
                filled = chunk + [chunk[-1]] * (self.batch_size - len(chunk))
                pixels = self._sample(
                    [user_texts[row] for row in filled],
                    [null_texts[row] for row in filled],
                    None if images is None else torch.cat([images[row] for row in filled]),
                    [seeds[row] for row in filled],
                    settings,
                    progress,
                )
                for row, image in zip(chunk, pixels[: len(chunk)], strict=True):
                    out[row] = image
        return [image for image in out if image is not None]

    # ------------------------------------------------------------------ public
    def generate(
        self,
        prompts: list[str],
        n: int = 1,
        seed: int = 0,
        steps: int = 20,
        guidance: float = 4.5,
        flow_shift: float = 3.0,
        progress: bool = False,
    ) -> list[list[Image.Image]]:
        """``n`` images per prompt (448 px for the real models); image ``k`` of a prompt uses ``seed + k``.

        Prompts are captions; the pipeline writes ``"Generate an image: {caption}"`` and the null
        prompt ``"Generate an image."`` around them.
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings (got one string)")
        return self.generate_many(prompts, [seed] * len(prompts), n, steps, guidance, flow_shift, progress)

    def generate_many(
        self,
        prompts: list[str],
        seeds: list[int],
        n: int = 1,
        steps: int = 20,
        guidance: float = 4.5,
        flow_shift: float = 3.0,
        progress: bool = False,
    ) -> list[list[Image.Image]]:
        """:meth:`generate` with a seed per prompt: image ``k`` of prompt ``i`` uses ``seeds[i] + k``, and is
        the same bit for bit whatever the other prompts of the call (so callers may batch independent requests)."""
        from unilip.prompts import NULL_T2I_PROMPT, t2i_text

        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings (got one string)")
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts and {len(seeds)} seeds: give one seed per prompt")
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        settings = SamplerSettings(steps, guidance, flow_shift)
        jobs = [(index, k) for index in range(len(prompts)) for k in range(n)]
        pixels = self._sample_rows(
            [t2i_text(prompts[index]) for index, _ in jobs],
            [NULL_T2I_PROMPT] * len(jobs),
            None,
            [int(seeds[index]) + k for index, k in jobs],
            settings,
            progress,
        )
        out: list[list[Image.Image]] = [[] for _ in prompts]
        for (index, _), image in zip(jobs, pixels, strict=True):
            out[index].extend(tensor_to_pil(image[None]))
        return out

    def edit(
        self,
        image: Image.Image,
        instruction: str,
        seed: int = 0,
        steps: int = 20,
        guidance: float = 4.5,
        flow_shift: float = 3.0,
        progress: bool = False,
    ) -> Image.Image:
        """One edited image: ``"Edit the image: {instruction}\\n<image>"`` with the reference image,
        null prompt ``"Edit the image.\\n<image>"`` with the same image (upstream: CFG 4.5; 4.0 for 3B
        on ImgEdit)."""
        return self.edit_many([image], [instruction], [seed], steps, guidance, flow_shift, progress)[0]

    def edit_many(
        self,
        images: list[Image.Image],
        instructions: list[str],
        seeds: list[int],
        steps: int = 20,
        guidance: float = 4.5,
        flow_shift: float = 3.0,
        progress: bool = False,
    ) -> list[Image.Image]:
        """Batched :meth:`edit`: one output per (image, instruction, seed), each the same bit for bit
        whatever the other edits of the call."""
        from unilip.prompts import NULL_EDIT_PROMPT, edit_text

        if not (len(images) == len(instructions) == len(seeds)):
            raise ValueError(
                f"{len(images)} images, {len(instructions)} instructions and {len(seeds)} seeds: "
                "give one of each per edit"
            )
        settings = SamplerSettings(steps, guidance, flow_shift)
        edited = self._sample_rows(
            [edit_text(text) for text in instructions],
            [NULL_EDIT_PROMPT] * len(images),
            [pil_to_tensor(image, self.image_size) for image in images],
            [int(seed) for seed in seeds],
            settings,
            progress,
        )
        return [tensor_to_pil(image[None])[0] for image in edited]

    @torch.no_grad()
    def answer(self, image: Image.Image | None, question: str, max_new_tokens: int = 64) -> str:
        """InternVL3 chat about an image through transformers' ``InternVLForConditionalGeneration``,
        whose vision path is this model's UniLIP encoder; greedy decoding."""
        from unilip.prompts import chat_prompt, tokenize

        text = chat_prompt(question, self.model.config.image_tokens, with_image=image is not None)
        batch = tokenize(self.text_tokenizer, [text]).to(self.device)
        kwargs = {}
        if image is not None:
            pixels = pil_to_tensor(image, self.image_size).to(self.device)
            tokenizer = self.model.tokenizer
            kwargs["pixel_values"] = ((pixels - tokenizer.image_mean) / tokenizer.image_std).to(
                next(tokenizer.encoder.parameters()).dtype
            )
        output = self.model.mllm.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=self.text_tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=self.text_tokenizer.pad_token_id,
            **kwargs,
        )
        return self.text_tokenizer.decode(output[0, batch.input_ids.shape[1] :], skip_special_tokens=True).strip()


def load_pipeline(
    name_or_path: str | Path,
    weights: str | Path | None = None,
    *,
    random_init: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
) -> UniLIPPipeline:
    """A pipeline for a generator: a shipped model (``tiny-digits``), a saved or released model
    directory, or a variant (``random_init`` for tests). See ``unilip.variants.load_generator``.

    ``dtype`` is the weights' dtype, except the pixel decoder's: it stays float32 as upstream decodes
    (the generator keeps it so however it is loaded or later cast)."""
    from unilip.prompts import load_text_tokenizer
    from unilip.variants import load_generator

    model, text_tokenizer_dir = load_generator(
        name_or_path, weights, random_init=random_init, seed=seed, dtype=dtype, device=device
    )
    return UniLIPPipeline(model, load_text_tokenizer(text_tokenizer_dir), batch_size=batch_size)
