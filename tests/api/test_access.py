"""Access control: every route's declared rule, walked role by role; app scopes; keys.

The matrix test reads the rules from ``/openapi.json`` (``x-access``), so a new
route without a rule fails it, and it checks each rule against what the server
really answers for each kind of caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from app_docs import CHAT_APP, YAML
from fastapi.testclient import TestClient

from appforge.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("admin", "editor", "viewer", "runner")


def _token(client: TestClient, name: str, **body: Any) -> str:
    r = client.post("/api/tokens", json={"name": name, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _as(token: str | None) -> dict[str, str]:
    # An empty Authorization header reads as no token at all.
    return {"Authorization": f"Token {token}"} if token else {"Authorization": ""}


@pytest.fixture
def setup(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    create: Callable[..., Any],
) -> dict[str, Any]:
    client = make_client(make_settings(rate_limit={"enabled": False}))
    a = create(client, CHAT_APP.replace("name: Chatty", "name: App A"))
    b = create(client, CHAT_APP.replace("name: Chatty", "name: App B"))
    callers: dict[str, str | None] = {"anonymous": None}
    for role in ("editor", "viewer", "runner"):
        callers[role] = _token(client, role, role=role)
        callers[f"{role}@A"] = _token(client, f"{role}@A", role=role, apps=[a["uuid"]])
    callers["admin"] = _token(client, "admin2", role="admin")
    return {"client": client, "a": a, "b": b, "callers": callers}


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    spec = client.get("/openapi.json").json()
    return [
        (method.upper(), path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    ]


def _expected(rule: dict[str, Any], caller: str) -> str:
    """What the rule promises a caller on app B's routes: refused 401/403, or let in."""
    if caller == "anonymous":
        return "in" if rule["anonymous"] else "401"
    role, _, scoped = caller.partition("@")
    if role not in rule["roles"]:
        return "403"
    if scoped and rule["scope"] in ("global", "app"):
        return "403"  # narrowed to app A: nothing global, not app B
    return "in"


def test_access_matrix_every_route_and_role(setup: dict[str, Any]):
    client: TestClient = setup["client"]
    b_uuid = setup["b"]["uuid"]
    seen = 0
    for method, path, op in _operations(client):
        assert "x-access" in op, f"{method} {path} declares no access rule"
        rule = op["x-access"]
        url = re.sub(r"\{app_uuid\}", b_uuid, path)
        url = re.sub(r"\{[^}]+\}", "no-such-thing", url)
        for caller, token in setup["callers"].items():
            kwargs: dict[str, Any] = {"headers": _as(token)}
            if method in ("POST", "PATCH", "PUT"):
                kwargs["json"] = {}
            r = client.request(method, url, **kwargs)
            expected = _expected(rule, caller)
            if expected == "in":
                assert r.status_code not in (401, 403), (method, path, caller, r.text)
            else:
                assert str(r.status_code) == expected, (method, path, caller, r.text)
            seen += 1
    assert seen > 400


def test_access_a_route_without_a_rule_fails_the_matrix(setup: dict[str, Any]):
    client: TestClient = setup["client"]
    app: Any = client.app

    @app.get("/api/unguarded")
    def unguarded() -> dict[str, str]:
        return {}

    app.openapi_schema = None  # regenerate
    missing = [(m, p) for m, p, op in _operations(client) if "x-access" not in op]
    assert missing == [("GET", "/api/unguarded")]


def test_access_runner_key_for_app_a(setup: dict[str, Any]):
    client: TestClient = setup["client"]
    a, b = setup["a"]["uuid"], setup["b"]["uuid"]
    runner = _as(setup["callers"]["runner@A"])
    body = {"input": {"message": "Hi"}}
    ran = client.post(f"/api/apps/{a}/run", json=body, headers=runner)
    assert ran.status_code == 200, ran.text
    refused = client.post(f"/api/apps/{b}/run", json=body, headers=runner)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "APP_FORBIDDEN")
    made = client.post("/api/apps", content=CHAT_APP, headers={**runner, **YAML})
    assert made.status_code == 403
    # Another key's session of the same app: as if it did not exist.
    other = client.post(f"/api/apps/{a}/run", json=body, headers=_as(setup["callers"]["runner"]))
    theirs = other.json()["session"]["id"]
    for r in (
        client.get(f"/api/sessions/{theirs}", headers=runner),
        client.delete(f"/api/sessions/{theirs}", headers=runner),
        client.post(f"/api/apps/{a}/run/{theirs}", json=body, headers=runner),
        client.get(f"/api/runs/{other.json()['run']['id']}", headers=runner),
    ):
        assert r.status_code == 404, r.text
    mine = ran.json()["session"]["id"]
    assert client.get(f"/api/sessions/{mine}", headers=runner).json()["turns"]
    again = client.post(f"/api/apps/{a}/run/{mine}", json=body, headers=runner)
    assert again.status_code == 200
    for run in (ran, again):  # its own runs, one by one; it lists none
        run_id = run.json()["run"]["id"]
        assert client.get(f"/api/runs/{run_id}", headers=runner).status_code == 200
    assert client.get(f"/api/apps/{a}/runs", headers=runner).status_code == 403
    # Admins and editors of the app still read every session.
    assert client.get(f"/api/sessions/{theirs}").status_code == 200
    editor = _as(setup["callers"]["editor@A"])
    assert client.get(f"/api/sessions/{theirs}", headers=editor).status_code == 200
    assert len(client.get(f"/api/apps/{a}/runs", headers=editor).json()) == 3


