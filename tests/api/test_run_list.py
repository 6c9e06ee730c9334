"""GET /api/runs: runs across apps as summaries, with filters, paging, bounds and access
(SQLite and PostgreSQL); the per-app list shares its filters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from app_docs import YAML
from fastapi.testclient import TestClient

from api.routes.run_list import input_preview
from appforge.core.settings import Settings

# Two tokens per answer: the runs here are about listing them, not about the model.
TINY = """\
version: 1
name: NAME
type: text
input:
  n: {type: integer, default: 1}
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{ input.question }}"
    params: {temperature: 0, seed: 1, max_tokens: 2}
output:
  answer: "{{ answer.text }}"
"""
BROKEN = TINY.replace('user: "{{ input.question }}"', 'user: "{{ 1 // 0 }}"')
LONG = "Why   is the sky blue?\n" + "And why is the sea " + "very " * 60 + "blue?"
FIELDS = {
    "id", "created_at", "app_uuid", "app_name", "app_version", "session_id", "input_preview",
    "status", "error_code", "latency_ms", "ttft_ms", "tokens_in", "tokens_out",
}  # fmt: skip


def _app(client: TestClient, name: str, text: str = TINY) -> dict[str, Any]:
    r = client.post("/api/apps", content=text.replace("NAME", name), headers=YAML)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _run(client: TestClient, app: dict[str, Any], question: str, session: str = "") -> Any:
    url = f"/api/apps/{app['uuid']}/run" + (f"/{session}" if session else "")
    return client.post(url, json={"input": {"question": question}})


def _ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [row["id"] for row in r.json()]


def test_runs_list_across_apps_newest_first_with_filters(db_client: TestClient):
    # One run calls the model; the others fail before it (stored all the same, quickly).
    alpha, beta = _app(db_client, "Alpha"), _app(db_client, "Beta", BROKEN)
    assert _run(db_client, alpha, "What is an otter?", session="sess-1").status_code == 200
    assert _run(db_client, beta, LONG).status_code == 500
    url = f"/api/apps/{alpha['uuid']}"
    assert db_client.patch(url, content=BROKEN.replace("NAME", "Alpha"), headers=YAML).is_success
    assert _run(db_client, alpha, "Breaks").status_code == 500
    assert _run(db_client, alpha, "Breaks again").status_code == 500

    r = db_client.get("/api/runs")
    assert r.status_code == 200, r.text
    assert r.headers["x-total-count"] == "4"
    rows = r.json()
    assert all(set(row) == FIELDS for row in rows)
    last, failed, long, first = rows
    stored_error = db_client.get(f"/api/runs/{failed['id']}").json()["error"]
    assert (failed["status"], failed["app_version"], failed["input_preview"]) == (
        "failed", 2, "Breaks",
    )  # fmt: skip
    assert failed["error_code"] == stored_error["code"] and failed["error_code"]
    assert (failed["tokens_in"], failed["tokens_out"], failed["ttft_ms"]) == (0, 0, None)
    assert (first["app_name"], first["session_id"], first["status"]) == (
        "Alpha", "sess-1", "succeeded",
    )  # fmt: skip
    assert (first["app_version"], first["error_code"]) == (1, None)
    assert first["input_preview"] == "What is an otter?"
    assert long["app_uuid"] == beta["uuid"] and long["app_name"] == "Beta"
    # The first words of the input, on one line, cut at 80 characters.
    assert long["input_preview"] == " ".join(LONG.split())[:79] + "…"
    full = db_client.get(f"/api/runs/{first['id']}").json()
    assert (first["tokens_in"], first["tokens_out"]) == (
        full["usage"]["prompt_tokens"], full["usage"]["completion_tokens"],
    )  # fmt: skip
    assert first["latency_ms"] == full["latency_ms"] and first["ttft_ms"] == full["ttft_ms"]

    def ids(**params: Any) -> list[str]:
        return _ids(db_client.get("/api/runs", params=params))

    every = [row["id"] for row in rows]
    assert ids(app="Alpha") == [last["id"], failed["id"], first["id"]]
    assert ids(app=beta["uuid"]) == [long["id"]]
    assert ids(status="failed") == every[:3]
    assert ids(status="succeeded", app="Alpha") == [first["id"]]
    assert ids(session_id="sess-1") == [first["id"]]
    # since is included, until excluded.
    assert ids(since=long["created_at"], until=last["created_at"]) == every[1:3]
    assert ids(since=last["created_at"]) == every[:1]
    assert ids(until=first["created_at"]) == []
    page = db_client.get("/api/runs", params={"limit": 2, "offset": 1})
    assert _ids(page) == every[1:3] and page.headers["x-total-count"] == "4"
    assert ids(offset=4) == []
    # The app's own list takes the same filters.
    mine = db_client.get(f"{url}/runs", params={"since": failed["created_at"], "status": "failed"})
    assert _ids(mine) == every[:2] and mine.headers["x-total-count"] == "2"


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"offset": -1},
        {"status": "done"},
        {"since": "yesterday"},
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "2026-01-01T00:00:00Z", "from": "2026-01-01T00:00:00Z"},
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"app": ""},
        {"app": "x" * 201},
        {"session_id": "s" * 129},
    ],
)
def test_runs_list_bad_parameters_are_422(client: TestClient, params: dict[str, Any]):
    r = client.get("/api/runs", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR" and r.json()["error"]["message"]


def test_runs_list_names_an_app_that_is_missing_or_ambiguous(client: TestClient):
    missing = client.get("/api/runs", params={"app": "Nobody"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "APP_NOT_FOUND")
    twin = _app(client, "Twin")
    _app(client, "Twin")
    twice = client.get("/api/runs", params={"app": "Twin"})
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "APP_AMBIGUOUS")
    assert client.get("/api/runs", params={"app": twin["uuid"]}).json() == []
    per_app = client.get(f"/api/apps/{twin['uuid']}/runs", params={"limit": 501})
    assert per_app.status_code == 422


def _token(client: TestClient, name: str, **body: Any) -> dict[str, str]:
    r = client.post("/api/tokens", json={"name": name, **body})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Token {r.json()['token']}"}


def test_runs_list_shows_only_the_runs_a_token_may_read(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(rate_limit={"enabled": False}))
    # Runs that fail before calling the model: stored all the same, and quick.
    a, b = _app(client, "App A", BROKEN), _app(client, "App B", BROKEN)
    viewer_a = _token(client, "viewer@A", role="viewer", apps=[a["uuid"]])
    runner = _token(client, "runner", role="runner")
    runner_a = _token(client, "runner@A", role="runner", apps=[a["uuid"]])
    editor = _token(client, "editor", role="editor")
    by_admin = [
        _run(client, app, "by admin").json()["error"]["details"]["run_id"] for app in (a, b)
    ]
    body = {"input": {"question": "by runner"}}
    by_runner = client.post(f"/api/apps/{a['uuid']}/run", json=body, headers=runner)
    mine = by_runner.json()["error"]["details"]["run_id"]

    def seen(headers: dict[str, str], **params: Any) -> set[str]:
        return set(_ids(client.get("/api/runs", params=params, headers=headers)))

    assert seen(editor) == {*by_admin, mine}
    assert seen(viewer_a) == {by_admin[0], mine}
    assert seen(viewer_a, app="App A", status="failed") == {by_admin[0], mine}
    refused = client.get("/api/runs", params={"app": "App B"}, headers=viewer_a)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "APP_FORBIDDEN")
    # A runner key lists nothing (it may sit in a public page): it reads its run by id.
    for headers in (runner, runner_a):
        for path in ("/api/runs", f"/api/apps/{a['uuid']}/runs"):
            assert client.get(path, headers=headers).status_code == 403
    assert client.get(f"/api/runs/{mine}", headers=runner).json()["id"] == mine
    anonymous = client.get("/api/runs", headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_input_preview_reads_the_first_string_of_cut_off_json():
    assert input_preview('{"n": 1, "q": "  hello \\n world "}') == "hello world"
    assert input_preview('{"n": 1, "empty": " ", "q": "second"}') == "second"
    # Cut off inside the string, and inside an escape of it.
    assert input_preview('{"q": "caf\\u00e9 au lait and mo') == "café au lait and mo"
    assert input_preview('{"q": "caf\\u00') == "caf"
    assert input_preview('{"q": "back\\\\') == "back\\"
    assert input_preview('{"q": "quote\\') == "quote"
    assert input_preview('{"q": "' + "a" * 200) == "a" * 79 + "…"
    # No string to show: the JSON itself, shortened.
    assert input_preview('{"n": 1, "m": [1, 2]}') == '{"n": 1, "m": [1, 2]}'
    assert input_preview('{"items": [{"a": "b"') == '{"items": [{"a": "b"'
    assert input_preview('{"ke') == '{"ke'
    assert input_preview("") == "" and input_preview(None) == ""
