"""A tiny OpenAI look-alike on 127.0.0.1: the network edge of the OpenAI-compatible
provider's tests, for what a real server (llama_cpp.server) cannot be made to do:
answer 404/429/5xx with OpenAI's bodies and headers, stream usage, break off a
stream, or hold one open and notice when the client hangs up.

Replies are scripted (the last one repeats) and every request is recorded.
Beside it: the provider built on a :class:`FakeTime` (its waits between
retries are recorded and pass at once, so no test depends on the machine's
speed), and the ranges the openai SDK's backoff may wait.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from appforge.core.settings import OpenAISettings
from providers.base import ChatMessage, Completion, Delta, Generation, GenerationParams
from providers.openai_compat import OpenAICompatProvider

# The model the edge server plays, a question for it and short greedy sampling.
MODEL = "gpt-test"
COUNT: list[ChatMessage] = [{"role": "user", "content": "Count to 3."}]
GREEDY = GenerationParams(temperature=0.0, max_tokens=4)


@dataclass
class FakeTime:
    """The provider's clock and sleep: waits are recorded and pass at once."""

    now: float = 1000.0
    waits: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def make_provider(
    base_url: str, timing: FakeTime | None = None, **settings: Any
) -> OpenAICompatProvider:
    """The ``openai`` provider for ``base_url``; its retry waits go to ``timing`` if given."""
    timed: dict[str, Any] = {} if timing is None else {"clock": timing.clock, "sleep": timing.sleep}
    return OpenAICompatProvider("openai", OpenAISettings(base_url=base_url, **settings), **timed)


def drain(generation: Generation) -> list[Delta | Completion]:
    """Every delta of a generation, then its completion."""
    with generation:
        items: list[Delta | Completion] = list(generation)
        items.append(generation.result())
    return items


def is_backoff(waits: list[float]) -> bool:
    """Whether each wait is in the SDK's range for its retry: 0.5 s doubling, at most
    8 s, less 0-25 %."""
    full = [min(0.5 * 2**n, 8.0) for n in range(len(waits))]
    return all(0.75 * top <= wait <= top for wait, top in zip(waits, full, strict=True))


@dataclass
class Reply:
    """One scripted answer: a JSON ``body``, or Server-Sent Events when ``sse`` is set.

    ``cut``: send the first event (or half the body) and drop the connection.
    ``hold``: send the first event, then wait until the client hangs up; the body
    ends with the connection, or is sent in HTTP chunks with ``chunked`` (as
    uvicorn-based servers do), where the connection's end cuts it short.
    ``gate``: send the first event (in HTTP chunks), then the rest once the test sets
    the event (or after 60 s).
    ``mute``: read the request, send nothing, and wait until the client hangs up (up
    to 120 s: a server slow to begin its answer).
    """

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    sse: list[dict[str, Any]] | None = None
    cut: bool = False
    hold: bool = False
    chunked: bool = False
    gate: threading.Event | None = None
    mute: bool = False


@dataclass
class EdgeServer:
    url: str
    replies: list[Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    hung_up: threading.Event = field(default_factory=threading.Event)


def openai_error(message: str, code: str | None = None) -> dict[str, Any]:
    """An error body as OpenAI sends it."""
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def sse_chunk(text: str | None, finish: str | None, usage: Any = None) -> dict[str, Any]:
    """A ``chat.completion.chunk``; no text and no finish reason make a usage-only chunk."""
    choices = [] if text is None and finish is None else [
        {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
    ]  # fmt: skip
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-test",
        "choices": choices,
        "usage": usage,
    }


def completion_body(text: str) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` answering ``text``."""
    message = {"role": "assistant", "content": text}
    return {
        "id": "c2",
        "object": "chat.completion",
        "model": "gpt-test",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def _events(reply: Reply) -> list[bytes]:
    assert reply.sse is not None
    return [f"data: {json.dumps(e)}\n\n".encode() for e in reply.sse] + [b"data: [DONE]\n\n"]


def _chunk(data: bytes) -> bytes:
    """``data`` as one HTTP chunk."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class _Handler(BaseHTTPRequestHandler):
    state: EdgeServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def do_GET(self) -> None:
        self._answer({"_method": "GET", "_path": self.path})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._answer(json.loads(self.rfile.read(length) or b"{}"))

    def _answer(self, request: dict[str, Any]) -> None:
        state = self.state
        request["_authorization"] = self.headers.get("Authorization")
        request["_headers"] = dict(self.headers)
        request["_client_port"] = self.client_address[1]  # one per TCP connection
        state.requests.append(request)
        reply = state.replies[0] if len(state.replies) == 1 else state.replies.pop(0)
        if reply.mute:
            self.close_connection = True
            self._wait_for_hang_up(120)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.sse is not None:
            events = _events(reply)
            self.send_header("Content-Type", "text/event-stream")
        else:
            events = [json.dumps(reply.body).encode()]
            self.send_header("Content-Type", "application/json")
        data = b"".join(events)
        if reply.hold or reply.cut:
            self.send_header("Connection", "close")
            self.close_connection = True
        if (reply.hold and reply.chunked) or reply.gate is not None:
            self.send_header("Transfer-Encoding", "chunked")
        elif not reply.hold:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if reply.gate is not None:
            self.wfile.write(_chunk(events[0]))
            self.wfile.flush()
            reply.gate.wait(60)
            self.wfile.write(b"".join(_chunk(event) for event in events[1:]) + b"0\r\n\r\n")
        elif reply.hold:
            first = events[0]
            if reply.chunked:
                first = f"{len(first):x}\r\n".encode() + first + b"\r\n"
            self.wfile.write(first)
            self._wait_for_hang_up()
        elif reply.cut:
            self.wfile.write(events[0] if len(events) > 1 else data[: len(data) // 2])
        else:
            self.wfile.write(data)

    def _wait_for_hang_up(self, seconds: float = 30) -> None:
        # The request was read whole: the client sends nothing more, so a read
        # returns only when it closes the connection (or after ``seconds``).
        self.connection.settimeout(seconds)
        try:
            closed = self.connection.recv(1) == b""
        except TimeoutError:
            closed = False
        except OSError:  # reset by the peer: hung up too
            closed = True
        if closed:
            self.state.hung_up.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_edge() -> Iterator[EdgeServer]:
    """Run an edge server on a free 127.0.0.1 port; its ``url`` ends in ``/v1``."""
    state = EdgeServer(url="", replies=[])
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
