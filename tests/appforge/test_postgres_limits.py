"""PostgreSQL connections carry time limits (``APPFORGE_POSTGRES__*``): a lock held
elsewhere, a statement that never ends or a transaction left open by a frozen
process no longer holds requests for ever. Migrations are not limited.

Each test holds what it waits for with a connection of its own and lets go only long
after the limit (or never): against connections without limits the waits end the other
way round, and the test fails rather than hangs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from appforge.core.db import _MIGRATION_LOCK, make_engine, migrate, timed_out, unavailable
from appforge.core.settings import PostgresSettings, Settings
from runs.records import admission_lock_key

pytestmark = pytest.mark.postgres

LONG_AFTER = 60.0  # seconds: when a holder lets go, far past any limit set here
TEXT_APP = """version: 1
name: Locked
type: text
input:
  q: {type: string}
steps:
  - id: a
    kind: llm
    prompt: {user: "{{ input.q }}"}
    params: {max_tokens: 2}
output:
  a: "{{ a.text }}"
"""


def _engine(url: str, **limits: float) -> Engine:
    return make_engine(url, PostgresSettings(**limits))


@contextmanager
def _holding(url: str, statement: str, params: tuple[object, ...] = ()) -> Iterator[int]:
    """A connection of its own runs ``statement`` (taking a lock) in a transaction and
    keeps it until the block ends, or LONG_AFTER seconds; its backend pid."""
    conn = psycopg.connect(url)
    conn.execute(statement, params)
    timer = threading.Timer(LONG_AFTER, _end_backend, (url, conn.info.backend_pid))
    timer.start()
    try:
        yield conn.info.backend_pid
    finally:
        timer.cancel()
        with contextlib.suppress(psycopg.Error):
            conn.close()


def _end_backend(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_lock_held_elsewhere_is_given_up_at_the_lock_timeout(postgres_url: str):
    engine = _engine(postgres_url, lock_timeout_seconds=0.2)
    try:
        with _holding(postgres_url, "SELECT pg_advisory_xact_lock(7301)"):
            with pytest.raises(OperationalError) as raised, engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(7301)"))
        assert timed_out(raised.value) and unavailable(raised.value) is not None
        with engine.connect() as conn:  # the connection is fine for the next request
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "200ms"
            # A server gone silent is noticed by TCP keepalives (make_engine's defaults).
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None and dbapi.info.get_parameters()["keepalives_idle"] == "30"
    finally:
        engine.dispose()


def test_a_statement_past_its_timeout_is_stopped(postgres_url: str):
    engine = _engine(postgres_url, statement_timeout_seconds=0.2)
    try:
        with pytest.raises(OperationalError) as raised, engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(:s)"), {"s": LONG_AFTER})
        assert timed_out(raised.value)
    finally:
        engine.dispose()


def test_a_transaction_left_idle_is_ended_and_its_locks_freed(postgres_url: str):
    """A process frozen inside a transaction (SIGSTOP, a hung thread) held its locks
    until it was killed; the server now ends its session."""
    engine = _engine(postgres_url, idle_in_transaction_seconds=0.2)
    try:
        frozen = engine.connect()
        frozen.execute(text("SELECT pg_advisory_xact_lock(7302)"))  # and then nothing
        with psycopg.connect(postgres_url) as waiter:
            waiter.execute(f"SET statement_timeout = '{LONG_AFTER:g}s'")
            waiter.execute("SELECT pg_advisory_xact_lock(7302)")  # granted once it is ended
        with pytest.raises(DBAPIError, match="idle-in-transaction timeout") as raised:
            frozen.execute(text("SELECT 1"))  # it was ended
        assert unavailable(raised.value) is not None  # 503 (not a bug's 500) if it was ours
        frozen.close()
        with engine.connect() as conn:  # the pool opens a new connection
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_migrations_wait_for_another_migration_past_the_lock_timeout(postgres_url: str):
    engine = _engine(postgres_url, lock_timeout_seconds=0.2, statement_timeout_seconds=0.2)
    failures: list[BaseException] = []
    done = threading.Event()

    def migrating() -> None:
        try:
            migrate(engine)
        except BaseException as exc:
            failures.append(exc)
        done.set()

    holder = psycopg.connect(postgres_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        thread = threading.Thread(target=migrating)
        thread.start()
        # Seen waiting for the lock; then past both limits many times over.
        _wait_for(lambda: _waiting_for_advisory_lock(holder) or done.is_set())
        assert not done.wait(2.0), failures
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        holder.close()
    thread.join()
    engine.dispose()
    assert failures == []


def _waiting_for_advisory_lock(conn: psycopg.Connection) -> bool:
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    row = conn.execute(query).fetchone()
    return row is not None and row[0] > 0


def _wait_for(condition: Callable[[], bool]) -> None:
    stop = threading.Event()
    while not condition():
        stop.wait(0.02)


def test_a_run_whose_app_lock_is_held_elsewhere_answers_503(
    empty_postgres: str,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
):
    """Another process frozen while admitting a run of the app (holding the app's
    admission lock): runs of that app answer 503 in time instead of queueing behind
    it for ever; runs of other apps go on."""
    url = empty_postgres  # a database of its own: the API keeps its key's fingerprint in it
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    settings = make_settings(database_url=url, postgres={"lock_timeout_seconds": 0.2})
    client = make_client(settings)
    made = client.post("/api/apps", content=TEXT_APP, headers={"Content-Type": "text/yaml"})
    other = client.post(
        "/api/apps",
        content=TEXT_APP.replace("Locked", "Free"),
        headers={"Content-Type": "text/yaml"},
    )
    assert made.status_code == 201 and other.status_code == 201, (made.text, other.text)
    uuid = made.json()["uuid"]
    with _holding(url, "SELECT pg_advisory_xact_lock(%s)", (admission_lock_key(uuid),)):
        answer = client.post(f"/api/apps/{uuid}/run", json={"input": {"q": "hi"}})
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "DATABASE_UNAVAILABLE" and "in time" in error["message"]
        assert answer.headers["retry-after"] == "5"
        free = client.post(f"/api/apps/{other.json()['uuid']}/run", json={"input": {"q": "hi"}})
        assert free.status_code == 200, free.text
    ran = client.post(f"/api/apps/{uuid}/run", json={"input": {"q": "hi"}})
    assert ran.status_code == 200, ran.text
    runs = client.get("/api/runs", params={"app": uuid}).json()
    assert len(runs) == 1  # the refused run left nothing behind
