"""A client for OpenAI-compatible chat-completions endpoints (OpenAI, Azure, vLLM, SGLang) used as judges.

Standard library only (``urllib``), so a judge needs no SDK. It bounds concurrency with a thread pool,
spaces request starts to a requests-per-minute limit, retries timeouts, connection errors, HTTP
408/429/5xx and malformed bodies with capped exponential backoff plus jitter (honouring
``Retry-After``), and turns every outcome into a :class:`~evals.judges.states.Judgement` with one explicit
state. The API key only ever goes into a request header; any text that leaves the client (errors,
answers, logs) has it masked.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar
from urllib.parse import quote

from evals.judges.cache import JudgeCache, cache_key, cache_key_fields
from evals.judges.config import ENV_API_KEY, ENV_API_KEY_FALLBACK, JudgeConfig, JudgeConfigError, api_key_from_env
from evals.judges.request import JudgeRequest
from evals.judges.states import (CONTENT_FILTERED, JUDGE_ERROR, MISSING_IMAGE, OK, PARSE_FAILED, Judgement,
                                 MissingImage, ParseError)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Parser = Callable[[str], dict[str, Any]]

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_FILTER_CODES = frozenset({"content_filter", "content_policy_violation", "responsibleaipolicyviolation"})
_REDACTED = "[redacted]"


class RateLimiter:
    """Spaces request starts ``60 / per_minute`` seconds apart across threads (None: no limit)."""

    def __init__(self, per_minute: float | None, stop: threading.Event | None = None) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._stop = stop or threading.Event()

    def acquire(self) -> None:
        """Wait for this caller's start slot (returns at once without a limit, or when the client stops)."""
        if not self.interval:
            return
        with self._lock:  # reserve a slot under the lock, wait for it outside
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._stop.wait(slot - now)


