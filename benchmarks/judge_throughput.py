"""Judge throughput: our client (``JudgeClient.judge_many``) against a sequential client as upstream's scripts run.

Starts, in this process, a loopback OpenAI-compatible chat-completions server on a thread per
connection, which answers every request after a simulated latency (200 ms by default: a remote judge's
time to answer, not its network). Then it sends the same N WISE-style judge requests (our WISE-Verified
template, a distinct prompt each, a small PNG attached as a ``data:`` URL) three ways:

* ours: ``JudgeClient.judge_many`` at ``--concurrency`` (32), the real request path (images read from
  files in the workers, a fresh cache directory per run, default retries, WISE's parser), and the same
  without a cache (what the cache's durable writes cost);
* sequential: what the upstream evaluation scripts do, one blocking ``POST`` after another (``urllib``,
  the same payloads, the same parser).

Each round starts with a different client; the JSON on stdout holds the median requests/s of each, the
ratio of ours (with its cache) to sequential, how far each is from the ideal, the most requests the
server had in flight at once for each client, and the machine's facts.
Every answer is checked against its request (the server echoes an item marker), so a client that
mixes answers up fails the run instead of looking fast.

    python benchmarks/judge_throughput.py [--requests 256] [--concurrency 32] [--latency-ms 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evals.benchmarks.wise.benchmark import PLACEHOLDERS, TEMPLATES  # noqa: E402
from evals.benchmarks.wise.scoring import parse_verified  # noqa: E402
from evals.judges import JudgeCache, JudgeClient, JudgeConfig, JudgeImage, JudgeRequest  # noqa: E402
from evals.judges.template import JudgeTemplate  # noqa: E402

logger = logging.getLogger("judge_throughput")

MODEL = "loopback-judge"
# The server finds this marker in the prompt and repeats it in its answer: each answer names its request.
_MARKER = re.compile(r"item-(\d+)")


class LoopbackJudge:
    """An OpenAI-compatible judge on 127.0.0.1 that answers each request after ``latency_s``.

    One thread per connection (``ThreadingHTTPServer``), so concurrent requests overlap as they would at
    a real endpoint. It counts requests and the most in flight at once; ``GET /v1/models`` (the client's
    reachability probe) is answered and counted apart.
    """

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.requests = 0
        self.probes = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """The API root a client is configured with."""
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reset_counts(self) -> None:
        """Zero the counters (between timed runs)."""
        with self._lock:
            self.requests = self.probes = self.in_flight = self.max_in_flight = 0

    def start(self) -> LoopbackJudge:
        """Listen on a port the OS picks and serve from a background thread."""
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # one line per request would swamp stderr
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with judge._lock:
                    judge.probes += 1
                judge._send(self, 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                judge._answer(self)

        class Server(ThreadingHTTPServer):
            # The default listen backlog (5) is below the connections a concurrent client opens at once;
            # an overflowing backlog drops SYNs, and the retransmit (1 s) would be measured as latency.
            request_queue_size = 1024
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers.get("Content-Length", 0))))
        text = " ".join(
            part.get("text", "")
            for message in body["messages"]
            if isinstance(message["content"], list)
            for part in message["content"]
        )
        marker = _MARKER.search(text)
        item = int(marker.group(1)) if marker else -1
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.latency_s)
            content = f"The image for item-{item} shows the intended content.\nScore: {item % 2}"
            completion = {
                "id": f"chatcmpl-{item}",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320},
            }
            self._send(handler, 200, completion)
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def write_images(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    """``count`` distinct seeded noise PNGs of ``size`` x ``size`` (noise: PNG cannot shrink it, so the
    bytes sent are what an image of that size costs)."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        path = folder / f"{index}.png"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def make_requests(template: JudgeTemplate, count: int) -> list[JudgeRequest]:
    """WISE-style requests without images (the workers attach them, as in a real run)."""
    requests = []
    for index in range(count):
        prompt = f"item-{index}: the traditional clothing worn at a festival held in the country of prompt {index}"
        explanation = f"The image should show the garment of item-{index} with its characteristic colours and cut."
        requests.append(template.render({"{prompt}": prompt, "{explanation}": explanation}))
    return requests


def with_image(request: JudgeRequest, path: Path) -> JudgeRequest:
    """``request`` with the image file at ``path`` attached, read now (as WISE's ``build_request`` does)."""
    return JudgeRequest(
        text=request.text,
        images=(JudgeImage.from_file(path),),
        system=request.system,
        template_sha256=request.template_sha256,
    )


def check_answers(answers: dict[int, dict[str, Any]], count: int, who: str) -> None:
    """Every request answered once, with the score its own item earns (the server's ``item % 2``)."""
    wrong = [index for index in range(count) if answers.get(index) != {"score": index % 2}]
    if wrong or len(answers) != count:
        raise AssertionError(f"{who}: {len(wrong)} of {count} answers missing or not their request's, e.g. {wrong[:5]}")


