"""Gated moves over the API, with exact outputs from an OpenAI-compatible edge: deploy,
bulk deploy and app restore with ``require``, and the evaluation policies stored on a
prompt or app. A failing gate answers 409 and leaves everything where it was; a passing
one moves it, and the history names the evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai_edge import EdgeServer, serve_edge

from appforge.client import Client, ConflictError
from appforge.core.settings import OpenAISettings, Settings
from tests.evals.test_evaluations import YAML, _answers

PROMPTED_APP = """\
version: 1
name: {name}
type: text
input:
  question: {{type: string, required: true}}
steps:
  - id: answer
    kind: llm
    model: edge
    prompt:
      ref: {prompt}
      label: production
      variables: {{question: "{{{{ input.question }}}}"}}
    params: {{temperature: 0, max_tokens: 8}}
output:
  answer: "{{{{ answer.text }}}}"
"""

INLINE_APP = """\
version: 1
name: Inline
type: text
input:
  question: {{type: string, required: true}}
steps:
  - id: answer
    kind: llm
    model: edge
    prompt:
      system: "{system}"
      user: "{{{{ input.question }}}}"
    params: {{temperature: 0, max_tokens: 8}}
output:
  answer: "{{{{ answer.text }}}}"
"""

PASS = ("Paris", "Rome")
FAIL = ("Paris", "Milan")


@pytest.fixture(scope="module")
def edge() -> Iterator[EdgeServer]:
    with serve_edge() as server:
        yield server


def _prompt(client: TestClient, uc: str, name: str) -> str:
    pid: str = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": name}).json()["id"]
    for text in ("Answer briefly.", "Answer in one word."):
        version = {
            "type": "chat",
            "template_messages": [
                {"role": "system", "content": text},
                {"role": "user", "content": "{{ question }}"},
            ],
        }
        assert client.post(f"/api/v1/prompts/{pid}/versions", json=version).status_code == 201
    client.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})
    return pid


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, embedder: Any, edge: EdgeServer
) -> Iterator[TestClient]:
    """Prompts ``one`` and ``two`` (production on version 1 of 2), the apps ``AppOne`` and
    ``AppTwo`` that pin them, and the 2-case dataset ``capitals``; the gate works the
    evaluation's cases in the request (no workers), one at a time, in order."""
    from pydantic import SecretStr

    from api.app import create_app
    from tests.conftest import ADMIN_TOKEN

    settings = Settings(
        home=tmp_path_factory.mktemp("gates_home"),
        admin_token=SecretStr(ADMIN_TOKEN),
        openai=OpenAISettings(base_url=edge.url),
        models={"edge": "openai:gpt-test"},
        evals={"workers": 0},
    )
    app = create_app(settings, providers={}, embedder=embedder)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Token {ADMIN_TOKEN}"
        uc = client.post("/api/v1/use-cases", json={"name": "Gates"}).json()["id"]
        for prompt, name in (("one", "AppOne"), ("two", "AppTwo")):
            _prompt(client, uc, prompt)
            text = PROMPTED_APP.format(name=name, prompt=prompt)
            assert client.post("/api/apps", content=text, headers=YAML).status_code == 201
        client.post("/api/datasets", json={"name": "capitals"})
        cases = [
            {"input": {"question": "Capital of France?"}, "expected": {"answer": "Paris"}},
            {"input": {"question": "Capital of Italy?"}, "expected": {"answer": "Rome"}},
        ]
        assert client.post("/api/datasets/capitals/cases", json={"cases": cases}).status_code == 201
        yield client


def _pid(api: TestClient, name: str) -> str:
    found = api.post("/api/v1/prompts/search", json={"query": name}).json()["prompts"]
    pid: str = next(p["id"] for p in found if p["name"] == name)
    return pid


def _production(api: TestClient, pid: str) -> int:
    now = api.get(f"/api/v1/prompts/{pid}/deployments").json()["deployments"]
    version: int = next(d["version"] for d in now if d["environment"] == "production")
    return version


def _require(app: str | None) -> dict[str, Any]:
    need = {"dataset": "capitals", "scorers": [{"type": "equals"}], "min_pass_rate": 0.9}
    return need if app is None else {**need, "app": app}


