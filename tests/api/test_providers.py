"""Model providers and aliases stored in the database (/api/providers, /api/models/aliases):
admin only, keys encrypted and never returned, the environment wins, connection tests
against a real llama_cpp.server, and runs that follow an alias without a restart."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from app_docs import TEXT_APP
from fastapi.testclient import TestClient
from openai_edge import Reply, openai_error, serve_edge
from pydantic import SecretStr
from sqlalchemy import text

from appforge.core.settings import OpenAISettings, Settings

KEY = "sk-stored-secret-0123456789"
HEADER_VALUE = "org-secret-value-42"


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def _state(client: TestClient) -> Any:
    return client.app.state.api  # type: ignore[attr-defined]


def _rows(client: TestClient, sql: str) -> list[Any]:
    with _state(client).services.engine.connect() as conn:
        return list(conn.execute(text(sql)))


def _version(client: TestClient) -> int:
    [(version,)] = _rows(client, "SELECT version FROM model_catalog")
    return int(version)


def _token(client: TestClient, role: str) -> dict[str, str]:
    made = client.post("/api/tokens", json={"name": role, "role": role}).json()
    return {"Authorization": f"Token {made['token']}"}


def _by_name(items: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(item["name"], item["source"]): item for item in items}


def test_providers_are_admin_only_and_keys_are_encrypted_never_returned(client: TestClient):
    made = client.post(
        "/api/providers",
        json={
            "name": "vault",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": KEY,
            "models": ["m1", "m2", "m1"],
            "headers": {"X-Org": HEADER_VALUE},
        },
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body | {"created_at": None, "updated_at": None} == {
        "name": "vault",
        "kind": "openai-compatible",
        "source": "database",
        "active": True,
        "base_url": "http://127.0.0.1:9/v1",
        "has_key": True,
        "headers": ["X-Org"],
        "models": ["m1", "m2"],
        "description": None,
        "created_at": None,
        "updated_at": None,
    }
    listed = client.get("/api/providers")
    one = client.get("/api/providers/vault")
    audit = client.get("/api/audit", params={"target": "vault"})
    for answer in (made, listed, one, audit):
        assert KEY not in answer.text and HEADER_VALUE not in answer.text
    assert [e["action"] for e in audit.json()] == ["provider.created"]
    providers = _by_name(listed.json())
    assert providers["local", "builtin"]["description"].startswith("tiny offline demo model")
    assert ("openai", "builtin") in providers and ("vault", "database") in providers

    # At rest: encrypted with the server key, not in plain text.
    [(stored_key, stored_headers)] = _rows(client, "SELECT api_key, headers FROM llm_providers")
    assert stored_key.startswith("fernet:") and KEY not in stored_key
    assert stored_headers.startswith("fernet:") and HEADER_VALUE not in stored_headers
    assert _state(client).key.decrypt(stored_key) == KEY

    # The key is write-only: a new one replaces it, "" removes it.
    changed = client.patch("/api/providers/vault", json={"api_key": "sk-other-key-000"})
    assert changed.status_code == 200 and changed.json()["has_key"] is True
    assert "sk-other-key-000" not in changed.text
    dropped = client.patch("/api/providers/vault", json={"api_key": "", "headers": {}})
    assert (dropped.json()["has_key"], dropped.json()["headers"]) == (False, [])
    assert _rows(client, "SELECT api_key, headers FROM llm_providers") == [(None, None)]

    for role in ("editor", "viewer", "runner"):
        headers = _token(client, role)
        for method, path, json in (
            ("GET", "/api/providers", None),
            ("GET", "/api/providers/vault", None),
            ("POST", "/api/providers", {"name": "x", "base_url": "http://h/v1"}),
            ("PATCH", "/api/providers/vault", {"models": []}),
            ("DELETE", "/api/providers/vault", None),
            ("POST", "/api/providers/vault/test", None),
            ("PUT", "/api/models/aliases/default", {"target": "local:smollm2"}),
            ("DELETE", "/api/models/aliases/default", None),
        ):
            r = client.request(method, path, json=json, headers=headers)
            assert r.status_code == 403, (role, method, path, r.text)
    viewer = _token(client, "viewer")
    aliases = client.get("/api/models/aliases", headers=viewer)
    assert aliases.status_code == 200
    [default] = aliases.json()
    assert (default["name"], default["target"], default["source"]) == (
        "default",
        "local:smollm2",
        "builtin",
    )
    assert default["description"].startswith("tiny offline demo model (SmolLM2-135M)")

    assert client.delete("/api/providers/vault").status_code == 204
    assert client.get("/api/providers/vault").json()["error"]["code"] == "PROVIDER_NOT_FOUND"
    assert _rows(client, "SELECT name FROM llm_providers") == []


BAD_PROVIDERS: list[dict[str, Any]] = [
    {"name": "local", "base_url": "http://h/v1"},
    {"name": "openai", "base_url": "http://h/v1"},
    {"name": "a:b", "base_url": "http://h/v1"},
    {"name": "", "base_url": "http://h/v1"},
    {"name": "x" * 65, "base_url": "http://h/v1"},
    {"name": "ok", "base_url": "ftp://h/v1"},
    {"name": "ok", "base_url": "not a url"},
    {"name": "ok", "base_url": "http://user:pw@h/v1"},
    {"name": "ok", "base_url": "http://h/v1?key=1"},
    {"name": "ok", "base_url": "http://h:99999/v1"},
    {"name": "ok", "base_url": "http://a..b/v1"},
    {"name": "ok", "base_url": "http://xn--/v1"},
    {"name": "ok", "base_url": "http://\u0080/v1"},
    {"name": "ok", "base_url": "http://h/" + "v" * 2000},
    {"name": "ok", "base_url": "http://h/v1", "api_key": "a\nb"},
    # httpx sends header values as ASCII: these would make every call and listing a 500.
    {"name": "ok", "base_url": "http://h/v1", "api_key": "cl\u00e9"},
    {"name": "ok", "base_url": "http://h/v1", "api_key": "a\x01b"},
    {"name": "ok", "base_url": "http://h/v1", "headers": {"X-A": "caf\u00e9"}},
    {"name": "ok", "base_url": "http://h/v1", "headers": {"X-A": "a\x7fb"}},
    {"name": "ok", "base_url": "http://h/v1", "api_key": "k" * 5000},
    {"name": "ok", "base_url": "http://h/v1", "models": ["has space"]},
    {"name": "ok", "base_url": "http://h/v1", "models": ["m"] * 201},
    {"name": "ok", "base_url": "http://h/v1", "headers": {"Authorization": "Bearer x"}},
    {"name": "ok", "base_url": "http://h/v1", "headers": {"X-A": "one\r\ntwo"}},
    {"name": "ok", "base_url": "http://h/v1", "headers": {"bad name": "v"}},
    {"name": "ok", "base_url": "http://h/v1", "headers": {f"X-{i}": "v" for i in range(21)}},
    {"name": "ok", "base_url": "http://h/v1", "timeout": 3},
]


def test_providers_bad_input_is_4xx_and_stores_nothing(client: TestClient):
    before = _version(client)
    for body in BAD_PROVIDERS:
        r = client.post("/api/providers", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert _rows(client, "SELECT name FROM llm_providers") == []
    assert _version(client) == before

    assert client.post("/api/providers", json={"name": "ok", "base_url": "http://h/v1"}).is_success
    again = client.post("/api/providers", json={"name": "ok", "base_url": "http://h2/v1"})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "PROVIDER_EXISTS")
    for patch in (
        {"base_url": "ftp://h"},
        {"headers": {"Host": "x"}},
        {"name": "renamed"},
        {"api_key": "\u00fc"},
        {"headers": {"X-A": "\u00fa"}},
    ):
        r = client.patch("/api/providers/ok", json=patch)
        assert r.status_code == 422, (patch, r.text)
    stored = client.get("/api/providers/ok").json()
    assert (stored["base_url"], stored["has_key"], stored["headers"]) == ("http://h/v1", False, [])
    assert client.get("/api/models").status_code == 200
    read_only = client.patch("/api/providers/openai", json={"models": []})
    assert (read_only.status_code, read_only.json()["error"]["code"]) == (409, "PROVIDER_READ_ONLY")
    assert client.patch("/api/providers/nope", json={}).status_code == 404
    assert client.delete("/api/providers/local").status_code == 409

    version = _version(client)
    for alias, target, code in (
        ("default", "nowhere:model", "MODEL_NOT_FOUND"),
        ("default", "no-provider-prefix", "VALIDATION_ERROR"),
        ("default", "ok:" + "m" * 201, "VALIDATION_ERROR"),
        ("a:b", "ok:m", "VALIDATION_ERROR"),
        ("x" * 65, "ok:m", "VALIDATION_ERROR"),
    ):
        r = client.put(f"/api/models/aliases/{alias}", json={"target": target})
        assert (r.status_code, r.json()["error"]["code"]) == (422, code), (alias, target)
    assert _rows(client, "SELECT name FROM model_aliases") == []
    assert _version(client) == version
    gone = client.delete("/api/models/aliases/nothing")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "ALIAS_NOT_FOUND")
    builtin = client.delete("/api/models/aliases/default")
    assert (builtin.status_code, builtin.json()["error"]["code"]) == (409, "ALIAS_READ_ONLY")

    # An alias pointing at a stored provider keeps it from being deleted.
    assert client.put("/api/models/aliases/fast", json={"target": "ok:m"}).status_code == 200
    used = client.delete("/api/providers/ok")
    assert (used.status_code, used.json()["error"]["code"]) == (409, "PROVIDER_IN_USE")
    assert used.json()["error"]["details"]["aliases"] == ["fast"]


def test_providers_test_connection_real_server_closed_port_401_and_bad_json(
    client: TestClient, llama_server: str
):
    down = _closed_url()
    for name, url in (("llama", llama_server), ("down", down)):
        made = client.post("/api/providers", json={"name": name, "base_url": url})
        assert made.status_code == 201, made.text
    ok = client.post("/api/providers/llama/test", params={"timeout": 10})
    assert ok.status_code == 200, ok.text
    assert ok.json()["models"] == ["smollm2"]
    assert ok.json()["server"] == llama_server.removesuffix("/v1")

    refused = client.post("/api/providers/down/test", params={"timeout": 2})
    assert refused.status_code == 502
    error = refused.json()["error"]
    assert error["code"] == "PROVIDER_TEST_FAILED"
    assert error["details"]["cause"] == "PROVIDER_UNAVAILABLE"
    assert "cannot connect" in error["message"]
    assert client.post("/api/providers/nope/test").status_code == 404
    for timeout in (31, 0.05, 1e-323):  # too long; too short to mean anything
        short = client.post("/api/providers/llama/test", params={"timeout": timeout})
        assert short.status_code == 422, (timeout, short.text)
    local = client.post("/api/providers/local/test")
    assert local.status_code == 200 and local.json()["models"] == ["smollm2"]

    with serve_edge() as edge:
        made = client.post(
            "/api/providers",
            json={
                "name": "edge",
                "base_url": edge.url,
                "api_key": KEY,
                "headers": {"X-Org": HEADER_VALUE},
            },
        )
        assert made.status_code == 201
        edge.replies = [Reply(401, openai_error(f"bad key {KEY}"))]
        denied = client.post("/api/providers/edge/test")
        assert denied.status_code == 502 and KEY not in denied.text
        assert denied.json()["error"]["details"] | {"server": None} == {
            "cause": "PROVIDER_AUTH_FAILED",
            "status": 401,
            "provider": "edge",
            "server": None,
        }
        sent = edge.requests[-1]
        assert sent["_path"] == "/v1/models" and sent["_authorization"] == f"Bearer {KEY}"
        assert sent["_headers"]["X-Org"] == HEADER_VALUE
        edge.replies = [Reply(200, {"models": "not a list"})]
        garbled = client.post("/api/providers/edge/test")
        assert garbled.status_code == 502
        assert garbled.json()["error"]["details"]["cause"] == "PROVIDER_ERROR"
        assert "no model list" in garbled.json()["error"]["message"]


def test_providers_environment_wins_over_stored_ones(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    down = _closed_url()
    settings = make_settings(
        models={"default": "local:smollm2", "fast": "local:smollm2"},
        providers={"shared": OpenAISettings(base_url=down, api_key=SecretStr("sk-env-123456"))},
    )
    client = make_client(settings)
    made = client.post("/api/providers", json={"name": "shared", "base_url": "http://h/v1"})
    assert made.status_code == 201 and made.json()["active"] is False
    providers = _by_name(client.get("/api/providers").json())
    assert providers["shared", "env"]["active"] is True
    assert providers["shared", "env"]["has_key"] is True
    assert providers["shared", "env"]["base_url"] == down
    assert providers["shared", "database"]["active"] is False
    # The server in force under the name is the environment's (a closed port).
    tested = client.post("/api/providers/shared/test", params={"timeout": 2})
    assert tested.json()["error"]["details"]["cause"] == "PROVIDER_UNAVAILABLE"
    env_only = client.patch("/api/providers/shared", json={"models": ["m"]})
    assert env_only.status_code == 200  # the stored one, still editable

    hidden = client.put("/api/models/aliases/fast", json={"target": "shared:m"})
    assert hidden.status_code == 200
    assert (hidden.json()["source"], hidden.json()["active"]) == ("database", False)
    aliases = _by_name(client.get("/api/models/aliases").json())
    assert aliases["fast", "env"] | {"description": None} == {
        "name": "fast",
        "target": "local:smollm2",
        "source": "env",
        "active": True,
        "description": None,
        "updated_at": None,
    }
    assert aliases["fast", "database"]["active"] is False
    models = client.get("/api/models", params={"timeout": 1}).json()
    fast = {a["name"]: a for a in models["aliases"]}["fast"]
    assert (fast["target"], fast["source"]) == ("local:smollm2", "env")


def test_run_follows_an_alias_to_a_stored_provider_without_restart(
    client: TestClient, create: Callable[..., dict[str, Any]], llama_server: str
):
    app = create(client, TEXT_APP.replace("max_tokens: 8", "max_tokens: 2"))  # model: default
    run_url = f"/api/apps/{app['uuid']}/run"
    question = {"input": {"question": "Say hi."}}

    def step(answer: Any) -> dict[str, Any]:
        assert answer.status_code == 200, answer.text
        run = client.get(f"/api/runs/{answer.json()['run']['id']}").json()
        assert run["status"] == "succeeded", run
        return dict(run["steps"][0])

    client.post("/api/providers", json={"name": "llama", "base_url": llama_server})
    client.post("/api/providers", json={"name": "down", "base_url": _closed_url()})
    pointed = client.put("/api/models/aliases/default", json={"target": "llama:smollm2"})
    assert pointed.json() | {"updated_at": None} == {
        "name": "default",
        "target": "llama:smollm2",
        "source": "database",
        "active": True,
        "description": None,
        "updated_at": None,
    }
    # llama_cpp.server streams no token usage: the run went to it.
    assert step(client.post(run_url, json=question))["usage_reported"] is False

    client.put("/api/models/aliases/default", json={"target": "down:smollm2"})
    failed = client.post(run_url, json=question)
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "PROVIDER_UNAVAILABLE"
    # Deleting the stored alias brings the built-in default back: the local model,
    # which does count its tokens.
    assert client.delete("/api/models/aliases/default").status_code == 204
    assert step(client.post(run_url, json=question))["usage_reported"] is True
    log = client.get("/api/audit", params={"target": "default"}).json()
    actions = [e["action"] for e in log]
    assert actions == ["model_alias.deleted", "model_alias.set", "model_alias.set"]