def run_ours(
    config: JudgeConfig,
    requests: list[JudgeRequest],
    images: list[Path],
    cache_root: Path | None,
) -> float:
    """Wall seconds for ``judge_many`` on every request; answers checked."""
    cache = JudgeCache(Path(tempfile.mkdtemp(dir=cache_root))) if cache_root is not None else None
    client = JudgeClient(config, cache=cache)
    jobs = [
        (index, lambda r=request, p=path: with_image(r, p))
        for index, (request, path) in enumerate(zip(requests, images, strict=True))
    ]
    answers: dict[int, dict[str, Any]] = {}
    start = time.perf_counter()
    for index, judgement in client.judge_many(jobs, parse_verified):
        if judgement.state != "ok":
            raise AssertionError(f"ours: request {index} ended {judgement.state}: {judgement.error}")
        answers[index] = judgement.scores
    seconds = time.perf_counter() - start
    check_answers(answers, len(requests), "ours")
    return seconds


def run_sequential(
    server: LoopbackJudge, config: JudgeConfig, requests: list[JudgeRequest], images: list[Path]
) -> float:
    """Wall seconds for one blocking request after another, as upstream's scripts judge; answers checked."""
    url = server.base_url + "/chat/completions"
    # A loopback server must not go through an environment proxy (as our client does for loopback judges).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    answers: dict[int, dict[str, Any]] = {}
    start = time.perf_counter()
    for index, (request, path) in enumerate(zip(requests, images, strict=True)):
        messages = with_image(request, path).messages()
        body = json.dumps({"model": config.model, "messages": messages, **config.decoding()}).encode()
        post = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with opener.open(post, timeout=config.timeout_s) as response:
            payload = json.loads(response.read())
        answers[index] = parse_verified(payload["choices"][0]["message"]["content"])
    seconds = time.perf_counter() - start
    check_answers(answers, len(requests), "sequential")
    return seconds


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved timed runs of both clients; the medians and what the server saw."""
    template = JudgeTemplate.load(TEMPLATES / "verified.yaml", PLACEHOLDERS, source="builtin:wise/verified.yaml")
    requests = make_requests(template, args.requests)
    server = LoopbackJudge(args.latency_ms / 1000).start()
    config = JudgeConfig(model=MODEL, base_url=server.base_url, auth="none", concurrency=args.concurrency)
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "ours_no_cache": [], "sequential": []}
    try:
        with tempfile.TemporaryDirectory(prefix="judge-throughput-") as scratch:
            root = Path(scratch)
            (root / "images").mkdir()
            images = write_images(root / "images", args.requests, args.image_size, seed=0)
            # Ours once with a fresh cache (a real run writes every answer to it) and once without, to
            # show what the cache's durable writes cost; each round starts with a different client.
            clients = ("ours", "ours_no_cache", "sequential")
            for round_index in range(args.rounds):
                shift = round_index % len(clients)
                for who in clients[shift:] + clients[:shift]:
                    server.reset_counts()
                    if who == "sequential":
                        seconds = run_sequential(server, config, requests, images)
                    else:
                        seconds = run_ours(config, requests, images, root if who == "ours" else None)
                    run = {
                        "round": round_index,
                        "seconds": round(seconds, 4),
                        "requests_per_s": round(args.requests / seconds, 3),
                        "server_requests": server.requests,
                        "max_in_flight": server.max_in_flight,
                    }
                    runs[who].append(run)
                    logger.info("round %d %s: %s", round_index, who, run)
            image_bytes = statistics.median(path.stat().st_size for path in images)
    finally:
        server.stop()

    def summary(who: str) -> dict[str, Any]:
        rates = [run["requests_per_s"] for run in runs[who]]
        return {
            "requests_per_s_median": round(statistics.median(rates), 3),
            "seconds_median": round(statistics.median(run["seconds"] for run in runs[who]), 4),
            "max_in_flight": max(run["max_in_flight"] for run in runs[who]),
            "runs": runs[who],
        }

    ours, sequential = summary("ours"), summary("sequential")
    latency_s = args.latency_ms / 1000
    # At a constant latency our client runs ceil(N / concurrency) waves; the sequential one N latencies.
    ideal_ours_s = -(-args.requests // args.concurrency) * latency_s
    return {
        "benchmark": "judge_throughput",
        "command": " ".join(["python", *sys.argv]),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "rounds": args.rounds,
        "image": {"size_px": args.image_size, "png_bytes_median": image_bytes},
        "ours": {**ours, "client": "JudgeClient.judge_many, a fresh cache directory per run"},
        "ours_no_cache": {**summary("ours_no_cache"), "client": "JudgeClient.judge_many without a cache"},
        "sequential": {**sequential, "client": "urllib, one blocking POST after another"},
        "ratio": round(ours["requests_per_s_median"] / sequential["requests_per_s_median"], 2),
        "ideal": {
            "ours_seconds": ideal_ours_s,
            "sequential_seconds": args.requests * latency_s,
            "ratio": round(args.requests * latency_s / ideal_ours_s, 2) if ideal_ours_s else None,
        },
        "overhead": {
            "ours_seconds_over_ideal": round(ours["seconds_median"] - ideal_ours_s, 4),
            "sequential_ms_per_request": round((sequential["seconds_median"] / args.requests - latency_s) * 1000, 3),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": args.loadavg_before,
            "loadavg_after": _loadavg(),
        },
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print its JSON to stdout (progress goes to stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256, help="judge requests per run")
    parser.add_argument("--concurrency", type=int, default=32, help="our client's concurrency")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the server's simulated time to answer")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each client, alternating order")
    parser.add_argument("--image-size", type=int, default=64, help="side of the attached PNG, in pixels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    args.loadavg_before = _loadavg()
    print(json.dumps(measure(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
