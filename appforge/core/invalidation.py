"""Caches dropped in every process at once: PostgreSQL ``LISTEN``/``NOTIFY``.

Each API process keeps a few things in memory for a short time (authenticated
tokens, the model catalog). A change made through one process drops its own
copy at once; on PostgreSQL the others must drop theirs too, or a revoked token
keeps working there until their copy expires.

- :func:`notify` tells every process listening on the database that ``topic``
  changed: ``SELECT pg_notify('appforge_invalidation', topic)`` on its own
  connection, after the change committed. Nothing on SQLite (one process, the
  embedded default). It never raises: a failure is logged, and the other
  processes' cache time still bounds how long they use the old copy.
- :class:`Invalidation` is one process's side: callbacks by topic
  (:meth:`~Invalidation.on`), :meth:`~Invalidation.publish` (run them here, then
  :func:`notify` the others) and, on PostgreSQL, a listener thread that runs them
  when another process publishes. A listener whose connection drops connects
  again (with backoff) and then runs every callback once, since it may have
  missed notifications meanwhile.

Topics are short names (:data:`TOKENS`, :data:`MODELS`); a payload is a topic only.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

CHANNEL = "appforge_invalidation"
TOKENS = "tokens"  # a token was revoked or a builder session ended
MODELS = "models"  # stored providers or aliases changed


def notify(engine: Engine, *topics: str) -> None:
    """Tell the other processes on this database that ``topics`` changed (PostgreSQL
    only); call it after the change committed. Logs and returns on any error."""
    if engine.dialect.name != "postgresql" or not topics:
        return
    try:
        with engine.connect() as conn:
            for topic in topics:
                conn.execute(sql_select(func.pg_notify(CHANNEL, topic)))
            conn.commit()
    except Exception:
        # The change itself is stored; other processes see it within their cache time.
        log.warning("could not notify other processes of %s", ", ".join(topics), exc_info=True)


class Invalidation:
    """This process's caches by topic, dropped here on :meth:`publish` and, on
    PostgreSQL, when any process publishes (a listener thread from :meth:`start`)."""

    def __init__(
        self,
        engine: Engine,
        *,
        idle_check_seconds: float = 30.0,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        """``idle_check_seconds``: how often a quiet listener checks its connection;
        ``backoff``: the first and the longest pause before connecting again."""
        self._engine = engine
        self._idle_check = idle_check_seconds
        self._backoff = backoff
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._stopping = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None  # stop() -> listener
        self._thread: threading.Thread | None = None
        self.connections = 0  # times the listener has started listening (tests, logs)
        self.backend_pid: int | None = None  # the listening connection's server process

    @property
    def enabled(self) -> bool:
        """Whether other processes may share the database (PostgreSQL)."""
        return self._engine.dialect.name == "postgresql"

    @property
    def listening(self) -> bool:
        """Whether the listener thread runs (started on PostgreSQL, not yet stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def on(self, topic: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quick, thread-safe) whenever ``topic`` is published."""
        self._callbacks.setdefault(topic, []).append(callback)

    def publish(self, topic: str) -> None:
        """``topic`` changed and committed: drop this process's caches now, and tell
        the others. Never raises."""
        self._run(topic)
        notify(self._engine, topic)

    def start(self) -> None:
        """Start listening (PostgreSQL only; SQLite has a single process)."""
        if not self.enabled or self._thread is not None or self._stopping.is_set():
            return
        self._wake = socket.socketpair()
        self._thread = threading.Thread(
            target=self._loop, args=(self._wake[0],), name="invalidation", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and close the listener's connection."""
        self._stopping.set()
        if self._wake is None:
            return
        self._wake[1].send(b"\0")
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for end in self._wake:
            end.close()
        self._wake = None

    def _run(self, topic: str) -> None:
        for callback in self._callbacks.get(topic, ()):
            try:
                callback()
            except Exception:
                log.exception("invalidating %s failed", topic)

    def _run_all(self) -> None:
        for topic in list(self._callbacks):
            self._run(topic)

    def _loop(self, wake: socket.socket) -> None:
        pause = self._backoff[0]
        while not self._stopping.is_set():
            connected = self.connections
            try:
                self._listen(wake)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                if self.connections > connected:  # it had listened: start the backoff over
                    pause = self._backoff[0]
                log.warning("invalidation listener: %s; connecting again in %g s", exc, pause)
                self._stopping.wait(pause)
                pause = min(pause * 2, self._backoff[1])

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        # The engine's own connection arguments: same server, user, options, and the
        # TCP keepalives that notice a server gone without a word (``make_engine``).
        cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
        return psycopg.connect(*cargs, **cparams, autocommit=True)

    def _listen(self, wake: socket.socket) -> None:
        """Listen until stopped (returns) or until the connection fails (raises)."""
        # A selector (epoll), not select(): a busy process has descriptors past 1024.
        with self._connect() as conn, selectors.DefaultSelector() as waiting:
            conn.execute(f"LISTEN {CHANNEL}")
            # Notifications sent while not listening are lost: drop everything once.
            self._run_all()
            self.backend_pid = conn.info.backend_pid
            self.connections += 1
            log.info("listening for invalidations (connection %d)", self.connections)
            waiting.register(conn.fileno(), selectors.EVENT_READ)
            waiting.register(wake, selectors.EVENT_READ)
            try:
                while not self._stopping.is_set():
                    ready = [key.fileobj for key, _ in waiting.select(self._idle_check)]
                    if wake in ready:
                        return
                    if not ready:
                        conn.execute("SELECT 1")  # a quiet connection may have died unseen
                    for note in conn.notifies(timeout=0):
                        self._run(note.payload)
            finally:
                self.backend_pid = None
