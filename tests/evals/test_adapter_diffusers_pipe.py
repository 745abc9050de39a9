"""The ``diffusers-pipe:`` adapter on tiny random pipelines saved as a user has them: a SANA text-to-image
pipeline (generation, GenEval's layout through the harness, image k the same in any batch) and an
InstructPix2Pix editing pipeline."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_geneval_benchmark import install_fake_official

from evals.adapter import state_dict_digest
from evals.adapters.diffusers_pipe import DiffusersPipelineAdapter
from evals.registry import load_adapter, probe_adapter

# SANA's resolution binning takes only sample_size 16/32/64/128 (512 ... 4096 px); a DC-AE of 6 stages compresses
# 32x, so sample_size 16 is the real SANA-512 geometry: 512 px images from a 16 x 16 latent.
SANA_SIZE = 512


def save_tiny_sana(directory):
    """A random SanaPipeline of tiny components (a word-level tokenizer built offline), saved with save_pretrained."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

    words = ["<pad>", "<bos>", "<eos>", "<unk>", *"a photo of an cat dog bench red blue two on the".split()]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=SANA_SIZE // 32,
    )
    stages = 6
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock",) * stages,
        decoder_block_types=("ResBlock",) * stages,
        encoder_block_out_channels=(4,) * stages,
        decoder_block_out_channels=(4,) * stages,
        encoder_qkv_multiscales=((),) * stages,
        decoder_qkv_multiscales=((),) * stages,
        encoder_layers_per_block=(1,) * stages,
        decoder_layers_per_block=(1,) * stages,
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    text_encoder = Gemma2Model(
        Gemma2Config(
            head_dim=4,
            hidden_size=8,
            intermediate_size=16,
            num_attention_heads=2,
            num_hidden_layers=1,
            num_key_value_heads=1,
            vocab_size=len(words),
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            attn_implementation="eager",
        )
    )
    # The prompt handling is SANA's own (complex human instruction, 300 tokens): unknown words are <unk>.
    pipe = SanaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    pipe.save_pretrained(directory)
    return directory


