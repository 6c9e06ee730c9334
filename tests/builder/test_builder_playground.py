"""The playground as a chat, driven with AppTest against the real API and model."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest
from waiting import poll_until

Page = Callable[[str], AppTest]
YAML = {"Content-Type": "application/yaml"}

CHAT_APP = """version: 1
name: {name}
type: chat
input:
  question: {{type: string, required: true}}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{{{ input.question }}}}"
    history: 2
    params: {{temperature: 0, seed: 1, max_tokens: 6}}
output:
  answer: "{{{{ answer.text }}}}"
"""

# A chat over a datasource; "product" (optional) filters it, "short" is not text.
HELP_APP = """version: 1
name: Helper
type: chat
input:
  question: {type: string, required: true}
  product: {type: string, default: ""}
  short: {type: boolean, default: true}
steps:
  - id: docs
    kind: retrieve
    datasources: [help-center]
    query: "{{ input.question }}"
    top_k: 2
    where: {md_product: "{{ input.product }}"}
  - id: answer
    kind: llm
    prompt:
      system: "Answer from: {% for d in docs.documents %}{{ d.text }} {% endfor %}"
      user: "{{ input.question }}"
    params: {temperature: 0, seed: 1, max_tokens: 8}
output:
  answer: "{{ answer.text }}"
  sources: "{{ docs.sources }}"
