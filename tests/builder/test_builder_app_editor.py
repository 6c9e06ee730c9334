"""The Apps page form editor and YAML editor, kept in sync, against the real API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from builder.app_form import templates

Page = Callable[[str], AppTest]

APP = """version: 1
name: Echo chat
type: chat
input:
  question: {type: string, required: true, max_length: 500}
  tone: {type: string, default: plain, enum: [plain, warm]}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{ input.question }}"
    history: 2
    params: {temperature: 0, seed: 1, max_tokens: 12}
output:
  answer: "{{ answer.text }}"
limits:
  max_active_runs: 2
  timeout_seconds: 30
"""


def _widget(at: AppTest, kind: str, label: str) -> Any:
    """The one widget of this kind with this visible label (as a browser finds it)."""
    [found] = [w for w in getattr(at, kind) if w.label == label]
    return found


def _texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def _new_doc(at: AppTest) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(at.text_area(key="apps_new_yaml").value)
    return doc


def _editor(at: AppTest) -> Any:
    [editor] = [t for t in at.text_area if t.key.startswith("apps_yaml_")]
    return editor


def _marked(code: str) -> dict[int, str]:
    """The lines an excerpt marks with ``>``: number -> text."""
    out = {}
    for row in code.splitlines():
        if row.startswith(">"):
            number, _, text = row[1:].partition(" | ")
            out[int(number)] = text
    return out


def _auth(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Token {admin_token}"}


def _apps(client: TestClient, admin_token: str) -> list[dict[str, Any]]:
    answer = client.get("/api/apps", headers=_auth(admin_token))
    assert answer.status_code == 200
    apps: list[dict[str, Any]] = answer.json()
    return apps


def test_app_form_shows_template_and_leaves_its_yaml_alone(page: Page):
    at = page("apps").run()
    assert not at.exception
    at.selectbox(key="apps_template").select("support-bot").run()
    assert not at.exception and not at.error
    # Drawing the form changes nothing: the template's text, comments included, stays.
    assert at.text_area(key="apps_new_yaml").value == templates()["support-bot"]
    assert _widget(at, "text_input", "App name").value == "Support bot"
    assert _widget(at, "selectbox", "App type").value == "chat"
    assert _widget(at, "multiselect", "Datasources (step 1)").value == ["help-center"]
    assert _widget(at, "text_area", "Where filter, JSON (step 1)").value == (
        '{"md_product": "{{ input.product }}"}'
    )
    assert _widget(at, "radio", "Prompt source (step 2)").value == "System and user"
    assert _widget(at, "selectbox", "Model (step 2)").value == "default"
    assert _widget(at, "text_input", "Output key (row 2)").value == "sources"


def test_app_form_edit_rewrites_the_yaml(page: Page):
    at = page("apps").run()
    _widget(at, "text_input", "App name").set_value("Form bot").run()
    assert not at.exception
    assert _new_doc(at)["name"] == "Form bot"
    _widget(at, "selectbox", "App type").select("text").run()
    _widget(at, "text_area", "System prompt (step 1)").set_value("Be brief.").run()
    _widget(at, "number_input", "Temperature (step 1)").set_value(0.5).run()
    _widget(at, "button", "Add an input").click().run()
    _widget(at, "text_input", "Input name (row 2)").set_value("product").run()
    _widget(at, "text_input", "Output template (row 1)").set_value("{{ answer.text }}!").run()
    assert not at.exception and not at.error
    doc = _new_doc(at)
    assert "public" not in doc and doc["type"] == "text"
    assert doc["steps"][0]["prompt"] == {"user": "{{ input.question }}", "system": "Be brief."}
    assert doc["steps"][0]["params"] == {"temperature": 0.5}
    assert doc["input"] == {
        "question": {"type": "string", "required": True},
        "product": {"type": "string"},
    }
    assert doc["output"] == {"answer": "{{ answer.text }}!"}
    # The form still shows what the YAML now says.
    assert _widget(at, "text_input", "App name").value == "Form bot"


def test_app_form_adds_moves_and_removes_steps(page: Page):
    at = page("apps").run()
    _widget(at, "selectbox", "New step kind").select("retrieve").run()
    _widget(at, "button", "Add step").click().run()
    assert [s["id"] for s in _new_doc(at)["steps"]] == ["answer", "docs"]
    assert _widget(at, "text_input", "Query (step 2)").value == "{{ input.question }}"
    _widget(at, "button", "Up (step 2)").click().run()
    assert [s["kind"] for s in _new_doc(at)["steps"]] == ["retrieve", "llm"]
    assert _widget(at, "text_input", "Id (step 1)").value == "docs"
    assert _widget(at, "button", "Up (step 1)").disabled
    _widget(at, "number_input", "Top k (step 1)").set_value(7).run()
    _widget(at, "text_area", "Where filter, JSON (step 1)").set_value('{"md_lang": "en"}').run()
    assert _new_doc(at)["steps"][0] == {
        "id": "docs",
        "kind": "retrieve",
        "datasources": [],
        "query": "{{ input.question }}",
        "top_k": 7,
        "where": {"md_lang": "en"},
    }
    _widget(at, "text_area", "Where filter, JSON (step 1)").set_value('{"md_lang": ').run()
    assert any(
        e.startswith("JSON_INVALID: Where filter, JSON (step 1): line 1")
        for e in _texts(at, "error")
    )
    assert _new_doc(at)["steps"][0]["where"] == {"md_lang": "en"}
    _widget(at, "button", "Remove (step 1)").click().run()
    assert [s["id"] for s in _new_doc(at)["steps"]] == ["answer"]
    assert not at.exception


def test_app_form_edits_the_chat_page_look(page: Page):
    at = page("apps").run()
    _widget(at, "text_input", "Page title").set_value("Ask us").run()
    _widget(at, "text_input", "Accent colour (#rrggbb)").set_value("#0f766e").run()
    _widget(at, "text_area", "Welcome message").set_value("Hi! How can we help?").run()
    _widget(at, "text_area", "Suggested questions (one per line)").set_value("One?\n\nTwo?").run()
    assert not at.exception
    assert _new_doc(at)["ui"] == {
        "title": "Ask us",
        "accent": "#0f766e",
        "welcome": "Hi! How can we help?",
        "suggestions": ["One?", "Two?"],
    }
    for label in ("Page title", "Accent colour (#rrggbb)"):
        _widget(at, "text_input", label).set_value("").run()
    _widget(at, "text_area", "Welcome message").set_value("").run()
    _widget(at, "text_area", "Suggested questions (one per line)").set_value("").run()
    assert "ui" not in _new_doc(at)  # emptied: left out, as if never written


def test_app_yaml_edit_updates_the_form(page: Page):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value(APP.replace("history: 2", "history: 5")).run()
    assert not at.exception and not at.error
    assert _widget(at, "text_input", "App name").value == "Echo chat"
    assert _widget(at, "number_input", "History turns (step 1)").value == 5
    assert _widget(at, "number_input", "Max tokens (step 1)").value == 12
    assert _widget(at, "text_input", "Input name (row 2)").value == "tone"
    # "Apply to form" does the same for a text the browser has not sent on change.
    at.text_area(key="apps_new_yaml").set_value(APP.replace("Echo chat", "Applied"))
    at.button(key="apps_new_apply").click().run()
    assert _widget(at, "text_input", "App name").value == "Applied"


def test_app_form_keeps_fields_it_does_not_model(page: Page):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value(APP).run()
    _widget(at, "text_input", "App name").set_value("Still limited").run()
    _widget(at, "number_input", "Temperature (step 1)").set_value(0.3).run()
    _widget(at, "text_input", "Input description (row 1)").set_value("Ask it.").run()
    doc = _new_doc(at)
    assert doc["name"] == "Still limited"
    assert doc["limits"] == {"max_active_runs": 2, "timeout_seconds": 30}
    assert doc["steps"][0]["params"] == {"temperature": 0.3, "seed": 1, "max_tokens": 12}
    assert doc["input"]["question"] == {
        "type": "string",
        "required": True,
        "max_length": 500,
        "description": "Ask it.",
    }
    assert doc["input"]["tone"] == {"type": "string", "default": "plain", "enum": ["plain", "warm"]}


def test_app_bad_yaml_shows_problem_at_its_line_and_saves_nothing(
    page: Page, client: TestClient, admin_token: str
):
    at = page("apps").run()
    broken = APP.replace("  - id: answer\n", "  - id: answer\n   kind: [llm\n")
    at.text_area(key="apps_new_yaml").set_value(broken).run()
    assert not at.exception
    errors = _texts(at, "error")
    assert len(errors) == 1 and errors[0].startswith("line 9: YAML syntax:"), errors
    assert any("the form shows the last version that parsed" in w for w in _texts(at, "warning"))
    assert _marked(at.code[0].value) == {9: "   kind: [llm"}
    at.button(key="apps_create").click().run()
    assert not at.success
    errors = _texts(at, "error")
    assert errors[0].startswith("line 9: YAML syntax:")  # still shown by the editor
    assert errors[1].startswith("YAML_INVALID: "), errors
    assert any(e.startswith("line 9") for e in errors[2:]), errors
    # A document that parses but refers to a datasource that does not exist.
    # The page asks for it and will not create the app; the API's check says why too.
    unknown = templates()["support-bot"]
    at.text_area(key="apps_new_yaml").set_value(unknown).run()
    assert not at.error
    assert at.button(key="apps_create").disabled
    assert any("'help-center', which does not exist yet" in w for w in _texts(at, "warning"))
    at.button(key="apps_new_check").click().run()
    errors = _texts(at, "error")
    assert errors[0].startswith("APP_INVALID: ")
    [problem] = [e for e in errors[1:] if "datasources" in e]
    line = next(n for n, t in enumerate(unknown.splitlines(), 1) if "[help-center]" in t)
    assert problem.startswith(f"line {line}, steps[0].datasources"), problem
    assert list(_marked(at.code[0].value)) == [line]
    assert not at.success
    assert _apps(client, admin_token) == []


def test_app_created_from_template_with_a_datasource_picked_in_the_form(
    page: Page, client: TestClient, admin_token: str
):
    made = client.post(
        "/api/datasources", json={"name": "manuals", "type": "text"}, headers=_auth(admin_token)
    )
    assert made.status_code == 201, made.text
    at = page("apps").run()
    at.selectbox(key="apps_template").select("support-bot").run()
    _widget(at, "text_input", "App name").set_value("Manuals bot").run()
    picker = _widget(at, "multiselect", "Datasources (step 1)")
    assert picker.options == ["manuals", "help-center"]
    picker.unselect("help-center").select("manuals").run()
    assert _new_doc(at)["steps"][0]["datasources"] == ["manuals"]
    [create] = [b for b in at.button if b.label == "Validate and create"]
    create.click().run()
    assert not at.exception and not at.error
    assert any("Created Manuals bot (version 1)" in t for t in _texts(at, "success"))
    [app] = _apps(client, admin_token)
    assert app["name"] == "Manuals bot" and app["type"] == "chat"
    assert app["definition"]["steps"][0]["datasources"] == ["manuals"]
    # The page now edits the new app, its form showing the saved document.
    assert at.radio(key="apps_mode").value == "Edit an app"
    assert _widget(at, "multiselect", "Datasources (step 1)").value == ["manuals"]
    assert "datasources: [manuals]" in _editor(at).value or "- manuals" in _editor(at).value


def test_app_public_toggle_saves_a_new_public_version(
    page: Page, client: TestClient, admin_token: str
):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value(APP).run()
    at.button(key="apps_create").click().run()
    assert list(at.dataframe[0].value["public"]) == [False]
    toggle = _widget(
        at, "toggle", "Public: anyone can run it without a token (saves a new version)"
    )
    toggle.set_value(True).run()
    assert not at.exception and not at.error
    assert any("Echo chat is now public (version 2)" in t for t in _texts(at, "success"))
    listed = at.dataframe[0].value
    assert list(listed["public"]) == [True] and list(listed["version"]) == [2]
    [app] = _apps(client, admin_token)
    assert app["public"] is True and app["version"] == 2
    # The stored YAML kept its layout; only the public line was added.
    stored = client.get(
        f"/api/apps/{app['uuid']}", headers={**_auth(admin_token), "Accept": "application/yaml"}
    ).text
    assert stored == APP.replace("type: chat\n", "type: chat\npublic: true\n")
    assert _editor(at).value == stored
    # One public control on the page: the Share panel's, not a second one in the form.
    assert not [c for c in at.checkbox if c.label == "Public"]
    assert len([t for t in at.toggle if t.label.startswith("Public")]) == 1
    toggle = _widget(
        at, "toggle", "Public: anyone can run it without a token (saves a new version)"
    )
    assert toggle.value is True
    toggle.set_value(False).run()
    assert any("Echo chat is now private (version 3)" in t for t in _texts(at, "success"))
    assert list(at.dataframe[0].value["public"]) == [False]


def test_app_edit_form_then_save_makes_a_version(page: Page, client: TestClient, admin_token: str):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value(APP).run()
    at.button(key="apps_create").click().run()
    _widget(at, "text_input", "App name").set_value("Edited in the form").run()
    assert "name: Edited in the form" in _editor(at).value
    at.button(key="apps_save").click().run()
    assert any("Saved Edited in the form as version 2" in t for t in _texts(at, "success"))
    [app] = _apps(client, admin_token)
    assert app["definition"]["limits"] == {"max_active_runs": 2, "timeout_seconds": 30.0}
    # An invalid edit in the YAML editor: the problem at its line, no new version.
    _editor(at).set_value(_editor(at).value.replace("history: 2", "history: -1")).run()
    at.button(key="apps_save").click().run()
    errors = _texts(at, "error")
    assert errors[0].startswith("APP_INVALID: ")
    assert any(e.startswith("line ") and "steps[0].history" in e for e in errors[1:]), errors
    assert _apps(client, admin_token)[0]["version"] == 2


def test_app_form_edits_a_message_list_prompt(page: Page):
    at = page("apps").run()
    at.selectbox(key="apps_template").select("draft-and-polish").run()
    assert _widget(at, "radio", "Prompt source (step 2)").value == "Messages"
    content = _widget(at, "text_area", "Content (step 2, message 1)")
    assert content.value.startswith("You are an editor.")
    content.set_value("You are a strict editor.").run()
    _widget(at, "button", "Add a message (step 2)").click().run()
    _widget(at, "selectbox", "Role (step 2, message 3)").select("assistant").run()
    _widget(at, "text_area", "Content (step 2, message 3)").set_value("Sure:").run()
    messages = _new_doc(at)["steps"][1]["prompt"]["messages"]
    assert messages[0] == {"role": "system", "content": "You are a strict editor."}
    assert messages[2] == {"role": "assistant", "content": "Sure:"}
    _widget(at, "button", "Remove message 1 (step 2)").click().run()
    assert [m["role"] for m in _new_doc(at)["steps"][1]["prompt"]["messages"]] == [
        "user",
        "assistant",
    ]
    # Step 1 from system/user to messages and back: the texts carry over.
    _widget(at, "radio", "Prompt source (step 1)").set_value("Messages").run()
    prompt = _new_doc(at)["steps"][0]["prompt"]
    assert prompt == {
        "messages": [
            {
                "role": "user",
                "content": "Write a short first draft (one paragraph) about: {{ input.topic }}",
            }
        ]
    }
    _widget(at, "radio", "Prompt source (step 1)").set_value("System and user").run()
    assert _new_doc(at)["steps"][0]["prompt"] == {
        "user": "Write a short first draft (one paragraph) about: {{ input.topic }}"
    }
    assert not at.exception and not at.error


def test_app_share_panel_link_snippet_and_runner_key(
    page: Page, client: TestClient, admin_token: str
):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value(APP + "ui: {accent: '#0f766e'}\n").run()
    at.button(key="apps_create").click().run()
    [app] = _apps(client, admin_token)
    codes = _texts(at, "code")
    assert f"http://testserver/chat/{app['uuid']}" in codes
    [snippet] = [c for c in codes if c.startswith("<script ")]
    assert snippet == (
        f'<script src="http://testserver/embed.js" data-app="{app["uuid"]}" '
        'data-accent="#0f766e" async></script>'
    )
    assert any("This app is private" in t for t in _texts(at, "info"))
    at.text_area(key=f"share_origins_{app['uuid']}").set_value("https://shop.example\n")
    at.button(key=f"FormSubmitter:share_key_form_{app['uuid']}-Create the key").click().run()
    assert not at.exception and not at.error
    tokens = client.get("/api/tokens", headers=_auth(admin_token)).json()
    [made] = [t for t in tokens if t["role"] == "runner"]
    assert made["apps"] == [app["uuid"]] and made["origins"] == ["https://shop.example"]
    key = at.session_state[f"share_key_{app['uuid']}"]
    codes = _texts(at, "code")
    assert f"http://testserver/chat/{app['uuid']}#key={key}" in codes
    assert any(f'data-key="{key}"' in c for c in codes)
    me = client.get("/api/tokens/me", headers={"Authorization": f"Bearer {key}"})
    assert me.json()["id"] == made["id"]


def test_app_share_panel_saves_the_apps_browser_origins(
    page: Page, client: TestClient, admin_token: str
):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value("# my bot\n" + APP).run()
    at.button(key="apps_create").click().run()
    [app] = _apps(client, admin_token)
    box = f"share_app_origins_{app['uuid']}_1"
    submit = f"FormSubmitter:share_origins_form_{app['uuid']}-Save origins (a new version)"
    at.text_area(key=box).set_value("not an origin\n")
    at.button(key=submit).click().run()
    assert at.error  # refused by the server, nothing saved
    assert _apps(client, admin_token)[0]["version"] == 1
    at.text_area(key=box).set_value("https://shop.example\nhttp://127.0.0.1:9000\n")
    at.button(key=submit).click().run()
    assert not at.exception
    stored = client.get(
        f"/api/apps/{app['uuid']}", headers={**_auth(admin_token), "Accept": "application/yaml"}
    ).text
    assert stored.startswith("# my bot\n")  # the author's comments stay
    assert yaml.safe_load(stored)["origins"] == ["https://shop.example", "http://127.0.0.1:9000"]
    assert any("2 browser origin(s) allowed (version 2)" in t for t in _texts(at, "success"))
    # The editor follows the saved app.
    assert "origins:" in at.session_state[f"apps_yaml_{app['uuid']}"]


def test_template_asks_for_its_datasource_pick_or_create(
    page: Page, client: TestClient, admin_token: str
):
    headers = _auth(admin_token)
    assert client.post(
        "/api/datasources", json={"name": "manuals", "type": "mixed"}, headers=headers
    ).is_success
    at = page("apps").run()
    at.selectbox(key="apps_template").select("support-bot").run()
    # help-center does not exist: the page asks, and the app cannot be created yet.
    assert any("'help-center', which does not exist yet" in w.value for w in at.warning)
    assert at.button(key="apps_create").disabled
    pick = _widget(at, "selectbox", "Datasource for 'help-center'")
    assert pick.options == ["manuals", "Create a new datasource"]
    pick.select("manuals").run()
    _widget(at, "button", "Use it").click().run()
    assert not at.exception and not at.error
    text = at.text_area(key="apps_new_yaml").value
    # Only the name changed: the template's comments are all still there.
    assert text == templates()["support-bot"].replace(
        "datasources: [help-center]              #", "datasources: [manuals]                  #"
    )
    assert not at.button(key="apps_create").disabled
    assert not [w for w in at.warning if "does not exist" in w.value]
    # Or a new one, made on the spot under a name of one's choice.
    at.selectbox(key="apps_template").select("Blank").run()
    at.selectbox(key="apps_template").select("support-bot").run()
    _widget(at, "selectbox", "Datasource for 'help-center'").select("Create a new datasource").run()
    _widget(at, "text_input", "New datasource name").set_value("faq").run()
    _widget(at, "button", "Create 'faq' and use it").click().run()
    assert not at.exception and not at.error
    assert any("Created datasource faq" in t for t in _texts(at, "success"))
    assert "datasources: [faq]" in at.text_area(key="apps_new_yaml").value
    names = [d["name"] for d in client.get("/api/datasources", headers=headers).json()]
    assert names == ["manuals", "faq"]
    at.button(key="apps_create").click().run()
    assert any("Created Support bot (version 1)" in t for t in _texts(at, "success"))
    [app] = _apps(client, admin_token)
    assert app["definition"]["steps"][0]["datasources"] == ["faq"]


def test_form_edit_keeps_the_yaml_comments(page: Page):
    at = page("apps").run()
    at.selectbox(key="apps_template").select("summarize").run()
    before = at.text_area(key="apps_new_yaml").value
    comments = [line for line in before.splitlines() if "#" in line]
    assert comments
    _widget(at, "text_input", "App name").set_value("Digest").run()
    _widget(at, "number_input", "Temperature (step 1)").set_value(0.5).run()
    after = at.text_area(key="apps_new_yaml").value
    assert yaml.safe_load(after)["name"] == "Digest"
    # Every comment line is still there, and every other line but the two edited.
    assert [line for line in after.splitlines() if "#" in line] == comments
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=False) if a != b
    ]
    assert len(before.splitlines()) == len(after.splitlines())
    assert len(changed) == 2, changed


def test_app_form_sets_the_openai_input_and_output_keeping_comments(page: Page):
    at = page("apps").run()
    commented = APP.replace("type: chat\n", "type: chat  # keeps history\n").replace(
        "output:\n", "# what the run answers\noutput:\n"
    )
    at.text_area(key="apps_new_yaml").set_value(commented).run()
    chat_input = _widget(at, "selectbox", "Chat message input")
    answer = _widget(at, "selectbox", "Answer output")
    assert (chat_input.value, answer.value) == ("", "")  # automatic
    assert chat_input.options == ["(automatic)", "question", "tone"]
    assert answer.options == ["(automatic)", "answer"]
    chat_input.select("tone").run()
    _widget(at, "selectbox", "Answer output").select("answer").run()
    assert not at.exception and not at.error
    text = at.text_area(key="apps_new_yaml").value
    assert "type: chat  # keeps history\n" in text and "# what the run answers\n" in text
    assert yaml.safe_load(text)["openai"] == {"input": "tone", "output": "answer"}
    # The form shows a document's own section; emptied, the section is left out.
    at.text_area(key="apps_new_yaml").set_value(text).run()
    assert _widget(at, "selectbox", "Chat message input").value == "tone"
    _widget(at, "selectbox", "Chat message input").select("").run()
    assert _new_doc(at)["openai"] == {"output": "answer"}
    _widget(at, "selectbox", "Answer output").select("").run()
    text = at.text_area(key="apps_new_yaml").value
    assert "openai" not in yaml.safe_load(text) and "# what the run answers\n" in text


def test_renaming_an_input_or_a_step_in_the_form_moves_what_refers_to_it(
    page: Page, client: TestClient, admin_token: str
):
    at = page("apps").run()
    text = APP + "openai: {input: question, output: answer}\n"
    at.text_area(key="apps_new_yaml").set_value(text).run()
    _widget(at, "text_input", "Input name (row 1)").set_value("query").run()
    assert not at.exception and not at.error
    doc = _new_doc(at)
    assert list(doc["input"]) == ["query", "tone"]
    assert doc["steps"][0]["prompt"]["user"] == "{{ input.query }}"
    assert doc["openai"] == {"input": "query", "output": "answer"}
    # The form is drawn again at once: its fields show the moved references.
    assert _widget(at, "text_area", "User prompt (step 1)").value == "{{ input.query }}"
    assert _widget(at, "selectbox", "Chat message input").value == "query"
    said = [t.value for t in at.toast]
    assert said == ["Renamed input 'question' to 'query' in 1 template reference and openai.input."]
    _widget(at, "text_input", "Id (step 1)").set_value("reply").run()
    _widget(at, "text_input", "Output key (row 1)").set_value("text").run()
    assert not at.exception and not at.error
    doc = _new_doc(at)
    assert doc["output"] == {"text": "{{ reply.text }}"}
    assert doc["openai"] == {"input": "query", "output": "text"}
    # The document stays valid: the API takes it (it would refuse an unknown input).
    at.button(key="apps_create").click().run()
    assert not at.exception and not at.error
    [app] = [a for a in _apps(client, admin_token) if a["name"] == "Echo chat"]
    stored = client.get(f"/api/apps/{app['uuid']}", headers=_auth(admin_token)).json()
    assert stored["definition"]["openai"] == {"input": "query", "output": "text"}
