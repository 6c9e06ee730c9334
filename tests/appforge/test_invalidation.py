"""appforge.core.invalidation: callbacks run here on publish, and in every listener
on the database on PostgreSQL, also after the listener's connection was killed."""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine
from waiting import poll_until

from appforge.core.db import make_engine
from appforge.core.invalidation import Invalidation, notify

WAIT = 30  # seconds: only keeps a broken test from hanging


@pytest.fixture
def pg_engine(empty_postgres: str) -> Iterator[Engine]:
    """On a database of this test's own: notifications are per database, so no other
    test's server or leftover thread can publish into it."""
    engine = make_engine(empty_postgres)
    yield engine
    engine.dispose()


class Seen:
    """The topics whose callbacks ran, in order (callbacks run in the listener thread)."""

    def __init__(self) -> None:
        self.topics: list[str] = []
        self._lock = threading.Lock()

    def callback(self, topic: str) -> Callable[[], None]:
        def record() -> None:
            with self._lock:
                self.topics.append(topic)

        return record

    def count(self, topic: str) -> int:
        with self._lock:
            return self.topics.count(topic)


def _listener(
    engine: Engine, seen: Seen, backoff: tuple[float, float] = (0.5, 30.0)
) -> Invalidation:
    listener = Invalidation(engine, backoff=backoff)
    listener.on("tokens", seen.callback("tokens"))
    listener.on("models", seen.callback("models"))
    return listener


@pytest.mark.postgres
def test_invalidation_publish_reaches_other_listener(pg_engine: Engine):
    seen_a, seen_b = Seen(), Seen()
    a, b = _listener(pg_engine, seen_a), _listener(pg_engine, seen_b)
    a.start()
    b.start()
    try:
        poll_until(lambda: a.connections == 1 and b.connections == 1, timeout=WAIT)
        before = seen_b.count("tokens")
        a.publish("tokens")
        assert seen_a.count("tokens") >= 1  # here: at once, before any notification
        poll_until(lambda: seen_b.count("tokens") > before, timeout=WAIT)
        assert seen_b.count("models") == 1  # only the clear of its first connection
    finally:
        a.stop()
        b.stop()
    assert not a.listening and not b.listening


@pytest.mark.postgres
def test_invalidation_listener_reconnects_after_its_connection_is_killed(
    pg_engine: Engine, empty_postgres: str
):
    seen = Seen()
    listener = _listener(pg_engine, seen, backoff=(0.05, 0.5))
    listener.start()
    try:
        poll_until(lambda: listener.backend_pid is not None, timeout=WAIT)
        first = listener.backend_pid
        with psycopg.connect(empty_postgres, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (first,))
        poll_until(lambda: listener.connections == 2, timeout=WAIT)
        assert listener.backend_pid != first
        # Reconnected: every cache was dropped once, since notifications may have been missed.
        assert seen.count("tokens") == 2 and seen.count("models") == 2
        notify(pg_engine, "tokens")
        poll_until(lambda: seen.count("tokens") == 3, timeout=WAIT)
        assert seen.count("models") == 2
    finally:
        listener.stop()
    assert not listener.listening


@pytest.mark.postgres
def test_invalidation_stop_closes_the_listening_connection(pg_engine: Engine, empty_postgres: str):
    listener = _listener(pg_engine, Seen())
    listener.start()
    poll_until(lambda: listener.backend_pid is not None, timeout=WAIT)
    pid = listener.backend_pid
    listener.stop()
    assert not listener.listening and listener.backend_pid is None

    def gone() -> bool:
        with psycopg.connect(empty_postgres, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            return row.fetchone() == (0,)

    poll_until(gone, timeout=WAIT)


def test_invalidation_sqlite_runs_callbacks_here_and_starts_no_thread(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    seen = Seen()
    listener = _listener(engine, seen)
    listener.start()
    try:
        assert not listener.enabled and not listener.listening  # no thread started
        listener.publish("models")
        assert seen.topics == ["models"]
        notify(engine, "tokens")  # nothing to tell on SQLite, and no error
    finally:
        listener.stop()
        engine.dispose()


def test_invalidation_failing_callback_does_not_stop_the_others(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    seen = Seen()
    listener = Invalidation(engine)

    def broken() -> None:
        raise RuntimeError("broken cache")

    listener.on("tokens", broken)
    listener.on("tokens", seen.callback("tokens"))
    listener.publish("tokens")  # logs the error, never raises
    assert seen.topics == ["tokens"]
    engine.dispose()


@pytest.mark.postgres
def test_invalidation_publish_survives_an_unreachable_database():
    # Nothing listens on port 1: the notification fails, is logged, and publish returns.
    engine = make_engine("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    seen = Seen()
    listener = _listener(engine, seen)
    listener.publish("tokens")
    assert seen.topics == ["tokens"]
    engine.dispose()


@pytest.mark.postgres
def test_invalidation_listener_works_with_descriptors_past_1024(pg_engine: Engine):
    # A busy server has more than 1024 files and sockets open: select() refuses
    # descriptors that high, so the listener must not use it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"the hard limit of open files is {hard}")
    if soft != resource.RLIM_INFINITY and soft < 1300:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1300, hard))
    held = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        seen = Seen()
        listener = _listener(pg_engine, seen)
        listener.start()
        try:
            poll_until(lambda: listener.connections == 1, timeout=WAIT)
            notify(pg_engine, "tokens")
            poll_until(lambda: seen.count("tokens") == 2, timeout=WAIT)  # connect, notify
            assert listener.connections == 1  # the same connection: no error, no reconnect
        finally:
            listener.stop()
        assert not listener.listening
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
