"""A client for OpenAI-compatible chat-completions endpoints (OpenAI, Azure, vLLM, SGLang) used as judges.

Standard library only (``urllib``), so a judge needs no SDK. It bounds concurrency with a thread pool,
spaces request starts to a requests-per-minute limit, retries timeouts, connection errors, HTTP
408/429/5xx and malformed bodies with capped exponential backoff plus jitter (honouring
``Retry-After``), and turns every outcome into a :class:`~evals.judges.states.Judgement` with one explicit
state. The API key only ever goes into a request header; any text that leaves the client (errors,
answers, logs, cache entries) has it masked in every encoding an endpoint may echo it in
(:class:`SecretRedactor`), and a key that a header cannot carry is refused before any call.

An endpoint that is down is found out early: the first request that misses the cache is preceded by
one cheap probe (:meth:`JudgeClient.check_reachable`), and during judging a request that used up its
retries while the endpoint's last :data:`UNREACHABLE_AFTER_SILENT_CALLS` calls (from any thread) got
no HTTP response at all stops every request and raises :class:`JudgeUnreachable`; the requests it
stops get no judgement, so a rerun asks them.
"""

from __future__ import annotations

import email.utils
import html
import http.client
import json
import logging
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

from evals.judges.cache import JudgeCache, cache_key, cache_key_fields
from evals.judges.config import (
    ENV_API_KEY,
    ENV_API_KEY_FALLBACK,
    JudgeConfig,
    JudgeConfigError,
    api_key_source,
    check_api_key,
    endpoint_label,
)
from evals.judges.request import JudgeRequest
from evals.judges.states import (
    CONTENT_FILTERED,
    JUDGE_ERROR,
    MISSING_IMAGE,
    OK,
    PARSE_FAILED,
    Judgement,
    MissingImage,
    ParseError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
Parser = Callable[[str], dict[str, Any]]

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_FILTER_CODES = frozenset({"content_filter", "content_policy_violation", "responsibleaipolicyviolation"})
_REDACTED = "[redacted]"
# The endpoint counts as down when a request has used up its retries and the latest this-many calls, from
# any thread, got no HTTP response at all (refused, reset, DNS failure, timeout). One request's retries
# span its backoff (about 15-30 s with the defaults), so a blip shorter than that does not stop a run.
UNREACHABLE_AFTER_SILENT_CALLS = 3
PROBE_TIMEOUT_S = 5.0
# Masking also covers any run of this many consecutive characters of the key, so an echo that an
# endpoint (or a proxy) cut short still leaves no usable part of it.
KEY_FRAGMENT = 12
_HEX_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}")


class JudgeUnreachable(ConnectionError):
    """The judge endpoint gives no HTTP response: not started, wrong address, or gone during judging."""


def secret_forms(secret: str) -> set[str]:
    """Every encoding in which an endpoint, a proxy or an exception may echo ``secret``.

    The literal text; JSON string escapes (``json.dumps`` with and without ``ensure_ascii``, ``\\/`` for
    ``/`` as some servers write it, and JSON inside JSON); URL encodings (``quote`` with and without
    ``/`` kept, ``quote_plus``), each with upper- and lower-case hex; HTML escapes; Python's ``repr``
    and ``unicode_escape``.
    """
    forms = {
        secret,
        repr(secret)[1:-1],
        secret.encode("unicode_escape").decode("ascii"),
        html.escape(secret),
        html.escape(secret, quote=False),
    }
    for ensure_ascii in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1]
        for form in (escaped, escaped.replace("/", "\\/")):
            forms |= {form, json.dumps(form, ensure_ascii=ensure_ascii)[1:-1]}
    forms |= {quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe="/")}
    # %2f or %2F, \u00e9 or \u00E9: encoders differ in the case of their hex digits.
    forms |= {_HEX_ESCAPE.sub(lambda m: m.group(0).lower(), form) for form in forms}
    forms |= {_HEX_ESCAPE.sub(_upper_hex, form) for form in forms}
    return {form for form in forms if form}


