"""Apps that pin a managed prompt: what they run follows the label, with no app edit."""

from __future__ import annotations

from typing import Any

from app_docs import YAML
from fastapi.testclient import TestClient

PINNED_APP = """\
version: 1
name: Pinned
type: text
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      ref: support-answer
      label: production
      variables: {question: "{{ input.question }}"}
    params: {temperature: 0, seed: 7, max_tokens: 8}
output:
  answer: "{{ answer.text }}"
"""


def _setup(client: TestClient) -> str:
    uc = client.post("/api/v1/use-cases", json={"name": "Support"}).json()["id"]
    pid: str = client.post(
        f"/api/v1/use-cases/{uc}/prompts", json={"name": "support-answer"}
    ).json()["id"]
    for word in ("Reply in French.", "Reply in German."):
        body = {
            "type": "chat",
            "template_messages": [
                {"role": "system", "content": word},
                {"role": "user", "content": "{{ question }}"},
            ],
        }
        assert client.post(f"/api/v1/prompts/{pid}/versions", json=body).status_code == 201
    return pid


def _run_steps(client: TestClient, app_uuid: str) -> dict[str, Any]:
    r = client.post(f"/api/apps/{app_uuid}/run", json={"input": {"question": "Hello"}})
    assert r.status_code == 200, r.text
    step: dict[str, Any] = client.get(f"/api/runs/{r.json()['run']['id']}").json()["steps"][0]
    return step


def test_pinned_app_follows_a_promote_without_an_edit(db_client: TestClient):
    pid = _setup(db_client)
    # Production does not exist yet: saving the app is refused.
    r = db_client.post("/api/apps", content=PINNED_APP, headers=YAML)
    assert r.status_code == 422 and r.json()["error"]["code"] == "APP_INVALID"
    assert "support-answer" in r.json()["error"]["message"]

    db_client.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})
    r = db_client.post("/api/apps", content=PINNED_APP, headers=YAML)
    assert r.status_code == 201, r.text
    app = r.json()

    first = _run_steps(db_client, app["uuid"])
    assert first["messages"] == [
        {"role": "system", "content": "Reply in French."},
        {"role": "user", "content": "Hello"},
    ]
    assert first["prompt"] == {
        "id": pid,
        "name": "support-answer",
        "version": 1,
        "label": "production",
    }

    db_client.post(f"/api/v1/prompts/{pid}/versions/2/promote", json={"label": "production"})
    second = _run_steps(db_client, app["uuid"])
    assert second["messages"][0] == {"role": "system", "content": "Reply in German."}
    assert second["prompt"]["version"] == 2
    assert db_client.get(f"/api/apps/{app['uuid']}").json()["version"] == 1

    dependents = db_client.get(f"/api/v1/prompts/{pid}/dependents").json()
    assert dependents == [
        {
            "app_uuid": app["uuid"],
            "name": "Pinned",
            "step": "answer",
            "label": "production",
            "version": None,
        }
    ]


def test_pinned_app_by_version_ignores_labels(client: TestClient):
    pid = _setup(client)
    text = PINNED_APP.replace("label: production", "version: 1")
    app = client.post("/api/apps", content=text, headers=YAML).json()
    client.post(f"/api/v1/prompts/{pid}/versions/2/promote", json={"label": "production"})
    step = _run_steps(client, app["uuid"])
    assert step["prompt"] == {"id": pid, "name": "support-answer", "version": 1, "label": None}
    missing = PINNED_APP.replace("label: production", "version: 9")
    r = client.post("/api/apps", content=missing, headers=YAML)
    assert r.status_code == 422 and "version 9" in r.json()["error"]["message"]
