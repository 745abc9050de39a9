"""A real OpenAI-compatible chat-completions server on loopback, for judge tests.

``JudgeServer(responder)`` listens on 127.0.0.1 (port chosen by the OS) and answers
``POST /v1/chat/completions`` with whatever ``responder(call)`` returns: an answer, an HTTP error (with
``Retry-After``), a body that is not JSON, a refusal, a content-filter stop, or a reply that comes
later than the client's timeout. It counts calls per distinct request body, records the largest
number of requests in flight, and checks the API key when given one. ``GET /v1/models`` (the client's
reachability probe) answers a model list and is counted apart (``probes``). ``port`` binds a given
port (to bring a stopped server back at the same address); ``stop()`` may be called mid-run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_plus


@dataclass
class Reply:
    """What the server sends for one call."""

    status: int = 200
    content: str | None = None
    finish_reason: str = "stop"
    refusal: str | None = None
    raw_body: bytes | None = None  # sent as is (a malformed body)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait before answering (longer than the client's timeout: a timeout)
    model: str = "loopback-judge-2026-01-01"


def answer(content: str, **kwargs: Any) -> Reply:
    return Reply(content=content, **kwargs)


def http_error(
    status: int, message: str = "injected failure", retry_after: str | None = None, code: str | None = None
) -> Reply:
    body = json.dumps({"error": {"message": message, "type": "test", "code": code}}).encode()
    return Reply(status=status, raw_body=body, headers={"Retry-After": retry_after} if retry_after else {})


def malformed_body() -> Reply:
    return Reply(raw_body=b"{'choices': this is not JSON")


def slow(seconds: float, content: str = "late") -> Reply:
    return Reply(content=content, delay_s=seconds)


def content_filter() -> Reply:
    return Reply(content=None, finish_reason="content_filter")


def refusal(text: str = "I can't help with that request.") -> Reply:
    return Reply(content=None, refusal=text)


@dataclass
class ChatCall:
    """One call as the responder sees it."""

    body: dict[str, Any]
    key: str  # sha256 of the canonical request body: equal for identical requests
    attempt: int  # 1 for the first call with this body, 2 for the second ...
    text: str  # the user turn's text parts, joined
    images: list[bytes]  # the decoded data-URL images, in order
    system: str | None
    authorization: str | None


def _parse_call(body: dict[str, Any]) -> tuple[str, list[bytes], str | None]:
    texts, images, system = [], [], None
    for message in body.get("messages", []):
        if message.get("role") == "system":
            system = message["content"] if isinstance(message["content"], str) else json.dumps(message["content"])
            continue
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if part.get("type") == "text":
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                url = part["image_url"]["url"]
                images.append(base64.b64decode(url.split(",", 1)[1]))
    return "\n".join(texts), images, system


class JudgeServer:
    """The loopback judge; use as a context manager. ``base_url`` is what a client is configured with."""

    def __init__(self, responder: Callable[[ChatCall], Reply], api_key: str | None = None, port: int = 0) -> None:
        self.responder = responder
        self.api_key = api_key
        self.port = port
        self.probes = 0
        self.calls: Counter[str] = Counter()
        self.history: list[ChatCall] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> JudgeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                server._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                server._probe(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]  # start() again after stop() comes back at this address
        self._server.daemon_threads = True  # a handler still sleeping past a client timeout must not block stop()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ handling
    def _probe(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.probes += 1
        if handler.path.split("?")[0] != "/v1/models":
            self._send(handler, Reply(status=404, raw_body=b'{"error": {"message": "no such route"}}'))
            return
        body = json.dumps({"object": "list", "data": [{"id": "loopback-judge", "object": "model"}]}).encode()
        self._send(handler, Reply(raw_body=body))

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        if handler.path.split("?")[0] != "/v1/chat/completions":
            self._send(handler, Reply(status=404, raw_body=b'{"error": {"message": "no such route"}}'))
            return
        authorization = handler.headers.get("Authorization")
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            self._send(handler, http_error(401, "invalid API key"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(handler, http_error(400, "request body is not JSON"))
            return
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        text, images, system = _parse_call(body)
        with self._lock:
            self.calls[key] += 1
            call = ChatCall(body, key, self.calls[key], text, images, system, authorization)
            self.history.append(call)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self.responder(call)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            self._send(handler, reply, body.get("model"))
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply, model: str | None = None) -> None:
        if reply.raw_body is not None:
            data = reply.raw_body
        else:
            message = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
            data = json.dumps(
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": reply.model,
                    "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
            ).encode()
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to answer


# ---------------------------------------------------------------------- did a key leak?
def lower_hex(text: str) -> str:
    """Percent escapes with lower-case hex digits (%2f), as some encoders write them."""
    return re.sub(r"%[0-9A-F]{2}", lambda match: match.group(0).lower(), text)


def key_encodings(secret: str) -> set[str]:
    """The key as an endpoint may echo it (written out here independently of the client's own list),
    and every 12-character piece of it (an echo cut short)."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        lower_hex(quote(secret, safe="")),
        lower_hex(quote_plus(secret)),
    }
    return forms | {secret[i : i + 12] for i in range(len(secret) - 11)}


def key_leaks(texts: Iterable[str], secret: str) -> list[tuple[str, str]]:
    """The (start of text, encoding) pairs in which some encoding of ``secret`` appears."""
    forms = key_encodings(secret)
    return [(text[:80], form) for text in texts for form in forms if form in text]
