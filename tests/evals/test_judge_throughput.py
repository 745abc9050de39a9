"""Judge throughput in small: ``judge_many`` keeps ``concurrency`` requests in flight, and each answer is its request's.

The full measurement against a sequential client is ``benchmarks/judge_throughput.py``.
"""

import io
import re
import time
from http.server import ThreadingHTTPServer

import judge_server
from judge_server import JudgeServer, answer
from PIL import Image

from evals.judges import JudgeClient, JudgeConfig, JudgeImage, JudgeRequest, ParseError

LATENCY_S = 0.05
REQUESTS = 32
CONCURRENCY = 8
_ITEM = re.compile(r"item (\d+)")
_ANSWER = re.compile(r"item (\d+) scores (\d+)")


def png(index):
    """A distinct small PNG per request (its colour encodes ``index``)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (index, 255 - index, 7 * index % 256)).save(buffer, format="PNG")
    return buffer.getvalue()


def item_parser(text):
    """Reads ``item N scores S``: which request the server answered, and its score."""
    match = _ANSWER.fullmatch(text.strip())
    if not match:
        raise ParseError(f"unexpected answer {text[:40]!r}")
    return {"item": int(match.group(1)), "value": int(match.group(2))}


def respond(call):
    """After the simulated latency, answer the item the prompt names with a score derived from it."""
    item = int(_ITEM.search(call.text).group(1))
    return answer(f"item {item} scores {item % 7}", delay_s=LATENCY_S)


class _DeepBacklogServer(ThreadingHTTPServer):
    # The stdlib's listen backlog (5) overflows when 8 connections arrive while the accepting thread waits
    # for the GIL; the kernel then drops a SYN and the client's retransmit (1 s) would be timed as latency.
    request_queue_size = 128


def test_judge_many_overlaps_requests_up_to_concurrency_and_keeps_answers_with_their_requests(monkeypatch):
    monkeypatch.setattr(judge_server, "ThreadingHTTPServer", _DeepBacklogServer)
    images = [png(index) for index in range(REQUESTS)]
    requests = [
        JudgeRequest(text=f"Rate the image for item {index}.", images=(JudgeImage(images[index]),), system="be strict")
        for index in range(REQUESTS)
    ]
    with JudgeServer(respond) as server:
        config = JudgeConfig(model="judge-test", base_url=server.base_url, auth="none", concurrency=CONCURRENCY)
        client = JudgeClient(config)
        jobs = [(index, (lambda r=request: r)) for index, request in enumerate(requests)]
        started = time.perf_counter()
        yielded = list(client.judge_many(jobs, item_parser))
        wall = time.perf_counter() - started

    sequential = REQUESTS * LATENCY_S
    # At most CONCURRENCY at a time: REQUESTS / CONCURRENCY waves of LATENCY_S is the floor, and close to it.
    assert (REQUESTS / CONCURRENCY) * LATENCY_S <= wall < 0.4 * sequential, wall
    assert server.max_in_flight == CONCURRENCY
    assert server.total_calls == REQUESTS and len(server.calls) == REQUESTS  # each asked once: no retries

    # Every request yielded exactly once, and each tag's judgement answers that tag's request.
    assert sorted(tag for tag, _ in yielded) == list(range(REQUESTS))
    results = dict(yielded)
    assert [results[index].state for index in range(REQUESTS)] == ["ok"] * REQUESTS
    assert [results[index].scores for index in range(REQUESTS)] == [
        {"item": index, "value": index % 7} for index in range(REQUESTS)
    ]
    # The server got each request's own payload: its text, system line, model and image bytes.
    for call in server.history:
        item = int(_ITEM.search(call.text).group(1))
        assert call.text == f"Rate the image for item {item}."
        assert call.images == [images[item]] and call.system == "be strict"
        assert call.body["model"] == "judge-test"
