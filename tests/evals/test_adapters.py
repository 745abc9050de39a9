"""Any model in the harness: the adapter registry (built in, entry points, module:factory), the diffusers-ae and
folder: adapters through recon@standard, and model references that resolve the same way in every command."""

import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evals
from evals.adapter import ModelAdapter
from evals.registry import UnknownAdapterError, adapter_entries, load_adapter, parse_reference, probe_adapter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from tiny_autoencoder import build_tiny_autoencoder  # noqa: E402

RUN = {"data": "builtin", "no_progress": True, "batch_size": 4}


def _psnr_ssim(result):
    return result["metrics"]["psnr"]["value"], result["metrics"]["ssim"]["value"]


@pytest.fixture(scope="module")
def autoencoders(tmp_path_factory):
    """A tiny AutoencoderKL (saved alone) and AutoencoderDC (saved as a pipeline's vae/ subfolder)."""
    root = tmp_path_factory.mktemp("autoencoders")
    build_tiny_autoencoder("kl").save_pretrained(root / "kl")
    build_tiny_autoencoder("dc").save_pretrained(root / "pipeline" / "vae")
    return {"kl": root / "kl", "dc": root / "pipeline"}


# ------------------------------------------------------------------------------------------------ the registry
def test_unknown_prefix_is_an_error_with_a_suggestion_never_a_fallback():
    with pytest.raises(UnknownAdapterError, match=r"unknown adapter 'diffusers-a'.*Did you mean diffusers-ae:"):
        parse_reference("diffusers-a:/some/dir")
    with pytest.raises(UnknownAdapterError, match="Installed adapters: .*folder"):
        probe_adapter("mypkg:MyVAE")
    # A bare name is still a UniLIP variant; an adapter needs a model.
    assert parse_reference("tiny").entry.name == "unilip"
    with pytest.raises(ValueError, match="folder: names no model"):
        parse_reference("folder:")


def test_an_existing_path_with_a_colon_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("folder:x").mkdir()
    parsed = parse_reference("folder:x")
    assert parsed.entry.name == "unilip" and parsed.model == "folder:x"


