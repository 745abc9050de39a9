"""GenEval end to end: the transformers detector and CLIP adapters on tiny random models, the official
layout, records, aggregate and resume, and the official-scorer runtime with a fake scorer script."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from harness_helpers import DeleteBeforeStage
from PIL import Image

from evals.adapter import ModelAdapter
from evals.benchmark import get_benchmark
from evals.benchmarks.geneval import item_seed
from evals.benchmarks.geneval.color import CLIPColorClassifier, masked_crop
from evals.benchmarks.geneval.detector import Mask2FormerDetector, mask_to_box
from evals.benchmarks.geneval.official import OFFICIAL_CHECKPOINT
from evals.benchmarks.geneval.protocol import load_color_protocol, load_object_names, load_prompts
from evals.benchmarks.geneval.weights import ScorerWeightsMissing
from evals.runtime.distributed import World
from evals.runtime.records import canonical_hash
from evals.runtime.runner import load_record, run_benchmark

BENCH_INDEX = load_object_names().index("bench")


# ---------------------------------------------------------------------- tiny models, fake generator
def save_tiny_detector(directory: Path, num_labels: int = 80, favour: int | None = BENCH_INDEX) -> Path:
    """A random Mask2Former (Swin backbone) of the transformers classes; ``favour`` gets almost all class mass."""
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    backbone = SwinConfig(
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        num_labels=num_labels,
        hidden_dim=32,
        feature_size=32,
        mask_feature_size=32,
        num_queries=12,
        encoder_layers=1,
        decoder_layers=2,
        dim_feedforward=64,
        num_attention_heads=2,
        encoder_feedforward_dim=64,
        id2label={i: name for i, name in enumerate(load_object_names()[:num_labels])},
    )
    model = Mask2FormerForUniversalSegmentation(config).eval()
    if favour is not None:  # every query says "bench": the rules then see confident detections
        with torch.no_grad():
            model.class_predictor.weight.zero_()
            model.class_predictor.bias.zero_()
            model.class_predictor.bias[favour] = 12.0
    model.save_pretrained(directory)
    Mask2FormerImageProcessor(size={"shortest_edge": 384}).save_pretrained(directory)  # overridden to 800
    return directory


def save_tiny_clip(directory: Path) -> Path:
    """A random CLIP of the transformers classes with a character-level BPE tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab = {
        token: i for i, token in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])
    }
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    eos = vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            eos_token_id=eos,
            pad_token_id=eos,
            bos_token_id=vocab["<|startoftext|>"],
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def scorer_dirs(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("geneval-scorers")
    return {"detector": save_tiny_detector(root / "detector"), "clip": save_tiny_clip(root / "clip")}


class FakeGenerator(ModelAdapter):
    """Deterministic noise images: image k of a prompt depends only on (prompt, seed, k)."""

    capabilities = frozenset({"generate"})

    def __init__(self, size=(64, 48)):
        self.size = size
        self.calls = []

    def describe(self):
        return {"adapter": "fake", "model": "fake-generator", "weights_sha256": "0" * 64, "weights_source": "nowhere"}

    def generate(self, prompts, n, seed):
        self.calls.append((list(prompts), n, seed))
        out = []
        for prompt in prompts:
            images = []
            for k in range(n):
                rng = np.random.default_rng(int(canonical_hash([prompt, seed, k], length=8), 16))
                images.append(Image.fromarray(rng.integers(0, 256, (self.size[1], self.size[0], 3), dtype=np.uint8)))
            out.append(images)
        return out


def run(variant, out, adapter=None, retry_failed=False, **options):
    adapter = adapter or FakeGenerator()
    bench, name = get_benchmark(variant)
    resolved = bench.resolve(name, options, adapter)
    results = run_benchmark(
        resolved,
        adapter,
        Path(out) / resolved.name,
        World(0, 1),
        4,
        Path(out) / "cache",
        progress=False,
        retry_failed=retry_failed,
    )
    return results, resolved, resolved.spec, adapter


# ---------------------------------------------------------------------- adapters on tiny models
def test_detector_adapter_returns_every_candidate_with_full_size_masks_and_mask_boxes(scorer_dirs):
    detector = Mask2FormerDetector(scorer_dirs["detector"], load_object_names())
    assert detector.processor.size.shortest_edge == 800 and detector.processor.size.longest_edge == 1333
    rng = np.random.default_rng(1)
    for width, height in ((64, 48), (40, 56)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        detections = detector.detect(image)
        assert set(detections) <= set(load_object_names())
        total = sum(len(v) for v in detections.values())
        assert 0 < total <= 12  # at most one candidate per query, nothing thresholded away
        for found in detections.values():
            for d in found:
                assert d.mask.dtype == bool and d.mask.shape == (height, width) and d.mask.any()
                assert d.box == mask_to_box(d.mask)
                assert 0 <= d.box[0] < d.box[2] <= width and 0 <= d.box[1] < d.box[3] <= height
                assert 0.0 <= d.score <= 1.0
        assert detections.get("bench")  # the favoured class, with its probability near 1
        assert max(d.score for d in detections["bench"]) > 0.3
    fingerprint = detector.fingerprint()
    assert list(fingerprint["weights_sha256"]) == ["model.safetensors"] and fingerprint["input"]["shortest_edge"] == 800


def test_mask_to_box_is_mmdets_tight_box():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    assert mask_to_box(mask) == (3.0, 2.0, 9.0, 5.0)
    assert mask_to_box(np.zeros((4, 4), dtype=bool)) == (0.0, 0.0, 0.0, 0.0)


def test_detector_applies_no_threshold_of_its_own_and_refuses_another_class_count(tmp_path):
    # Unbiased random classes: every candidate scores about 1/81 x mask score, far below any protocol
    # threshold, and all of them still come back (the rules, not the detector, do the filtering).
    detector = Mask2FormerDetector(save_tiny_detector(tmp_path / "plain", favour=None), load_object_names())
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    scores = [d.score for found in detector.detect(image).values() for d in found]
    assert len(scores) >= 6 and max(scores) < 0.3
    save_tiny_detector(tmp_path / "panoptic", num_labels=5, favour=None)
    with pytest.raises(ValueError, match="has 5 classes"):
        Mask2FormerDetector(tmp_path / "panoptic", load_object_names())


def test_clip_adapter_builds_the_template_classifier_and_classifies_masked_crops(scorer_dirs):
    protocol = load_color_protocol()
    classifier = CLIPColorClassifier(scorer_dirs["clip"], protocol)
    matrix = classifier.text_classifier("fire hydrant")
    assert matrix.shape == (16, 10)
    assert torch.allclose(matrix.norm(dim=0), torch.ones(10), atol=1e-5)
    # Column "red" is the normalised mean of the three normalised template embeddings.
    tokens = classifier.tokenizer(protocol.texts("red", "fire hydrant"), padding=True, return_tensors="pt")
    with torch.no_grad():
        output = classifier.model.get_text_features(**tokens)
    embeddings = torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1).mean(0)
    assert torch.allclose(matrix[:, 0], embeddings / embeddings.norm(), atol=1e-5)

    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    masks = [np.zeros((30, 40), dtype=bool) for _ in range(2)]
    masks[0][5:20, 3:30] = True
    masks[1][10:28, 20:39] = True
    from evals.benchmarks.geneval.rules import Detection, pick_colors

    detections = [Detection(box=mask_to_box(m), score=0.9, mask=m) for m in masks]
    crops = [masked_crop(image, d.box, d.mask, protocol.background) for d in detections]
    assert classifier.transform(crops[0]).shape == (3, 32, 32)
    logits = classifier.logits(crops, "fire hydrant")
    assert logits.shape == (2, 10) and np.all(np.abs(logits) <= 100.0 + 1e-3)
    colors = classifier.classify(image, "fire hydrant", detections)
    assert colors == pick_colors(logits, protocol.colors) and set(colors) <= set(protocol.colors)
    assert classifier.classify(image, "fire hydrant", []) == []


def test_missing_scorer_directories_say_which_option_and_where_to_get_them(scorer_dirs, tmp_path):
    bench, variant = get_benchmark("geneval@hf-mask2former")
    adapter = FakeGenerator()
    with pytest.raises(
        ScorerWeightsMissing, match="--opt detector=PATH.*facebook/mask2former-swin-small-coco-instance"
    ):
        bench.resolve(variant, {}, adapter)
    with pytest.raises(ScorerWeightsMissing, match=f"{tmp_path / 'nope'} does not exist"):
        bench.resolve(variant, {"detector": str(tmp_path / "nope"), "clip": str(scorer_dirs["clip"])}, adapter)
    with pytest.raises(ScorerWeightsMissing, match="no 'clip' directory.*openai/clip-vit-large-patch14"):
        bench.resolve(variant, {"detector": str(scorer_dirs["detector"])}, adapter)
    with pytest.raises(ValueError, match="unknown options"):
        bench.resolve(variant, {"colour": 1}, adapter)
    with pytest.raises(ValueError, match="n_samples must be at least 1"):
        bench.resolve(variant, {"n_samples": 0, **{k: str(v) for k, v in scorer_dirs.items()}}, adapter)
    official, name = get_benchmark("geneval@official")
    with pytest.raises(ScorerWeightsMissing, match="no 'official_scorer' given"):
        official.resolve(name, {}, adapter)
    with pytest.raises(ScorerWeightsMissing, match="has no evaluation/evaluate_images.py"):
        official.resolve(name, {"official_scorer": sys.executable, "official_repo": str(tmp_path)}, adapter)


def test_a_given_path_that_names_nothing_is_refused_in_one_line_even_where_the_variant_ignores_it(
    scorer_dirs, fake_official, tmp_path
):
    adapter = FakeGenerator()
    bench, variant = get_benchmark("geneval@hf-mask2former")
    dirs = {name: str(path) for name, path in scorer_dirs.items()}
    for option in ("official_repo", "official_scorer"):  # used only by @official: a typo is still refused
        with pytest.raises(ScorerWeightsMissing) as error:
            bench.resolve(variant, {**dirs, option: str(tmp_path / "typo")}, adapter)
        assert str(error.value) == f"geneval: --opt {option}={tmp_path / 'typo'}: no such file or folder"
    official, name = get_benchmark("geneval@official")
    options, _ = fake_official
    with pytest.raises(ScorerWeightsMissing, match="--opt clip=.*: no such file or folder"):
        official.resolve(name, {**options, "clip": str(tmp_path / "typo")}, adapter)
    # preflight: the scorer files the spec was made with are checked again before the model loads.
    import shutil

    clip_copy = Path(shutil.copytree(scorer_dirs["clip"], tmp_path / "clip-copy"))
    resolved = bench.resolve(variant, {**dirs, "clip": str(clip_copy)}, adapter)
    resolved.preflight()
    shutil.rmtree(clip_copy)
    with pytest.raises(ScorerWeightsMissing, match=f"--opt clip={clip_copy}: no such file or folder"):
        resolved.preflight()


# ---------------------------------------------------------------------- end to end, in process
def test_end_to_end_official_layout_records_aggregate_and_resume(scorer_dirs, tmp_path):
    options = {
        "limit": 3,
        "n_samples": 2,
        "seed": 7,
        "detector": str(scorer_dirs["detector"]),
        "clip": str(scorer_dirs["clip"]),
        "scorer_device": "cpu",
    }
    results, bench, spec, adapter = run("geneval@hf-mask2former", tmp_path, **options)
    bench_dir = tmp_path / "geneval@hf-mask2former"
    prompts = load_prompts()
    # One generate call per prompt, with the prompt's own seed.
    assert adapter.calls == [([prompts[i]["prompt"]], 2, item_seed(7, f"{i:05d}")) for i in range(3)]
    assert len({seed for _, _, seed in adapter.calls}) == 3
    for i in range(3):
        folder = bench_dir / "images" / f"{i:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == prompts[i]
        assert sorted(p.name for p in (folder / "samples").iterdir()) == ["00000.png", "00001.png"]
        assert Image.open(folder / "samples" / "00001.png").size == (64, 48)
        assert load_record(bench_dir, "produce", f"{i:05d}")["status"] == "ok"
    assert results["coverage"] == {"expected": 3, "ok": 3, "failed": 0, "missing": 0, "fraction": 1.0}
    saved = json.loads((bench_dir / "results.json").read_text())
    assert saved["metrics"] == results["metrics"] and saved["coverage"] == results["coverage"]
    records = [load_record(bench_dir, "score", f"{i:05d}") for i in range(3)]
    # Only benches are detected: the bench prompt's images pass when a bench scores above 0.3, the others fail.
    bench_images = records[0]["images"]
    assert any(image["correct"] for image in bench_images)
    for image in bench_images:
        assert image["correct"] == any(box[4] > 0.3 for box in image["details"].get("bench", []))
    for record, name in zip(records[1:], ("cow", "bicycle"), strict=True):
        assert [image["correct"] for image in record["images"]] == [False, False]
        assert record["images"][0]["reason"] == f"expected {name}>=1, found 0"
    correct = sum(image["correct"] for record in records for image in record["images"])
    metrics = results["metrics"]
    assert metrics["single_object"]["value"] == pytest.approx(correct / 6)
    assert metrics["overall"]["value"] == metrics["single_object"]["value"]
    assert metrics["overall"]["tags"] == ["single_object"] and metrics["overall"]["all_tags"] is False
    assert (
        results["spec"]["knobs"]["stack"].startswith("transformers Mask2Former")
        and "NOT the official" in results["spec"]["knobs"]["stack"]
    )
    rows = [json.loads(line) for line in (bench_dir / "scored_images.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["filename"] == "images/00000/samples/00000.png"
    assert json.loads(rows[0]["metadata"]) == prompts[0]

    # Resume: nothing is generated or scored again (a fresh benchmark object never loads the scorers).
    stamps = {p: p.stat().st_mtime_ns for p in bench_dir.rglob("*") if p.is_file() and p.name != "results.json"}
    again, bench_again, _, adapter_again = run("geneval@hf-mask2former", tmp_path, **options)
    assert adapter_again.calls == [] and bench_again.scorers._loaded == {}
    assert {p: p.stat().st_mtime_ns for p in stamps if p.name != "scored_images.jsonl"} == {
        p: t for p, t in stamps.items() if p.name != "scored_images.jsonl"
    }
    assert again["metrics"] == results["metrics"] and again["coverage"] == results["coverage"]


class _WrongCount(FakeGenerator):
    def generate(self, prompts, n, seed):
        images = super().generate(prompts, n, seed)
        return [images[0][:1]] if prompts[0] == load_prompts()[1]["prompt"] else images


def test_bad_generator_output_and_missing_images_are_failed_items(scorer_dirs, tmp_path):
    options = {
        "limit": 2,
        "n_samples": 2,
        "detector": str(scorer_dirs["detector"]),
        "clip": str(scorer_dirs["clip"]),
        "scorer_device": "cpu",
    }
    results, *_ = run("geneval@hf-mask2former", tmp_path, adapter=_WrongCount(), **options)
    assert results["coverage"]["failed"] == 1 and results["coverage"]["ok"] == 1
    assert results["failures"] == {"00001": "produce: the model's generate() returned 1 images, 2 were asked"}
    assert results["metrics"]["single_object"]["n"] == 2  # the failed prompt is not counted as wrong images
    # Every file a prompt's generation wrote is named in its record, so a deleted one is made again.
    bench_dir = tmp_path / "geneval@hf-mask2former"
    produced = load_record(bench_dir, "produce", "00000")
    assert set(produced["outputs"]) == {
        "images/00000/metadata.jsonl",
        "images/00000/samples/00000.png",
        "images/00000/samples/00001.png",
    }
    (bench_dir / "images" / "00000" / "samples" / "00001.png").unlink()
    adapter = _WrongCount()
    results, *_ = run("geneval@hf-mask2former", tmp_path, adapter=adapter, **options)
    assert [call[0] for call in adapter.calls] == [[load_prompts()[0]["prompt"]]]  # that prompt only
    assert (bench_dir / "images" / "00000" / "samples" / "00001.png").is_file() and results["coverage"]["ok"] == 1


def test_an_image_that_vanishes_before_scoring_fails_its_item_explicitly(fake_official, tmp_path):
    options, _ = fake_official
    bench, name = get_benchmark("geneval@official")
    adapter = FakeGenerator()
    resolved = bench.resolve(name, options, adapter)
    wrapped = DeleteBeforeStage(resolved, "score", "images/00001/samples/00000.png")
    results = run_benchmark(
        wrapped, adapter, tmp_path / resolved.name, World(0, 1), 4, tmp_path / "cache", progress=False
    )
    assert results["failures"] == {"00001": "score: missing image(s): images/00001/samples/00000.png"}


# ---------------------------------------------------------------------- the official runtime, with a fake scorer
FAKE_SCORER = r"""
import argparse, json, os, re, sys
parser = argparse.ArgumentParser()
parser.add_argument("imagedir")
parser.add_argument("--outfile", default="results.jsonl")
parser.add_argument("--model-config", default=None)
parser.add_argument("--model-path", default="./")
parser.add_argument("--options", nargs="*", default=[])
args = parser.parse_args()
assert os.path.isfile(os.path.join(args.model_path, "CHECKPOINT")), args.model_path
with open(os.environ["FAKE_GENEVAL_CALLS"], "a") as log:
    log.write(json.dumps(sorted(os.listdir(args.imagedir))) + "\n")
if os.environ.get("FAKE_GENEVAL_FAIL"):
    print("AssertionError: CUDA is required", file=sys.stderr)
    sys.exit(3)
rows = []
for sub in sorted(os.listdir(args.imagedir)):
    folder = os.path.join(args.imagedir, sub)
    if not (os.path.isdir(folder) and sub.isdigit()):
        continue
    with open(os.path.join(folder, "metadata.jsonl")) as fp:
        metadata = json.load(fp)
    for name in sorted(os.listdir(os.path.join(folder, "samples"))):
        if not re.match(r"\d+\.png", name):
            continue
        correct = int(name[:-4]) == 0 and int(sub) != 1  # known answer: image 0 of prompts 0 and 2
        rows.append({"filename": os.path.join(folder, "samples", name), "tag": metadata["tag"],
                     "prompt": metadata["prompt"], "correct": correct, "reason": "" if correct else "fake",
                     "metadata": json.dumps(metadata), "details": json.dumps({"bench": [[1, 2, 3, 4, 0.9]]})})
with open(args.outfile, "w") as fp:
    fp.writelines(json.dumps(row) + "\n" for row in rows)
""".replace("CHECKPOINT", OFFICIAL_CHECKPOINT)


def install_fake_official(tmp_path, monkeypatch):
    """GenEval's official scorer replaced by FAKE_SCORER in a checkout, with a detector folder: (repo, models, log)."""
    repo = tmp_path / "geneval-checkout"
    (repo / "evaluation").mkdir(parents=True)
    (repo / "evaluation" / "evaluate_images.py").write_text(FAKE_SCORER)
    models = tmp_path / "mmdet-models"
    models.mkdir()
    (models / OFFICIAL_CHECKPOINT).write_bytes(b"not really a checkpoint")
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_GENEVAL_CALLS", str(calls))
    return repo, models, calls


@pytest.fixture
def fake_official(tmp_path, monkeypatch):
    repo, models, calls = install_fake_official(tmp_path, monkeypatch)
    options = {
        "limit": 3,
        "n_samples": 2,
        "official_scorer": sys.executable,
        "official_repo": str(repo),
        "detector": str(models),
    }
    return options, calls


def test_official_runtime_reads_the_scorers_results_back_and_aggregates(fake_official, tmp_path):
    options, calls = fake_official
    results, *_ = run("geneval@official", tmp_path / "run", **options)
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [["00000", "00001", "00002"]]
    assert results["coverage"]["ok"] == 3
    metrics = results["metrics"]
    assert metrics["single_object"]["value"] == pytest.approx(2 / 6)
    assert metrics["overall"]["value"] == pytest.approx(2 / 6)
    assert metrics["correct_prompts"]["value"] == pytest.approx(2 / 3)
    knobs = results["spec"]["knobs"]
    assert knobs["runtime"] == "official" and len(knobs["official"]["checkpoint_sha256"]) == 64
    bench_dir = tmp_path / "run" / "geneval@official"
    record = load_record(bench_dir, "score", "00002")
    assert [(i["file"], i["correct"]) for i in record["images"]] == [
        ("images/00002/samples/00000.png", True),
        ("images/00002/samples/00001.png", False),
    ]
    assert record["images"][0]["details"] == {"bench": [[1, 2, 3, 4, 0.9]]}
    assert len(list((bench_dir / "official").glob("results-*.jsonl"))) == 1
    # Resume runs nothing; a deleted image is generated again and only its prompt is scored again.
    run("geneval@official", tmp_path / "run", **options)
    assert len(calls.read_text().splitlines()) == 1
    (bench_dir / "images" / "00001" / "samples" / "00000.png").unlink()
    results, *_ = run("geneval@official", tmp_path / "run", **options)
    assert [json.loads(line) for line in calls.read_text().splitlines()][1:] == [["00001"]]
    assert results["failures"] == {} and results["metrics"]["single_object"]["value"] == pytest.approx(2 / 6)


def test_official_scorer_failure_fails_the_items_and_retry_recovers(fake_official, tmp_path, monkeypatch):
    options, calls = fake_official
    monkeypatch.setenv("FAKE_GENEVAL_FAIL", "1")
    results, *_ = run("geneval@official", tmp_path / "run", **options)
    assert results["coverage"]["failed"] == 3 and results["metrics"]["overall"]["status"] == "not_computed"
    reason = results["failures"]["00000"]
    assert "exited with status 3" in reason and "CUDA is required" in reason
    monkeypatch.delenv("FAKE_GENEVAL_FAIL")
    results, *_ = run("geneval@official", tmp_path / "run", retry_failed=True, **options)
    assert results["coverage"]["ok"] == 3 and len(calls.read_text().splitlines()) == 2
    assert results["metrics"]["overall"]["value"] == pytest.approx(2 / 6)


def test_the_run_page_shows_genevals_images_and_the_failed_ones_with_the_rules_reason(fake_official, tmp_path):
    from evals.report.run_report import build_page

    options, _ = fake_official
    run("geneval@official", tmp_path / "run", **options)
    page = build_page([tmp_path / "run"])
    # Three prompts x two images, each embedded; the scorer marked image 0 of prompts 0 and 2 right, the rest wrong.
    assert page.count("data:image/png;base64,") >= 6 and "src='http" not in page and 'src="http' not in page
    failed = page[page.index("reason</th>") :]
    assert failed.count("fake") == 4  # the fake scorer's reason, once per wrong image
    for link in set(re.findall(r"href='#([^']+)'", page)):
        assert f"id='{link}'" in page or f'id="{link}"' in page, link
