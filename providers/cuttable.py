"""HTTP calls a run's cancel can cut while they wait for the server's first byte.

Once a stream has begun, the provider cuts its connection when the run is
cancelled (``openai_compat``). Before that, the run's thread is blocked in a
socket read inside httpx, waiting for the server's answer to begin: a model
server slow to start answering (a queue in front of it, a long prompt) held the
thread of a run whose caller had gone, or that a shutdown had cancelled, until
the provider's read timeout. A process stopping then outlived its grace, and a
run still ``running`` when the process was killed was failed ``INTERRUPTED``
later instead of stored ``cancelled``.

:func:`transport` is httpx's own transport whose connections come from
:class:`_CuttableBackend`: each socket read made while :func:`cut_by` holds a
cancel for the reading thread shuts the socket down when that cancel is set, so
the read returns at once and the call fails (the provider then reports the call
as cancelled, not as a failure). Reads outside :func:`cut_by` cost one
thread-local look-up more.

httpx has no public way to give its transport a network backend: the transport's
httpcore pool is rebuilt with one, as ``datasources.deadline`` does (``httpx`` and
``httpcore`` are pinned in ``constraints.txt``, and ``tests/providers/test_cancel.py``
fails if it stops working).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import typing
from collections.abc import Iterator

import httpcore
import httpx

from providers.base import when_cancelled

_calls = threading.local()  # .cancel: the cancel of the call this thread is making


@contextlib.contextmanager
def cut_by(cancel: threading.Event | None) -> Iterator[None]:
    """While inside, a socket read of this thread's calls ends when ``cancel`` is set."""
    before = getattr(_calls, "cancel", None)
    _calls.cancel = cancel
    try:
        yield
    finally:
        _calls.cancel = before


class _CuttableStream(httpcore.NetworkStream):
    """A connection's stream whose reads a cancel (see :func:`cut_by`) can end."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        cancel = getattr(_calls, "cancel", None)
        if cancel is None:
            return self._inner.read(max_bytes, timeout)
        forget = when_cancelled(cancel, self._shut)
        try:
            return self._inner.read(max_bytes, timeout)
        finally:
            forget()

    def _shut(self) -> None:
        # shutdown, not close: a read blocked in another thread returns at once.
        sock = self._inner.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _CuttableStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _CuttableBackend(httpcore.SyncBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        inner = super().connect_tcp(host, port, timeout, local_address, socket_options)
        return _CuttableStream(inner)


def transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's transport (TLS checked, HTTP/1.1, ``limits``), its connections cuttable."""
    return _CuttableTransport(limits)


class _CuttableTransport(httpx.HTTPTransport):
    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        # httpx offers no public hook for the network backend; its pool is rebuilt here
        # with the same TLS defaults and limits (as datasources.deadline does).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_CuttableBackend(),
        )
