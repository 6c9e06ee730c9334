"""What the chat page and the widget read: the app's page, its files, anonymous sessions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app_docs import CHAT_APP, TEXT_APP, YAML
from fastapi.testclient import TestClient

NOBODY = {"Authorization": ""}


def test_page_of_a_public_chat_app(client: TestClient, create: Callable[..., Any]):
    doc = CHAT_APP.replace("type: chat", "type: chat\npublic: true")
    doc += "ui: {title: Ask us, welcome: Hi!, suggestions: ['One?', 'Two?'], accent: '#abc'}\n"
    app = create(client, doc)
    r = client.get(f"/api/apps/{app['uuid']}/page", headers=NOBODY)
    assert r.status_code == 200, r.text
    page = r.json()
    assert (page["type"], page["message_input"], page["answer"]) == ("chat", "message", "reply")
    assert page["ui"] == {
        "title": "Ask us", "welcome": "Hi!", "suggestions": ["One?", "Two?"], "accent": "#abc",
    }  # fmt: skip
    assert page["input"]["message"]["required"] is True


def test_page_of_a_private_app_needs_a_key(client: TestClient, create: Callable[..., Any]):
    app = create(client, TEXT_APP)
    other = create(client, TEXT_APP)
    url = f"/api/apps/{app['uuid']}/page"
    assert client.get(url, headers=NOBODY).status_code == 401
    key = client.post(
        "/api/tokens", json={"name": "k", "role": "runner", "apps": [other["uuid"]]}
    ).json()["token"]
    assert client.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 403
    page = client.get(url).json()
    assert page["answer"] == "answer" and page["outputs"] == ["answer", "tone"]
    assert page["input"]["tone"]["enum"] == ["plain", "formal"]
    assert page["ui"] == {"title": None, "welcome": None, "suggestions": [], "accent": None}


def test_ui_block_is_checked(client: TestClient):
    for bad in ("ui: {accent: red}", "ui: {suggestions: [" + "x, " * 9 + "x]}", "ui: {font: x}"):
        r = client.post("/api/apps", content=CHAT_APP + bad + "\n", headers=YAML)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["details"]["errors"][0]["path"].startswith("ui")


def test_anonymous_caller_reads_only_its_own_session(
    client: TestClient, create: Callable[..., Any]
):
    app = create(client, CHAT_APP.replace("type: chat", "type: chat\npublic: true"))
    url = f"/api/apps/{app['uuid']}/run"
    mine = client.post(url, json={"input": {"message": "Hi"}}, headers=NOBODY).json()
    sid = mine["session"]["id"]
    turns = client.get(f"/api/sessions/{sid}", headers=NOBODY).json()["turns"]
    assert [t["input"]["message"] for t in turns] == ["Hi"]
    by_token = client.post(url, json={"input": {"message": "Hi"}}).json()["session"]["id"]
    assert client.get(f"/api/sessions/{by_token}", headers=NOBODY).status_code == 404
    assert client.delete(f"/api/sessions/{sid}", headers=NOBODY).status_code == 401


def test_page_files_are_served_with_their_headers(client: TestClient):
    page = client.get("/chat/any-app-uuid", headers=NOBODY)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert '<script src="/web/chat.js" defer>' in page.text
    for name, kind in (
        ("chat.js", "javascript"),
        ("markdown.js", "javascript"),
        ("chat.css", "css"),
    ):
        r = client.get(f"/web/{name}", headers=NOBODY)
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert client.get("/web/../app.py", headers=NOBODY).status_code == 404
    assert client.get("/web/chat.html", headers=NOBODY).status_code == 404
    script = client.get("/embed.js", headers=NOBODY)
    assert script.status_code == 200 and "attachShadow" in script.text


TWO_INPUTS_APP = """\
version: 1
name: Twofold
type: chat
input:
  topic: {type: string, required: true}
  message: {type: string, required: true}
steps:
  - id: reply
    kind: llm
    prompt:
      system: "Talk about {{ input.topic }}."
      user: "{{ input.message }}"
    params: {temperature: 0, max_tokens: 8}
output:
  draft: "{{ reply.text }}"
  reply: "{{ reply.text }}"
"""


def test_page_uses_the_inputs_and_output_the_openai_section_declares(
    client: TestClient, create: Callable[..., Any]
):
    automatic = client.get(f"/api/apps/{create(client, TWO_INPUTS_APP)['uuid']}/page").json()
    # Two required string inputs: no clear chat input; the first streamed key answers.
    assert (automatic["message_input"], automatic["answer"]) == (None, "draft")
    declared = create(client, TWO_INPUTS_APP + "openai: {input: message, output: reply}\n")
    page = client.get(f"/api/apps/{declared['uuid']}/page").json()
    assert (page["message_input"], page["answer"]) == ("message", "reply")
    # The declared input wins over the one the automatic rule picks (the only required).
    chosen = create(client, TEXT_APP + "openai: {input: tone}\n")
    assert client.get(f"/api/apps/{chosen['uuid']}/page").json()["message_input"] == "tone"
