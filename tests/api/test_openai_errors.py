"""The OpenAI-compatible endpoint's refusals: OpenAI's error shape with the API's status
codes, nothing stored for a refused request; and who sees which apps as models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app_docs import YAML
from fastapi.testclient import TestClient
from openai_edge import Reply, openai_error
from openai_v1 import QA_APP, V1, assistant, user
from sqlalchemy import func, select

from runs.tables import ChatSession, Run


def _token(client: TestClient, name: str, **body: Any) -> str:
    r = client.post("/api/tokens", json={"name": name, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}" if token else ""}


def _stored(client: TestClient) -> tuple[int, int]:
    """How many runs and sessions the database holds."""
    with client.app.state.api.db() as db:  # type: ignore[attr-defined]
        runs = db.scalar(select(func.count()).select_from(Run))
        sessions = db.scalar(select(func.count()).select_from(ChatSession))
    return runs, sessions


def _world(v1: V1, create: Callable[..., Any]) -> dict[str, Any]:
    client = v1.client
    a = create(client, QA_APP.replace("name: QA", "name: App A"))
    b = create(client, QA_APP.replace("name: QA", "name: App B"))
    p = create(client, QA_APP.replace("name: QA", "name: Open").replace(
        "type: chat", "type: chat\npublic: true"))  # fmt: skip
    keys = {
        "runner@A": _token(client, "runner@A", role="runner", apps=[a["uuid"]]),
        "runner": _token(client, "runner", role="runner"),
        "viewer": _token(client, "viewer", role="viewer"),
    }
    return {"a": a["uuid"], "b": b["uuid"], "p": p["uuid"], "keys": keys}


def test_openai_refusals_have_openai_shape_and_store_nothing(
    make_v1: Callable[..., V1], create: Callable[..., Any]
):
    v1 = make_v1(limits={"max_messages": 4, "max_message_chars": 50})
    world = _world(v1, create)
    a, b, keys = world["a"], world["b"], world["keys"]
    made = v1.client.post("/v1/chat/completions", json={"model": a, "messages": [user("x")]},
                          headers=_bearer(keys["runner"]))  # fmt: skip
    theirs = made.headers["x-session-id"]
    image = {"type": "image_url", "image_url": {"url": "http://x.example/a.png"}}
    ok = [user("Hi")]
    cases: list[tuple[str, Any, dict[str, str], int, str, str]] = [
        ("admin", {"model": a, "messages": [user("Hi"), assistant("Yo")]}, {},
         422, "LAST_MESSAGE_NOT_USER", "invalid_request_error"),
        ("admin", {"model": "no-such-app", "messages": ok}, {},
         404, "APP_NOT_FOUND", "not_found_error"),
        ("admin", {"model": "no-such-app", "messages": ok, "stream": True}, {},
         404, "APP_NOT_FOUND", "not_found_error"),
        ("admin", {"model": a, "messages": [user("q"), assistant("a")] * 2 + ok}, {},
         422, "TOO_MANY_MESSAGES", "invalid_request_error"),
        ("admin", {"model": a, "messages": [user("x" * 51)]}, {},
         422, "MESSAGE_TOO_LONG", "invalid_request_error"),
        ("admin", {"model": a, "messages": [{"role": "user", "content": [image]}]}, {},
         422, "CONTENT_PART_UNSUPPORTED", "invalid_request_error"),
        ("admin", {"model": a, "messages": [{"role": "tool", "content": "1"}, *ok]}, {},
         422, "MESSAGE_ROLE_UNSUPPORTED", "invalid_request_error"),
        ("admin", {"model": a, "messages": []}, {},
         422, "VALIDATION_ERROR", "invalid_request_error"),
        ("admin", {"model": a, "messages": ok, "n": 2}, {},
         422, "VALIDATION_ERROR", "invalid_request_error"),
        ("runner@A", {"model": b, "messages": ok}, {},
         403, "APP_FORBIDDEN", "permission_error"),
        ("runner@A", {"model": "App B", "messages": ok, "stream": True}, {},
         403, "APP_FORBIDDEN", "permission_error"),
        ("runner@A", {"model": a, "messages": ok}, {"X-Session-ID": theirs},
         404, "SESSION_NOT_FOUND", "not_found_error"),
        ("anonymous", {"model": a, "messages": ok}, {},
         401, "AUTH_REQUIRED", "authentication_error"),
        ("anonymous", {"model": world["p"], "messages": ok}, {"X-Session-ID": "chosen-id"},
         404, "SESSION_NOT_FOUND", "not_found_error"),
        ("viewer", {"model": a, "messages": ok}, {},
         403, "FORBIDDEN", "permission_error"),
        ("bad", {"model": a, "messages": ok}, {},
         401, "TOKEN_INVALID", "authentication_error"),
    ]  # fmt: skip
    before, calls = _stored(v1.client), len(v1.edge.requests)
    for who, body, extra, status, code, kind in cases:
        token = {"admin": None, "anonymous": None, "bad": "af_nope_0123456789"}.get(who)
        headers = {} if who == "admin" else _bearer(keys.get(who, token))
        r = v1.client.post("/v1/chat/completions", json=body, headers={**headers, **extra})
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (who, body, r.text)
        error = r.json()["error"]
        assert set(r.json()) == {"error"} and set(error) == {"message", "type", "code", "param"}
        assert error["type"] == kind and error["message"], r.text
    n = v1.client.post("/v1/chat/completions", json={"model": a, "messages": ok, "n": 2})
    assert n.json()["error"]["param"] == "n"
    assert _stored(v1.client) == before
    assert len(v1.edge.requests) == calls  # the model was never asked


def test_openai_failure_before_first_frame_is_an_http_error(v1: V1, create: Callable[..., Any]):
    app = create(v1.client, QA_APP)
    v1.edge.replies = [Reply(401, openai_error("bad key", "invalid_api_key"))]
    body = {"model": app["uuid"], "messages": [user("Hi")], "stream": True}
    r = v1.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "PROVIDER_AUTH_FAILED"
    assert r.json()["error"]["type"] == "server_error"


def test_openai_rate_limit_is_429_with_retry_after(make_v1: Callable[..., V1]):
    v1 = make_v1(rate_limit={"enabled": True, "burst": 1, "requests": 1, "window_seconds": 3600})
    v1.client.get("/v1/models")
    r = v1.client.get("/v1/models")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["code"] == "RATE_LIMITED"


def test_openai_shape_only_on_v1(make_v1: Callable[..., V1]):
    v1 = make_v1(limits={"max_body_bytes": 1024})
    r = v1.client.get("/v1/no-such-route")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    big = {"model": "x", "messages": [user("y" * 2000)]}
    r = v1.client.post("/v1/chat/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert r.json()["error"]["type"] == "invalid_request_error"
    ours = v1.client.get("/api/no-such-route").json()
    assert set(ours) == {"error", "request_id"} and "type" not in ours["error"]


def test_openai_models_are_the_apps_the_caller_may_run(v1: V1, create: Callable[..., Any]):
    world = _world(v1, create)
    a, b, p, keys = world["a"], world["b"], world["p"], world["keys"]
    client = v1.client

    def ids(headers: dict[str, str]) -> list[str]:
        r = client.get("/v1/models", headers=headers)
        assert r.status_code == 200 and r.json()["object"] == "list", r.text
        for model in r.json()["data"]:
            assert set(model) == {"id", "object", "created", "owned_by", "name"}
            assert model["object"] == "model" and isinstance(model["created"], int)
        return [m["id"] for m in r.json()["data"]]

    assert sorted(ids({})) == sorted([a, b, p])
    assert ids(_bearer(keys["runner@A"])) == [a]
    assert ids(_bearer(None)) == [p]
    assert client.get("/v1/models", headers=_bearer(keys["viewer"])).status_code == 403
    one = client.get("/v1/models/App A").json()
    assert (one["id"], one["name"], one["owned_by"]) == (a, "App A", "appforge")
    assert client.get(f"/v1/models/{a}").json() == one
    for url, headers, status in [
        (f"/v1/models/{b}", _bearer(keys["runner@A"]), 403),
        (f"/v1/models/{a}", _bearer(None), 401),
        (f"/v1/models/{p}", _bearer(None), 200),
        ("/v1/models/nothing", {}, 404),
    ]:
        assert client.get(url, headers=headers).status_code == status, url


def test_openai_app_names_shared_by_two_apps_are_ambiguous(v1: V1, create: Callable[..., Any]):
    first = create(v1.client, QA_APP)
    create(v1.client, QA_APP)
    r = v1.client.post("/v1/chat/completions", json={"model": "QA", "messages": [user("x")]})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "APP_AMBIGUOUS")
    by_uuid = {"model": first["uuid"], "messages": [user("x")]}
    assert v1.client.post("/v1/chat/completions", json=by_uuid).status_code == 200


def test_openai_yaml_section_is_checked_when_saved(client: TestClient):
    bad = QA_APP.replace("type: chat", "type: chat\nopenai: {input: nope, output: missing}")
    r = client.post("/api/apps", content=bad, headers=YAML)
    assert r.status_code == 422 and r.json()["error"]["code"] == "APP_INVALID"
    paths = {p["path"] for p in r.json()["error"]["details"]["errors"]}
    assert paths == {"openai.input", "openai.output"}
