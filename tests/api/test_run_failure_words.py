"""What a failed run tells its caller: who cannot edit apps (anonymous, a runner key)
gets plain words where the message would name what is behind the app (a model
server's address, its own error text); admins and editors, and the stored run, keep
the whole message."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from app_docs import TEXT_APP, YAML
from openai_edge import Reply
from openai_v1 import V1
from ports import free_port

ANONYMOUS = {"Authorization": ""}
SECRET_TEXT = "upstream pod llm-7f9c at 10.1.2.3 exploded"


def _failing_app(v1: V1, model: str) -> str:
    doc = TEXT_APP.replace("type: text\n", "type: text\npublic: true\n")
    doc = doc.replace("kind: llm\n", f"kind: llm\n    model: {model}\n")
    made = v1.client.post("/api/apps", content=doc, headers=YAML)
    assert made.status_code == 201, made.text
    return str(made.json()["uuid"])


def _runner(v1: V1) -> dict[str, str]:
    made = v1.client.post("/api/tokens", json={"name": "chat page", "role": "runner"}).json()
    return {"Authorization": f"Token {made['token']}"}


def _error(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    return error


def test_an_unreachable_model_server_is_not_named_to_callers_who_cannot_edit(
    make_v1: Callable[..., V1],
):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    v1 = make_v1(
        models={"default": "openai:gpt-test", "gone": "srv:m"},
        providers={"srv": {"base_url": closed, "max_retries": 0}},
    )
    app, client = _failing_app(v1, "gone"), v1.client
    url, body = f"/api/apps/{app}/run", {"input": {"question": "Hi?"}}
    runner = _runner(v1)
    for headers in (ANONYMOUS, runner):
        error = _error(client.post(url, json=body, headers=headers), 503)
        assert error["code"] == "PROVIDER_UNAVAILABLE"
        assert error["message"] == (
            "the model is unavailable right now; try again shortly "
            "(the app's owner can see why in the run)"
        )
        if headers is runner:  # reading its own run tells it no more
            seen = client.get(f"/api/runs/{error['details']['run_id']}", headers=runner)
            assert seen.status_code == 200, seen.text
            assert seen.json()["error"]["message"] == error["message"]
            assert "127.0.0.1" not in seen.text
        streamed = client.post(url, json={**body, "stream": True}, headers=headers)
        assert "127.0.0.1" not in _error(streamed, 503)["message"]
        chat = {"model": app, "messages": [{"role": "user", "content": "Hi?"}]}
        openai = _error(client.post("/v1/chat/completions", json=chat, headers=headers), 503)
        assert openai["code"] == "PROVIDER_UNAVAILABLE" and "127.0.0.1" not in openai["message"]
    # The admin who built it reads the whole message, and so does the stored run.
    error = _error(client.post(url, json=body), 503)
    assert closed.removesuffix("/v1") in error["message"]
    stored = client.get(f"/api/runs/{error['details']['run_id']}").json()
    assert closed.removesuffix("/v1") in stored["error"]["message"]


def test_a_model_servers_own_error_text_stays_with_the_owner(v1: V1):
    app = _failing_app(v1, "default")
    v1.edge.replies = [Reply(400, {"error": {"message": SECRET_TEXT}})] * 8
    url = f"/api/apps/{app}/run"
    error = _error(v1.client.post(url, json={"input": {"question": "Hi?"}}, headers=ANONYMOUS), 502)
    assert error["code"] == "PROVIDER_ERROR" and SECRET_TEXT not in json.dumps(error)
    v1.edge.replies = [Reply(400, {"error": {"message": SECRET_TEXT}})] * 8
    error = _error(v1.client.post(url, json={"input": {"question": "Hi?"}}), 502)
    assert SECRET_TEXT in error["message"]


def test_a_runner_reading_its_run_sees_no_prompt_and_no_retrieved_text(v1: V1):
    # A runner key sits in a widget's page: whoever reads it may read its runs by id.
    doc = TEXT_APP.replace(
        "You answer in one short sentence.", "Internal rule 7f3, never discount."
    )
    made = v1.client.post("/api/apps", content=doc, headers=YAML)
    assert made.status_code == 201, made.text
    app = made.json()["uuid"]
    runner = _runner(v1)
    ran = v1.client.post(
        f"/api/apps/{app}/run", json={"input": {"question": "Hi?"}}, headers=runner
    )
    assert ran.status_code == 200, ran.text
    run_id = ran.json()["run"]["id"]
    seen = v1.client.get(f"/api/runs/{run_id}", headers=runner)
    assert seen.status_code == 200, seen.text
    assert "Internal rule 7f3" not in seen.text and "gpt-test" not in seen.text
    run = seen.json()
    assert run["output"]["answer"] == "Hello world" and run["input"] == {
        "question": "Hi?",
        "tone": "plain",
    }
    assert [sorted(step) for step in run["steps"]] == [
        ["finish_reason", "id", "kind", "latency_ms", "ttft_ms", "usage"]
    ]
    assert run["steps"][0]["usage"]["completion_tokens"] == 3
    # Who built the app reads all of it.
    full = v1.client.get(f"/api/runs/{run_id}").json()
    assert full["steps"][0]["messages"][0]["content"] == "Internal rule 7f3, never discount."