def _refused(response: Any) -> str:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "EVALUATION_FAILED" and error["details"]["pass_rate"] < 0.9
    evaluation_id: str = error["details"]["evaluation_id"]
    return evaluation_id


def _passed(api: TestClient, evaluation_id: str | None) -> None:
    assert evaluation_id is not None
    evaluation = api.get(f"/api/evaluations/{evaluation_id}").json()
    assert evaluation["status"] == "done" and evaluation["summary"]["pass_rate"] == 1


def test_gated_deploy_moves_only_when_its_evaluation_passes(api: TestClient, edge: EdgeServer):
    pid = _pid(api, "one")
    body = {"environment": "production", "version": 2, "require": _require("AppOne")}
    before = len(edge.requests)
    _answers(edge, *FAIL)
    failed = _refused(api.post(f"/api/v1/prompts/{pid}/deploy", json=body))
    # The candidate ran (version 2's system message); production stayed on version 1.
    systems = [r["messages"][0]["content"] for r in edge.requests[before:]]
    assert systems == ["Answer in one word."] * 2
    assert _production(api, pid) == 1
    history = api.get(f"/api/v1/prompts/{pid}/deployments").json()["history"]
    assert failed not in {h["evaluationId"] for h in history}

    _answers(edge, *PASS)
    af = Client("http://testserver", http=api)  # the Python client's face of the same call
    moved = af.deploy(pid, "production", 2, require=body["require"])
    assert (moved.version, moved.previousVersion) == (2, 1)
    _passed(api, moved.evaluationId)
    last = af.deployments(pid).history[-1]
    assert (last.action, last.evaluationId) == ("deploy", moved.evaluationId)
    # A requirement for a prompt names the app to evaluate it with.
    bad = api.post(f"/api/v1/prompts/{pid}/deploy", json={**body, "require": _require(None)})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "REQUIREMENT_INVALID"
    api.post(f"/api/v1/prompts/{pid}/deploy", json={"environment": "production", "version": 1})


def test_stored_prompt_policy_gates_promote_and_deploy(api: TestClient, edge: EdgeServer):
    pid = _pid(api, "one")
    assert api.get(f"/api/v1/prompts/{pid}/policy").json()["error"]["code"] == "POLICY_NOT_FOUND"
    no_app = api.put(f"/api/v1/prompts/{pid}/policy", json=_require(None))
    assert no_app.status_code == 422
    bad_dataset = api.put(
        f"/api/v1/prompts/{pid}/policy", json={**_require("AppOne"), "dataset": "x"}
    )
    assert bad_dataset.status_code == 404
    assert api.get(f"/api/v1/prompts/{pid}/policy").status_code == 404  # nothing stored
    stored = api.put(f"/api/v1/prompts/{pid}/policy", json=_require("AppOne"))
    assert stored.status_code == 200 and stored.json()["require"]["app"] == "AppOne"
    assert api.get(f"/api/v1/prompts/{pid}/policy").json()["require"] == stored.json()["require"]

    _answers(edge, *FAIL)
    _refused(api.post(f"/api/v1/prompts/{pid}/versions/2/promote", json={"label": "production"}))
    assert _production(api, pid) == 1
    _answers(edge, *PASS)
    moved = api.post(
        f"/api/v1/prompts/{pid}/deploy", json={"environment": "production", "version": 2}
    )
    assert moved.status_code == 200, moved.text
    _passed(api, moved.json()["evaluationId"])

    assert api.delete(f"/api/v1/prompts/{pid}/policy").status_code == 204
    before = len(edge.requests)
    back = api.post(
        f"/api/v1/prompts/{pid}/deploy", json={"environment": "production", "version": 1}
    )
    assert back.json()["evaluationId"] is None and len(edge.requests) == before  # not gated


