"""What a model server sends is read within bounds: a whole answer up to 16 MiB, an
error answer's first 64 KiB (for its message), a streamed event up to 4 MiB and a
stream up to 256 MiB. Past them the call fails with a clear ProviderError and the
connection is dropped, instead of the process reading (and holding) whatever a
misbehaving server, or a proxy in front of it, goes on sending.

The server on 127.0.0.1 below sends more than each limit and records whether the
client hung up before taking it all: the old client read everything."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from openai_edge import COUNT, GREEDY, drain, make_provider

from providers.errors import ProviderError
from providers.retries import MAX_BODY_BYTES, MAX_ERROR_BYTES
from providers.sse import MAX_EVENT_BYTES, AnswerTooLarge, event_data

PIECE = 64 * 1024


@dataclass
class Flood:
    """What the server answers: ``status``, then ``start`` and ``size`` bytes of
    ``fill`` (in 64 KiB writes); whether the client hung up before the end."""

    status: int
    start: bytes
    size: int
    fill: bytes = b" "
    content_type: str = "application/json"
    hung_up: threading.Event = field(default_factory=threading.Event)


@contextmanager
def flooding(flood: Flood) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(flood.status)
            self.send_header("Content-Type", flood.content_type)
            self.send_header("Content-Length", str(len(flood.start) + flood.size))
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                self.wfile.write(flood.start)
                block = flood.fill * PIECE
                for _ in range(flood.size // PIECE):
                    self.wfile.write(block)
            except OSError:  # the client closed the connection
                flood.hung_up.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_whole_answer_past_the_limit_is_refused_and_dropped():
    flood = Flood(200, b'{"choices": [', 4 * MAX_BODY_BYTES)
    with flooding(flood) as url:
        provider = make_provider(url, api_key="k", max_retries=0)
        with pytest.raises(ProviderError, match=f"larger than {MAX_BODY_BYTES} bytes"):
            provider.complete("m", COUNT, GREEDY)
    assert flood.hung_up.wait(60)


def test_an_error_answer_is_read_for_its_message_only_so_far():
    """A 400 whose body goes on and on: its status still makes the error; the body
    past 64 KiB is not read."""
    flood = Flood(400, b'{"error": {"message": "bad"', 64 * MAX_ERROR_BYTES)
    with flooding(flood) as url:
        provider = make_provider(url, api_key="k", max_retries=0)
        with pytest.raises(ProviderError) as raised:
            provider.complete("m", COUNT, GREEDY)
    assert raised.value.details["status"] == 400
    assert flood.hung_up.wait(60)


def test_a_streamed_event_past_the_limit_is_refused_and_dropped():
    """One ``data:`` line that never ends (2x the event limit, then more)."""
    flood = Flood(200, b"data: ", 4 * MAX_EVENT_BYTES, b"x", "text/event-stream")
    with flooding(flood) as url:
        provider = make_provider(url, api_key="k", max_retries=0)
        with pytest.raises(ProviderError, match=f"over {MAX_EVENT_BYTES} bytes"):
            drain(provider.stream("m", COUNT, GREEDY))
    assert flood.hung_up.wait(60)


def _chunk(text: str) -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(delta).encode() + b"\n\n"


def test_a_stream_and_its_events_are_bounded():
    """The limits are the reader's arguments: many data lines of one event add up,
    and so do the events of a stream."""
    lines = [b"data: " + b"y" * 10 + b"\n"] * 5 + [b"\n"]
    assert list(event_data(lines, most_event=50)) == [b"\n".join([b"y" * 10] * 5)]
    with pytest.raises(AnswerTooLarge, match="over 49 bytes"):
        list(event_data(lines, most_event=49))
    stream = [_chunk("hi")] * 10
    assert len(list(event_data(stream, most=len(stream[0]) * 10))) == 10
    with pytest.raises(AnswerTooLarge, match="stream is larger than"):
        list(event_data(stream, most=len(stream[0]) * 10 - 1))