def test_a_missing_path_is_reported_as_missing_not_as_an_unknown_variant(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        probe_adapter(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        probe_adapter(f"diffusers-ae:{tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        probe_adapter(f"folder:{tmp_path / 'nowhere'}")


def test_builtins_are_listed_with_their_capabilities():
    entries = adapter_entries()
    assert {"unilip", "internvl", "diffusers-ae", "diffusers-pipe", "hf-vlm", "folder"} <= set(entries)
    assert entries["diffusers-ae"].offers == {"reconstruct"}
    assert entries["hf-vlm"].offers == {"answer"}
    assert entries["unilip"].offers == {"reconstruct", "generate", "edit", "answer"}


class _Halver(ModelAdapter):
    """Reconstructs every image as half its brightness (a third-party adapter for the tests)."""

    capabilities = frozenset({"reconstruct"})
    summary = "halves brightness"

    def __init__(self, model):
        self.model = model
        self.native_size = 32

    @classmethod
    def load(cls, model, seed=0, device="cpu", dtype="float32"):
        return cls(model)

    def describe(self):
        return {"adapter": "halver", "model": f"halver:{self.model}", "weights_sha256": "0" * 64}

    def reconstruct(self, images):
        return images / 2


def _install_plugin(tmp_path, monkeypatch):
    """A throwaway distribution on sys.path whose metadata declares a ``unilip.adapters`` entry point."""
    site = tmp_path / "site"
    (site / "thirdparty_adapters").mkdir(parents=True)
    (site / "thirdparty_adapters" / "__init__.py").write_text(
        textwrap.dedent(
            """
            import torch
            from evals.adapter import ModelAdapter

            class Dimmer(ModelAdapter):
                \"\"\"Reconstructs at 90% brightness.\"\"\"
                capabilities = frozenset({"reconstruct"})
                summary = "a third-party adapter"

                def __init__(self, model):
                    self.model = model
                    self.native_size = 32

                @classmethod
                def load(cls, model, seed=0, device="cpu", dtype="float32"):
                    return cls(model)

                def describe(self):
                    return {"adapter": "dimmer", "model": "dimmer:" + self.model, "weights_sha256": "1" * 64}

                def reconstruct(self, images):
                    return images * 0.9
            """
        )
    )
    info = site / "thirdparty_adapters-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-adapters\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[unilip.adapters]\ndimmer = thirdparty_adapters:Dimmer\nbroken = thirdparty_missing_module:Gone\n"
    )
    monkeypatch.syspath_prepend(str(site))


def test_an_entry_point_adapter_is_listed_and_used(tmp_path, monkeypatch, capsys):
    _install_plugin(tmp_path, monkeypatch)
    entries = adapter_entries()
    assert entries["dimmer"].offers == {"reconstruct"}
    assert entries["dimmer"].origin == "entry point thirdparty_adapters:Dimmer"
    from unilip.cli import main

    assert main(["eval", "adapters"]) == 0
    listing = capsys.readouterr().out
    assert "dimmer" in listing and "a third-party adapter" in listing
    # A broken plug-in is listed with what is wrong, and does not hide the others.
    assert "broken" in listing and "cannot import thirdparty_missing_module" in listing
    with pytest.raises(UnknownAdapterError, match="cannot import thirdparty_missing_module"):
        load_adapter("broken:x", seed=0, device="cpu", dtype="float32")
    results = evals.run("dimmer:anything", "recon@standard", tmp_path / "run", **RUN)
    assert results[0]["coverage"]["ok"] == 7
    assert results[0]["model"]["adapter"] == "dimmer"
    # 90% brightness: a high but finite PSNR, the same in every run.
    assert 15 < results[0]["metrics"]["psnr"]["value"] < 40


def test_a_module_factory_reference_loads_without_packaging(tmp_path):
    reference = f"{__name__}:_Halver=whatever"
    assert parse_reference(reference).model == "whatever"
    adapter = load_adapter(reference, seed=0, device="cpu", dtype="float32")
    assert isinstance(adapter, _Halver) and adapter.model == "whatever"
    results = evals.run(reference, "recon@standard", tmp_path / "run", **RUN)
    assert results[0]["coverage"]["ok"] == 7
    with pytest.raises(UnknownAdapterError, match="cannot import"):
        parse_reference("no_such_module_here:factory=x")


def test_a_setting_an_adapter_does_not_take_is_refused(autoencoders):
    with pytest.raises(ValueError, match="--steps does not apply to diffusers-ae"):
        probe_adapter(f"diffusers-ae:{autoencoders['kl']}", seed=0, device="cpu", dtype="float32", steps=4)
    with pytest.raises(ValueError, match="--weights does not apply to folder"):
        probe_adapter(f"folder:{autoencoders['kl']}", seed=0, device="cpu", dtype="float32", weights="x.pth")


# ------------------------------------------------------------------------------------------------ diffusers-ae
def test_autoencoder_kl_and_dc_reconstruct_through_recon_and_compare_beside_unilip(autoencoders, tmp_path, capsys):
    runs = {
        "unilip": evals.run("tiny", "recon@standard", tmp_path / "unilip", **RUN),
        "kl": evals.run(f"diffusers-ae:{autoencoders['kl']}", "recon@standard", tmp_path / "kl", **RUN),
        "dc": evals.run(f"diffusers-ae:{autoencoders['dc']}", "recon@standard", tmp_path / "dc", size=64, **RUN),
    }
    for name, (result,) in runs.items():
        assert result["coverage"]["ok"] == 7, name
    kl, dc = runs["kl"][0], runs["dc"][0]
    assert kl["model"]["class"] == "AutoencoderKL" and dc["model"]["class"] == "AutoencoderDC"
    assert kl["model"]["encoding"].startswith("posterior mode")
    assert kl["model"]["latent_conventions"]["scaling_factor"] == pytest.approx(0.18215)
    # The KL's native size (sample_size 56) equals tiny's, so both land in one column of the table.
    assert kl["spec"]["fingerprint"] == runs["unilip"][0]["spec"]["fingerprint"]
    from unilip.cli import main

    assert main(["eval", "compare", str(tmp_path / "unilip"), str(tmp_path / "kl")]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| tiny") or line.startswith("| diffusers-ae:")]
    assert len(rows) == 2 and all("± " in row for row in rows)


def test_autoencoder_reconstruction_is_deterministic_and_uses_its_conventions(autoencoders):
    adapter = load_adapter(f"diffusers-ae:{autoencoders['kl']}", seed=0, device="cpu", dtype="float32")
    images = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    first, second = adapter.reconstruct(images), adapter.reconstruct(images)
    assert torch.equal(first, second), "posterior mode, not a sample: no randomness"
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    # What a bare diffusers call gives with the mode, in [-1, 1] and back.
    with torch.no_grad():
        mode = adapter.vae.encode(images * 2 - 1).latent_dist.mode()
        expected = (adapter.vae.decode(mode).sample.clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=0)
    latent = adapter.to_latent(mode)
    torch.testing.assert_close(latent, mode * 0.18215)
    torch.testing.assert_close(adapter.from_latent(latent), mode)


def test_a_size_the_compression_does_not_divide_is_refused_before_the_load(autoencoders, tmp_path, monkeypatch):
    import diffusers

    def refuse(*args, **kwargs):
        raise AssertionError("the model must not load before the size is checked")

    monkeypatch.setattr(diffusers.AutoencoderDC, "from_pretrained", refuse)
    with pytest.raises(ValueError, match="not a multiple of .* spatial compression 2"):
        evals.run(f"diffusers-ae:{autoencoders['dc']}", "recon@standard", tmp_path / "run", size=57, **RUN)
    with pytest.raises(ValueError, match="declares no native resolution; pass --size"):
        evals.run(f"diffusers-ae:{autoencoders['dc']}", "recon@standard", tmp_path / "run2", **RUN)


def test_a_missing_weight_is_refused_not_initialised(autoencoders, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(autoencoders["kl"], broken)
    state = load_file(broken / "diffusion_pytorch_model.safetensors")
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, broken / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ValueError, match="do not fill AutoencoderKL exactly"):
        load_adapter(f"diffusers-ae:{broken}", seed=0, device="cpu", dtype="float32")


def test_the_weights_digest_is_the_identity(autoencoders, tmp_path):
    one = load_adapter(f"diffusers-ae:{autoencoders['kl']}", seed=0, device="cpu", dtype="float32").describe()
    other_dir = tmp_path / "other"
    build_tiny_autoencoder("kl", seed=1).save_pretrained(other_dir)
    other = load_adapter(f"diffusers-ae:{other_dir}", seed=0, device="cpu", dtype="float32").describe()
    assert len(one["weights_sha256"]) == 64 and one["weights_sha256"] != other["weights_sha256"]
    json.dumps(one)
    # The same files elsewhere are the same model: nothing of where they were read from is in the identity.
    from evals.runtime.rundir import run_identity

    moved_dir = tmp_path / "moved"
    shutil.copytree(autoencoders["kl"], moved_dir)
    moved = load_adapter(f"diffusers-ae:{moved_dir}", seed=0, device="cpu", dtype="float32").describe()
    assert run_identity(moved, 0) == run_identity(one, 0)
    assert str(autoencoders["kl"]) not in json.dumps(one["config"])


# ------------------------------------------------------------------------------------------------ folder:
def _cli(*args):
    from unilip.cli import main

    return main(list(args))


def test_folder_of_unilip_reconstructions_scores_as_the_direct_run(tmp_path):
    out = tmp_path / "recons"
    assert _cli("reconstruct", "--model", "tiny", "--builtin", "--out", str(out), "--no-progress") == 0
    # unilip reconstruct works image by image; the direct run at batch size 1 computes the same images.
    direct = evals.run("tiny", "recon@standard", tmp_path / "direct", **{**RUN, "batch_size": 1})[0]
    scored = evals.run(f"folder:{out}", "recon@standard", tmp_path / "scored", **RUN)[0]
    assert scored["coverage"] == direct["coverage"]
    assert _psnr_ssim(scored) == _psnr_ssim(direct)
    assert scored["outputs_check"] == {"missing": {}, "extra": []}
    assert scored["model"]["adapter"] == "folder" and len(scored["model"]["weights_sha256"]) == 64


def test_a_folder_dataset_reconstructed_by_unilip_reconstruct_keeps_its_layout_and_scores_as_direct(
    photo_folder, tmp_path
):
    out = tmp_path / "recons"
    assert _cli("reconstruct", "--model", "tiny", str(photo_folder), "--out", str(out), "--no-progress") == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.recon.png")) == sorted(
        p.relative_to(photo_folder).with_suffix(".recon.png").as_posix() for p in photo_folder.rglob("*.*")
    )
    flags = {**RUN, "data": str(photo_folder)}
    direct = evals.run("tiny", "recon@standard", tmp_path / "direct", **{**flags, "batch_size": 1})[0]
    scored = evals.run(f"folder:{out}", "recon@standard", tmp_path / "scored", **flags)[0]
    assert scored["coverage"]["ok"] == direct["coverage"]["ok"] == 6
    assert _psnr_ssim(scored) == _psnr_ssim(direct)
    # The same command again replaces its own nested files.
    assert _cli("reconstruct", "--model", "tiny", str(photo_folder), "--out", str(out), "--no-progress") == 0


def test_a_missing_file_is_a_failed_item_and_extra_files_are_listed(tmp_path):
    out = tmp_path / "recons"
    assert _cli("reconstruct", "--model", "tiny", "--builtin", "--out", str(out), "--no-progress") == 0
    (out / "coffee.recon.png").unlink()
    Image.new("RGB", (56, 56)).save(out / "stray.png")
    result = evals.run(f"folder:{out}", "recon@standard", tmp_path / "scored", **RUN)[0]
    assert result["coverage"]["ok"] == 6 and result["coverage"]["failed"] == 1
    assert list(result["outputs_check"]["missing"]) == ["coffee"]
    assert "coffee" in result["outputs_check"]["missing"]["coffee"]
    assert result["outputs_check"]["extra"] == ["stray.png"]


def test_the_folder_digest_changes_with_its_content_and_a_wrong_size_is_refused(tmp_path):
    out = tmp_path / "recons"
    assert _cli("reconstruct", "--model", "tiny", "--builtin", "--out", str(out), "--no-progress") == 0
    before = load_adapter(f"folder:{out}", seed=0, device="cpu", dtype="float32").describe()["weights_sha256"]
    pixels = np.array(Image.open(out / "astronaut.recon.png"))
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(out / "astronaut.recon.png")
    after = load_adapter(f"folder:{out}", seed=0, device="cpu", dtype="float32").describe()["weights_sha256"]
    assert before != after
    # Outputs of another size than the benchmark's are failed items, each saying so.
    result = evals.run(f"folder:{out}", "recon@standard", tmp_path / "scored", size=32, **RUN)[0]
    assert result["coverage"]["failed"] == 7 and result["coverage"]["ok"] == 0
    assert (
        "astronaut.recon.png is 56x56, the benchmark compares at 32x32"
        in result["outputs_check"]["missing"]["astronaut"]
    )


def test_folder_items_that_would_share_a_file_or_whose_file_is_damaged_fail(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    for name, shade in (("a.png", 10), ("a.jpg", 20), ("b.png", 30), ("c.png", 40)):
        Image.new("RGB", (32, 32), (shade, shade, shade)).save(data / name)
    Image.new("RGB", (32, 32)).save(out / "a.png")  # both a.png and a.jpg would read it
    Image.new("RGB", (32, 32)).save(out / "b.png")
    (out / "c.png").write_bytes((data / "c.png").read_bytes()[:60])  # a truncated PNG
    adapter = load_adapter(f"folder:{out}", seed=0, device="cpu", dtype="float32")
    check = adapter.check_outputs("reconstruct", ["a.jpg", "a.png", "b.png", "c.png"], size=32)
    assert sorted(check.missing) == ["a.jpg", "a.png", "c.png"]
    assert "ambiguous" in check.missing["a.jpg"] and "unreadable" in check.missing["c.png"]
    # Keeping the reference's extension in the output names tells them apart (what unilip reconstruct DIR does).
    (out / "a.png").rename(out / "a.png.recon.png")
    Image.new("RGB", (32, 32)).save(out / "a.jpg.recon.png")
    adapter = load_adapter(f"folder:{out}", seed=0, device="cpu", dtype="float32")
    check = adapter.check_outputs("reconstruct", ["a.jpg", "a.png", "b.png"], size=32)
    assert check.missing == {} and check.extra == ("c.png",)
    result = evals.run(f"folder:{out}", "recon@standard", tmp_path / "run", **{**RUN, "data": str(data)})[0]
    assert result["coverage"]["ok"] == 3 and result["coverage"]["failed"] == 1
    recons = tmp_path / "recons"
    assert _cli("reconstruct", "--model", "tiny", str(data), "--out", str(recons), "--size", "32", "--no-progress") == 0
    assert sorted(p.name for p in recons.glob("*.recon.png")) == [
        "a.jpg.recon.png",
        "a.png.recon.png",
        "b.recon.png",
        "c.recon.png",
    ]


def test_folder_generations_in_geneval_and_per_id_layouts(tmp_path):
    adapter_dir = tmp_path / "gen"
    for k in range(2):
        (adapter_dir / "00000" / "samples").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (k, 0, 0)).save(adapter_dir / "00000" / "samples" / f"{k:05d}.png")
    Image.new("RGB", (8, 8), (9, 0, 0)).save(adapter_dir / "17.png")
    adapter = load_adapter(f"folder:{adapter_dir}", seed=0, device="cpu", dtype="float32")
    check = adapter.check_outputs("generate", ["00000", "00001", "17"], per_item=2)
    assert set(check.missing) == {"00001", "17"} and "00001/samples/00000.png" in check.missing["00001"]
    images = adapter.generate(["a prompt"], 2, 0, keys=["00000"])[0]
    assert [image.getpixel((0, 0))[0] for image in images] == [0, 1]
    assert adapter.generate(["p"], 1, 0, keys=["17"])[0][0].getpixel((0, 0))[0] == 9
    assert adapter.check_outputs("edit", ["17"]).missing == {}


# ------------------------------------------------------------------------------------------------ model commands
def test_model_commands_take_adapter_references(autoencoders, tmp_path, capsys):
    out = tmp_path / "out"
    reference = f"diffusers-ae:{autoencoders['kl']}"
    assert _cli("reconstruct", "--model", reference, "--builtin", "--out", str(out), "--no-progress") == 0
    assert len(list(out.glob("*.recon.png"))) == 7
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == reference and run["size"] == 56
    assert run["config"]["adapter"] == "diffusers-ae" and len(run["config"]["weights_sha256"]) == 64
    # The folder of those reconstructions scores as the harness scoring the autoencoder directly (batch 1).
    direct = evals.run(reference, "recon@standard", tmp_path / "direct", **{**RUN, "batch_size": 1})[0]
    scored = evals.run(f"folder:{out}", "recon@standard", tmp_path / "scored", **RUN)[0]
    assert _psnr_ssim(scored) == _psnr_ssim(direct)
    capsys.readouterr()
    # An unknown prefix suggests the closest; a model that cannot reconstruct is refused by name (exit 2).
    assert _cli("reconstruct", "--model", "hf-vl:/x", "--builtin", "--out", str(tmp_path / "o2")) == 2
    assert "Did you mean hf-vlm:" in capsys.readouterr().err
    assert _cli("reconstruct", "--model", f"folder:{out}", "--builtin", "--out", str(tmp_path / "o3")) == 2
    assert "holds outputs made elsewhere" in capsys.readouterr().err
    assert _cli("generate", "--model", reference, "--prompt", "a cat", "--out", str(tmp_path / "o4")) == 2
    assert "cannot 'generate'" in capsys.readouterr().err
    assert (
        _cli("reconstruct", "--model", str(tmp_path / "missing" / "dir"), "--builtin", "--out", str(tmp_path / "o5"))
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_repo(cache: Path, repo_id: str, source: Path, monkeypatch) -> Path:
    """``source`` in an offline Hugging Face cache named by $HF_HUB_CACHE, as ``hf download repo_id`` leaves it."""
    for name in ("HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(source, repo / "snapshots" / COMMIT)
    return repo


def test_an_adapter_reads_a_repo_id_from_the_local_hugging_face_cache_only(autoencoders, tmp_path, monkeypatch):
    """``diffusers-ae:namespace/name`` resolves to the cached snapshot (as ``hf download`` leaves it), offline."""
    commit = COMMIT
    repo = _cache_repo(tmp_path / "hub", "someone/tiny-vae", autoencoders["kl"], monkeypatch)
    monkeypatch.chdir(tmp_path)  # no local folder someone/tiny-vae
    adapter = load_adapter("diffusers-ae:someone/tiny-vae", seed=0, device="cpu", dtype="float32")
    assert adapter.directory == repo / "snapshots" / commit
    direct = load_adapter(f"diffusers-ae:{autoencoders['kl']}", seed=0, device="cpu", dtype="float32")
    assert adapter.describe()["weights_sha256"] == direct.describe()["weights_sha256"]
    from unilip.checkpoints import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="hf download someone/other-vae"):
        probe_adapter("diffusers-ae:someone/other-vae", seed=0, device="cpu", dtype="float32")


def test_a_folder_run_resumes_under_another_spelling_and_refuses_changed_content(tmp_path, monkeypatch):
    from evals.runtime.rundir import RunDirectoryError

    out = tmp_path / "recons"
    assert _cli("reconstruct", "--model", "tiny", "--builtin", "--out", str(out), "--no-progress") == 0
    run = tmp_path / "run"
    evals.run(f"folder:{out}", "recon@standard", run, **RUN)
    produced = {p.name: p.stat().st_mtime_ns for p in (run / "recon@standard" / "produce").iterdir()}
    monkeypatch.chdir(tmp_path)
    again = evals.run("folder:./recons", "recon@standard", run, **RUN)[0]
    assert again["coverage"]["ok"] == 7
    assert {p.name: p.stat().st_mtime_ns for p in (run / "recon@standard" / "produce").iterdir()} == produced
    Image.new("RGB", (56, 56)).save(out / "new.png")
    with pytest.raises(RunDirectoryError, match="the folder's files changed since that run"):
        evals.run("folder:./recons", "recon@standard", run, **RUN)
    # The produce fingerprints of every benchmark leave the reference's spelling out, not only recon's.
    from evals.benchmark import model_identity

    described = {"adapter": "folder", "weights_sha256": "1" * 64, "weights_source": "/a"}
    assert model_identity({**described, "model": "folder:out"}) == model_identity(
        {**described, "model": "folder:./out", "weights_source": "/b"}
    )


def test_internvl_reads_a_repo_id_from_the_local_hugging_face_cache(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_internvl import save_tiny_internvl

    _cache_repo(tmp_path / "hub", "someone/InternVL3-tiny-hf", save_tiny_internvl(tmp_path / "src"), monkeypatch)
    monkeypatch.chdir(tmp_path)
    info = probe_adapter("internvl:someone/InternVL3-tiny-hf", seed=0, device="cpu", dtype="float32")
    assert info.capabilities == {"answer"}
