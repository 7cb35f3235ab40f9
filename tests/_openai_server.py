"""A real OpenAI-compatible chat-completions HTTP server on loopback, scriptable per test (judge, steer --judge).

    with OpenAIServer(respond=lambda req: f"echo {req.last_user}") as server:
        client = LLMClient(server.url, "test-model")     # server.url = "http://127.0.0.1:<port>/v1"
        server.push(Reply.error(429, retry_after=0.05), Reply.slow(2.0, "late"))   # served first, in order
        ...
        server.requests     # every Request received (path, headers, body; .messages, .model, .last_user)

Each POST .../chat/completions is answered by the next queued reply if any, else by `respond(request)`,
which returns a Reply or a plain string (a 200 answer with that content). Reply kinds: `Reply(content)`,
`Reply.error(status, retry_after=None)` (JSON error body; Retry-After in seconds, fractions allowed),
`Reply.slow(seconds, content)` (answers after a delay: past a client's timeout), `Reply.raw(body)` (a 200
whose body is whatever bytes), and `refuse` (a respond callback answering 403 to everything).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def last_user(self) -> str:
        users = [m.get("content", "") for m in self.messages if m.get("role") == "user"]
        return users[-1] if users else ""


@dataclass
class Reply:
    content: str | None = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes | None = None  # raw body instead of a chat completion

    @classmethod
    def error(
        cls, status: int, *, retry_after: float | None = None, message: str = "scripted error"
    ) -> Reply:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = json.dumps({"error": {"message": message, "type": "server_error", "code": status}}).encode()
        return cls(content=None, status=status, headers=headers, body=body)

    @classmethod
    def slow(cls, seconds: float, content: str = "") -> Reply:
        return cls(content=content, delay=seconds)

    @classmethod
    def raw(cls, body: bytes, status: int = 200) -> Reply:
        return cls(content=None, status=status, body=body)


def refuse(request: Request) -> Reply:
    """Every request: 403, no retry (an endpoint that refuses everything)."""
    return Reply.error(403, message="refused")


def completion(content: str, model: str | None) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "test-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class OpenAIServer:
    def __init__(self, respond: Callable[[Request], Reply | str] | None = None):
        self.respond = respond or (lambda request: "")
        self.requests: list[Request] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            queued = self._queue.popleft() if self._queue else None
        reply = queued if queued is not None else self.respond(request)
        return Reply(content=reply) if isinstance(reply, str) else reply

    def start(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: the tests read server.requests
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except json.JSONDecodeError:
                    body = {}
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(Reply.error(404, message=f"no route {self.path}"), request)
                self._send(server._next(request), request)

            def _send(self, reply: Reply, request: Request):
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body
                if data is None:
                    data = json.dumps(completion(reply.content or "", request.model)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True, name="openai-server").start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