"""
ARTICLE = "To reset the widget, hold the power button for ten seconds."


def _create(client: TestClient, text: str) -> str:
    r = client.post("/api/apps", content=text, headers=YAML)
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _ask(at: AppTest, question: str) -> AppTest:
    at.chat_input(key="pg_question").set_value(question).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def _said(at: AppTest) -> list[tuple[str, str]]:
    """Each chat message on screen: who, and its first text."""
    return [(m.name, m.markdown[0].value) for m in at.chat_message]


def test_playground_chat_turns_in_order_with_run_and_steps(page: Page, client: TestClient):
    _create(client, CHAT_APP.format(name="Echo chat"))
    at = page("playground").run()
    assert not at.exception and not at.error
    assert [t.key for t in at.sidebar.text_input] == ["pg_session_id"]  # no other input
    for question in ("Say hello.", "And again?", "One more?"):
        _ask(at, question)
    at.run()  # a rerun does not send the question again
    said = _said(at)
    assert [who for who, _ in said] == ["user", "assistant"] * 3
    assert [text for who, text in said if who == "user"] == [
        "Say hello.",
        "And again?",
        "One more?",
    ]
    assert all(text not in ("", "…") for who, text in said if who == "assistant")
    last = at.chat_message[-1]
    assert any(" · succeeded · " in c.value and "out" in c.value for c in last.caption)
    last.toggle[0].set_value(True).run()
    prompts = [c.value for c in at.chat_message[-1].code]
    assert prompts[-1] == "One more?"  # the rendered prompt of the last turn
    assert "Say hello." in prompts  # and the history it was given
    [session] = [c.value for c in at.sidebar.caption if c.value.startswith("Session: ")]
    assert session != "Session: new"
    at.button(key="pg_new").click().run()
    assert not at.chat_message
    assert [c.value for c in at.sidebar.caption if c.value.startswith("Session: ")] == [
        "Session: new"
    ]


def test_playground_reopens_a_session_as_chat_and_refuses_another_apps(
    page: Page, client: TestClient
):
    mine = _create(client, CHAT_APP.format(name="Mine"))
    other = _create(client, CHAT_APP.format(name="Other"))
    first = client.post(f"/api/apps/{mine}/run", json={"input": {"question": "What is a cat?"}})
    session = first.json()["session"]["id"]
    client.post(f"/api/apps/{mine}/run/{session}", json={"input": {"question": "And a dog?"}})
    foreign = client.post(f"/api/apps/{other}/run", json={"input": {"question": "Elsewhere"}})

    at = page("playground").run()
    at.sidebar.selectbox(key="pg_app").select(mine).run()
    [listed] = [b for b in at.sidebar.button if b.key == f"pg_open_{session}"]
    assert listed.label.startswith("What is a cat? · ")
    listed.click().run()
    assert not at.exception and not at.error
    said = _said(at)
    assert [text for who, text in said if who == "user"] == ["What is a cat?", "And a dog?"]
    assert said[1][1] == first.json()["output"]["answer"]
    assert f"Session: {session}" in [c.value for c in at.sidebar.caption]

    at.sidebar.text_input(key="pg_session_id").set_value(foreign.json()["session"]["id"])
    at.sidebar.button(key="pg_session_open").click().run()
    assert [e.value for e in at.error][0].startswith("SESSION_OF_ANOTHER_APP: ")
    assert [text for who, text in _said(at) if who == "user"] == ["What is a cat?", "And a dog?"]
    assert f"Session: {session}" in [c.value for c in at.sidebar.caption]
    # Continuing the reopened session adds to it.
    _ask(at, "And a bird?")
    stored = client.get(f"/api/sessions/{session}").json()["turns"]
    assert [t["input"]["question"] for t in stored][-1] == "And a bird?"


def _help_center(client: TestClient) -> None:
    r = client.post("/api/datasources", json={"name": "help-center", "type": "text"})
    assert r.status_code == 201, r.text
    ds = r.json()["uuid"]
    body = {"entry_data": {"name": "reset.txt", "content": ARTICLE}}
    body["entry_metadata"] = {"product": "widget"}
    entry = client.post(f"/api/datasources/{ds}/entries", json=body).json()["uuid"]

    def ready() -> bool:
        got = client.get(f"/api/datasources/{ds}/entries/{entry}").json()
        assert got["status"] != "failed", got
        return bool(got["status"] == "ready")

    poll_until(ready)


def test_playground_side_inputs_and_sources_with_chunk_text(page: Page, client: TestClient):
    _help_center(client)
    app = _create(client, HELP_APP)
    at = page("playground").run()
    # The question goes in the chat box; the other inputs wait in the side panel.
    assert [t.key for t in at.sidebar.text_input] == [f"pg_in_{app}_product", "pg_session_id"]
    assert [c.key for c in at.sidebar.checkbox] == [f"pg_in_{app}_short"]
    at.sidebar.text_input(key=f"pg_in_{app}_product").set_value("widget")
    at.sidebar.checkbox(key=f"pg_in_{app}_short").uncheck()
    _ask(at, "How do I reset the widget?")
    answer = at.chat_message[1]
    [sources] = [e for e in answer.expander if e.label.startswith("Sources")]
    assert sources.label == "Sources (1)"
    # The only chunk, first for both keywords and vectors: hybrid's score is 1.
    assert sources.markdown[0].value == "**[1] reset.txt** · score 1.000"
    assert [t.value for t in sources.text] == [ARTICLE]
    assert 'md_product: "widget"' in sources.caption[0].value  # the chunk's metadata
    [run] = client.get(f"/api/apps/{app}/runs").json()
    assert run["input"] == {
        "question": "How do I reset the widget?",
        "product": "widget",
        "short": False,
    }
    # Steps: the retrieve step's query beside the llm step's prompt.
    answer.toggle[0].set_value(True).run()
    captions = [c.value for c in at.chat_message[1].caption]
    assert "query: How do I reset the widget? · 1 found" in captions


def test_playground_app_choice_survives_leaving_the_page(page: Page, client: TestClient):
    older = _create(client, CHAT_APP.format(name="Older"))
    _create(client, CHAT_APP.format(name="Newer"))  # listed first: the picker's default
    at = page("app").run()
    at.switch_page("views/playground.py").run()
    at.sidebar.selectbox(key="pg_app").select(older).run()
    at.switch_page("views/settings.py").run()
    assert [t.value for t in at.title] == ["Settings"]
    assert "pg_app" not in at.session_state  # the widget's own state went with the page
    at.switch_page("views/playground.py").run()
    assert at.sidebar.selectbox(key="pg_app").value == older
