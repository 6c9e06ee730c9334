"""An app's sessions (``GET /api/apps/<uuid>/sessions``): order, previews, access, bounds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appforge.core.settings import Settings

# One token per answer: the model's words do not matter here.
SHORT_CHAT = """\
version: 1
name: {name}
type: chat
input:
  topic: {{type: string, default: ""}}
  message: {{type: string, required: true}}
steps:
  - id: reply
    kind: llm
    prompt:
      user: "{{{{ input.message }}}}"
    history: 2
    params: {{temperature: 0, seed: 1, max_tokens: 1}}
output:
  reply: "{{{{ reply.text }}}}"
"""
Create = Callable[..., dict[str, Any]]


def _app(client: TestClient, create: Create, name: str, extra: str = "") -> str:
    return str(create(client, SHORT_CHAT.format(name=name) + extra)["uuid"])


def _say(
    client: TestClient, app: str, message: str, session: str | None = None, **headers: str
) -> str:
    url = f"/api/apps/{app}/run" + (f"/{session}" if session else "")
    r = client.post(url, json={"input": {"message": message}}, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["session"]["id"])


def _as(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Token {token}"} if token else {"Authorization": ""}


def test_sessions_list_newest_first_with_turns_and_first_message(
    db_client: TestClient, create: Create
):
    client = db_client
    app = _app(client, create, "Lister")
    first = _say(client, app, "What is a widget?")
    assert _say(client, app, "And a gadget?", first) == first
    long_message = "Tell me everything. " * 20  # 400 characters
    second = _say(client, app, long_message)

    r = client.get(f"/api/apps/{app}/sessions")
    assert r.status_code == 200 and r.headers["x-total-count"] == "2"
    listed = r.json()
    assert [s["id"] for s in listed] == [second, first]
    assert [s["turns"] for s in listed] == [1, 2]
    assert listed[1]["first_input"] == "What is a widget?"
    preview = listed[0]["first_input"]
    assert len(preview) == 200 and long_message.startswith(preview[:-1]) and preview[-1] == "…"
    assert set(listed[0]) == {"id", "created_at", "updated_at", "turns", "first_input"}
    assert listed[1]["updated_at"] >= listed[1]["created_at"]

    page = client.get(f"/api/apps/{app}/sessions", params={"limit": 1, "offset": 1})
    assert [s["id"] for s in page.json()] == [first] and page.headers["x-total-count"] == "2"
    assert client.get(f"/api/apps/{app}/sessions", params={"offset": 2}).json() == []


def test_sessions_list_preview_follows_the_apps_chat_input(client: TestClient, create: Create):
    # openai.input names the message; a session whose run failed has no turn yet.
    named = _app(client, create, "Named", "openai: {input: topic}\n")
    r = client.post(f"/api/apps/{named}/run", json={"input": {"message": "m", "topic": "cats"}})
    assert r.status_code == 200, r.text
    failed = client.post(f"/api/apps/{named}/run/s-1", json={"input": {"topic": "no message"}})
    assert failed.status_code == 422
    listed = client.get(f"/api/apps/{named}/sessions").json()
    assert [s["first_input"] for s in listed] == ["cats"]
    # An app without a string input: the first turn's whole input, as JSON.
    numbers = create(
        client,
        SHORT_CHAT.format(name="Numbers")
        .replace("topic: {type: string", "n: {type: integer")
        .replace('default: ""', "default: 2")
        .replace("message: {type: string, required: true}", "m: {type: integer, default: 1}")
        .replace("input.message", "input.n"),
    )["uuid"]
    client.post(f"/api/apps/{numbers}/run", json={"input": {"n": 3}})
    [only] = client.get(f"/api/apps/{numbers}/sessions").json()
    assert only["first_input"] == '{"n": 3, "m": 1}' and only["turns"] == 1


def _token(client: TestClient, name: str, **body: Any) -> str:
    r = client.post("/api/tokens", json={"name": name, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_sessions_list_access(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], create: Create
):
    client = make_client(make_settings(rate_limit={"enabled": False}))
    a, b = _app(client, create, "A"), _app(client, create, "B")
    runner, other_runner = _token(client, "r1", role="runner"), _token(client, "r2", role="runner")
    viewer_a = _token(client, "v@A", role="viewer", apps=[a])
    mine = _say(client, a, "mine", **_as(runner))
    theirs = _say(client, a, "theirs", **_as(other_runner))
    admins = _say(client, b, "admin's, in app B")

    def ids(token: str | None, app: str = a) -> Any:
        r = client.get(f"/api/apps/{app}/sessions", headers=_as(token))
        return [s["id"] for s in r.json()] if r.status_code == 200 else r.status_code

    # Readers of the app see every session; a runner key lists none (it may sit in a
    # public page, where its list would be every visitor's): it reads its own by id.
    assert ids(viewer_a) == [theirs, mine]  # not app B's session
    assert [s["id"] for s in client.get(f"/api/apps/{b}/sessions").json()] == [admins]
    assert ids(runner) == 403 and ids(other_runner) == 403
    assert client.get(f"/api/sessions/{mine}", headers=_as(runner)).status_code == 200
    assert client.get(f"/api/sessions/{theirs}", headers=_as(runner)).status_code == 404
    # A key narrowed to app A, another app; no token; an app that does not exist.
    refused = client.get(f"/api/apps/{b}/sessions", headers=_as(viewer_a))
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "APP_FORBIDDEN")
    assert ids(None) == 401
    missing = client.get("/api/apps/no-such-app/sessions")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "APP_NOT_FOUND")


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"limit": "ten"}, {"offset": -1}, {"offset": 1_000_001}],
)
def test_sessions_list_bad_paging_is_422(client: TestClient, create: Create, params: dict):
    app = _app(client, create, "Paged")
    r = client.get(f"/api/apps/{app}/sessions", params=params)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["message"]
    assert [e["loc"] for e in error["details"]["errors"]] == [["query", next(iter(params))]]
