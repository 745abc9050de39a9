"""Issue 17: the generation benchmarks batch their items (``--batch-size``) while each item keeps its own seed,
and an item's images are the same bytes whatever the batch size and whatever items share its batch; an
adapter that cannot batch is still called one item at a time. The understanding family's answers do not
depend on their batch either.

Runs the tiny generator (``tiny-digits``, 2 steps, pipeline batches of 4 rows) through the real produce
stages of GenEval, WISE and ImgEdit at batch sizes 1, 3 and 8.
"""

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from test_imgedit import FakeEditor, write_imgedit
from test_wise import write_wise_repo

from evals.adapter import ModelAdapter, generate_items
from evals.adapters.unilip import UniLIPGeneratorAdapter
from evals.benchmark import Item, StageContext, get_benchmark
from evals.runtime.records import item_seed

BATCH_SIZES = (1, 3, 8)
# Three prompts of one token length (they share model calls when batched together) and one of another.
PROMPTS = ("a digit 3", "a digit 4", "a digit 5", "the handwritten number eight, written slowly")


class CountingAdapter(UniLIPGeneratorAdapter):
    """The tiny generator's adapter, counting the model's denoising calls and the items per adapter call."""

    def __init__(self, pipeline):
        super().__init__(pipeline, "tiny-digits", steps=2)
        self.model_calls, self.items_per_call = 0, []
        sample = pipeline._sample

        def counted(*args, **kwargs):
            self.model_calls += 1
            return sample(*args, **kwargs)

        pipeline._sample = counted

    def generate_batch(self, prompts, n, seeds):
        self.items_per_call.append(len(prompts))
        return super().generate_batch(prompts, n, seeds)

    def edit_batch(self, images, instructions, seeds):
        self.items_per_call.append(len(images))
        return super().edit_batch(images, instructions, seeds)


@pytest.fixture(scope="module")
def adapter():
    from unilip.pipelines import load_pipeline

    return CountingAdapter(load_pipeline("tiny-digits", batch_size=4))


def _produce(resolved, items, adapter, out: Path, batch_size: int) -> dict[str, tuple[str, dict[str, str]]]:
    """Run the produce stage; item id -> (status, sha256 of each output file's bytes)."""
    ctx = StageContext(adapter=adapter, bench_dir=out, batch_size=batch_size, cache_dir=out / "cache", progress=False)
    done = {}
    for item, result in resolved.run_stage("produce", list(items), ctx):
        files = {rel: hashlib.sha256((out / rel).read_bytes()).hexdigest() for rel in result.outputs}
        done[item.id] = (result.status, files)
    return done


def _by_batch_size(resolved, items, adapter, tmp_path, sizes=BATCH_SIZES, to_model=None) -> dict[int, tuple]:
    """batch size -> (what :func:`_produce` returns, model calls); ``to_model``: the items the model sees."""
    runs = {}
    for size in sizes:
        adapter.model_calls, adapter.items_per_call = 0, []
        runs[size] = (_produce(resolved, items, adapter, tmp_path / f"b{size}", size), adapter.model_calls)
        # The benchmark batched as asked (an item that fails before the model never reaches it).
        assert max(adapter.items_per_call) == min(size, len(items) if to_model is None else to_model)
    return runs


def _geneval(n_samples: int = 2):
    bench, variant = get_benchmark("geneval@hf-mask2former")
    spec = SimpleNamespace(name="geneval@test", knobs={"n_samples": n_samples, "seed": 7})
    resolved = SimpleNamespace(spec=spec, run_stage=lambda stage, items, ctx: bench.produce(resolved, items, ctx))
    items = [Item(id=f"{index:05d}", source={"prompt": prompt}) for index, prompt in enumerate(PROMPTS)]
    return resolved, items


def test_geneval_images_are_the_same_bytes_at_every_batch_size(adapter, tmp_path):
    resolved, items = _geneval()
    runs = _by_batch_size(resolved, items, adapter, tmp_path)
    first, calls_alone = runs[1]
    assert {status for status, _ in first.values()} == {"ok"}
    assert all(len(files) == 3 for _, files in first.values())  # metadata + 2 samples
    for size in BATCH_SIZES[1:]:
        assert runs[size][0] == first, size
    # Batching is real: at batch 8 the three same-length prompts share model calls.
    assert runs[8][1] < calls_alone
    samples = [files for _, files in first.values()]
    assert len({digest for files in samples for rel, digest in files.items() if "samples" in rel}) == 8


def test_wise_images_are_the_same_bytes_at_every_batch_size(adapter, tmp_path):
    bench, variant = get_benchmark("wise@legacy")
    resolved = bench.resolve(variant, {"data": str(write_wise_repo(tmp_path / "WISE"))}, adapter)
    items = list(resolved.items[:3])
    # Its produce step shares GenEval's path to the adapter: two batch sizes suffice.
    runs = _by_batch_size(resolved, items, adapter, tmp_path, sizes=(1, 8))
    first = runs[1][0]
    assert {status for status, _ in first.values()} == {"ok"} and len(first) == 3
    assert runs[8][0] == first


