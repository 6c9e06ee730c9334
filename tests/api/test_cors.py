"""CORS: preflights and answers on the run endpoints, by app YAML, runner key and setting.

No model runs here: the answers that matter are the page, a session, a run whose
input is invalid (422, still an answer a browser reads or not) and preflights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from app_docs import CHAT_APP, YAML
from fastapi.testclient import TestClient

from appforge.core.settings import Settings

SHOP = "https://shop.example"
EVIL = "https://evil.example"
PUBLIC_APP = CHAT_APP.replace("type: chat", f'type: chat\npublic: true\norigins: ["{SHOP}"]')
NOBODY = {"Authorization": ""}


def _preflight(client: TestClient, path: str, origin: str) -> Any:
    headers = {
        **NOBODY,
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key",
    }
    return client.options(path, headers=headers)


@pytest.fixture
def client(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> TestClient:
    return make_client(make_settings())


def test_cors_preflight_allows_the_apps_origins_only(client: TestClient, create: Any):
    app = create(client, PUBLIC_APP)
    r = _preflight(client, f"/api/apps/{app['uuid']}/run", SHOP)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == SHOP
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"]
    for name in ("Authorization", "Content-Type", "Accept", "X-API-Key", "X-Session-ID"):
        assert name in allowed
    exposed = r.headers["access-control-expose-headers"]
    for name in ("X-Session-ID", "X-Run-ID", "X-Request-ID", "Retry-After", "X-RateLimit-Reset"):
        assert name in exposed
    assert "origin" in r.headers["vary"].lower()
    # Another origin, and a run with a session id in the path, on an app without origins.
    no = _preflight(client, f"/api/apps/{app['uuid']}/run/abc", EVIL)
    assert no.status_code == 204
    assert "access-control-allow-origin" not in no.headers
    plain = create(client)
    assert (
        "access-control-allow-origin"
        not in _preflight(client, f"/api/apps/{plain['uuid']}/run", SHOP).headers
    )


def test_cors_answers_carry_allow_origin_for_allowed_origins(client: TestClient, create: Any):
    app = create(client, PUBLIC_APP)
    page = client.get(f"/api/apps/{app['uuid']}/page", headers={**NOBODY, "Origin": SHOP})
    assert page.status_code == 200
    assert page.headers["access-control-allow-origin"] == SHOP
    assert "X-Session-ID" in page.headers["access-control-expose-headers"]
    assert page.headers["vary"] == "Origin"
    # An error answer is readable too (a browser must see why), and a 422 is one.
    bad = client.post(
        f"/api/apps/{app['uuid']}/run", json={"input": {}}, headers={**NOBODY, "Origin": SHOP}
    )
    assert bad.status_code == 422
    assert bad.headers["access-control-allow-origin"] == SHOP
    other = client.get(f"/api/apps/{app['uuid']}/page", headers={**NOBODY, "Origin": EVIL})
    assert other.status_code == 200  # the browser, not the server, keeps it from the page
    assert "access-control-allow-origin" not in other.headers
    # Routes that are not run endpoints get no CORS without the global setting.
    listed = client.get("/api/apps", headers={"Origin": SHOP})
    assert "access-control-allow-origin" not in listed.headers
    assert "access-control-allow-origin" not in client.get("/api/apps").headers


def test_cors_origins_follow_the_apps_versions(client: TestClient, create: Any):
    app = create(client, PUBLIC_APP)
    path = f"/api/apps/{app['uuid']}/page"
    assert client.get(path, headers={"Origin": SHOP}).headers["access-control-allow-origin"]
    newer = PUBLIC_APP.replace(SHOP, "https://new-shop.example")
    assert client.patch(f"/api/apps/{app['uuid']}", content=newer, headers=YAML).status_code == 200
    assert "access-control-allow-origin" not in client.get(path, headers={"Origin": SHOP}).headers
    now = client.get(path, headers={"Origin": "https://new-shop.example"})
    assert now.headers["access-control-allow-origin"] == "https://new-shop.example"


def test_cors_runner_key_origins(client: TestClient, create: Any):
    a, b = create(client), create(client, CHAT_APP)
    r = client.post(
        "/api/tokens",
        json={"name": "web", "role": "runner", "apps": [a["uuid"]], "origins": [SHOP]},
    )
    key = {"Authorization": f"Token {r.json()['token']}"}
    # A preflight carries no key: any live runner key of the app listing the origin lets it on.
    preflight = _preflight(client, f"/api/apps/{a['uuid']}/run", SHOP)
    assert preflight.headers["access-control-allow-origin"] == SHOP
    assert (
        "access-control-allow-origin"
        not in _preflight(client, f"/api/apps/{b['uuid']}/run", SHOP).headers
    )
    # The request itself is checked against its key.
    page = client.get(f"/api/apps/{a['uuid']}/page", headers={**key, "Origin": SHOP})
    assert (page.status_code, page.headers["access-control-allow-origin"]) == (200, SHOP)
    no = client.get(f"/api/apps/{a['uuid']}/page", headers={**key, "Origin": EVIL})
    assert (no.status_code, no.json()["error"]["code"]) == (403, "ORIGIN_FORBIDDEN")
    assert "access-control-allow-origin" not in no.headers
    # Without an Origin header it is no browser: allowed, and no CORS headers.
    plain = client.get(f"/api/apps/{a['uuid']}/page", headers=key)
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
    # An admin key from that origin gets no CORS: the origin is the runner key's, not the app's.
    admin = client.get(f"/api/apps/{a['uuid']}/page", headers={"Origin": SHOP})
    assert "access-control-allow-origin" not in admin.headers
    # A revoked key no longer opens preflights.
    token_id = r.json()["id"]
    assert client.delete(f"/api/tokens/{token_id}").status_code in (200, 204)
    assert (
        "access-control-allow-origin"
        not in _preflight(client, f"/api/apps/{a['uuid']}/run", SHOP).headers
    )


def test_cors_sessions_and_v1_paths(client: TestClient, create: Any):
    app = create(client, PUBLIC_APP)
    other = create(client, CHAT_APP.replace("type: chat", "type: chat\npublic: true"))
    # Preflights on paths that name no app: any app or runner key listing the origin.
    for path in ("/api/sessions/abc", "/v1/chat/completions"):
        assert _preflight(client, path, SHOP).headers["access-control-allow-origin"] == SHOP
        assert "access-control-allow-origin" not in _preflight(client, path, EVIL).headers
    # A session is about its app: readable from that app's origins only.
    run = client.post(
        f"/api/apps/{app['uuid']}/run", json={"input": {"message": "Hi"}}, headers=NOBODY
    )
    assert run.status_code == 200, run.text
    sid = run.json()["session"]["id"]
    mine = client.get(f"/api/sessions/{sid}", headers={**NOBODY, "Origin": SHOP})
    assert (mine.status_code, mine.headers["access-control-allow-origin"]) == (200, SHOP)
    nope = client.get(f"/api/sessions/{sid}", headers={**NOBODY, "Origin": EVIL})
    assert nope.status_code == 200
    assert "access-control-allow-origin" not in nope.headers
    # The other public app lists no origin: nothing about it is readable from SHOP.
    page = client.get(f"/api/apps/{other['uuid']}/page", headers={**NOBODY, "Origin": SHOP})
    assert "access-control-allow-origin" not in page.headers


def test_cors_global_origins_open_every_endpoint(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    builder = "http://builder.internal:8501"
    client = make_client(make_settings(cors={"origins": [builder]}))
    r = client.get("/api/apps", headers={"Origin": builder})
    assert (r.status_code, r.headers["access-control-allow-origin"]) == (200, builder)
    pre = client.options(
        "/api/tokens",
        headers={"Origin": builder, "Access-Control-Request-Method": "POST"},
    )
    assert (pre.status_code, pre.headers["access-control-allow-origin"]) == (204, builder)
    assert pre.headers["access-control-max-age"] == "600"
    assert (
        "access-control-allow-origin"
        not in client.get("/api/apps", headers={"Origin": SHOP}).headers
    )


@pytest.mark.parametrize(
    "origins",
    [
        '["https://shop.example/path"]',
        '["shop.example"]',
        '["ftp://shop.example"]',
        '["https://shop.example:99999999"]',
    ],
)
def test_cors_app_origins_are_validated(client: TestClient, origins: str):
    r = client.post("/api/apps", content=CHAT_APP + f"origins: {origins}\n", headers=YAML)
    assert r.status_code == 422, r.text
    assert "origins[0]" in r.text
    assert client.get("/api/apps").json() == []


def test_cors_settings_origins_are_validated(make_settings: Callable[..., Settings]):
    with pytest.raises(ValueError, match="scheme://host"):
        make_settings(cors={"origins": ["https://x.example/"]})
    with pytest.raises(ValueError, match="CIDR"):
        make_settings(trusted_proxies=["10.0.0.0/33"])
