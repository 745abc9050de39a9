"""MME: yes/no questions, two per image with opposite answers; perception and cognition scores."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evals.benchmark import ResolvedBenchmark, register_benchmark

from ..vlm import VlmRow, extract_yes_no
from ..vlm_benchmark import (
    EXTRACTION_JUDGE,
    PairedMetric,
    UnitScore,
    VlmBenchmark,
    VlmProtocol,
    parse_yes_no_reply,
    yes_no_outcome,
    yes_no_pair_hits,
    yes_no_template,
)
from ..vlm_scoring import MME_COGNITION, MME_PERCEPTION, score_mme

# Each headline is a plain sum of its subtasks' scores: weight 1 a subtask.
SUBTASKS = {"perception": MME_PERCEPTION, "cognition": MME_COGNITION}


@register_benchmark
class MMEBenchmark(VlmBenchmark):
    """MME as VLMEvalKit's ``MME_rating`` scores it: per subtask acc + acc+ (pairs grouped by ``image_path``),
    perception the sum of 10 subtasks (MME-P, the published number), cognition the sum of 4.

    VLMEvalKit's judge fallback for Y/N leaves an answer it cannot read unknown (no random letter), so MME has two
    variants: ``default`` (rules) and ``judge``.
    """

    version = "1"
    variants = {
        "default": VlmProtocol("MME"),
        "judge": VlmProtocol("MME", "judge", EXTRACTION_JUDGE),
    }
    headlines = ("perception", "cognition")
    judge_placeholders = ("{question}", "{prediction}")
    judge_parse_attempts = 5
    unit_noun = "images"

    def check_rows(self, rows: Sequence[VlmRow], protocol: VlmProtocol) -> None:
        super().check_rows(rows, protocol)
        for row in rows:
            if row.fields.get("image_path") is None or row.fields.get("category") is None:
                raise ValueError(
                    f"mme: row index {row.index} has no image_path or category; MME pairs questions by image_path "
                    "(is this VLMEvalKit's MME.tsv?)"
                )
        per_image = Counter(self.units(rows, protocol))
        odd = sorted(key for key, count in per_image.items() if count != 2)
        if odd:
            raise ValueError(
                f"mme: {len(odd)} images do not have exactly two questions (first: {odd[0][1]} in {odd[0][0]}); "
                "acc+ pairs the two questions of each image"
            )

    def units(self, rows: Sequence[VlmRow], protocol: VlmProtocol) -> list[Any]:
        # MME_rating pairs the two questions of an image by image_path, within a subtask.
        return [(str(row.fields["category"]), str(row.fields["image_path"])) for row in rows]

    def extract(self, row: VlmRow, prediction: str, resolved: ResolvedBenchmark) -> str:
        return extract_yes_no(prediction)

    def default_judge_template(self) -> Any:
        return yes_no_template()

    def judge_values(self, row: VlmRow, prediction: str, protocol: VlmProtocol) -> dict[str, str]:
        return {"question": row.question, "prediction": prediction}

    def judge_parser(self, row: VlmRow, protocol: VlmProtocol) -> Callable[[str], dict[str, Any]]:
        return parse_yes_no_reply

    def score_rows(
        self, resolved: ResolvedBenchmark, scored: Sequence[tuple[VlmRow, dict[str, Any]]]
    ) -> dict[str, Any]:
        outcomes = [yes_no_outcome(row, payload) for row, payload in scored]
        return score_mme(outcomes)

    def paired_metrics(self, protocol: VlmProtocol) -> dict[str, PairedMetric]:
        """Perception and cognition, per image (continuous, in MME points): sums of subtask means, so each image
        contributes its score weighted by its subtask's size (:func:`~evals.benchmark.stratified_unit_values`)."""
        return {name: PairedMetric("continuous", 1.0, dict.fromkeys(tasks, 1.0)) for name, tasks in SUBTASKS.items()}

    def unit_scores(
        self, scored: Sequence[tuple[VlmRow, Mapping[str, Any]]], protocol: VlmProtocol
    ) -> dict[str, UnitScore]:
        """An image's subtask score, as ``score_mme`` averages it: 100 x ((h1 + h2) / 2 + h1 h2) (acc + acc+), in
        the headline its subtask belongs to (none for a category outside both)."""
        first, second = yes_no_pair_hits(scored)
        category = str(scored[0][0].fields["category"])
        value = 100.0 * (first + second) / 2 + 100.0 * first * second  # acc + acc+, as score_mme adds them
        return {metric: UnitScore(value, category) for metric, subtasks in SUBTASKS.items() if category in subtasks}
