"""The database going away under a running API: 503 DATABASE_UNAVAILABLE with
Retry-After (in OpenAI's shape on /v1), one warning in the log rather than a
traceback per request; a bug's database error stays a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from appforge.core.db import make_engine, migrate, unavailable
from appforge.core.settings import Settings

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
    caplog.set_level(logging.WARNING, logger="api.errors")
    _database(empty_postgres, create=False)  # dropped, every connection cut
    try:
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
        assert len(said) == 1 and said[0].levelname == "WARNING" and not said[0].exc_info
        assert "cannot be reached" in said[0].getMessage()
    finally:  # back, empty and migrated, for the API's own shutdown
        _database(empty_postgres, create=True)
        _migrated(empty_postgres)


def test_a_bugs_database_error_is_not_an_outage(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(Exception) as raised, engine.connect() as conn:
        conn.execute(text("SELECT nothing FROM no_such_table"))
    assert unavailable(raised.value) is None  # a 500 with its traceback, as a bug should be
    engine.dispose()
