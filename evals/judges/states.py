"""The explicit end states of a judged item, and what one judgement returns.

A judged item ends in exactly one state. Only ``ok`` carries scores: the other states are counted
(coverage) and never averaged as zeros.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OK = "ok"
PARSE_FAILED = "parse_failed"
JUDGE_ERROR = "judge_error"
CONTENT_FILTERED = "content_filtered"
MISSING_IMAGE = "missing_image"

STATES = (OK, PARSE_FAILED, JUDGE_ERROR, CONTENT_FILTERED, MISSING_IMAGE)
FAILED_STATES = STATES[1:]


class ParseError(ValueError):
    """A judge's answer does not follow the format the benchmark's parser reads."""


class MissingImage(FileNotFoundError):
    """An image a judge request needs is absent or unreadable."""


@dataclass
class Judgement:
    """The outcome of judging one item.

    Attributes:
        state: one of :data:`STATES`.
        scores: what the parser read from the answer (only for ``ok``).
        raw: the judge's last answer text, when there was one (kept for ``parse_failed`` review).
        error: why the item is not ``ok`` (never contains the API key).
        cached: the answer came from the on-disk cache (no HTTP call).
        http_calls: HTTP requests this judgement made, retries included.
        attempts: answers asked for (more than one when answers did not parse and the policy re-asks).
        cache_key: the cache key of the request (also identifies the request in logs).
        response_model: the model name the endpoint reported (the actual snapshot, when it says).
        finish_reason: the endpoint's finish reason for the last answer.
        usage: token usage the endpoint reported for the last answer.
    """

    state: str
    scores: dict[str, Any] | None = None
    raw: str | None = None
    error: str | None = None
    cached: bool = False
    http_calls: int = 0
    attempts: int = 0
    cache_key: str | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown judgement state {self.state!r}; states: {', '.join(STATES)}")

    @property
    def ok(self) -> bool:
        return self.state == OK

    def to_payload(self) -> dict[str, Any]:
        """The judgement as a JSON-able record payload (``state`` plus everything known)."""
        return {key: value for key, value in asdict(self).items() if value is not None}
