"""The judge client against a real loopback HTTP server: retries, failure states, cache, key hygiene, limits."""

import json
import logging
import random
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import quote, quote_plus

import pytest
from judge_server import (
    JudgeServer,
    Reply,
    answer,
    content_filter,
    http_error,
    key_leaks,
    lower_hex,
    malformed_body,
    refusal,
    slow,
)

from evals.judges import (
    JudgeCache,
    JudgeClient,
    JudgeConfig,
    JudgeConfigError,
    JudgeImage,
    JudgeRequest,
    MissingImage,
    ParseError,
    backoff_delay,
    cache_key,
    parse_retry_after,
    resolve_judge_config,
)
from evals.judges.template import JudgeTemplate

SECRET = "sk-test-7f3a9c1e5b2d4f60a8e9c7b1d3f5a2e4"
# A key whose encodings all differ from it: "/" (JSON may write "\/"), "+", "=", "&", a quote, a Latin-1 letter.
ODD_SECRET = 'sk-proj/0dd+Key=w1th&ch"rsé~7f3a9c1e5b2d'


def digit_parser(text):
    """Reads an answer that is one digit; anything else does not parse."""
    if not text.strip().isdigit():
        raise ParseError(f"not a digit: {text[:20]!r}")
    return {"value": int(text.strip())}


def config(server, **changes):
    settings = dict(
        model="judge-test",
        base_url=server.base_url,
        timeout_s=0.5,
        max_retries=3,
        backoff_base_s=0.01,
        backoff_max_s=0.04,
        concurrency=4,
    )
    settings.update(changes)
    return JudgeConfig(**settings)


def request(text="rate this", image=b"\x89PNG fake bytes"):
    return JudgeRequest(text=text, images=(JudgeImage(image),), system="be strict", template_sha256="t1")


def scripted(*replies, then=None):
    """A responder giving ``replies`` for the first calls of each distinct request, then ``then`` ("2")."""
    then = answer("2") if then is None else then
    return lambda call: replies[call.attempt - 1] if call.attempt <= len(replies) else then


# ---------------------------------------------------------------------- retries and failure states
def test_retries_server_errors_then_succeeds():
    with JudgeServer(scripted(http_error(500), http_error(502))) as server:
        judgement = JudgeClient(config(server)).judge(request(), digit_parser)
    assert judgement.state == "ok" and judgement.scores == {"value": 2}
    assert judgement.http_calls == 3 and server.total_calls == 3 and len(server.calls) == 1
    assert judgement.response_model == "loopback-judge-2026-01-01"


def test_timeout_and_malformed_body_are_retried():
    with JudgeServer(scripted(slow(1.5), malformed_body())) as server:
        started = time.monotonic()
        judgement = JudgeClient(config(server, timeout_s=0.3)).judge(request(), digit_parser)
    assert judgement.state == "ok" and judgement.http_calls == 3
    assert time.monotonic() - started < 1.4  # the slow call was abandoned at the client's timeout


def test_429_retry_after_is_honoured():
    with JudgeServer(scripted(http_error(429, "slow down", retry_after="0.4"))) as server:
        started = time.monotonic()
        client = JudgeClient(config(server, backoff_base_s=0.001, backoff_max_s=0.001))
        judgement = client.judge(request(), digit_parser)
        elapsed = time.monotonic() - started
    assert judgement.state == "ok" and judgement.http_calls == 2
    assert elapsed >= 0.4  # the backoff alone would have waited about a millisecond


def test_exhausted_retries_end_as_judge_error():
    with JudgeServer(lambda call: http_error(503, "overloaded")) as server:
        judgement = JudgeClient(config(server, max_retries=2)).judge(request(), digit_parser)
    assert judgement.state == "judge_error" and not judgement.ok
    assert judgement.http_calls == 3 and server.total_calls == 3
    assert "HTTP 503" in judgement.error and "overloaded" in judgement.error and judgement.scores is None


