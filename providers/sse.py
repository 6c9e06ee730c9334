"""Server-Sent Events (``text/event-stream``), read for their ``data`` only.

OpenAI-compatible servers stream one JSON object per event (``data: {...}``)
and end with ``data: [DONE]``; the event names, ids and retry hints of the SSE
format carry nothing we use.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator

import httpx

# What a model server's stream may hold: one event (a chunk of a chat completion is
# a few hundred bytes), and the whole stream (a long answer streams some hundred
# bytes a token). Past either, the stream is given up (AnswerTooLarge), whatever the
# server (a misbehaving one, or a proxy answering with something else) goes on sending.
MAX_EVENT_BYTES = 4 * 1024 * 1024
MAX_STREAM_BYTES = 256 * 1024 * 1024


class AnswerTooLarge(httpx.HTTPError):
    """A model server's answer (a body, a stream or one of its events) past our limit."""


def event_data(
    chunks: Iterable[bytes], most_event: int = MAX_EVENT_BYTES, most: int = MAX_STREAM_BYTES
) -> Iterator[bytes]:
    """The ``data`` of each Server-Sent Event in a byte stream.

    Lines end with LF, CRLF or CR (also split across two chunks); an empty line
    ends an event; several ``data:`` lines of one event are joined with LF (an
    event whose data is empty is dropped);
    comments (``: keep-alive``) and other fields are skipped. A line or an event
    over ``most_event`` bytes, or a stream over ``most``, raises AnswerTooLarge.
    """
    pending = b""  # the start of a line whose end has not come yet
    after_cr = False  # the last chunk ended with CR: an LF starting the next is its pair
    data: list[bytes] = []
    held = 0  # bytes of the event being read (its data lines so far)
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > most:
            raise AnswerTooLarge(f"the model server's stream is larger than {most} bytes")
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        if not chunk:
            continue
        lines = (pending + chunk).splitlines(keepends=True)
        pending = b"" if lines[-1].endswith((b"\n", b"\r")) else lines.pop()
        if held + len(pending) > most_event:
            raise AnswerTooLarge(f"an event of the model server is over {most_event} bytes")
        for line in lines:
            line = line.rstrip(b"\r\n")
            if not line:
                if data and data != [b""]:  # an event with empty data is not dispatched
                    yield b"\n".join(data)
                data, held = [], 0
            elif line.startswith(b"data:"):
                value = line[5:]
                value = value[1:] if value.startswith(b" ") else value
                data.append(value)
                held += len(value)
                if held > most_event:
                    message = f"an event of the model server is over {most_event} bytes"
                    raise AnswerTooLarge(message)
    if pending.startswith(b"data:"):
        value = pending[5:]
        data.append(value[1:] if value.startswith(b" ") else value)
    if data and data != [b""]:  # a stream cut before its last empty line: keep what it said
        yield b"\n".join(data)


def finish_reading(events: Iterator[bytes], most: int = 8) -> None:
    """Read what follows ``[DONE]`` (normally nothing but the end of the body), so the
    connection goes back to the pool instead of being closed half-read; bounded."""
    try:
        for n, _ in enumerate(events):
            if n >= most:
                return
    except httpx.HTTPError:
        return


def cut(response: httpx.Response) -> None:
    """End a stream another thread may be blocked reading: shut its connection down,
    so the read returns at once with the end of the stream (which httpx raises as a
    broken connection) instead of waiting out its read timeout.

    The shutdown is made on the connection's file descriptor, not through its socket
    object: a TLS socket's own ``shutdown`` drops its SSL state under the reader."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if not isinstance(sock, socket.socket):
        return
    try:
        fd = sock.fileno()
        if fd < 0:  # already closed
            return
        raw = socket.socket(fileno=fd)
        try:
            raw.shutdown(socket.SHUT_RDWR)
        finally:
            raw.detach()  # the descriptor stays the connection's, closed with it
    except OSError:  # closed or ended meanwhile: nothing to cut
        return
