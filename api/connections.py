"""Slow clients: a deadline for each request's header, a pace for its body, and a
deadline for a client that stops reading its answer.

uvicorn waits for ever for a connection that sends nothing, or half a header
and then nothing (its keep-alive timeout starts only after a response): a few
hundred such connections from one anonymous client hold every file descriptor
the process may open, and then nobody else connects (a slow-header attack,
"slowloris"). :class:`GuardedHttpProtocol` is uvicorn's httptools protocol with
a deadline: a connection must send a request's whole header within
``limits.header_timeout_seconds`` of opening (or of the first byte of its next
request), or it is answered 408 and closed. The parser keeps a header whole
however long it grows, so its size is bounded too: a request's line and header
together are at most ``limits.max_header_bytes``, or it is answered 431 and
closed. ``appforge serve`` runs uvicorn with it. The body's pace is kept by
:class:`BodyPace`, in the ASGI middleware.

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

Each connection holds a file, and a process may open only so many: one
anonymous client opening connections faster than any deadline closes them held
them all, and then nobody else could connect and the process could open no
file (SQLite's, an upload's, a model server's connection). The protocol counts
the connections the process holds: one client address may hold
``limits.max_connections_per_client`` of them (429 ``TOO_MANY_CONNECTIONS``;
trusted proxies, which carry many clients, have no such limit), and the process
``limits.max_connections``, never more than its open-files limit less a reserve
for its own files (503 ``SERVER_BUSY``). A refused connection is answered at
once, with Retry-After, and closed.

Closing a socket with unread data resets the connection, and a client still
sending (an upload answered 413 at its start, a body answered 408, a refused
connection) lost the answer it was sent. Every close of the protocol's
transport, uvicorn's own included, goes through :class:`_Lingering`: while the
client may still be sending, the answer is sent with the end of the stream,
and what still comes is read and dropped until the client closes its side. A
request answered before its body came whole closes its connection that way
(uvicorn kept it open for ever: each piece of the rest stopped its keep-alive
clock, and nothing started it again).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import resource
import socket
import struct
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import error_body
from api.proxies import TrustedProxies
from appforge.core.metrics import CONNECTION_REFUSALS, CONNECTIONS

log = logging.getLogger("api.connections")


@dataclass(frozen=True)
class _Limits:
    header_timeout: float
    send_timeout: float
    max_connections: int  # in this process
    max_per_client: int  # 0: none
    max_header_bytes: int
    proxies: TrustedProxies  # whose connections have no per-client limit


@functools.cache
def _limits() -> _Limits:
    """This process's limits, from its settings (its environment, as the API's own: each
    of several uvicorn workers reads them once)."""
    from appforge.core.settings import Settings

    settings = Settings()
    limits = settings.limits
    return _Limits(
        header_timeout=limits.header_timeout_seconds,
        send_timeout=limits.send_timeout_seconds,
        max_connections=connections_allowed(
            limits.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        ),
        max_per_client=limits.max_connections_per_client,
        max_header_bytes=limits.max_header_bytes,
        proxies=TrustedProxies(settings.trusted_proxies, settings.client_ipv6_prefix),
    )


def connections_allowed(setting: int, open_files: int) -> int:
    """Client connections a process may hold: ``setting`` (0: as many as it may), but
    never so many that the process has no files left for itself: its database
    connections, vector store, uploads and model servers get an eighth of its
    open-files limit, and at least 256."""
    if open_files == resource.RLIM_INFINITY:
        open_files = 1 << 20
    most = max(open_files - max(256, open_files // 8), 1)
    return most if setting == 0 else min(setting, most)


def header_timeout() -> float:
    return _limits().header_timeout


def send_timeout() -> float:
    return _limits().send_timeout


class _Held:
    """The client connections this process holds: in all and by client address."""

    def __init__(self) -> None:
        self.total = 0
        self.by_client: Counter[str] = Counter()
        self.said: dict[str, float] = {}  # when the log last told of each limit's refusals

    def refused(self, limit: str, now: float) -> None:
        CONNECTION_REFUSALS.labels(limit).inc()
        last = self.said.get(limit)
        if last is None or now - last >= 60:  # a warning a minute, not one per connection
            self.said[limit] = now
            log.warning(
                "refusing connections over the %s limit (%d held)",
                "per-client" if limit == "client" else "process's",
                self.total,
            )


_held = _Held()  # one event loop a process: uvicorn's


def _refusal(status: int, reason: str, code: str, message: str, *, retry: bool = True) -> bytes:
    body = json.dumps(error_body(code, message, {}, uuid.uuid4().hex)).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        + ("retry-after: 1\r\n" if retry else "")
        + "connection: close\r\n"
        "\r\n"
    ).encode() + body


_TOO_MANY = _refusal(
    429,
    "Too Many Requests",
    "TOO_MANY_CONNECTIONS",
    "this client holds as many connections as it may "
    "(APPFORGE_LIMITS__MAX_CONNECTIONS_PER_CLIENT); close one or try again shortly",
)
_BUSY = _refusal(
    503,
    "Service Unavailable",
    "SERVER_BUSY",
    "the server holds as many connections as it may; try again shortly",
)

# What a connection too slow with its header gets before it is closed (the code of a
# body that comes too slowly, as the ASGI middleware answers it).
_TOO_SLOW = _refusal(
    408,
    "Request Timeout",
    "REQUEST_TIMEOUT",
    "the request header arrived too slowly (APPFORGE_LIMITS__HEADER_TIMEOUT_SECONDS)",
    retry=False,
)
_HEADER_TOO_LARGE = _refusal(
    431,
    "Request Header Fields Too Large",
    "REQUEST_HEADER_TOO_LARGE",
    "the request's line and header are larger than the server takes "
    "(APPFORGE_LIMITS__MAX_HEADER_BYTES)",
    retry=False,
)

# How long a connection closed while its client may still be sending is kept after
# its answer, reading and dropping what comes: until the client closes its side, or
# no byte came for the gap, or at most the whole time (nginx's lingering close). A
# refused connection, which is not counted among those held, is kept at most a second:
# its client has sent at most a request's start.
_LINGER_GAP_SECONDS = 5.0
_LINGER_MOST_SECONDS = 30.0
_REFUSED_LINGER_SECONDS = 1.0


class _Lingering:
    """The connection's transport, whose close waits for the client when it may still
    be sending (its request's header or body not read to the end): what is queued is
    sent, then the end of the answer (a FIN), and what the client still sends is read
    and dropped until it closes its side (see ``_LINGER_*``). Closing a socket with
    unread data resets the connection, and a client still sending (an upload answered
    413 at its start, a body too slow answered 408) lost the answer it was sent."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.lingering = False
        self._gap: asyncio.TimerHandle | None = None
        self._most: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        if self._protocol.may_still_send():
            self.close_after_reading()
        else:
            self._transport.close()

    def close_after_reading(self, most: float = _LINGER_MOST_SECONDS) -> None:
        """Send what is queued and a FIN, then read and drop until the client closes (or
        ``most`` seconds have passed)."""
        if self.lingering or self._transport.is_closing():
            return
        if not self._transport.can_write_eof():  # (TLS): no half-close
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()
        self._transport.resume_reading()  # uvicorn pauses it while a body waits
        loop = self._protocol.loop
        self._most = loop.call_later(most, self.closed_by_client)
        self.heard()

    def heard(self) -> None:
        """The client sent more (dropped): it gets another gap."""
        if self._gap is not None:
            self._gap.cancel()
        self._gap = self._protocol.loop.call_later(_LINGER_GAP_SECONDS, self.closed_by_client)

    def closed_by_client(self) -> None:
        """Its side is closed (or it took too long): close ours."""
        self.stop_timers()
        self._transport.close()

    def stop_timers(self) -> None:
        for timer in (self._gap, self._most):
            if timer is not None:
                timer.cancel()
        self._gap = self._most = None


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a request's header must arrive within
    :func:`header_timeout` of the connection opening or of its first byte, and an
    answer whose writing is paused (the client reads too little of it) must resume
    within :func:`send_timeout`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._held_as: str | None = None  # the address it is counted under, once admitted
        self._header_bytes = 0  # of the header still coming
        self._awaiting_header = False
        self._lingering: _Lingering | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Every close goes through it, uvicorn's own included (its request cycles take
        # the protocol's transport).
        self._lingering = _Lingering(transport, self)
        self.transport = cast(asyncio.Transport, self._lingering)
        refusal = self._admit()
        if refusal is not None:
            self.transport.write(refusal)
            self._lingering.close_after_reading(_REFUSED_LINGER_SECONDS)
            return
        self._await_header()

    def _admit(self) -> bytes | None:
        """Count this connection in, or the answer that refuses it."""
        limits = _limits()
        peer = self.client[0] if self.client else ""
        address = limits.proxies.key(peer) if peer else ""  # an IPv6 peer: its network
        if _held.total >= limits.max_connections:
            _held.refused("server", self.loop.time())
            return _BUSY
        if (
            limits.max_per_client
            and _held.by_client[address] >= limits.max_per_client
            and not _trusted(limits.proxies, peer)
        ):
            _held.refused("client", self.loop.time())
            return _TOO_MANY
        _held.total += 1
        _held.by_client[address] += 1
        CONNECTIONS.inc()
        self._held_as = address
        return None

    def may_still_send(self) -> bool:
        """Whether the client may still be sending: a header or a body not yet whole."""
        return self._awaiting_header or (self.cycle is not None and self.cycle.more_body)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None and self._lingering.lingering:
            self._lingering.heard()  # closing: what still comes is dropped
            return
        super().data_received(data)
        if not self._awaiting_header:  # it came whole (or the next has not begun)
            self._header_bytes = 0
            return
        # The header is still coming. The parser keeps all of it, and each of its lines
        # whole, however long (a line of a gigabyte was kept). A piece that also ended
        # an earlier request's body (requests sent without waiting for answers) counts
        # whole: a little more than the header.
        self._header_bytes += len(data)
        if self._header_bytes > _limits().max_header_bytes and not self.transport.is_closing():
            self._stop_timer()
            self.transport.write(_HEADER_TOO_LARGE)
            self.transport.close()  # after reading: the client is sending its header

    def eof_received(self) -> None:
        if self._lingering is not None and self._lingering.lingering:
            self._lingering.closed_by_client()
        else:
            super().eof_received()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._await_header()  # a next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._stop_timer()
        self._awaiting_header = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if self.cycle is not None and self.cycle.more_body:
            # Answered before its body came whole (a 413 at the start of an upload, a
            # body too slow): the connection is closed, the rest of the body read and
            # dropped (see _Lingering). uvicorn kept it open for ever: each piece of
            # the rest stopped its keep-alive clock, and nothing started it again.
            self.transport.close()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._stop_send_timer()
        if self._lingering is not None:
            self._lingering.stop_timers()
        if self._held_as is not None:
            _held.total -= 1
            CONNECTIONS.dec()
            _held.by_client[self._held_as] -= 1
            if not _held.by_client[self._held_as]:
                del _held.by_client[self._held_as]
            self._held_as = None
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
        self._awaiting_header = True
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


def _trusted(proxies: TrustedProxies, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in proxies
    except ValueError:  # no address (a Unix socket)
        return False
