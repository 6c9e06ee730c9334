"""Tokens: three header forms, hashed storage, revocation, admin-only management."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from api.tables import Token
from appforge.core.settings import Settings


def test_health_needs_no_token(client: TestClient):
    r = client.get("/api/health", headers={"Authorization": ""})
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_auth_header_forms(client: TestClient, admin_token: str):
    for headers in (
        {"Authorization": f"Token {admin_token}"},
        {"Authorization": f"Bearer {admin_token}"},
        {"Authorization": "", "X-API-Key": admin_token},
    ):
        assert client.get("/api/apps", headers=headers).status_code == 200, headers


def test_auth_failures_have_distinct_codes(client: TestClient):
    cases = [
        ({"Authorization": ""}, "AUTH_REQUIRED"),
        ({"Authorization": "Token wrong"}, "TOKEN_INVALID"),
        ({"Authorization": "Basic abc"}, "AUTH_INVALID"),
        ({"Authorization": "Token"}, "AUTH_INVALID"),
    ]
    for headers, code in cases:
        r = client.get("/api/apps", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == code
        assert r.headers["www-authenticate"] == "Token"


def test_tokens_created_hashed_and_revoked(db_client: TestClient):
    r = db_client.post("/api/tokens", json={"name": "ci"})
    assert r.status_code == 201
    created = r.json()
    value = created["token"]
    assert value.startswith("af_") and len(value) > 40
    me = db_client.get("/api/tokens/me", headers={"Authorization": f"Bearer {value}"})
    assert me.json()["name"] == "ci" and me.json()["is_admin"] is False
    listed = db_client.get("/api/tokens").json()
    assert {t["name"] for t in listed} == {"admin", "ci"}
    assert all("token" not in t for t in listed)
    with db_client.app.state.api.db() as db:  # type: ignore[attr-defined]
        hashes = list(db.scalars(select(Token.token_hash)))
    assert value not in hashes and all(len(h) == 64 for h in hashes)
    assert db_client.delete(f"/api/tokens/{created['id']}").status_code == 204
    r = db_client.get("/api/apps", headers={"Authorization": f"Token {value}"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "TOKEN_INVALID"
    assert db_client.delete("/api/tokens/nope").json()["error"]["code"] == "TOKEN_NOT_FOUND"


def test_non_admin_token_can_use_apps_not_tokens(client: TestClient, create: Callable[..., Any]):
    value = client.post("/api/tokens", json={"name": "dev"}).json()["token"]
    client.headers["Authorization"] = f"Token {value}"
    assert create(client)["created_by"] == "dev"
    assert client.post("/api/tokens", json={"name": "x"}).status_code == 403


def test_admin_token_setting_survives_restart(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    settings = make_settings()
    make_client(settings).get("/api/apps")
    again = make_client(settings)
    assert again.get("/api/apps").status_code == 200
    assert [t["name"] for t in again.get("/api/tokens").json()] == ["admin"]
