"""A slow OpenAI-compatible model server on 127.0.0.1, for browser tests that must see
an answer grow, stop it half-way, or get an exact answer (an HTML payload).

It streams the answer word by word with a pause between words, so a test can act
while the answer is still being written. The answer is picked by the first
``replies`` key found in the last user message (else ``default``). This is the
network edge we do not own; everything behind it is the real server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeModel:
    url: str = ""
    default: str = "This is the answer."
    replies: dict[str, str] = field(default_factory=dict)
    pause: float = 0.05  # seconds between two words
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, body: dict[str, Any]) -> str:
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        last = str(users[-1].get("content", "")) if users else ""
        for key, text in self.replies.items():
            if key in last:
                return text
        return self.default


def _chunk(text: str | None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
    event = {"id": "c", "object": "chat.completion.chunk", "model": "fake", "choices": [choice]}
    return f"data: {json.dumps(event)}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    model: FakeModel

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]})
        self._send(200, "application/json", body.encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.model.requests.append(body)
        text = self.model.answer(body)
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            answer = {"id": "c", "object": "chat.completion", "model": "fake", "choices": [choice]}
            self._send(200, "application/json", json.dumps(answer).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        words = text.split(" ")
        try:
            for n, word in enumerate(words):
                self.wfile.write(_chunk(word if n == 0 else " " + word))
                self.wfile.flush()
                time.sleep(self.model.pause)
            self.wfile.write(_chunk(None, "stop"))
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: the run was cancelled

    def _send(self, status: int, kind: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_model(model: FakeModel) -> Iterator[FakeModel]:
    """Serve ``model`` on a free port; its ``url`` ends in ``/v1``."""
    handler = type("Handler", (_Handler,), {"model": model})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    model.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield model
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