def save_tiny_instruct_pix2pix(directory):
    """A random StableDiffusionInstructPix2PixPipeline with a character-level CLIP tokenizer written here."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    directory.mkdir(parents=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    # model_max_length: the pipeline pads prompts to it (CLIP's 77; the default is "unbounded").
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,  # noisy latent + the input image's latent
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    eos = vocab["<|endoftext|>"]
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory / "pipe")
    return directory / "pipe"


@pytest.fixture(scope="module")
def sana_dir(tmp_path_factory):
    return save_tiny_sana(tmp_path_factory.mktemp("pipelines") / "sana")


@pytest.fixture(scope="module")
def sana(sana_dir):
    """The tiny SANA through the registry, as ``--model diffusers-pipe:DIR --steps 2`` loads it."""
    return load_adapter(f"diffusers-pipe:{sana_dir}", seed=0, device="cpu", dtype="float32", steps=2)


def pixels(image):
    return np.asarray(image.convert("RGB"))


def same(a, b):
    return a.size == b.size and np.array_equal(pixels(a), pixels(b))


# ---------------------------------------------------------------------- probe, registry, errors
def test_probe_reads_what_the_pipeline_does_from_its_class_and_configs_without_weights(sana_dir, tmp_path, monkeypatch):
    from diffusers import DiffusionPipeline, ModelMixin

    def refuse(*args, **kwargs):
        raise AssertionError("probe loaded weights")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", refuse)
    monkeypatch.setattr(ModelMixin, "from_pretrained", refuse)
    bare = tmp_path / "configs-only"
    shutil.copytree(sana_dir, bare, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    assert not list(bare.rglob("*.safetensors"))
    info = probe_adapter(f"diffusers-pipe:{bare}", seed=0, device="cpu", dtype="float32", steps=2)
    assert info.capabilities == frozenset({"generate"}) and info.loaded is None
    assert (info.adapter, info.model) == ("diffusers-pipe", f"diffusers-pipe:{bare}")
    # sample_size 16 (latent px) x the DC-AE's 32x compression; a resolution must be a multiple of 32 x patch 1.
    assert (info.native_size, info.size_multiple) == (SANA_SIZE, 32)


def test_the_capability_comes_from_the_class_named_in_model_index_alone(tmp_path):
    folder = tmp_path / "index-only"
    folder.mkdir()
    for name, capability in (
        ("StableDiffusionInstructPix2PixPipeline", "edit"),
        ("FluxKontextPipeline", "edit"),
        ("FluxPipeline", "generate"),
    ):
        (folder / "model_index.json").write_text(json.dumps({"_class_name": name}))
        info = probe_adapter(f"diffusers-pipe:{folder}", seed=0, device="cpu", dtype="float32")
        assert info.capabilities == frozenset({capability}) and info.native_size is None, name


def test_the_registry_loads_it_and_refuses_settings_it_does_not_take(sana_dir, sana):
    assert isinstance(sana, DiffusersPipelineAdapter) and sana.capabilities == frozenset({"generate"})
    reference = f"diffusers-pipe:{sana_dir}"
    with pytest.raises(ValueError, match="--weights"):
        load_adapter(reference, seed=0, device="cpu", dtype="float32", weights="x")
    with pytest.raises(ValueError, match="--random-init"):
        probe_adapter(reference, seed=0, device="cpu", dtype="float32", random_init=True)
    with pytest.raises(ValueError, match="--encoder"):
        probe_adapter(reference, seed=0, device="cpu", dtype="float32", encoder="tiny")
    with pytest.raises(ValueError, match="--steps is at least 1"):
        probe_adapter(reference, seed=0, device="cpu", dtype="float32", steps=0)


def test_missing_directories_files_and_classes_are_clear_errors(sana_dir, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        probe_adapter(f"diffusers-pipe:{missing}")
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_adapter(f"diffusers-pipe:{missing}")
    no_index = tmp_path / "no-index"
    shutil.copytree(sana_dir / "vae", no_index)  # an autoencoder directory, not a pipeline
    with pytest.raises(FileNotFoundError, match="no model_index.json.*diffusers-ae"):
        probe_adapter(f"diffusers-pipe:{no_index}")
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "model_index.json").write_text(json.dumps({"_class_name": "MyOwnPipeline"}))
    with pytest.raises(ValueError, match="'MyOwnPipeline' is not a pipeline class"):
        probe_adapter(f"diffusers-pipe:{unknown}")
    (unknown / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInpaintPipeline"}))
    with pytest.raises(ValueError, match="needs a mask"):
        probe_adapter(f"diffusers-pipe:{unknown}")


def test_a_weight_file_that_does_not_fill_its_component_is_refused(sana_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    # The text encoder is a transformers model: the pipeline's loader alone would start the missing key at random.
    broken = tmp_path / "broken"
    shutil.copytree(sana_dir, broken)
    (weights,) = (broken / "text_encoder").glob("*.safetensors")
    tensors = load_file(weights)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"text_encoder.*missing_keys.*{dropped}"):
        load_adapter(f"diffusers-pipe:{broken}", seed=0, device="cpu", dtype="float32")


# ---------------------------------------------------------------------- generation
def test_image_k_depends_only_on_prompt_seed_and_k_in_any_batch(sana):
    p, q = "a photo of a cat", "two red dog on a bench"
    three = sana.generate([p], 3, seed=7)
    assert len(three) == 1 and len(three[0]) == 3
    assert all(isinstance(image, Image.Image) and image.size == (SANA_SIZE, SANA_SIZE) for image in three[0])
    assert same(three[0][2], sana.generate([p], 1, seed=9)[0][0])  # seed 7 + 2 == 9
    assert same(three[0][0], sana.generate([p], 1, seed=7)[0][0])
    together = sana.generate([p, q], 2, seed=7)
    assert [len(images) for images in together] == [2, 2]
    assert same(together[0][1], three[0][1])
    alone = sana.generate([q], 2, seed=7)[0]
    assert all(same(a, b) for a, b in zip(together[1], alone, strict=True))
    # Different seeds, and different prompts at one seed, give different images.
    assert not same(three[0][0], three[0][1]) and not same(three[0][1], three[0][2])
    assert not same(together[0][0], together[1][0])
    with pytest.raises(TypeError):
        sana.generate(p, 1, seed=0)


def test_steps_and_guidance_are_honoured_and_recorded(sana_dir, sana, monkeypatch):
    reference = f"diffusers-pipe:{sana_dir}"
    # Without them: SanaPipeline.__call__'s own defaults, recorded.
    default = load_adapter(reference, seed=0, device="cpu", dtype="float32")
    assert default.describe()["sampler"] == {"steps": 20, "guidance": 4.5} and default.call_kwargs == {}
    assert sana.describe()["sampler"] == {"steps": 2, "guidance": 4.5}
    other = load_adapter(reference, seed=0, device="cpu", dtype="float32", steps=1, guidance=2.0)
    assert other.describe()["sampler"] == {"steps": 1, "guidance": 2.0}
    calls = []
    call = type(other.pipeline).__call__

    def spy(pipe, **kwargs):
        calls.append(kwargs)
        return call(pipe, **kwargs)

    monkeypatch.setattr(type(other.pipeline), "__call__", spy)
    changed = other.generate(["a photo of a cat"], 1, seed=3)[0][0]
    assert calls[0]["num_inference_steps"] == 1 and calls[0]["guidance_scale"] == 2.0
    assert (calls[0]["height"], calls[0]["width"]) == (SANA_SIZE, SANA_SIZE)
    assert calls[0]["generator"].initial_seed() == 3
    assert not same(changed, sana.generate(["a photo of a cat"], 1, seed=3)[0][0])
    assert other.describe()["weights_sha256"] == sana.describe()["weights_sha256"]


def test_describe_is_json_and_its_digest_covers_every_module(sana_dir, sana):
    described = sana.describe()
    assert json.loads(json.dumps(described)) == described
    assert described["adapter"] == "diffusers-pipe" and described["model"] == f"diffusers-pipe:{sana_dir}"
    assert described["pipeline_class"] == "SanaPipeline" and described["weights_source"] == str(sana_dir)
    assert described["dtype"] == "float32" and described["seeding"] == "one torch.Generator per image, seed + k"
    digest = described["weights_sha256"]
    assert len(digest) == 64 and int(digest, 16) >= 0
    components = sana.pipeline.components
    assert described["digested_components"] == ["text_encoder", "transformer", "vae"]
    assert digest == state_dict_digest(components["text_encoder"], components["transformer"], components["vae"])
    assert described["config"]["transformer"]["sample_size"] == SANA_SIZE // 32
    assert described["config"]["text_encoder"]["model_type"] == "gemma2"
    assert described["config"]["scheduler"]["shift"] == 3.0
    assert isinstance(described["config"]["tokenizer"], str)
    # One weight changed in one component changes the digest.
    changed = load_adapter(f"diffusers-pipe:{sana_dir}", seed=0, device="cpu", dtype="float32", steps=2)
    with torch.no_grad():
        next(changed.pipeline.vae.parameters()).view(-1)[0] += 1.0
    assert changed.describe()["weights_sha256"] != digest
    # --dtype reaches every module, and the record says it.
    half = load_adapter(f"diffusers-pipe:{sana_dir}", seed=0, device="cpu", dtype="bfloat16", steps=2)
    assert {p.dtype for m in half._modules().values() for p in m.parameters()} == {torch.bfloat16}
    assert half.describe()["dtype"] == "bfloat16" and half.describe()["weights_sha256"] != digest


# ---------------------------------------------------------------------- through the harness: GenEval's layout
@pytest.fixture
def fake_geneval_scorer(tmp_path, monkeypatch):
    """GenEval's official scorer replaced by a script that marks image 0 of prompts other than 1 correct."""
    repo, checkpoints, _ = install_fake_official(tmp_path, monkeypatch)
    return [f"official_scorer={sys.executable}", f"official_repo={repo}", f"detector={checkpoints}", "limit=2"]