def backoff_delay(retry: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry number ``retry`` (0-based): ``min(max_s, base_s * 2**retry)``, half of it jittered.

    Half fixed, half random ("equal jitter") keeps a floor under the wait while spreading out clients
    that failed together.
    """
    delay = min(max_s, base_s * (2 ** retry))
    return delay / 2 + rng.uniform(0.0, delay / 2)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a server asks to wait: ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


@dataclass
class _Answer:
    content: str
    finish_reason: str | None
    response_model: str | None
    usage: dict[str, Any] | None


class _Malformed(ValueError):
    """A 200 response whose body is not a chat completion."""


class JudgeClient:
    """Judge requests against one endpoint, with a cache, retries, a rate limit and bounded concurrency.

    Args:
        config: endpoint, model, decoding and throughput settings.
        cache: where ``ok`` answers are kept (None: no cache).
        api_key: the key; by default read from the environment as :func:`api_key_from_env` says.
            Required unless the endpoint is on loopback or ``config.auth`` is ``none``.
        rng: randomness for backoff jitter (tests pass a seeded one).
    """

    def __init__(self, config: JudgeConfig, cache: JudgeCache | None = None, api_key: str | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.cache = cache
        self._key = api_key if api_key is not None else api_key_from_env(config)
        if self._key is None and config.auth != "none" and not config.is_loopback:
            names = config.api_key_env or f"{ENV_API_KEY} or {ENV_API_KEY_FALLBACK}"
            raise JudgeConfigError(f"no API key for the judge at {config.describe()['endpoint']}: set {names} "
                                   "(or judge auth 'none' for an endpoint without authentication)")
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._stop = threading.Event()
        self._limiter = RateLimiter(config.requests_per_minute, self._stop)
        url = config.base_url.rstrip("/") + "/chat/completions"
        self._url = url + (f"?api-version={quote(config.api_version)}" if config.api_version else "")
        # The environment's proxy settings apply (as for any HTTP client), except for loopback judges.
        handlers = [urllib.request.ProxyHandler({})] if config.is_loopback else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"JudgeClient({self.config.identity!r} at {self.config.describe()['endpoint']})"

    # ------------------------------------------------------------------ public
    def judge(self, request: JudgeRequest, parser: Parser, parse_attempts: int = 1) -> Judgement:
        """Judge one request: from the cache when an ``ok`` answer is there, else by asking the endpoint.

        Args:
            request: what to ask.
            parser: reads scores from an answer; raises :class:`ParseError` when it cannot.
            parse_attempts: answers to ask for at most while they do not parse (a protocol knob: WISE's
                official script asks up to 3 times).
        """
        if parse_attempts < 1:
            raise ValueError("parse_attempts must be at least 1")
        key = cache_key(request, self.config)
        if self.cache is not None:
            entry = self.cache.get(key)
            if entry is not None:
                try:
                    scores = parser(entry["content"])
                except ParseError as error:
                    logger.warning("judge cache entry %s no longer parses (%s); asking the judge again",
                                   key[:12], error)
                else:
                    return Judgement(state=OK, scores=scores, raw=entry["content"], cached=True, cache_key=key,
                                     response_model=entry.get("response_model"),
                                     finish_reason=entry.get("finish_reason"), usage=entry.get("usage"))
        body = self._body(request)
        calls = 0
        last: _Answer | None = None
        problem = ""
        for attempt in range(1, parse_attempts + 1):
            outcome, used = self._complete(body, key)
            calls += used
            if isinstance(outcome, Judgement):
                outcome.http_calls, outcome.attempts, outcome.cache_key = calls, attempt, key
                return outcome
            last = outcome
            try:
                scores = parser(outcome.content)
            except ParseError as error:
                problem = self._redact(str(error))
                logger.warning("judge answer for request %s did not parse (attempt %d of %d): %s",
                               key[:12], attempt, parse_attempts, problem)
                continue
            response = {"finish_reason": outcome.finish_reason, "response_model": outcome.response_model,
                        "usage": outcome.usage}
            if self.cache is not None:
                self.cache.put(key, cache_key_fields(request, self.config), outcome.content, response)
            return Judgement(state=OK, scores=scores, raw=outcome.content, http_calls=calls, attempts=attempt,
                             cache_key=key, **response)
        assert last is not None
        return Judgement(state=PARSE_FAILED, raw=last.content, http_calls=calls, attempts=parse_attempts,
                         error=f"the answer did not parse ({parse_attempts} attempt(s)): {problem}", cache_key=key,
                         response_model=last.response_model, finish_reason=last.finish_reason, usage=last.usage)

    def judge_many(self, jobs: Iterable[tuple[T, Callable[[], JudgeRequest]]], parser: Parser,
                   parse_attempts: int = 1) -> Iterator[tuple[T, Judgement]]:
        """Judge many requests, at most ``config.concurrency`` at a time; yield ``(tag, judgement)`` as each ends.

        ``jobs`` pairs a tag with a function that builds the request; building happens in the worker
        (reading images there keeps memory bounded), and a :class:`MissingImage` it raises becomes a
        ``missing_image`` judgement. When the consumer stops early (an interrupt), requests not yet
        started are cancelled, retries stop, and requests in flight finish and are cached, so a
        resumed run asks none of them again.
        """
        source = iter(jobs)
        window = 2 * self.config.concurrency
        pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="judge")
        pending: dict[Future, T] = {}

        def fill() -> None:
            while len(pending) < window:
                try:
                    tag, build = next(source)
                except StopIteration:
                    return
                pending[pool.submit(self._judge_job, build, parser, parse_attempts)] = tag

        try:
            fill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
                fill()
        finally:
            if pending:
                self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self._stop.clear()

    # ------------------------------------------------------------------ internals
    def _judge_job(self, build: Callable[[], JudgeRequest], parser: Parser, parse_attempts: int) -> Judgement:
        try:
            request = build()
        except MissingImage as error:
            return Judgement(state=MISSING_IMAGE, error=str(error))
        return self.judge(request, parser, parse_attempts)

    def _body(self, request: JudgeRequest) -> bytes:
        payload = {"model": self.config.model, "messages": request.messages(), **self.config.decoding()}
        return json.dumps(payload).encode()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "unilip-evals-judge"}
        if self._key and self.config.auth == "bearer":
            headers["Authorization"] = f"Bearer {self._key}"
        elif self._key and self.config.auth == "api-key":
            headers["api-key"] = self._key
        return headers

    def _redact(self, text: str) -> str:
        return text.replace(self._key, _REDACTED) if self._key else text

    def _post(self, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        request = urllib.request.Request(self._url, data=body, headers=self._headers(), method="POST")
        try:
            with self._opener.open(request, timeout=self.config.timeout_s) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            try:
                data = error.read()
            except (OSError, http.client.HTTPException):
                data = b""
            return error.code, error.headers, data

    def _sleep(self, seconds: float) -> bool:
        """Wait; False when the client is stopping (the consumer went away), so retries end."""
        return not self._stop.wait(seconds)

    def _complete(self, body: bytes, key: str) -> tuple[_Answer | Judgement, int]:
        """One answer, retrying transient failures; a failed Judgement when none could be had."""
        calls = 0
        reason = ""
        for retry in range(self.config.max_retries + 1):
            if self._stop.is_set():
                return Judgement(state=JUDGE_ERROR, error="interrupted before an answer"), calls
            self._limiter.acquire()
            if self._stop.is_set():
                return Judgement(state=JUDGE_ERROR, error="interrupted before an answer"), calls
            calls += 1
            retry_after: float | None = None
            try:
                status, headers, data = self._post(body)
            except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException,
                    OSError) as error:
                cause = getattr(error, "reason", error)
                reason = f"no response ({type(cause).__name__}: {cause})"
            else:
                if status == 200:
                    try:
                        return self._read_answer(data), calls
                    except _Malformed as error:
                        reason = f"malformed response body ({error})"
                    except _Filtered as filtered:
                        return Judgement(state=CONTENT_FILTERED, error=self._redact(str(filtered)),
                                         http_calls=calls), calls
                elif status in _RETRYABLE_STATUS or status >= 500:
                    reason = f"HTTP {status}: {_error_text(data)}"
                    retry_after = parse_retry_after(headers)
                else:
                    message = self._redact(f"HTTP {status}: {_error_text(data)}")
                    state = CONTENT_FILTERED if _is_filter_error(data) else JUDGE_ERROR
                    return Judgement(state=state, error=message), calls
            reason = self._redact(reason)
            if retry == self.config.max_retries:
                break
            if retry_after is not None:
                delay = min(retry_after, self.config.retry_after_max_s)
            else:
                with self._rng_lock:
                    delay = backoff_delay(retry, self.config.backoff_base_s, self.config.backoff_max_s, self._rng)
            logger.warning("judge request %s: %s; retry %d of %d in %.2f s", key[:12], reason, retry + 1,
                           self.config.max_retries, delay)
            if not self._sleep(delay):
                return Judgement(state=JUDGE_ERROR, error=f"interrupted while retrying: {reason}"), calls
        return Judgement(state=JUDGE_ERROR, error=f"no usable answer after {calls} call(s); last: {reason}"), calls

    def _read_answer(self, data: bytes) -> _Answer:
        try:
            payload = json.loads(data)
            choice = payload["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise _Malformed(f"{type(error).__name__}: {_snippet(data)}") from None
        finish_reason = choice.get("finish_reason")
        refusal = message.get("refusal")
        if finish_reason == "content_filter":
            raise _Filtered("the endpoint's content filter stopped the answer (finish_reason content_filter)")
        if refusal:
            raise _Filtered(f"the judge refused: {str(refusal)[:200]}")
        content = message.get("content")
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        model = payload.get("model")
        return _Answer(content=self._redact(content or ""), finish_reason=finish_reason,
                       response_model=self._redact(str(model)) if model is not None else None,
                       usage=payload.get("usage") if isinstance(payload.get("usage"), dict) else None)


class _Filtered(Exception):
    """The endpoint filtered or refused the request."""


def _snippet(data: bytes, limit: int = 300) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    return text[:limit] + ("..." if len(text) > limit else "")


def _error_text(data: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the start of the body."""
    try:
        error = json.loads(data).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    except (ValueError, AttributeError):
        pass
    return _snippet(data) or "(empty body)"


def _is_filter_error(data: bytes) -> bool:
    """An error body saying a content filter blocked the prompt (OpenAI's and Azure's codes)."""
    try:
        error = json.loads(data).get("error") or {}
    except (ValueError, AttributeError):
        return False
    if not isinstance(error, dict):
        return False
    codes = {str(error.get("code", "")).lower()}
    inner = error.get("innererror")
    if isinstance(inner, dict):
        codes.add(str(inner.get("code", "")).lower())
    return bool(codes & _FILTER_CODES)
