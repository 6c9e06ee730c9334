"""HTTP requests with one wall-clock deadline for all of their work.

httpx's timeouts are per operation: a read timeout of 10 s is renewed with
every byte, so a server that sends its headers one byte per second holds a
request for as long as it likes. Here every socket operation (connect, TLS
handshake, each read and write) gets the time left until one deadline as its
timeout, and an operation that starts after the deadline fails at once, so a
whole request, redirects included when they share the client, ends by the
deadline however the peer trickles.

Used by URL fetching (``datasources.fetch``) and webhook delivery.
"""

from __future__ import annotations

import ssl
import time
import typing

import httpcore
import httpx

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every operation stops at the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the request's deadline has passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = self._left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, left), self._deadline
        )

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Opens connections bounded by the deadline (httpcore's own sockets underneath)."""

    def __init__(self, deadline: float) -> None:
        self._backend = httpcore.SyncBackend()
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout("the request's deadline has passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, self._left(timeout), local_address, socket_options
        )
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(path, self._left(timeout), socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(min(seconds, max(0.0, self._deadline - time.monotonic())))


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport, its connections bounded by ``deadline`` (``time.monotonic``)."""

    def __init__(self, deadline: float) -> None:
        super().__init__(trust_env=False)
        # httpx offers no public hook for the network backend; its pool is rebuilt here
        # with the same TLS defaults (a test with a trickling server proves it works).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_DeadlineBackend(deadline),
        )


def deadline_client(seconds: float, *, until: float | None = None) -> httpx.Client:
    """A client whose requests all end within ``seconds`` from now (``httpx.TimeoutException``),
    or by ``until`` (``time.monotonic``) when given: a deadline that work done before the
    requests (resolving the host) counts against too.

    Redirects are not followed: callers check every hop themselves.
    """
    deadline = time.monotonic() + seconds if until is None else until
    return httpx.Client(
        transport=DeadlineTransport(deadline),
        timeout=httpx.Timeout(seconds, connect=min(seconds, 10.0)),
        follow_redirects=False,
        trust_env=False,
    )