def test_access_scoped_token_lists_only_its_apps(setup: dict[str, Any]):
    client: TestClient = setup["client"]
    listed = client.get("/api/apps", headers=_as(setup["callers"]["viewer@A"]))
    assert [x["uuid"] for x in listed.json()] == [setup["a"]["uuid"]]
    assert listed.headers["x-total-count"] == "1"
    assert len(client.get("/api/apps", headers=_as(setup["callers"]["viewer"])).json()) == 2


def test_access_viewer_reads_and_runs_nothing(setup: dict[str, Any]):
    client: TestClient = setup["client"]
    viewer = _as(setup["callers"]["viewer"])
    a = setup["a"]["uuid"]
    assert client.get(f"/api/apps/{a}", headers=viewer).status_code == 200
    r = client.post(f"/api/apps/{a}/run", json={"input": {"message": "x"}}, headers=viewer)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert (
        client.patch(f"/api/apps/{a}", content=CHAT_APP, headers={**viewer, **YAML}).status_code
        == 403
    )


def test_access_token_options_are_checked(setup: dict[str, Any]):
    client: TestClient = setup["client"]
    bad = [
        {"role": "admin", "apps": [setup["a"]["uuid"]]},
        {"role": "editor", "origins": ["https://x.example"]},
        {"role": "runner", "origins": ["https://x.example/path"]},
        {"role": "runner", "apps": ["no-such-app"]},
        {"role": "runner", "rate_limit": "many"},
        {"role": "runner", "expires_at": "2001-01-01T00:00:00Z"},
        {"role": "superuser"},
        {"role": "viewer", "is_admin": True},
    ]
    before = len(client.get("/api/tokens").json())
    for body in bad:
        r = client.post("/api/tokens", json={"name": "bad", **body})
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert len(client.get("/api/tokens").json()) == before
    # Apps by name resolve to their uuids.
    made = client.post("/api/tokens", json={"name": "n", "role": "runner", "apps": ["App A"]})
    assert made.json()["apps"] == [setup["a"]["uuid"]]
    assert made.json()["role"] == "runner" and made.json()["is_admin"] is False


def test_access_expired_token_is_refused(setup: dict[str, Any]):
    client: TestClient = setup["client"]
    from api.tables import Token
    from appforge.core.db import transaction, utcnow

    made = client.post("/api/tokens", json={"name": "soon", "role": "viewer"}).json()
    headers = _as(made["token"])
    assert client.get("/api/tokens/me", headers=headers).status_code == 200
    with transaction(client.app.state.api.db) as db:  # type: ignore[attr-defined]
        db.get(Token, made["id"]).expires_at = utcnow()  # type: ignore[union-attr]
    client.app.state.api.tokens.clear()  # type: ignore[attr-defined]
    r = client.get("/api/tokens/me", headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "TOKEN_EXPIRED")


def test_access_runner_origins(setup: dict[str, Any]):
    client: TestClient = setup["client"]
    a = setup["a"]["uuid"]
    key = _token(client, "web", role="runner", origins=["https://shop.example"])
    body = {"input": {"message": "Hi"}}
    ok = client.post(f"/api/apps/{a}/run", json=body,
                     headers={**_as(key), "Origin": "https://shop.example"})  # fmt: skip
    assert ok.status_code == 200
    no = client.post(f"/api/apps/{a}/run", json=body,
                     headers={**_as(key), "Origin": "https://evil.example"})  # fmt: skip
    assert (no.status_code, no.json()["error"]["code"]) == (403, "ORIGIN_FORBIDDEN")


def test_access_anonymous_sessions_are_capabilities(setup: dict[str, Any], create: Any):
    client: TestClient = setup["client"]
    public = create(client, CHAT_APP.replace("type: chat", "type: chat\npublic: true"))
    url = f"/api/apps/{public['uuid']}/run"
    body = {"input": {"message": "Hi"}}
    nobody = _as(None)
    first = client.post(url, json=body, headers=nobody)
    assert first.status_code == 200, first.text
    sid = first.json()["session"]["id"]
    assert len(sid) >= 32  # server-made: 190 random bits, letters and digits
    # Its id is the key to continue it ...
    assert client.post(f"{url}/{sid}", json=body, headers=nobody).status_code == 200
    # ... but nobody can choose an id, nor continue a session a token made.
    runs_before = len(client.get(f"/api/apps/{public['uuid']}/runs").json())
    chosen = client.post(f"{url}/user-42", json=body, headers=nobody)
    assert (chosen.status_code, chosen.json()["error"]["code"]) == (404, "SESSION_NOT_FOUND")
    by_token = client.post(url, json=body).json()["session"]["id"]
    hijack = client.post(f"{url}/{by_token}", json=body, headers=nobody)
    assert hijack.status_code == 404
    assert len(client.get(f"/api/apps/{public['uuid']}/runs").json()) == runs_before + 1
    assert client.get("/api/sessions/user-42").status_code == 404  # nothing stored


def test_access_readme_has_the_matrix(setup: dict[str, Any]):
    client: TestClient = setup["client"]
    readme = (ROOT / "README.md").read_text()
    for method, path, op in _operations(client):
        rule = op["x-access"]
        who = ", ".join(rule["roles"]) + (", anonymous" if rule["anonymous"] else "")
        row = f"| `{method} {path}` | {who} | {rule['scope']} |"
        assert row in readme, row
