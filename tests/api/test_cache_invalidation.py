"""Revocations and model changes reach every API process at once (PostgreSQL NOTIFY).

Two apps on one PostgreSQL database stand for two API processes. Their caches are
kept for 300 s, and every wait here ends long before that: a test can only pass
through the notification, never through a cache expiring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import update
from waiting import poll_until

from api.state import ApiState
from api.tables import Token
from appforge.cli import main
from appforge.core.db import utcnow
from appforge.core.settings import Settings

CACHED = 300  # seconds: far longer than any wait below
WAIT = 30  # seconds: a generous bound for a notification, still far below CACHED


def _state(client: TestClient) -> ApiState:
    state: ApiState = client.app.state.api  # type: ignore[attr-defined]
    return state


@pytest.fixture
def pg_settings(make_settings: Callable[..., Settings], backend: str | None) -> Settings:
    """Settings on the emptied PostgreSQL database, caches kept for 300 s."""
    assert backend is not None
    return make_settings(
        database_url=backend, auth={"cache_seconds": CACHED}, model_cache_seconds=CACHED
    )


def _listening(client: TestClient) -> TestClient:
    poll_until(lambda: _state(client).invalidation.connections >= 1, timeout=WAIT)
    return client


@pytest.fixture
def two_processes(
    make_client: Callable[..., TestClient], pg_settings: Settings
) -> tuple[TestClient, TestClient]:
    """Two apps on one PostgreSQL database, both listening."""
    return _listening(make_client(pg_settings)), _listening(make_client(pg_settings))


def _token(client: TestClient, name: str) -> tuple[str, dict[str, str]]:
    created = client.post("/api/tokens", json={"name": name}).json()
    return created["id"], {"Authorization": f"Token {created['token']}"}


def _me(client: TestClient, auth: dict[str, str]) -> int:
    return client.get("/api/tokens/me", headers=auth).status_code


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_invalidation_token_revoked_through_one_process_refused_by_another(
    two_processes: tuple[TestClient, TestClient],
):
    a, b = two_processes
    # The control: a token revoked in the database without a notification stays
    # accepted by B, whose cache holds it, so B does cache for the whole test.
    quiet_id, quiet = _token(a, "quiet")
    assert _me(b, quiet) == 200
    with _state(a).db() as db:
        db.execute(update(Token).where(Token.id == quiet_id).values(revoked_at=utcnow()))
        db.commit()
    assert _me(b, quiet) == 200

    token_id, auth = _token(a, "revoked")
    assert _me(b, auth) == 200  # now cached in B
    assert a.delete(f"/api/tokens/{token_id}").status_code == 204
    assert _me(a, auth) == 401  # the process that revoked: at once
    poll_until(lambda: _me(b, auth) == 401, timeout=WAIT)
    assert _me(b, quiet) == 401  # B's whole cache went


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_invalidation_builder_session_ended_through_one_process_refused_by_another(
    two_processes: tuple[TestClient, TestClient],
):
    a, b = two_processes
    started = a.post("/api/builder/sessions").json()
    claimed = a.post("/builder/session", data={"claim": started["claim"]})
    assert claimed.status_code == 204, claimed.text
    secret = claimed.cookies[started["cookie"]]
    a.cookies.clear()
    auth = {"Authorization": f"Token {secret}"}
    assert _me(b, auth) == 200  # the session's secret, cached in B
    ended = a.delete("/api/builder/sessions/current", headers=auth)
    assert ended.status_code == 204
    poll_until(lambda: _me(b, auth) == 401, timeout=WAIT)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_invalidation_token_revoked_by_the_command_line_refused_by_a_server(
    make_client: Callable[..., TestClient],
    pg_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
):
    server = _listening(make_client(pg_settings))
    token_id, auth = _token(server, "scripted")
    assert _me(server, auth) == 200  # cached
    monkeypatch.setenv("APPFORGE_HOME", str(pg_settings.home))  # the same server key
    monkeypatch.setenv("APPFORGE_DATABASE_URL", str(pg_settings.database_url))
    revoked = CliRunner().invoke(main, ["token", "revoke", token_id], catch_exceptions=False)
    assert revoked.exit_code == 0, revoked.stderr
    poll_until(lambda: _me(server, auth) == 401, timeout=WAIT)


def _aliases(client: TestClient) -> dict[str, Any]:
    listed = client.get("/api/models/aliases").json()
    return {alias["name"]: alias for alias in listed if alias["active"]}


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_invalidation_model_alias_set_through_one_process_used_by_another(
    two_processes: tuple[TestClient, TestClient],
):
    a, b = two_processes
    assert "quick" not in _aliases(b)  # B has read (and caches) the catalog
    r = a.put("/api/models/aliases/quick", json={"target": "local:smollm2"})
    assert r.status_code == 200, r.text
    assert _aliases(a)["quick"]["source"] == "database"
    poll_until(lambda: "quick" in _aliases(b), timeout=WAIT)
    assert a.delete("/api/models/aliases/quick").status_code == 204
    poll_until(lambda: "quick" not in _aliases(b), timeout=WAIT)


def test_invalidation_sqlite_starts_no_listener(client: TestClient):
    invalidation = _state(client).invalidation
    assert not invalidation.enabled and not invalidation.listening
    assert invalidation.connections == 0
    # Revoking still works at once: the one process drops its own cache.
    token_id, auth = _token(client, "gone")
    assert _me(client, auth) == 200
    assert client.delete(f"/api/tokens/{token_id}").status_code == 204
    assert _me(client, auth) == 401
