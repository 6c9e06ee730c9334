"""Builder sign-ins: a one-time claim traded for an http-only cookie whose secret then
authenticates as the token that signed in, until sign-out, expiry or revocation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from appforge.core.settings import Settings

COOKIE = "appforge_builder_default"  # the TestClient's API has no port


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def _token(client: TestClient, name: str, **body: Any) -> str:
    r = client.post("/api/tokens", json={"name": name, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _sign_in(client: TestClient, token: str | None = None) -> tuple[dict[str, Any], str]:
    """Start a session with ``token`` (default: the admin's), trade its claim as a
    browser would; (the session, the cookie's secret)."""
    headers = _as(token) if token else {}
    r = client.post("/api/builder/sessions", headers=headers)
    assert r.status_code == 201, r.text
    started = r.json()
    r = client.post(
        "/builder/session", data={"claim": started["claim"]}, headers={"Authorization": ""}
    )
    assert r.status_code == 204, r.text
    return started, r.cookies[COOKIE]


def test_builder_session_claim_sets_an_http_only_strict_cookie(client: TestClient):
    started, secret = _sign_in(client)
    assert started["cookie"] == COOKIE and started["claim"].startswith("afc_")
    assert secret.startswith("afb_") and secret != started["claim"]
    # Trade it once more: refused.
    r = client.post("/builder/session", data={"claim": started["claim"]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "BUILDER_SESSION_NOT_FOUND"
    # The cookie as the browser gets it: http-only, SameSite=Strict, for the whole host.
    started = client.post("/api/builder/sessions").json()
    r = client.post("/builder/session", data={"claim": started["claim"]})
    header = r.headers["set-cookie"]
    assert header.startswith(f"{COOKIE}=afb_")
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes and "secure" not in attributes
    assert "samesite=strict" in header.lower() and "Path=/" in header
    assert r.headers["cache-control"] == "no-store"
    client.cookies.clear()


def test_builder_session_authenticates_as_its_token_until_sign_out(client: TestClient):
    editor = _token(client, "ed", role="editor")
    started, secret = _sign_in(client, editor)
    me = client.get("/api/tokens/me", headers=_as(secret))
    assert me.status_code == 200 and me.json()["name"] == "ed" and me.json()["role"] == "editor"
    # Same role as the token: an editor may not list tokens.
    assert client.get("/api/tokens", headers=_as(secret)).status_code == 403
    # A session does not start another one.
    r = client.post("/api/builder/sessions", headers=_as(secret))
    assert r.status_code == 403 and r.json()["error"]["code"] == "BUILDER_SESSION_FORBIDDEN"
    # Sign-out with the session itself ("current"): it stops working at once.
    assert client.delete("/api/builder/sessions/current", headers=_as(secret)).status_code == 204
    r = client.get("/api/tokens/me", headers=_as(secret))
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"
    # By id, with the token: gone already; and "current" means nothing for a token.
    r = client.delete(f"/api/builder/sessions/{started['id']}", headers=_as(editor))
    assert r.status_code == 404
    r = client.delete("/api/builder/sessions/current", headers=_as(editor))
    assert r.status_code == 404 and r.json()["error"]["code"] == "BUILDER_SESSION_NOT_FOUND"
    # Another token cannot end this token's session.
    other, other_secret = _sign_in(client, editor)
    assert client.delete(f"/api/builder/sessions/{other['id']}").status_code == 404
    assert client.get("/api/tokens/me", headers=_as(other_secret)).status_code == 200
    assert (
        client.delete(f"/api/builder/sessions/{other['id']}", headers=_as(editor)).status_code
        == 204
    )
    assert client.get("/api/tokens/me", headers=_as(other_secret)).status_code == 401


def test_builder_session_ends_with_its_token_and_is_bounded(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(auth={"builder_sessions_per_token": 2, "cache_seconds": 0}))
    runner = _token(client, "widget", role="runner")
    _, first = _sign_in(client, runner)
    _, second = _sign_in(client, runner)
    _, third = _sign_in(client, runner)  # the oldest one ends
    assert client.get("/api/tokens/me", headers=_as(first)).status_code == 401
    assert client.get("/api/tokens/me", headers=_as(second)).status_code == 200
    token_id = client.get("/api/tokens/me", headers=_as(third)).json()["id"]
    assert client.delete(f"/api/tokens/{token_id}").status_code == 204
    assert client.get("/api/tokens/me", headers=_as(third)).status_code == 401
    # A token that requires signatures cannot sign in a browser, which cannot sign.
    signed = _token(client, "signed", require_signature=True)
    r = client.post("/api/builder/sessions", headers=_as(signed))
    assert r.status_code in (401, 403)


def test_builder_session_cookie_from_another_site_or_expired_is_refused(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(auth={"builder_session_seconds": 1e-3}))
    started = client.post("/api/builder/sessions").json()
    r = client.post(
        "/builder/session",
        data={"claim": started["claim"]},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "ORIGIN_FORBIDDEN"
    assert COOKIE not in r.cookies
    # Its port may differ (the builder's), not its host; here the session has expired.
    r = client.post(
        "/builder/session",
        data={"claim": started["claim"]},
        headers={"Origin": "http://testserver:8501"},
    )
    assert r.status_code == 404


def test_builder_session_end_in_the_browser_clears_the_cookie(client: TestClient):
    _, secret = _sign_in(client)
    client.cookies.set(COOKIE, secret)
    r = client.post("/builder/session/end")
    assert r.status_code == 204
    assert (
        r.headers["set-cookie"].startswith(f'{COOKIE}=""')
        and "Max-Age=0" in r.headers["set-cookie"]
    )
    client.cookies.clear()
    assert client.get("/api/tokens/me", headers=_as(secret)).status_code == 401