def test_a_tiny_sana_generates_for_genevals_layout_and_image_k_is_the_same_in_any_batch(
    sana_dir, fake_geneval_scorer, tmp_path
):
    from evals import run

    results = {}
    for n in (4, 1):
        out = tmp_path / f"run-n{n}"
        (results[n],) = run(
            f"diffusers-pipe:{sana_dir}",
            "geneval@official",
            out,
            steps=2,
            device="cpu",
            no_progress=True,
            cache_dir=str(tmp_path / "cache"),
            opt=[*fake_geneval_scorer, f"n_samples={n}"],
        )
        assert results[n]["coverage"]["ok"] == 2 and results[n]["coverage"]["failed"] == 0
        model = json.loads((out / "run.json").read_text())["model"]
        assert model["adapter"] == "diffusers-pipe" and model["sampler"] == {"steps": 2, "guidance": 4.5}
        for index in ("00000", "00001"):
            folder = out / "geneval@official" / "images" / index
            assert (folder / "metadata.jsonl").is_file()
            names = sorted(p.name for p in (folder / "samples").iterdir())
            assert names == [f"{k:05d}.png" for k in range(n)]
            assert Image.open(folder / "samples" / "00000.png").size == (SANA_SIZE, SANA_SIZE)
    for index in ("00000", "00001"):
        # Image 0 of each prompt: the same bytes whether the prompt got 4 images or 1.
        four = tmp_path / "run-n4" / "geneval@official" / "images" / index / "samples"
        one = tmp_path / "run-n1" / "geneval@official" / "images" / index / "samples"
        assert (four / "00000.png").read_bytes() == (one / "00000.png").read_bytes()
        assert (four / "00000.png").read_bytes() != (four / "00001.png").read_bytes()
    # The fake scorer's known answer (image 0 of prompt 0) is read back: the images went where GenEval looks.
    assert results[1]["metrics"]["overall"]["value"] == pytest.approx(0.5)