def test_non_retryable_client_error_is_judge_error_after_one_call():
    with JudgeServer(lambda call: http_error(400, "unsupported image")) as server:
        judgement = JudgeClient(config(server)).judge(request(), digit_parser)
    assert judgement.state == "judge_error" and server.total_calls == 1
    assert "HTTP 400: unsupported image" in judgement.error


@pytest.mark.parametrize(
    "reply",
    [content_filter(), refusal(), http_error(400, "blocked by policy", code="content_filter")],
    ids=["finish_reason", "refusal", "azure_400"],
)
def test_content_filter_and_refusal_are_their_own_state(reply):
    with JudgeServer(lambda call: reply) as server:
        judgement = JudgeClient(config(server)).judge(request(), digit_parser)
    assert judgement.state == "content_filtered" and server.total_calls == 1  # not retried: filters are deterministic


def test_unparseable_answers_are_reasked_then_parse_failed_and_not_cached(tmp_path):
    cache = JudgeCache(tmp_path / "cache")
    with JudgeServer(lambda call: answer("Score: excellent")) as server:
        client = JudgeClient(config(server), cache=cache)
        judgement = client.judge(request(), digit_parser, parse_attempts=3)
        assert judgement.state == "parse_failed" and judgement.attempts == 3 and server.total_calls == 3
        assert judgement.raw == "Score: excellent" and "not a digit" in judgement.error
        assert not list((tmp_path / "cache").rglob("*.json"))
        client.judge(request(), digit_parser)  # a failure is asked again, never served from the cache
        assert server.total_calls == 4


def test_reask_stops_at_the_first_answer_that_parses():
    with JudgeServer(scripted(answer("unsure"), then=answer("1"))) as server:
        judgement = JudgeClient(config(server)).judge(request(), digit_parser, parse_attempts=3)
    assert judgement.state == "ok" and judgement.scores == {"value": 1} and judgement.attempts == 2


# ---------------------------------------------------------------------- cache
def test_cached_answer_costs_no_call_and_key_covers_decoding_images_and_template(tmp_path):
    cache = JudgeCache(tmp_path / "cache")
    with JudgeServer(lambda call: answer("1")) as server:
        first = JudgeClient(config(server), cache=cache).judge(request(), digit_parser)
        again = JudgeClient(config(server), cache=cache).judge(request(), digit_parser)
        assert first.state == again.state == "ok" and not first.cached and again.cached
        assert server.total_calls == 1 and again.http_calls == 0 and again.scores == first.scores
        # Each of these is another question: a miss, one call each.
        JudgeClient(config(server, temperature=0.7), cache=cache).judge(request(), digit_parser)
        JudgeClient(config(server, version="judge-test-v2"), cache=cache).judge(request(), digit_parser)
        JudgeClient(config(server), cache=cache).judge(request(image=b"other image bytes"), digit_parser)
        JudgeClient(config(server), cache=cache).judge(
            JudgeRequest(text="rate this", images=request().images, system="be strict", template_sha256="t2"),
            digit_parser,
        )
        assert server.total_calls == 5
        first_key = cache_key(request(), config(server))
    keys = {path.stem for path in (tmp_path / "cache").rglob("*.json")}
    assert len(keys) == 5 and first_key in keys


def test_failed_judgements_are_not_cached(tmp_path):
    cache = JudgeCache(tmp_path / "cache")
    with JudgeServer(scripted(http_error(500), http_error(500), then=answer("2"))) as server:
        failed = JudgeClient(config(server, max_retries=1), cache=cache).judge(request(), digit_parser)
        assert failed.state == "judge_error" and not list((tmp_path / "cache").rglob("*.json"))
        retried = JudgeClient(config(server, max_retries=1), cache=cache).judge(request(), digit_parser)
    assert retried.state == "ok" and server.total_calls == 3


