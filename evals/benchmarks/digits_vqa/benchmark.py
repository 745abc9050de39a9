"""digits-vqa: the understanding benchmarks' formats and scoring on held-out handwritten digits (CPU scale)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evals.benchmark import ResolvedBenchmark, register_benchmark

from ..kit import not_computed
from ..vlm import MME_SUFFIX, VlmRow, extract_yes_no, file_md5, mcq_prompt
from ..vlm_benchmark import (
    ChoiceBenchmark,
    PairedMetric,
    UnitScore,
    VlmOptions,
    VlmProtocol,
    yes_no_outcome,
    yes_no_pair_hits,
)
from ..vlm_scoring import circular_index, score_circular, score_mme, score_mmvp
from .data import DATA_VERSION, PARTS, write_part

DEFAULT_FOLDER = Path.home() / ".cache" / "unilip" / "digits-vqa"


@register_benchmark
class DigitsVQABenchmark(ChoiceBenchmark):
    """Questions about scikit-learn's held-out digits, scored by the real rules: ``digits-vqa@mcq`` (MMBench's
    CircularEval), ``digits-vqa@yes-no`` (MME's acc and acc+), ``digits-vqa@pairs`` (MMVP's pair accuracy).

    The data is made here, deterministically (``data.py``), into ``--data FOLDER`` (default
    ``~/.cache/unilip/digits-vqa``); the prompts are those of the family (the multiple-choice prompt, the yes/no
    question with MME's suffix); answers are read by the family's rules, no judge.
    """

    name = "digits-vqa"
    version = "1"
    variants = {part: VlmProtocol(dataset) for part, dataset in PARTS.items()}
    _HEADLINES = {
        "DigitsVQA_MCQ": ("circular_accuracy",),
        "DigitsVQA_YN": ("acc_plus", "acc"),
        "DigitsVQA_PAIRS": ("pair_accuracy", "question_accuracy"),
    }

    def data_file(self, options: VlmOptions, protocol: VlmProtocol) -> tuple[Path, dict[str, Any], list[str]]:
        part = next(part for part, dataset in PARTS.items() if dataset == protocol.dataset)
        path = write_part(Path(options.data).expanduser() if options.data else DEFAULT_FOLDER, part)
        return path, {"generated": f"digits-vqa data version {DATA_VERSION}", "md5": file_md5(path)}, []

    def prompt(self, row: VlmRow, protocol: VlmProtocol) -> str:
        if protocol.dataset == PARTS["yes-no"]:
            return row.question + MME_SUFFIX
        return mcq_prompt(row)

    def headlines_for(self, protocol: VlmProtocol) -> tuple[str, ...]:
        return self._HEADLINES[protocol.dataset]

    def units(self, rows: Sequence[VlmRow], protocol: VlmProtocol) -> list[Any]:
        dataset = protocol.dataset
        if dataset == PARTS["mcq"]:
            return [circular_index(row.index) for row in rows]
        if dataset == PARTS["yes-no"]:
            return [row.fields["image_path"] for row in rows]
        return [row.index // 2 for row in rows]  # pairs: rows 2j and 2j+1

    def paired_metrics(self, protocol: VlmProtocol) -> dict[str, PairedMetric]:
        """yes-no: both headlines per image, ``acc_plus`` right or wrong (both questions right), ``acc`` the share of
        its two questions right (continuous); the other parts: their first headline (:class:`ChoiceBenchmark`)."""
        if protocol.dataset == PARTS["yes-no"]:
            return {"acc_plus": PairedMetric("binary"), "acc": PairedMetric("continuous")}
        return super().paired_metrics(protocol)

    def paired_unit(self, protocol: VlmProtocol) -> str:
        """A CircularEval question (mcq), an image (yes-no), a pair (pairs): the units :meth:`units` groups."""
        return {PARTS["mcq"]: "question", PARTS["yes-no"]: "image"}.get(protocol.dataset, "pair")

    def unit_scores(
        self, scored: Sequence[tuple[VlmRow, Mapping[str, Any]]], protocol: VlmProtocol
    ) -> dict[str, UnitScore]:
        """yes-no: an image's acc+ (1 when both questions are right) and acc (the mean of its two hits), as
        ``score_mme`` scores the one subtask; the other parts: all rows of the unit right (:class:`ChoiceBenchmark`)."""
        if protocol.dataset == PARTS["yes-no"]:
            first, second = yes_no_pair_hits(scored)
            return {"acc_plus": UnitScore(first * second), "acc": UnitScore((first + second) / 2)}
        return super().unit_scores(scored, protocol)

    def extract(self, row: VlmRow, prediction: str, resolved: ResolvedBenchmark) -> str:
        if resolved.protocol.dataset == PARTS["yes-no"]:
            return extract_yes_no(prediction)
        return super().extract(row, prediction, resolved)

    def score_rows(
        self, resolved: ResolvedBenchmark, scored: Sequence[tuple[VlmRow, dict[str, Any]]]
    ) -> dict[str, Any]:
        dataset = resolved.protocol.dataset
        if dataset == PARTS["yes-no"]:
            # One subtask, "digits": its acc and acc+ are the headlines (MME's perception and cognition sums,
            # which need MME's own subtasks, do not apply).
            metrics = score_mme([yes_no_outcome(row, payload) for row, payload in scored])
            digits = metrics["subtasks"].get("digits")
            if digits is None:
                return {"acc_plus": not_computed("no image was scored"), "acc": not_computed("no image was scored")}
            return {"acc_plus": digits["acc_plus"], "acc": digits["acc"], "coverage": metrics["coverage"]}
        outcomes = [self.outcome(row, payload, resolved) for row, payload in scored]
        if dataset == PARTS["mcq"]:
            metrics = score_circular(outcomes)
            return {"circular_accuracy": metrics.pop("overall"), **metrics}
        return score_mmvp(outcomes)
