"""Vision-language judges behind an OpenAI-compatible chat-completions API: a client library.

It knows nothing of benchmarks or runs (judged benchmarks build on it in :mod:`evals.benchmarks.judged`).

- :class:`JudgeClient`: retries with backoff, ``Retry-After``, a rate limit, bounded concurrency, and one
  explicit state per judged item (``ok``, ``parse_failed``, ``judge_error``, ``content_filtered``,
  ``missing_image``); :class:`JudgeUnreachable` when the endpoint gives no HTTP response, and the key
  masked in every encoding (:class:`SecretRedactor`).
- :class:`JudgeCache`: answers on disk keyed on judge, template, text, image hashes and decoding.
- :func:`resolve_judge_config`: variant defaults, environment, config file and options into a
  :class:`JudgeConfig` (the key stays in the environment).
- :class:`JudgeTemplate`: a judge prompt with placeholders, identified by its sha256.
"""

from evals.judges.cache import JudgeCache, cache_key
from evals.judges.client import (
    JudgeClient,
    JudgeUnreachable,
    RateLimiter,
    SecretRedactor,
    backoff_delay,
    parse_retry_after,
    secret_forms,
)
from evals.judges.config import JudgeConfig, JudgeConfigError, api_key_from_env, api_key_source, resolve_judge_config
from evals.judges.request import JudgeImage, JudgeRequest
from evals.judges.states import (
    CONTENT_FILTERED,
    JUDGE_ERROR,
    MISSING_IMAGE,
    OK,
    PARSE_FAILED,
    STATES,
    Judgement,
    MissingImage,
    ParseError,
)
from evals.judges.template import JudgeTemplate

__all__ = [
    "CONTENT_FILTERED",
    "JUDGE_ERROR",
    "MISSING_IMAGE",
    "OK",
    "PARSE_FAILED",
    "STATES",
    "JudgeCache",
    "JudgeClient",
    "JudgeConfig",
    "JudgeConfigError",
    "JudgeImage",
    "JudgeRequest",
    "JudgeUnreachable",
    "Judgement",
    "MissingImage",
    "ParseError",
    "RateLimiter",
    "SecretRedactor",
    "api_key_from_env",
    "api_key_source",
    "JudgeTemplate",
    "backoff_delay",
    "cache_key",
    "parse_retry_after",
    "resolve_judge_config",
    "secret_forms",
]
