"""Running apps: sessions, history, inputs, stored runs — on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app_docs import CHAT_APP, TEXT_APP
from fastapi.testclient import TestClient


def test_run_returns_session_and_output(db_client: TestClient, create: Callable[..., Any]):
    app = create(db_client)
    r = db_client.post(f"/api/apps/{app['uuid']}/run", json={"input": {"question": "Hi"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"session", "output", "run"}
    assert len(body["session"]["id"]) == 32
    assert isinstance(body["output"]["answer"], str) and body["output"]["answer"]
    assert body["output"]["tone"] == "plain"
    assert body["run"]["status"] == "succeeded"
    usage = body["run"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    stored = db_client.get(f"/api/runs/{body['run']['id']}").json()
    assert stored["output"] == body["output"]
    assert stored["input"] == {"question": "Hi", "tone": "plain"}
    assert stored["app_version"] == 1
    assert stored["session_id"] == body["session"]["id"]
    assert stored["latency_ms"] > 0
    assert stored["steps"][0]["id"] == "answer"
    assert stored["steps"][0]["messages"][-1] == {"role": "user", "content": "Hi"}


def test_run_is_deterministic_with_seed(client: TestClient, create: Callable[..., Any]):
    app = create(client)
    outs = [
        client.post(
            f"/api/apps/{app['uuid']}/run", json={"input": {"question": "Name a fruit"}}
        ).json()["output"]
        for _ in range(2)
    ]
    assert outs[0] == outs[1]


def test_run_input_is_validated(client: TestClient, create: Callable[..., Any]):
    app = create(client)
    url = f"/api/apps/{app['uuid']}/run"
    cases = [
        ({}, "question", "required"),
        ({"question": 3}, "question", "string"),
        ({"question": "x", "tone": "angry"}, "tone", "one of"),
        ({"question": "x", "extra": 1}, "extra", "unknown"),
    ]
    for given, field, words in cases:
        r = client.post(url, json={"input": given})
        assert r.status_code == 422, given
        err = r.json()["error"]
        assert err["code"] == "INPUT_INVALID"
        assert err["details"]["errors"][0]["field"] == field
        assert words in err["message"]
    r = client.post(url, json={"input": {"question": "x"}, "strem": True})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    runs = client.get(f"/api/apps/{app['uuid']}/runs").json()
    assert runs == []


def test_session_history_reaches_model_on_second_turn(
    db_client: TestClient, create: Callable[..., Any]
):
    app = create(db_client, CHAT_APP)
    first = db_client.post(
        f"/api/apps/{app['uuid']}/run", json={"input": {"message": "My name is Ada."}}
    ).json()
    sid = first["session"]["id"]
    second = db_client.post(
        f"/api/apps/{app['uuid']}/run/{sid}", json={"input": {"message": "What is my name?"}}
    ).json()
    assert second["session"]["id"] == sid
    run = db_client.get(f"/api/runs/{second['run']['id']}").json()
    messages = run["steps"][0]["messages"]
    assert messages == [
        {"role": "system", "content": "You are a friendly assistant."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first["output"]["reply"]},
        {"role": "user", "content": "What is my name?"},
    ]
    session = db_client.get(f"/api/sessions/{sid}").json()
    assert [t["input"]["message"] for t in session["turns"]] == [
        "My name is Ada.",
        "What is my name?",
    ]
    assert session["turns"][1]["output"] == second["output"]
    assert session["app_uuid"] == app["uuid"]


def test_session_given_by_client_is_created(client: TestClient, create: Callable[..., Any]):
    app = create(client, CHAT_APP)
    r = client.post(f"/api/apps/{app['uuid']}/run/user-42.chat", json={"input": {"message": "hi"}})
    assert r.status_code == 200
    assert r.json()["session"]["id"] == "user-42.chat"
    assert len(client.get("/api/sessions/user-42.chat").json()["turns"]) == 1


def test_session_id_invalid_is_422(client: TestClient, create: Callable[..., Any]):
    app = create(client, CHAT_APP)
    r = client.post(f"/api/apps/{app['uuid']}/run/bad%20id", json={"input": {"message": "x"}})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "SESSION_ID_INVALID"


def test_session_of_another_app_is_not_found(db_client: TestClient, create: Callable[..., Any]):
    a = create(db_client, CHAT_APP)
    b = create(db_client, CHAT_APP)
    assert (
        db_client.post(
            f"/api/apps/{a['uuid']}/run/s1", json={"input": {"message": "x"}}
        ).status_code
        == 200
    )
    r = db_client.post(f"/api/apps/{b['uuid']}/run/s1", json={"input": {"message": "x"}})
    # 404, not 409: that the id exists for another app is not revealed; nothing stored.
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "SESSION_NOT_FOUND"
    assert db_client.get(f"/api/apps/{b['uuid']}/runs").json() == []


def test_delete_session_forgets_history(db_client: TestClient, create: Callable[..., Any]):
    app = create(db_client, CHAT_APP)
    url = f"/api/apps/{app['uuid']}/run/s-del"
    db_client.post(url, json={"input": {"message": "remember 7"}})
    assert db_client.delete("/api/sessions/s-del").status_code == 204
    r = db_client.get("/api/sessions/s-del")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "SESSION_NOT_FOUND"
    assert db_client.delete("/api/sessions/s-del").status_code == 404
    again = db_client.post(url, json={"input": {"message": "hello"}}).json()
    run = db_client.get(f"/api/runs/{again['run']['id']}").json()
    assert len(run["steps"][0]["messages"]) == 2  # system + user: no history


def test_runs_listed_per_app(db_client: TestClient, create: Callable[..., Any]):
    app = create(db_client)
    other = create(db_client, CHAT_APP)
    ids = [
        db_client.post(f"/api/apps/{app['uuid']}/run", json={"input": {"question": q}}).json()[
            "run"
        ]["id"]
        for q in ("a", "b")
    ]
    db_client.post(f"/api/apps/{other['uuid']}/run", json={"input": {"message": "c"}})
    r = db_client.get(f"/api/apps/{app['uuid']}/runs")
    assert r.headers["X-Total-Count"] == "2"
    assert {run["id"] for run in r.json()} == set(ids)
    assert db_client.get(f"/api/apps/{app['uuid']}/runs", params={"status": "failed"}).json() == []
    missing = db_client.get("/api/runs/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "RUN_NOT_FOUND"


def test_run_failure_is_stored_with_error(client: TestClient, create: Callable[..., Any]):
    text = TEXT_APP.replace(
        'user: "{{ input.question }}"', 'user: "{{ input.question ~ (1 / 0) }}"'
    )
    app = create(client, text)
    r = client.post(f"/api/apps/{app['uuid']}/run", json={"input": {"question": "x"}})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "TEMPLATE_ERROR"
    run = client.get(f"/api/runs/{err['details']['run_id']}").json()
    assert run["status"] == "failed"
    assert run["error"]["code"] == "TEMPLATE_ERROR"
    assert run["error"]["step"] == "answer"


def test_public_app_runs_without_token(client: TestClient, create: Callable[..., Any]):
    public = create(client, TEXT_APP.replace("type: text", "type: text\npublic: true"))
    private = create(client)
    client.headers.pop("Authorization")
    r = client.post(f"/api/apps/{public['uuid']}/run", json={"input": {"question": "hi"}})
    assert r.status_code == 200
    r = client.post(f"/api/apps/{private['uuid']}/run", json={"input": {"question": "hi"}})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "AUTH_REQUIRED"
    assert client.get(f"/api/apps/{public['uuid']}").status_code == 401