# ---------------------------------------------------------------------- the key
def test_api_key_goes_only_into_the_header(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", SECRET)
    echo = {"n": 0}

    def responder(call):
        echo["n"] += 1
        if call.attempt == 1 and "first" in call.text:  # a server that echoes the header in an error
            return http_error(500, f"upstream rejected {call.authorization}")
        if "second" in call.text:
            return http_error(403, f"forbidden for {call.authorization}")
        return answer(f"2 (seen {call.authorization})")

    caplog.set_level(logging.DEBUG)
    with JudgeServer(responder, api_key=SECRET) as server:
        cfg = config(server, api_key_env="MY_JUDGE_KEY")
        client = JudgeClient(cfg, cache=JudgeCache(tmp_path / "cache"))
        retried = client.judge(request("first"), lambda text: {"value": int(text[0])})
        rejected = client.judge(request("second"), digit_parser)
        assert server.history[0].authorization == f"Bearer {SECRET}"  # the key was sent
    assert retried.state == "ok" and rejected.state == "judge_error"
    assert "[redacted]" in rejected.error and "[redacted]" in retried.raw
    everything = [
        repr(client),
        repr(cfg),
        str(cfg.describe()),
        caplog.text,
        rejected.error,
        retried.raw,
        str(retried.to_payload()),
        str(rejected.to_payload()),
    ]
    everything += [path.read_text() for path in tmp_path.rglob("*") if path.is_file()]
    assert not [text for text in everything if SECRET in text]


def test_every_encoding_of_an_echoed_key_is_masked_everywhere_text_goes(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", ODD_SECRET)
    assert len({ODD_SECRET, json.dumps(ODD_SECRET)[1:-1], quote(ODD_SECRET), quote_plus(ODD_SECRET)}) == 4

    def responder(call):
        key = call.authorization.removeprefix("Bearer ")
        as_json, as_url, as_plus = json.dumps(key)[1:-1].replace("/", "\\/"), quote(key), quote_plus(key)
        if "retry" in call.text and call.attempt == 1:  # a 500 whose body is not JSON: it reaches the log
            return Reply(status=500, raw_body=f'upstream said {{"auth": "Bearer {as_json}"}}'.encode())
        if "malformed" in call.text and call.attempt == 1:
            return Reply(raw_body=f'{{"choices": [ "Bearer {as_json}"'.encode())
        if "forbidden" in call.text:  # the key falls on the 300-character cut of the error text
            return http_error(403, "x" * 280 + f" key {key} / {as_url} / {as_plus}")
        if "refused" in call.text:
            return refusal(f"I will not judge for {as_plus}")
        return Reply(
            content=f"2 (seen {as_json} {as_url} {as_plus} {lower_hex(as_url)} {key[:20]})", model=f"judge-for-{as_url}"
        )

    caplog.set_level(logging.DEBUG)
    with JudgeServer(responder, api_key=ODD_SECRET) as server:
        client = JudgeClient(config(server, api_key_env="MY_JUDGE_KEY"), cache=JudgeCache(tmp_path / "cache"))

        def parser(text):
            return {"value": int(text[0])}

        judged = {
            name: client.judge(request(name), parser)
            for name in ("plain", "retry", "malformed", "forbidden", "refused")
        }
        cached = client.judge(request("plain"), parser)
        assert server.history[0].authorization == f"Bearer {ODD_SECRET}"  # the key was sent, as it is
    assert [judged[n].state for n in judged] == ["ok", "ok", "ok", "judge_error", "content_filtered"]
    assert cached.cached and "[redacted]" in cached.raw and "[redacted]" in judged["forbidden"].error
    assert "[redacted]" in judged["plain"].response_model
    texts = [caplog.text, repr(client)] + [
        json.dumps(j.to_payload(), ensure_ascii=False) for j in [*judged.values(), cached]
    ]
    texts += [path.read_text() for path in tmp_path.rglob("*") if path.is_file()]
    assert "did not parse" not in caplog.text and "HTTP 500" in caplog.text and "malformed" in caplog.text
    assert key_leaks(texts, ODD_SECRET) == []


@pytest.mark.parametrize(
    "bad, problem",
    [
        (SECRET[:20] + "\n" + SECRET[20:], "line break"),  # two lines pasted from a file
        (SECRET[:20] + "\x01" + SECRET[20:], "control character"),
        (SECRET[:20] + "\u2013" + SECRET[20:], "outside Latin-1"),  # a typographic dash from a document
        ("sk-1234", "fewer than 8 characters"),
    ],
    ids=["newline", "control", "non_latin1", "short"],
)
def test_a_key_no_header_can_carry_is_refused_naming_the_variable_never_the_key(monkeypatch, bad, problem):
    monkeypatch.setenv("MY_JUDGE_KEY", bad)
    with JudgeServer(lambda call: answer("1")) as server:
        with pytest.raises(JudgeConfigError, match=problem) as error:
            JudgeClient(config(server, api_key_env="MY_JUDGE_KEY")).judge(request(), digit_parser)
        assert server.total_calls == 0
    message = str(error.value)
    assert "MY_JUDGE_KEY" in message and "\n" not in message
    assert key_leaks([message], bad) == []


def test_remote_judge_without_key_is_refused_before_any_call(monkeypatch):
    for name in ("UNILIP_JUDGE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(JudgeConfigError, match="UNILIP_JUDGE_API_KEY or OPENAI_API_KEY"):
        JudgeClient(JudgeConfig(model="gpt-4o", base_url="https://judge.example.org/v1"))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # the fallback variable
    assert SECRET not in repr(JudgeClient(JudgeConfig(model="gpt-4o", base_url="https://judge.example.org/v1")))


def test_config_layers_and_refuses_a_key_in_the_file(tmp_path):
    file = tmp_path / "judge.yaml"
    file.write_text("model: from-file\nmax_tokens: 64\nextra_body: {top_p: 0.5}\n")
    env = {"UNILIP_JUDGE_MODEL": "from-env", "UNILIP_JUDGE_BASE_URL": "http://127.0.0.1:9/v1"}
    defaults = {"model": "protocol-judge", "temperature": 0.0, "max_tokens": 2000}
    assert resolve_judge_config({}, defaults, env={}).model == "protocol-judge"
    assert resolve_judge_config({}, defaults, env=env).model == "from-env"
    layered = resolve_judge_config({"judge_config": str(file), "judge_temperature": "null"}, defaults, env=env)
    assert (layered.model, layered.base_url, layered.max_tokens) == ("from-file", "http://127.0.0.1:9/v1", 64)
    assert layered.decoding() == {"max_tokens": 64, "top_p": 0.5}  # temperature null: not sent
    assert resolve_judge_config({"judge_config": str(file), "judge_model": "opt"}, defaults, env=env).model == "opt"
    file.write_text(f"model: x\napi_key: {SECRET}\n")
    with pytest.raises(JudgeConfigError, match="must not hold the API key") as error:
        resolve_judge_config({"judge_config": str(file)}, defaults, env={})
    assert SECRET not in str(error.value)
    with pytest.raises(JudgeConfigError, match="unknown judge config keys"):
        resolve_judge_config({"judge_config": {"modle": "x"}}, defaults, env={})


# ---------------------------------------------------------------------- throughput
def test_concurrency_bound_is_respected():
    with JudgeServer(lambda call: answer("1", delay_s=0.15)) as server:
        client = JudgeClient(config(server, concurrency=3))
        jobs = [(index, (lambda i=index: request(f"item {i}"))) for index in range(12)]
        results = dict(client.judge_many(jobs, digit_parser))
    assert sorted(results) == list(range(12)) and all(j.state == "ok" for j in results.values())
    assert server.max_in_flight == 3 and len(server.calls) == 12


def test_a_parser_per_job_reads_each_answer_and_re_asks_what_it_refuses():
    """Item 0 accepts digits below 5 only: its first answer, 7, is asked again (scripted: then 2); item 1 takes 7."""

    def below(limit):
        def parse(text):
            value = digit_parser(text)["value"]
            if value >= limit:
                raise ParseError(f"{value} is not below {limit}")
            return {"value": value}

        return parse

    with JudgeServer(scripted(answer("7"))) as server:
        client = JudgeClient(config(server))
        jobs = [(index, (lambda i=index: request(f"item {i}"))) for index in range(2)]
        results = dict(client.judge_many(jobs, lambda tag: below(5 if tag == 0 else 10), 2, per_tag=True))
    assert results[0].scores == {"value": 2} and results[0].attempts == 2
    assert results[1].scores == {"value": 7} and results[1].attempts == 1


def test_rate_limit_spaces_request_starts():
    with JudgeServer(lambda call: answer("1")) as server:
        client = JudgeClient(config(server, concurrency=4, requests_per_minute=600))  # one start per 0.1 s
        started = time.monotonic()
        results = list(client.judge_many([(i, (lambda i=i: request(f"r{i}"))) for i in range(5)], digit_parser))
        elapsed = time.monotonic() - started
    assert len(results) == 5 and elapsed >= 0.4


def test_missing_image_is_its_own_state():
    def build():
        raise MissingImage("images/7.png: No such file or directory")

    with JudgeServer(lambda call: answer("1")) as server:
        ((tag, judgement),) = JudgeClient(config(server)).judge_many([("7", build)], digit_parser)
    assert tag == "7" and judgement.state == "missing_image" and "images/7.png" in judgement.error
    assert server.total_calls == 0


def test_consumer_stopping_early_cancels_queued_requests_and_caches_those_in_flight(tmp_path):
    cache = JudgeCache(tmp_path / "cache")
    with JudgeServer(lambda call: answer("1", delay_s=0.1)) as server:
        client = JudgeClient(config(server, concurrency=2), cache=cache)
        jobs = [(i, (lambda i=i: request(f"q{i}"))) for i in range(10)]
        stream = client.judge_many(jobs, digit_parser)
        next(stream)
        stream.close()  # as an interrupt does
        asked = server.total_calls
        assert 1 < asked < 10  # the queued ones never went out
        assert len(list((tmp_path / "cache").rglob("*.json"))) == asked  # every answer that came back is kept
        list(client.judge_many(jobs, digit_parser))
    assert server.total_calls == 10 and set(server.calls.values()) == {1}


# ---------------------------------------------------------------------- pieces
def test_backoff_is_exponential_capped_and_jittered():
    rng = random.Random(0)
    for retry, nominal in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 10.0), (12, 10.0)]:
        delays = [backoff_delay(retry, 0.5, 10.0, rng) for _ in range(50)]
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert max(delays) - min(delays) > nominal / 10  # jittered, not a constant


def test_retry_after_forms():
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert 25 < parse_retry_after({"Retry-After": later}) <= 30
    assert parse_retry_after({"Retry-After": "soon"}) is None and parse_retry_after({}) is None


def test_template_renders_placeholders_and_its_hash_follows_the_text(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("system: strict\nuser: 'Judge {prompt} against {explanation}; keep {braces}.'\n")
    template = JudgeTemplate.load(path, ("{prompt}", "{explanation}"))
    rendered = template.render({"{prompt}": "a cat", "{explanation}": "a feline"})
    assert rendered.text == "Judge a cat against a feline; keep {braces}." and rendered.system == "strict"
    assert rendered.template_sha256 == template.sha256 and template.source == "file:t.yaml"
    path.write_text("system: strict\nuser: 'Judge {prompt} against {explanation}!'\n")
    assert JudgeTemplate.load(path, ("{prompt}",)).sha256 != template.sha256
    with pytest.raises(ValueError, match="does not use {explanation}"):
        path.write_text("user: 'Judge {prompt}'\n")
        JudgeTemplate.load(path, ("{prompt}", "{explanation}"))
