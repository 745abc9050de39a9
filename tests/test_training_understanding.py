"""The understanding-preservation study's parts: digits split and export, teacher, frozen head, metrics, report."""

import copy
import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from evals.studies.report import NOT_COMPUTED, MetricSpec, write_sweep_report
from evals.studies.understanding import FeatureHead, token_cosine, train_frozen_head, train_teacher
from unilip import load_tokenizer
from unilip.tokenizer import UniLIPTokenizer
from unilip.training.digits import DIGIT_NAMES, export_digits_folder, load_digits_split

# ------------------------------------------------------------------ digits


def test_split_sizes_range_and_determinism():
    train_x, train_y = load_digits_split("train")
    test_x, test_y = load_digits_split("test")
    assert train_x.shape == (1437, 3, 56, 56) and test_x.shape == (360, 3, 56, 56)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert 0.0 <= float(train_x.min()) and float(train_x.max()) <= 1.0
    assert float(train_x.max()) == 1.0  # full-intensity strokes survive the upscale (clamped overshoot)
    assert torch.equal(train_x[:, 0], train_x[:, 1]) and torch.equal(train_x[:, 0], train_x[:, 2])
    again_x, again_y = load_digits_split("test")
    assert torch.equal(again_x, test_x) and torch.equal(again_y, test_y)
    other_x, _ = load_digits_split("test", seed=1)
    assert not torch.equal(other_x, test_x)
    assert len(DIGIT_NAMES) == 10 and DIGIT_NAMES[0] == "zero" and DIGIT_NAMES[9] == "nine"


def test_split_is_stratified_and_disjoint():
    from sklearn.datasets import load_digits

    train_x, train_y = load_digits_split("train", size=8)
    test_x, test_y = load_digits_split("test", size=8)
    raw = load_digits()
    full = np.bincount(raw.target, minlength=10)
    test_counts = np.bincount(test_y.numpy(), minlength=10)
    # Stratified: each class's share of the test split is its share of the whole set, to one image.
    assert np.all(np.abs(test_counts - 0.2 * full) <= 1)
    assert np.array_equal(np.bincount(train_y.numpy(), minlength=10) + test_counts, full)

    # At native size the images are exactly the raw digits / 16. The set holds a few duplicate images,
    # so compare multisets of (pixels, label): train + test must be the whole set, each image once.
    def items(images, labels):
        flat = images.reshape(len(images), -1).tolist()
        return Counter((tuple(row), int(label)) for row, label in zip(flat, labels, strict=True))

    full_items = items(torch.from_numpy(raw.images.astype(np.float32) / 16.0), raw.target)
    assert items(train_x[:, 0], train_y) + items(test_x[:, 0], test_y) == full_items


def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_digits_split("val")
    with pytest.raises(ValueError, match="size"):
        load_digits_split("test", size=4)


def test_export_writes_pngs_that_round_trip(tmp_path):
    paths = export_digits_folder("test", tmp_path / "digits")
    images, labels = load_digits_split("test")
    assert len(paths) == 360 and paths == sorted(paths)
    assert {p.parent.name for p in paths} == {str(i) for i in range(10)}
    for index in (0, 17, 359):
        path = tmp_path / "digits" / str(int(labels[index])) / f"{index:04d}.png"
        assert path in paths
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.size == (56, 56)
            pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
        assert float((pixels - images[index]).abs().max()) <= 0.5 / 255 + 1e-6
    before = {p: p.read_bytes() for p in paths[:5]}
    assert export_digits_folder("test", tmp_path / "digits") == paths  # idempotent
    assert all(p.read_bytes() == data for p, data in before.items())


# ------------------------------------------------------------------ teacher, head, metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly trained teacher (4 steps) and a frozen head on it: enough to test the mechanics."""
    root = tmp_path_factory.mktemp("understanding")
    teacher_dir = train_teacher(root / "teacher", steps=4, batch_size=16, progress=False)
    before = UniLIPTokenizer.from_pretrained(teacher_dir).state_dict()
    head = train_frozen_head(teacher_dir, root / "head.safetensors", steps=30, batch_size=64)
    return {"root": root, "teacher_dir": teacher_dir, "before_head": before, "head": head}


def test_teacher_trains_only_the_encoder(trained):
    teacher_dir = trained["teacher_dir"]
    info = json.loads((teacher_dir / "teacher.json").read_text())
    assert info["steps"] == 4 and info["seed"] == 0
    assert 0.0 <= info["test_accuracy"] <= 1.0 and np.isfinite(info["final_train_loss"])
    teacher = load_tokenizer(teacher_dir)  # a save_pretrained directory loads through the usual entry point
    initial = load_tokenizer("tiny", random_init=True, seed=0).state_dict()
    state = teacher.state_dict()
    assert state.keys() == initial.keys()
    changed = {k for k in state if not torch.equal(state[k], initial[k])}
    assert any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("mlp1.") for k in changed)
    untouched = [k for k in state if k.startswith(("down_blocks.", "down_mlp.", "decoder."))]
    assert untouched and not changed.intersection(untouched)


