"""Slow clients: a deadline for each request's header, a pace for its body, and a
deadline for a client that stops reading its answer.

uvicorn waits for ever for a connection that sends nothing, or half a header
and then nothing (its keep-alive timeout starts only after a response): a few
hundred such connections from one anonymous client hold every file descriptor
the process may open, and then nobody else connects (a slow-header attack,
"slowloris"). :class:`GuardedHttpProtocol` is uvicorn's httptools protocol with
a deadline: a connection must send a request's whole header within
``limits.header_timeout_seconds`` of opening (or of the first byte of its next
request), or it is answered 408 and closed. ``appforge serve`` runs uvicorn with
it. The body's pace is kept by :class:`BodyPace`, in the ASGI middleware.

A client may also stop reading its answer: a streamed run's, or a large one.
uvicorn then waits for ever for its buffer to drain, the connection and what is
queued for it (up to a run's whole output) stay, and a streamed run is never
told its caller has gone. The same protocol drops a connection whose answer
has not drained below the transport's low-water mark within
``limits.send_timeout_seconds`` of going above its high-water mark: the client
must read about 48 KiB in that time (the kernel's own buffer for the socket,
up to megabytes, fills first). The connection is reset; a stream then sees its
client go, and its run ends ``cancelled`` with what it produced (as when a
client hangs up).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# What a connection too slow with its header gets before it is closed.
_TOO_SLOW = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 37\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"the request header arrived too slowly"
)


@functools.cache
def _timeouts() -> tuple[float, float]:
    """``limits.header_timeout_seconds`` and ``limits.send_timeout_seconds`` of this
    process's settings (its environment, as the API's own: each of several uvicorn
    workers reads them once)."""
    from appforge.core.settings import Settings

    limits = Settings().limits
    return limits.header_timeout_seconds, limits.send_timeout_seconds


def header_timeout() -> float:
    return _timeouts()[0]


def send_timeout() -> float:
    return _timeouts()[1]


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a request's header must arrive within
    :func:`header_timeout` of the connection opening or of its first byte, and an
    answer whose writing is paused (the client reads too little of it) must resume
    within :func:`send_timeout`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_header()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_header()  # a next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._stop_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._stop_send_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(send_timeout(), self._not_reading)

    def resume_writing(self) -> None:
        self._stop_send_timer()
        super().resume_writing()

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _not_reading(self) -> None:
        # Closing would wait for the buffer to drain, which is what never happens. The
        # connection is reset (SO_LINGER 0), which also frees what the kernel holds
        # for it (megabytes), and uvicorn tells the app its client has gone.
        self._send_timer = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _await_header(self) -> None:
        if self._header_timer is None:  # the first request's: from the connection's opening
            self._header_timer = self.loop.call_later(header_timeout(), self._too_slow)

    def _stop_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A next request begun while the last answer still streams (pipelining):
            # closing now would cut that answer. Its header gets another period.
            self._await_header()
            return
        self.transport.write(_TOO_SLOW)
        self.transport.close()


class BodyPace:
    """How long a request body may take: each piece within ``gap`` seconds of the last,
    and, once ``gap`` seconds have passed, at least ``min_rate`` bytes a second on
    average since the first piece was asked for (0: no rate)."""

    def __init__(self, gap: float, min_rate: int, now: float) -> None:
        self.gap = gap
        self.min_rate = min_rate
        self.started = now

    def wait(self, received: int, now: float) -> float:
        """Seconds the next piece may take, having ``received`` bytes (0 or less: none)."""
        if not self.min_rate:
            return self.gap
        behind_at = self.started + self.gap + received / self.min_rate
        return min(self.gap, behind_at - now)