def _upper_hex(match: re.Match) -> str:
    text = match.group(0)
    prefix = 2 if text.startswith("\\") else 1  # "\\u" or "%"
    return text[:prefix] + text[prefix:].upper()


class SecretRedactor:
    """Masks a secret in text: every form of :func:`secret_forms`, and any run of :data:`KEY_FRAGMENT`
    or more consecutive characters of it (an echo cut short).

    Apply it to whole texts *before* cutting them short: a cut could otherwise split the key and leave
    a piece that no longer matches.
    """

    def __init__(self, secret: str | None) -> None:
        self._secret = secret or ""
        forms = sorted(secret_forms(secret), key=len, reverse=True) if secret else []
        self._pattern = re.compile("|".join(re.escape(form) for form in forms)) if forms else None
        width = min(KEY_FRAGMENT, len(self._secret))
        self._width = width
        self._fragments = (
            {self._secret[i : i + width] for i in range(len(self._secret) - width + 1)} if width else set()
        )

    def __call__(self, text: str) -> str:
        """``text`` with the secret masked as ``[redacted]``."""
        if self._pattern is None or not text:
            return text
        text = self._pattern.sub(_REDACTED, text)
        covered = [False] * len(text)
        hit = False
        for start in range(len(text) - self._width + 1):
            if text[start : start + self._width] in self._fragments:
                covered[start : start + self._width] = [True] * self._width
                hit = True
        if not hit:
            return text
        out: list[str] = []
        for index, char in enumerate(text):
            if not covered[index]:
                out.append(char)
            elif index == 0 or not covered[index - 1]:
                out.append(_REDACTED)
        return "".join(out)

    def scrub(self, value: Any) -> Any:
        """A JSON-like value (dicts, lists, strings) with the secret masked in every string, keys included."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.scrub(key): self.scrub(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        return value


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
    delay = min(max_s, base_s * (2**retry))
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
        api_key: the key; by default read from the environment as :func:`api_key_source` says.
            Required unless the endpoint is on loopback or ``config.auth`` is ``none``.
        rng: randomness for backoff jitter (tests pass a seeded one).

    Raises:
        JudgeConfigError: no key for a remote endpoint, or a key an HTTP header cannot carry (the
            message names the environment variable, never the key).
    """

    def __init__(
        self,
        config: JudgeConfig,
        cache: JudgeCache | None = None,
        api_key: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        found = ("the api_key argument", api_key) if api_key is not None else api_key_source(config)
        self._key = found[1] if found else None
        if self._key is None and config.auth != "none" and not config.is_loopback:
            names = config.api_key_env or f"{ENV_API_KEY} or {ENV_API_KEY_FALLBACK}"
            raise JudgeConfigError(
                f"no API key for the judge at {config.describe()['endpoint']}: set {names} "
                "(or judge auth 'none' for an endpoint without authentication)"
            )
        if found and config.auth != "none":
            check_api_key(found[1], found[0])
        self._redact = SecretRedactor(self._key if config.auth != "none" else None)
        self._endpoint = endpoint_label(config.base_url)
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._stop = threading.Event()
        self._limiter = RateLimiter(config.requests_per_minute, self._stop)
        url = config.base_url.rstrip("/") + "/chat/completions"
        self._url = url + (f"?api-version={quote(config.api_version)}" if config.api_version else "")
        self._probe_url = config.base_url.rstrip("/") + "/models"
        # The environment's proxy settings apply (as for any HTTP client), except for loopback judges.
        handlers = [urllib.request.ProxyHandler({})] if config.is_loopback else []
        self._opener = urllib.request.build_opener(*handlers)
        # Whether the endpoint answers: probed once before the first call, then followed call by call.
        self._health = threading.Lock()
        self._probed = False
        self._silent_calls = 0  # consecutive calls, from any thread, that got no HTTP response
        self._unreachable: JudgeUnreachable | None = None

    def __repr__(self) -> str:
        return f"JudgeClient({self.config.identity!r} at {self._endpoint})"

    # ------------------------------------------------------------------ public
    def check_reachable(self, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        """Check once that the endpoint answers HTTP: ``GET <base_url>/models`` without the key.

        Any HTTP status counts (401, 404 ... come from a live server); no response at all within
        ``min(timeout_s, config.timeout_s)`` does not. The environment's proxy applies as for requests.

        Raises:
            JudgeUnreachable: nothing answered, with the reason and what to do.
        """
        request = urllib.request.Request(self._probe_url, headers={"User-Agent": "unilip-evals-judge"}, method="GET")
        try:
            with self._opener.open(request, timeout=min(timeout_s, self.config.timeout_s)):
                pass  # a status line came back: reachable (the body does not matter)
        except urllib.error.HTTPError:
            return  # an HTTP error status is an answer: the server is there
        except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as error:
            raise self._unreachable_error(_no_response_reason(error)) from None

    def judge(self, request: JudgeRequest, parser: Parser, parse_attempts: int = 1) -> Judgement:
        """Judge one request: from the cache when an ``ok`` answer is there, else by asking the endpoint.

        Args:
            request: what to ask.
            parser: reads scores from an answer; raises :class:`ParseError` when it cannot.
            parse_attempts: answers to ask for at most while they do not parse (a protocol knob: WISE's
                official script asks up to 3 times).

        Raises:
            JudgeUnreachable: the endpoint gives no HTTP response (see the module docstring).
        """
        try:
            return self._judge_one(request, parser, parse_attempts)
        finally:
            if self._unreachable is not None:
                self._reset_health()  # the next call probes again (the endpoint may be back)

    def judge_many(
        self,
        jobs: Iterable[tuple[T, Callable[[], JudgeRequest]]],
        parser: Parser | Callable[[T], Parser],
        parse_attempts: int = 1,
        *,
        per_tag: bool = False,
    ) -> Iterator[tuple[T, Judgement]]:
        """Judge many requests, at most ``config.concurrency`` at a time; yield ``(tag, judgement)`` as each ends.

        ``parser`` reads every answer; with ``per_tag``, ``parser(tag)`` gives the parser of that job's answers
        (an answer that is right for one item and not another: a multiple-choice letter the item does not have).

        ``jobs`` pairs a tag with a function that builds the request; building happens in the worker
        (reading images there keeps memory bounded), and a :class:`MissingImage` it raises becomes a
        ``missing_image`` judgement. When the consumer stops early (an interrupt), requests not yet
        started are cancelled, retries stop, and requests in flight finish and are cached, so a
        resumed run asks none of them again.

        Raises:
            JudgeUnreachable: the endpoint went silent (see the module docstring). Requests not
                started are cancelled and those under way stop at their next attempt; none of them is
                yielded, so they stay to do; answers already received are yielded or cached.
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
                job_parser = parser(tag) if per_tag else parser
                pending[pool.submit(self._judge_job, build, job_parser, parse_attempts)] = tag

        try:
            fill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    tag = pending.pop(future)
                    judgement = future.result()  # JudgeUnreachable from a worker ends the run here
                    yield tag, judgement
                fill()
        finally:
            if pending or self._unreachable is not None:
                self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self._reset_health()

    # ------------------------------------------------------------------ internals
    def _judge_one(self, request: JudgeRequest, parser: Parser, parse_attempts: int) -> Judgement:
        if parse_attempts < 1:
            raise ValueError("parse_attempts must be at least 1")
        key = cache_key(request, self.config)
        if self.cache is not None:
            entry = self.cache.get(key)
            if entry is not None:
                # Entries written before a redaction rule existed are masked on the way out too.
                content = self._redact(entry["content"])
                try:
                    scores = parser(content)
                except ParseError as error:
                    logger.warning(
                        "judge cache entry %s no longer parses (%s); asking the judge again",
                        key[:12],
                        self._redact(str(error)),
                    )
                else:
                    return Judgement(
                        state=OK,
                        scores=scores,
                        raw=content,
                        cached=True,
                        cache_key=key,
                        response_model=self._redact.scrub(entry.get("response_model")),
                        finish_reason=self._redact.scrub(entry.get("finish_reason")),
                        usage=self._redact.scrub(entry.get("usage")),
                    )
        self._ensure_reachable()
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
                logger.warning(
                    "judge answer for request %s did not parse (attempt %d of %d): %s",
                    key[:12],
                    attempt,
                    parse_attempts,
                    problem,
                )
                continue
            response = {
                "finish_reason": outcome.finish_reason,
                "response_model": outcome.response_model,
                "usage": outcome.usage,
            }
            if self.cache is not None:
                self.cache.put(key, cache_key_fields(request, self.config), outcome.content, response)
            return Judgement(
                state=OK,
                scores=scores,
                raw=outcome.content,
                http_calls=calls,
                attempts=attempt,
                cache_key=key,
                **response,
            )
        assert last is not None
        return Judgement(
            state=PARSE_FAILED,
            raw=last.content,
            http_calls=calls,
            attempts=parse_attempts,
            error=f"the answer did not parse ({parse_attempts} attempt(s)): {problem}",
            cache_key=key,
            response_model=last.response_model,
            finish_reason=last.finish_reason,
            usage=last.usage,
        )

    def _judge_job(self, build: Callable[[], JudgeRequest], parser: Parser, parse_attempts: int) -> Judgement:
        try:
            request = build()
        except MissingImage as error:
            return Judgement(state=MISSING_IMAGE, error=self._redact(str(error)))
        return self._judge_one(request, parser, parse_attempts)

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

    # ------------------------------------------------------------------ endpoint health
    def _unreachable_error(self, reason: str) -> JudgeUnreachable:
        return JudgeUnreachable(
            f"judge at {self._endpoint} unreachable ({self._redact(reason)}); start it or fix "
            "judge_base_url, then run the same command to resume"
        )

    def _ensure_reachable(self) -> None:
        """Probe the endpoint before this client's first call (once); raise while it is known to be down."""
        with self._health:
            if self._unreachable is not None:
                raise self._unreachable
            if self._probed:
                return
            try:
                self.check_reachable()
            except JudgeUnreachable as error:
                self._unreachable = error
                self._stop.set()
                raise
            self._probed = True

    def _record_call(self, answered: bool) -> int:
        """Count a call's outcome; the number of consecutive calls, from any thread, without a response."""
        with self._health:
            self._silent_calls = 0 if answered else self._silent_calls + 1
            return self._silent_calls

    def _declare_unreachable(self, reason: str) -> JudgeUnreachable:
        with self._health:
            if self._unreachable is None:
                self._unreachable = self._unreachable_error(
                    f"no HTTP response to the last {self._silent_calls} calls; last: {reason}"
                )
            self._stop.set()  # wakes requests waiting to retry; they raise instead of recording a failure
            return self._unreachable

    def _reset_health(self) -> None:
        with self._health:
            self._unreachable = None
            self._probed = False
            self._silent_calls = 0
        self._stop.clear()

    def _stopped(self) -> Judgement | None:
        """Raise when the endpoint is down; an ``interrupted`` judgement when the consumer went away."""
        if self._unreachable is not None:
            raise self._unreachable
        if self._stop.is_set():
            return Judgement(state=JUDGE_ERROR, error="interrupted before an answer")
        return None

    def _sleep(self, seconds: float) -> bool:
        """Wait; False when the client is stopping (the consumer went away, or the endpoint is down)."""
        return not self._stop.wait(seconds)

    def _complete(self, body: bytes, key: str) -> tuple[_Answer | Judgement, int]:
        """One answer, retrying transient failures; a failed Judgement when none could be had.

        Raises:
            JudgeUnreachable: this request used up its retries with no HTTP response to its last call
                while the endpoint's last :data:`UNREACHABLE_AFTER_SILENT_CALLS` calls got none either,
                or another request found the endpoint down meanwhile.
        """
        calls = 0
        reason = ""
        silent = 0
        for retry in range(self.config.max_retries + 1):
            stopped = self._stopped()
            if stopped is not None:
                return stopped, calls
            self._limiter.acquire()
            stopped = self._stopped()
            if stopped is not None:
                return stopped, calls
            calls += 1
            retry_after: float | None = None
            try:
                status, headers, data = self._post(body)
            except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as error:
                reason = f"no response ({_no_response_reason(error)})"
                silent = self._record_call(answered=False)
            else:
                silent = self._record_call(answered=True)
                if status == 200:
                    try:
                        return self._read_answer(data), calls
                    except _Malformed as error:
                        reason = f"malformed response body ({error})"
                    except _Filtered as filtered:
                        return Judgement(state=CONTENT_FILTERED, error=str(filtered), http_calls=calls), calls
                elif status in _RETRYABLE_STATUS or status >= 500:
                    reason = f"HTTP {status}: {self._error_text(data)}"
                    retry_after = parse_retry_after(headers)
                else:
                    message = f"HTTP {status}: {self._error_text(data)}"
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
            logger.warning(
                "judge request %s: %s; retry %d of %d in %.2f s",
                key[:12],
                reason,
                retry + 1,
                self.config.max_retries,
                delay,
            )
            if not self._sleep(delay):
                stopped = self._stopped()
                return (stopped or Judgement(state=JUDGE_ERROR, error=f"interrupted while retrying: {reason}")), calls
        if silent >= UNREACHABLE_AFTER_SILENT_CALLS:
            raise self._declare_unreachable(reason)
        return Judgement(state=JUDGE_ERROR, error=f"no usable answer after {calls} call(s); last: {reason}"), calls

    def _error_text(self, data: bytes) -> str:
        """The ``error.message`` of an OpenAI-style error body, else the start of the body; key masked first."""
        try:
            error = json.loads(data).get("error")
            if isinstance(error, dict) and error.get("message"):
                return _shorten(self._redact(str(error["message"])))
        except (ValueError, AttributeError):
            pass
        return self._snippet(data) or "(empty body)"

    def _snippet(self, data: bytes, limit: int = 300) -> str:
        return _shorten(self._redact(data.decode("utf-8", errors="replace").strip()), limit)

    def _read_answer(self, data: bytes) -> _Answer:
        try:
            payload = json.loads(data)
            choice = payload["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise _Malformed(f"{type(error).__name__}: {self._snippet(data)}") from None
        finish_reason = self._redact.scrub(choice.get("finish_reason"))
        refusal = message.get("refusal")
        if finish_reason == "content_filter":
            raise _Filtered("the endpoint's content filter stopped the answer (finish_reason content_filter)")
        if refusal:
            raise _Filtered(f"the judge refused: {_shorten(self._redact(str(refusal)), 200)}")
        content = message.get("content")
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        model = payload.get("model")
        usage = payload.get("usage")
        return _Answer(
            content=self._redact(content or ""),
            finish_reason=finish_reason,
            response_model=self._redact(str(model)) if model is not None else None,
            usage=self._redact.scrub(usage) if isinstance(usage, dict) else None,
        )


class _Filtered(Exception):
    """The endpoint filtered or refused the request."""


def _shorten(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters (mask secrets before: a cut can split one)."""
    return text[:limit] + ("..." if len(text) > limit else "")


def _no_response_reason(error: BaseException) -> str:
    """``Type: message`` of what stopped a call before any HTTP response (urllib wraps the cause)."""
    cause = getattr(error, "reason", error)
    return f"{type(cause).__name__}: {cause}"


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