def test_teacher_is_deterministic(tmp_path, trained):
    again = train_teacher(tmp_path / "again", steps=4, batch_size=16, progress=False)
    first = UniLIPTokenizer.from_pretrained(trained["teacher_dir"]).state_dict()
    second = UniLIPTokenizer.from_pretrained(again).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_frozen_head_leaves_teacher_unchanged_and_round_trips(trained):
    after = UniLIPTokenizer.from_pretrained(trained["teacher_dir"]).state_dict()
    assert all(torch.equal(after[k], v) for k, v in trained["before_head"].items())
    head = trained["head"]
    assert not head.training and not any(p.requires_grad for p in head.parameters())
    path = trained["root"] / "head.safetensors"
    shape = json.loads(path.with_suffix(".json").read_text())
    assert (shape["num_tokens"], shape["width"], shape["num_classes"]) == (16, 64, 10)
    loaded = FeatureHead.load(path)
    features = torch.randn(3, 16, 64)
    assert torch.equal(loaded(features), head(features))
    # The head was fitted to the train features: it must beat chance clearly even on a 4-step teacher.
    assert shape["train_accuracy"] > 0.5
    with pytest.raises(ValueError, match="expects"):
        head(torch.randn(1, 4, 64))


def test_token_cosine(trained):
    teacher = UniLIPTokenizer.from_pretrained(trained["teacher_dir"])
    images = load_digits_split("test")[0][:96]
    teacher.train()  # the metric must switch to eval mode and restore this afterwards
    assert token_cosine(teacher, teacher, images, batch_size=40) == pytest.approx(1.0, abs=1e-5)
    assert teacher.training
    copied = copy.deepcopy(teacher)
    assert token_cosine(copied, teacher, images) == pytest.approx(1.0, abs=1e-5)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in copied.named_parameters():
            if name.startswith(("encoder.", "mlp1.")):
                parameter.add_(0.5 * parameter.std().nan_to_num() * torch.randn_like(parameter))
        expected = torch.nn.functional.cosine_similarity(
            copied.eval().encode_features(images), teacher.eval().encode_features(images), dim=-1
        ).mean()
    assert token_cosine(copied, teacher, images) == pytest.approx(expected.item(), abs=1e-5)
    assert token_cosine(copied, teacher, images) < 0.99


# ------------------------------------------------------------------ report


def test_report_writes_table_csv_and_plot(tmp_path):
    """The report on this module's metrics (its own MetricSpecs); the study's full report is in test_study_report."""
    metrics = [
        MetricSpec("token_cosine", "token cosine to teacher", True, 4, (0.0, 1.0)),
        MetricSpec("head_accuracy", "frozen-head accuracy", True, 3, (0.0, 1.0)),
    ]

    def cell(value):
        value = value.item() if isinstance(value, torch.Tensor) else value
        return {"mean": value, "se": None, "n": int(value is not None), "values": [] if value is None else [value]}

    def row(name, role, weight, cosine, accuracy):
        return {
            "name": name,
            "role": role,
            "distill_weight": weight,
            "seeds": 1,
            "metrics": {"token_cosine": cell(cosine), "head_accuracy": cell(accuracy)},
        }

    rows = [
        row("stage2 λ=1", "variant", 1.0, 0.97, 0.95),
        row("stage2 λ=0", "variant", 0.0, 0.61, None),
        row("stage2 λ=0.1", "variant", 0.1, torch.tensor(0.9), 0.7),
        row("teacher", "reference", None, 1.0, 0.975),
    ]
    paths = write_sweep_report(rows, tmp_path / "report", metrics)
    assert set(paths) == {"markdown", "csv", "plot"} and all(p.is_file() for p in paths.values())
    table = paths["markdown"].read_text()
    assert NOT_COMPUTED in table and "frozen-head accuracy ↑" in table
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[0].strip("| ") for line in body] == [
        "teacher",
        "stage2 λ=0",
        "stage2 λ=0.1",
        "stage2 λ=1",
    ]
    with paths["csv"].open() as handle:
        records = list(csv.DictReader(handle))
    assert [r["name"] for r in records][0] == "teacher"
    assert records[1]["head_accuracy_mean"] == "" and float(records[2]["token_cosine_mean"]) == pytest.approx(0.9)
    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and image.size[0] > 400
    with pytest.raises(ValueError, match="role"):
        write_sweep_report([{**rows[0], "role": "baseline"}], tmp_path / "bad", metrics)