# ---------------------------------------------------------------------- editing
def test_an_editing_pipeline_edits_an_image_at_its_size_by_the_seed(tmp_path):
    directory = save_tiny_instruct_pix2pix(tmp_path / "ip2p")
    reference = f"diffusers-pipe:{directory}"
    info = probe_adapter(reference, seed=0, device="cpu", dtype="float32", steps=2)
    assert info.capabilities == frozenset({"edit"})
    adapter = load_adapter(reference, info, seed=0, device="cpu", dtype="float32", steps=2)
    assert adapter.capabilities == frozenset({"edit"})
    assert adapter.describe()["sampler"] == {"steps": 2, "guidance": 7.5}
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    edited = adapter.edit(source, "make it red", seed=5)
    assert isinstance(edited, Image.Image) and edited.size == source.size
    assert same(edited, adapter.edit(source, "make it red", seed=5))
    assert not same(edited, adapter.edit(source, "make it red", seed=6))
    with pytest.raises(ValueError, match="cannot 'generate'"):
        adapter.generate(["a cat"], 1, seed=0)


def test_a_folder_of_those_generations_scores_as_the_run_that_made_them(sana_dir, fake_geneval_scorer, tmp_path):
    """folder: on GenEval's layout gives what the harness gave for the same images; a missing one fails its item."""
    from evals import run

    common = {"no_progress": True, "cache_dir": str(tmp_path / "cache"), "opt": [*fake_geneval_scorer, "n_samples=2"]}
    (made,) = run(f"diffusers-pipe:{sana_dir}", "geneval@official", tmp_path / "made", steps=2, **common)
    images = tmp_path / "made" / "geneval@official" / "images"
    (scored,) = run(f"folder:{images}", "geneval@official", tmp_path / "scored", **common)
    assert scored["coverage"] == made["coverage"] and scored["metrics"] == made["metrics"]
    assert scored["outputs_check"] == {"missing": {}, "extra": []}
    assert scored["model"]["adapter"] == "folder"
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(images, elsewhere)
    (elsewhere / "00001" / "samples" / "00001.png").unlink()
    (partial,) = run(f"folder:{elsewhere}", "geneval@official", tmp_path / "partial", **common)
    assert partial["coverage"]["ok"] == 1 and partial["coverage"]["failed"] == 1
    assert "00001/samples/00001.png" in partial["outputs_check"]["missing"]["00001"]
    assert partial["outputs_check"]["extra"] == ["00001/samples/00000.png"]
