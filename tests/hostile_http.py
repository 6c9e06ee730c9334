"""Hostile HTTP peers on 127.0.0.1 for tests: raw sockets, no HTTP library.

- :class:`HostileServer` (``trickle``): reads a request, then sends a complete HTTP
  response one byte per ``interval`` seconds (a slow-loris page or webhook receiver).
  It counts the connections whose peer hung up before the whole answer was sent
  (``hung_up``) and those that took it all (``completed``): a deadline that really
  stops the work shows as every connection hung up, whatever the machine's speed.
- :class:`HostileServer` (``instant``): the same response at once (a well-behaved peer,
  to compare with).
- :class:`HostileServer` (``flood``): answers 200 at once, then streams a
  generated body of ``flood_bytes`` (300 MB, never held in memory) and counts
  what the peer actually took before it hung up.

Each connection runs in its own thread; :meth:`HostileServer.close` ends them all.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from types import TracebackType

TRICKLED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 31\r\n"
    b"Connection: close\r\n\r\nA page that arrived very slowly"
)
_CHUNK = b"\0" * 65536


class HostileServer:
    """A raw-socket HTTP server that misbehaves in one of two ways (``mode``)."""

    def __init__(
        self,
        mode: str,
        *,
        interval: float = 1.0,
        response: bytes = TRICKLED,
        flood_bytes: int = 300 * 1024 * 1024,
    ) -> None:
        assert mode in ("trickle", "flood", "instant")
        self.mode = mode
        self.interval = interval
        self.response = response
        self.flood_bytes = flood_bytes
        self.requests = 0
        self.sent = 0  # body bytes the peer took (flood)
        self.hung_up = 0  # connections the peer closed before the whole answer (trickle)
        self.completed = 0  # connections that took the whole answer (trickle)
        self.closed_at: list[float] = []  # when each connection ended (monotonic)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/{mode}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                self._read_request(conn)
                with self._lock:
                    self.requests += 1
                if self.mode == "instant":
                    conn.sendall(self.response)
                elif self.mode == "trickle":
                    self._trickle(conn)
                else:
                    self._flood(conn)
            except OSError:  # the peer hung up: what a well-behaved client does here
                pass
            finally:
                with self._lock:
                    self.closed_at.append(time.monotonic())

    def _read_request(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                raise ConnectionResetError
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            piece = conn.recv(65536)
            if not piece:
                raise ConnectionResetError
            body += piece

    def _trickle(self, conn: socket.socket) -> None:
        try:
            for byte in self.response:
                # Readable while we wait means the peer sent something or hung up.
                readable, _, _ = select.select([conn], [], [], self.interval)
                if self._stop.is_set():
                    return
                if readable and not conn.recv(4096):
                    raise ConnectionResetError
                conn.sendall(bytes([byte]))
        except OSError:
            with self._lock:
                self.hung_up += 1
            raise
        with self._lock:
            self.completed += 1

    def all_hung_up(self) -> bool:
        """Whether every connection so far was closed by its peer before the whole
        answer (trickle): the peer's deadline ended its read."""
        with self._lock:
            return self.requests > 0 and self.hung_up == self.requests

    def _flood(self, conn: socket.socket) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {self.flood_bytes}\r\n\r\n"
        )
        conn.sendall(head.encode())
        left = self.flood_bytes
        while left > 0 and not self._stop.is_set():
            piece = _CHUNK[: min(left, len(_CHUNK))]
            sent = conn.send(piece)
            left -= sent
            with self._lock:
                self.sent += sent

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(10)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