def test_imgedit_edits_are_the_same_bytes_at_every_batch_size(adapter, tmp_path):
    write_imgedit(tmp_path / "ImgEdit", tmp_path / "images")
    bench, variant = get_benchmark("imgedit@basic")
    options = {"data": str(tmp_path / "ImgEdit"), "imgedit_images": str(tmp_path / "images")}
    resolved = bench.resolve(variant, options, adapter)
    # Four edits and the one whose source image is missing: it fails alone, the others are edited.
    items = [item for item in resolved.items if item.id in {"22", "23", "100", "200", "802"}]
    runs = _by_batch_size(resolved, items, adapter, tmp_path, to_model=4)
    first = runs[1][0]
    assert first.pop("802")[0] == "failed" and {status for status, _ in first.values()} == {"ok"}
    for size in BATCH_SIZES[1:]:
        runs[size][0].pop("802")
        assert runs[size][0] == first, size
    assert runs[8][1] < runs[1][1]


class OnePromptGenerator(ModelAdapter):
    """Generates one prompt per call (no ``generate_batch``); each image encodes its prompt's seed."""

    capabilities = frozenset({"generate"})

    def __init__(self):
        self.calls = []

    def describe(self):
        return {"adapter": "one-prompt", "model": "fake", "weights_sha256": "f" * 64}

    def generate(self, prompts, n, seed):
        self.calls.append((list(prompts), n, seed))
        assert len(prompts) == 1
        return [[Image.new("RGB", (8, 8), (seed % 256, k, 0)) for k in range(n)]]


def test_an_adapter_that_cannot_batch_is_called_once_per_item(tmp_path):
    resolved, items = _geneval(n_samples=2)
    generator = OnePromptGenerator()
    ctx = StageContext(adapter=generator, bench_dir=tmp_path, batch_size=3, cache_dir=tmp_path, progress=False)
    done = list(resolved.run_stage("produce", items, ctx))
    assert [result.status for _, result in done] == ["ok"] * len(items)
    seeds = [item_seed(7, item.id) for item in items]
    assert generator.calls == [([item.source["prompt"]], 2, seed) for item, seed in zip(items, seeds, strict=True)]
    pixel = np.asarray(Image.open(tmp_path / "images" / items[2].id / "samples" / "00001.png"))[0, 0]
    assert tuple(pixel) == (seeds[2] % 256, 1, 0)
    # Also for edits: the ImgEdit fake editor has only edit().
    assert generate_items(generator, ["a"], 1, [5], ["k"])[0][0][0].getpixel((0, 0)) == (5, 0, 0)
    write_imgedit(tmp_path / "ImgEdit", tmp_path / "images-src")
    bench, variant = get_benchmark("imgedit@basic")
    options = {"data": str(tmp_path / "ImgEdit"), "imgedit_images": str(tmp_path / "images-src")}
    resolved = bench.resolve(variant, options, None)
    editor = FakeEditor()
    ctx = StageContext(adapter=editor, bench_dir=tmp_path / "e", batch_size=4, cache_dir=tmp_path, progress=False)
    results = {item.id: result for item, result in resolved.run_stage("produce", list(resolved.items), ctx)}
    assert results["802"].status == "failed" and len(editor.calls) == len(results) - 1
    assert sorted(seed for *_, seed in editor.calls) == sorted(
        item_seed(0, item.id) for item in resolved.items if item.id != "802"
    )


def test_understanding_answers_come_in_batches_and_do_not_depend_on_them(adapter, tmp_path):
    from evals.benchmarks.digits_vqa.data import write_part

    folder = tmp_path / "digits"
    write_part(folder, "yes-no")
    bench, variant = get_benchmark("digits-vqa@yes-no")
    resolved = bench.resolve(variant, {"data": str(folder), "limit": 2}, adapter)
    calls = []
    answer = adapter.answer

    def counted(requests):
        calls.append(len(requests))
        return answer(requests)

    # Three questions (each answer is a full greedy decode of the tiny chat model: seconds each on a busy CPU).
    items = list(resolved.items[:3])
    predictions = {}
    for size in (1, 3):
        calls.clear()
        ctx = StageContext(adapter=adapter, bench_dir=tmp_path / f"b{size}", batch_size=size, cache_dir=tmp_path)
        ctx.adapter, ctx.progress = SimpleNamespace(answer=counted), False
        done = list(resolved.run_stage("answer", items, ctx))
        assert calls == ([1, 1, 1] if size == 1 else [3])  # VlmBenchmark asks in batches of --batch-size
        predictions[size] = {item.id: result.payload["prediction"] for item, result in done}
    assert predictions[3] == predictions[1] and len(predictions[1]) == 3
    assert len(set(predictions[1].values())) > 1  # the tiny model's answers differ: equality is not vacuous
