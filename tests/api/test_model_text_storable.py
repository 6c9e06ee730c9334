"""Text a run makes that no store keeps (a NUL, a lone surrogate) or JSON cannot carry
(an infinite number): a model's answer, a template's output. The run still succeeds,
is stored and is answered; before, the answer was a 500 (a surrogate cannot be encoded
as UTF-8) and PostgreSQL refused to store the NUL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from openai_edge import Reply, openai_error
from openai_v1 import QA_APP, V1

ODD_OUTPUTS = """\
version: 1
name: odd
input:
  n: {type: number, required: true}
steps:
  - id: reply
    kind: llm
    prompt:
      user: "say {{ '%c'|format(input.n|int) }}"
output:
  char: "[{{ '%c'|format(input.n|int) }}]"
  huge: "{{ input.n * 1e308 }}"
  listed: "{{ ['a' ~ '%c'|format(55296), 'b'] }}"
"""


def _create(client: TestClient, yaml_text: str) -> str:
    made = client.post("/api/apps", content=yaml_text, headers={"Content-Type": "application/yaml"})
    assert made.status_code == 201, made.text
    return str(made.json()["uuid"])


def _stream(client: TestClient, path: str, body: dict[str, Any]) -> list[Any]:
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        return [json.loads(line) for line in r.iter_lines() if line]


def test_a_model_answer_with_nul_and_a_lone_surrogate_is_answered_stored_and_remembered(
    make_v1: Callable[..., V1], backend: str | None
):
    v1 = make_v1(database_url=backend)
    client = v1.client
    path = f"/api/apps/{_create(client, QA_APP)}/run/s1"
    v1.answer("a\x00b", " \ud800c")  # "\ud800" is valid JSON from a model server
    first = client.post(path, json={"input": {"question": "hi"}})
    assert first.status_code == 200, first.text
    assert first.json()["output"] == {"answer": "ab c"}
    stored = client.get(f"/api/runs/{first.json()['run']['id']}").json()
    assert (stored["status"], stored["output"]) == ("succeeded", {"answer": "ab c"})

    v1.answer("x\x00", "y")
    lines = _stream(client, path, {"input": {"question": "again"}})
    assert "".join(line["output"]["answer"] for line in lines if "output" in line) == "xy"
    assert lines[-1]["done"] is True and lines[-1]["run"]["status"] == "succeeded"
    # The session's history kept the first answer, as the model is shown it.
    assert {"role": "assistant", "content": "ab c"} in v1.model_messages()


def test_template_outputs_no_store_keeps_are_made_storable(
    make_v1: Callable[..., V1], backend: str | None
):
    v1 = make_v1(database_url=backend)
    client = v1.client
    uuid = _create(client, ODD_OUTPUTS)
    for n, char in ((0, "[]"), (10, "[\n]")):  # '%c' of 0 is a NUL
        r = client.post(f"/api/apps/{uuid}/run", json={"input": {"n": n}})
        assert r.status_code == 200, r.text
        expected = {"char": char, "huge": 0.0 if n == 0 else None, "listed": ["a", "b"]}
        assert r.json()["output"] == expected
        stored = client.get(f"/api/runs/{r.json()['run']['id']}").json()
        assert (stored["status"], stored["output"]) == ("succeeded", expected)
        assert v1.model_messages()[-1]["content"] == "say " + char[1:-1]


def test_a_model_error_message_with_nul_and_a_lone_surrogate_fails_the_run_cleanly(
    make_v1: Callable[..., V1], backend: str | None
):
    v1 = make_v1(database_url=backend)
    client = v1.client
    path = f"/api/apps/{_create(client, QA_APP)}/run"
    v1.edge.replies = [Reply(400, openai_error("bad\x00 input \ud800here"))]
    r = client.post(path, json={"input": {"question": "hi"}})
    assert r.status_code != 500 and r.json()["error"]["code"] != "INTERNAL_ERROR", r.text
    assert "bad input here" in r.json()["error"]["message"]
    [run] = client.get(f"/api/apps/{path.split('/')[3]}/runs").json()
    assert run["status"] == "failed"