def test_gated_bulk_deploy_moves_nothing_unless_every_gate_passes(
    api: TestClient, edge: EdgeServer
):
    one, two = _pid(api, "one"), _pid(api, "two")
    api.put(f"/api/v1/prompts/{two}/policy", json=_require("AppTwo"))
    body = {
        "operation": "deploy",
        "environment": "production",
        "prompts": [{"id": one, "version": 2}, {"id": two, "version": 2}],
    }
    # An explicit requirement gates every prompt; one's passes, two's fails: nothing moves.
    _answers(edge, *PASS, *FAIL)
    af = Client("http://testserver", http=api)
    with pytest.raises(ConflictError) as refused:
        af.bulk_prompts(
            "deploy", [(one, 2), (two, 2)], environment="production", require=_require("AppOne")
        )
    assert refused.value.code == "EVALUATION_FAILED"
    assert (_production(api, one), _production(api, two)) == (1, 1)
    # Without one, each prompt's stored policy gates it (one has none: not gated).
    _answers(edge, *FAIL)
    _refused(api.post("/api/v1/prompts/bulk", json=body))
    assert (_production(api, one), _production(api, two)) == (1, 1)
    _answers(edge, *PASS)
    done = api.post("/api/v1/prompts/bulk", json=body)
    assert done.status_code == 200 and done.json()["succeeded"] == 2, done.text
    assert (_production(api, one), _production(api, two)) == (2, 2)
    one_move = api.get(f"/api/v1/prompts/{one}/deployments").json()["history"][-1]
    two_move = api.get(f"/api/v1/prompts/{two}/deployments").json()["history"][-1]
    assert one_move["evaluationId"] is None
    _passed(api, two_move["evaluationId"])
    assert api.delete(f"/api/v1/prompts/{two}/policy").status_code == 204
    back = {**body, "prompts": [{"id": one, "version": 1}, {"id": two, "version": 1}]}
    assert api.post("/api/v1/prompts/bulk", json=back).json()["succeeded"] == 2


def test_gated_restore_runs_the_candidate_app_version(api: TestClient, edge: EdgeServer):
    made = api.post("/api/apps", content=INLINE_APP.format(system="Old."), headers=YAML)
    uuid = made.json()["uuid"]
    changed = INLINE_APP.format(system="New.")
    assert api.patch(f"/api/apps/{uuid}", content=changed, headers=YAML).status_code == 200
    restore = f"/api/apps/{uuid}/versions/1/restore"
    before = len(edge.requests)
    _answers(edge, *FAIL)
    _refused(api.post(restore, json={"require": _require(None)}))
    systems = [r["messages"][0]["content"] for r in edge.requests[before:]]
    assert systems == ["Old."] * 2  # the evaluation ran version 1, the candidate
    assert api.get(f"/api/apps/{uuid}").json()["version"] == 2
    _answers(edge, *PASS)
    af = Client("http://testserver", http=api)
    assert af.restore_app_version(uuid, 1, require=_require(None)).version == 3
    newest = af.app_versions(uuid)[0]
    assert newest.version == 3
    _passed(api, newest.evaluation_id)

    # An app's requirement names no app: the app itself is evaluated.
    other = api.post(f"/api/apps/{uuid}/versions/2/restore", json={"require": _require("AppOne")})
    assert other.status_code == 422 and other.json()["error"]["code"] == "REQUIREMENT_INVALID"
    assert api.put(f"/api/apps/{uuid}/policy", json=_require("AppOne")).status_code == 422
    # The app's stored policy gates a restore that gives no requirement.
    assert api.put(f"/api/apps/{uuid}/policy", json=_require(None)).status_code == 200
    assert api.get(f"/api/apps/{uuid}/policy").json()["subject"] == "app"
    _answers(edge, *FAIL)
    _refused(api.post(f"/api/apps/{uuid}/versions/2/restore"))
    assert api.get(f"/api/apps/{uuid}").json()["version"] == 3
    _answers(edge, *PASS)
    again = api.post(f"/api/apps/{uuid}/versions/2/restore")
    assert again.status_code == 200 and again.json()["version"] == 4, again.text
    _passed(api, api.get(f"/api/apps/{uuid}/versions").json()[0]["evaluation_id"])
    assert api.delete(f"/api/apps/{uuid}/policy").status_code == 204
    assert api.get(f"/api/apps/{uuid}/policy").json()["error"]["code"] == "POLICY_NOT_FOUND"
