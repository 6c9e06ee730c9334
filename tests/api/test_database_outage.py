"""The database going away under a running API: 503 DATABASE_UNAVAILABLE with
Retry-After (in OpenAI's shape on /v1), one warning in the log rather than a
traceback per request; a bug's database error stays a 500."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from app_docs import STREAMED_APP, YAML
from fastapi.testclient import TestClient
from openai_edge import EdgeServer, Reply, serve_edge, sse_chunk
from sqlalchemy import text

from appforge.core.db import make_engine, migrate, read_only, unavailable
from appforge.core.settings import OpenAISettings, Settings

TEXT_APP = """version: 1
name: Away
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


def _migrated(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()


def _database(url: str, *, create: bool) -> None:
    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/test", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            admin.execute(f'CREATE DATABASE "{name}"')


@pytest.mark.postgres
def test_a_database_that_goes_away_is_503_with_one_warning(
    empty_postgres: str,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
):
    _migrated(empty_postgres)
    client = make_client(make_settings(database_url=empty_postgres))
    app = client.post("/api/apps", content=TEXT_APP, headers={"Content-Type": "text/yaml"})
    assert app.status_code == 201, app.text
    probe = client.post("/api/tokens", json={"name": "probe", "role": "viewer"})
    assert probe.status_code == 201, probe.text
    caplog.set_level(logging.WARNING, logger="api.errors")
    _database(empty_postgres, create=False)  # dropped, every connection cut
    try:
        # Liveness answers, whatever token a probe sends: the process is alive, and a
        # probe that fails has it restarted (tokens are looked up in the database).
        for token in (probe.json()["token"], "af_revoked_or_unknown"):
            alive = client.get("/api/health", headers={"Authorization": f"Token {token}"})
            assert alive.status_code == 200, alive.text
        answers = [
            client.get("/api/apps"),
            client.post(f"/api/apps/{app.json()['uuid']}/run", json={"input": {"q": "hi"}}),
            client.post(
                f"/api/apps/{app.json()['uuid']}/run", json={"input": {"q": "hi"}, "stream": True}
            ),
        ]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
            assert answer.headers["retry-after"] == "5"
        chat = {"model": "Away", "messages": [{"role": "user", "content": "hi"}]}
        v1 = client.post("/v1/chat/completions", json=chat)
        assert v1.status_code == 503 and v1.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
        said = [r for r in caplog.records if r.name == "api.errors"]
        assert said and all(r.levelname == "WARNING" and not r.exc_info for r in said)
        assert all("cannot be reached" in r.getMessage() for r in said)
        # Once per 10 s, not once per request: a loaded machine may take longer than
        # 10 s over these requests (a connection attempt may wait), then it says it again.
        apart = [later.created - first.created for first, later in pairwise(said)]
        assert all(gap > 9.9 for gap in apart), apart  # (wall clock against monotonic)
    finally:  # back, empty and migrated, for the API's own shutdown
        _database(empty_postgres, create=True)
        _migrated(empty_postgres)


def test_a_bugs_database_error_is_not_an_outage(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(Exception) as raised, engine.connect() as conn:
        conn.execute(text("SELECT nothing FROM no_such_table"))
    assert unavailable(raised.value) is None  # a 500 with its traceback, as a bug should be
    engine.dispose()


def _read_only(url: str, on: bool) -> None:
    """Make the database read-only (as a standby is) or writable again; the sessions
    open on it are ended, so the API's next connections see it."""
    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/test", autocommit=True) as admin:
        admin.execute(
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'
        )
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


@pytest.mark.postgres
def test_a_read_only_database_is_503_storage_read_only_and_reads_go_on(
    empty_postgres: str,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
):
    """After a failover the API may find itself on a standby, which refuses writes
    (SQLSTATE 25006). Each write was a 500 with a traceback; it is a 503 that says so,
    with one warning in the log, nothing stored, and reads answered as usual."""
    _migrated(empty_postgres)
    client = make_client(make_settings(database_url=empty_postgres))
    app = client.post("/api/apps", content=TEXT_APP, headers={"Content-Type": "text/yaml"})
    assert app.status_code == 201, app.text
    run_path = f"/api/apps/{app.json()['uuid']}/run"
    caplog.set_level(logging.WARNING, logger="api.errors")
    _read_only(empty_postgres, True)
    try:
        # A request may first meet a pooled session that was ended; then reads answer.
        listed = _past_ended_sessions(lambda: client.get("/api/apps"))
        assert [a["name"] for a in listed.json()] == ["Away"]
        caplog.clear()
        answers = [
            client.post("/api/apps", content=TEXT_APP.replace("Away", "Other"),
                        headers={"Content-Type": "text/yaml"}),
            client.post(run_path, json={"input": {"q": "hi"}}),
            client.post(run_path, json={"input": {"q": "hi"}, "stream": True}),
        ]  # fmt: skip
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "STORAGE_READ_ONLY"
            assert "read-only" in answer.json()["error"]["message"]
            assert answer.headers["retry-after"] == "30"
        said = [r for r in caplog.records if r.name == "api.errors"]
        assert len(said) == 1 and said[0].levelname == "WARNING" and not said[0].exc_info
        assert client.get("/api/runs").json() == []
    finally:
        _read_only(empty_postgres, False)
    # Writable again; as above, a request may meet a pooled session that was ended (503
    # DATABASE_UNAVAILABLE, and the pool is made anew) before it is answered as usual.
    ran = _past_ended_sessions(lambda: client.post(run_path, json={"input": {"q": "hi"}}))
    assert ran.status_code == 200 and ran.json()["run"]["status"] == "succeeded"
    listed = _past_ended_sessions(lambda: client.get("/api/apps"))
    assert [a["name"] for a in listed.json()] == ["Away"]


def _past_ended_sessions(call: Callable[[], Any]) -> Any:
    """``call``'s first answer that did not meet an ended database session (5 tries)."""
    for _ in range(5):
        answer = call()
        if answer.status_code != 503:
            return answer
        assert answer.json()["error"]["code"] == "DATABASE_UNAVAILABLE", answer.text
    return answer


def test_read_only_storage_is_told_from_other_errors(tmp_path: Path):
    """A read-only file system (EROFS), SQLite's "attempt to write a readonly database",
    through SQLAlchemy too; not a full disk, not any other error."""
    import errno
    import sqlite3

    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    assert read_only(OSError(errno.EROFS, "Read-only file system"))
    assert not read_only(OSError(errno.ENOSPC, "No space left on device"))
    assert not read_only(ValueError("readonly database"))  # words of no such module
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as made:
        made.execute("CREATE TABLE t (x)")
    reader = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(OperationalError) as refused, reader.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    reader.dispose()
    assert read_only(refused.value)
    wrapped = RuntimeError("storing failed")
    wrapped.__cause__ = refused.value
    assert read_only(wrapped)


def _end_sessions(url: str) -> None:
    """End every session on the database, as its restart or a failover does."""
    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/test", autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


GREEN_TEA = [sse_chunk("Green tea", None), sse_chunk(" steeps.", "stop")]


@contextmanager
def _gated_app(
    url: str, make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> Iterator[tuple[TestClient, str, EdgeServer, threading.Event]]:
    """The API on the database at ``url`` with one app, whose model (a scripted server)
    sends its first words, then the rest once the gate is set."""
    _migrated(url)
    gate = threading.Event()
    with serve_edge() as edge:
        edge.replies = [Reply(200, None, sse=GREEN_TEA, gate=gate)]
        settings = make_settings(
            database_url=url,
            datasources={"workers": 0},
            webhooks={"workers": 0},
            openai=OpenAISettings(base_url=edge.url),
            models={"default": "openai:gpt-test"},
        )
        client = make_client(settings)
        made = client.post("/api/apps", content=STREAMED_APP, headers=YAML)
        assert made.status_code == 201, made.text
        try:
            yield client, f"/api/apps/{made.json()['uuid']}/run", edge, gate
        finally:
            gate.set()


def _stream_past(
    client: TestClient, run_path: str, gate: threading.Event, meanwhile: Callable[[], None]
) -> tuple[str, list[dict[str, Any]]]:
    """Stream a run; after its first words, ``meanwhile()``, then the model goes on. The
    run's id and the lines that came after."""
    try:
        body = {"input": {"q": "tea"}, "stream": True}
        with client.stream("POST", run_path, json=body) as answer:
            assert answer.status_code == 200
            lines = answer.iter_lines()
            next(line for line in lines if "Green tea" in line)  # the first words
            meanwhile()
            gate.set()
            return answer.headers["x-run-id"], [json.loads(x) for x in lines if x.strip()]
    finally:
        gate.set()


@pytest.mark.postgres
def test_a_database_restarted_during_a_run_keeps_the_run(
    empty_postgres: str,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
):
    """The database restarts (or fails over) while a run waits on its model: the run
    is stored on a new connection when it ends, with what the model wrote (it was
    lost, the stream's last line an error and the run left ``running``), and the next
    run starts on a new connection rather than a 503 for each connection the pool
    held. Connections used within the last moment are not pinged before use (a
    ping per run costs two round trips); this test makes that moment an hour."""
    monkeypatch.setattr("appforge.core.db.PING_AFTER_IDLE_SECONDS", 3600.0)
    with _gated_app(empty_postgres, make_client, make_settings) as (client, run_path, edge, gate):
        run_id, rest = _stream_past(client, run_path, gate, lambda: _end_sessions(empty_postgres))
        assert rest[-1].get("done") is True, rest
        stored = client.get(f"/api/runs/{run_id}").json()
        assert stored["status"] == "succeeded", stored
        assert stored["output"] == {"answer": "Green tea steeps."}

        edge.replies = [Reply(200, None, sse=GREEN_TEA)]
        _end_sessions(empty_postgres)
        again = client.post(run_path, json={"input": {"q": "tea"}})
        assert again.status_code == 200, again.text
        assert again.json()["run"]["status"] == "succeeded"


@pytest.mark.postgres
def test_a_database_gone_while_a_run_goes_on_ends_its_stream_with_a_warning(
    empty_postgres: str,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
):
    """The database goes away for good while a streamed run waits on its model: the
    stream's last line says so (503's code), and the log says it in a warning, not a
    traceback as for a bug."""
    with _gated_app(empty_postgres, make_client, make_settings) as (client, run_path, _, gate):
        caplog.set_level(logging.WARNING, logger="runs.service")
        try:
            _, rest = _stream_past(
                client, run_path, gate, lambda: _database(empty_postgres, create=False)
            )
        finally:  # back for the API's own shutdown
            _database(empty_postgres, create=True)
            _migrated(empty_postgres)
    assert rest[-1]["error"]["code"] == "DATABASE_UNAVAILABLE", rest
    said = [r for r in caplog.records if r.name == "runs.service"]
    assert said and all(r.levelname == "WARNING" and not r.exc_info for r in said), said
    assert "storing run" in said[0].getMessage()
