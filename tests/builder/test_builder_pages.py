"""Each builder page driven with AppTest against the real API and the real model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

Page = Callable[[str], AppTest]


def _table(at: AppTest, column: str) -> Any:
    """The first table (dataframe) shown with this column."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def test_apps_create_from_template_appears_in_list(page: Page):
    at = page("apps").run()
    assert not at.exception
    at.selectbox(key="apps_template").select("summarize").run()
    assert "name: Summarize" in at.text_area(key="apps_new_yaml").value
    at.button(key="apps_create").click().run()
    assert not at.exception
    assert any("Created Summarize" in t for t in _texts(at, "success"))
    names = list(at.dataframe[0].value["name"])
    assert names == ["Summarize"]


CHAT_APP = """version: 1
name: Echo chat
type: chat
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{ input.question }}"
    history: 2
    params: {temperature: 0, seed: 1, max_tokens: 12}
output:
  answer: "{{ answer.text }}"
"""


def _ready_datasource(page: Page) -> AppTest:
    at = page("datasources").run()
    at.text_input(key="ds_new_name").set_value("help-center")
    [create] = [b for b in at.button if b.label == "Create"]
    create.click().run()
    at.text_input(key="ds_meta_key_0").set_value("product")
    at.text_input(key="ds_meta_value_0").set_value("widget")
    at.text_input(key="ds_entry_name").set_value("reset.txt")
    at.text_area(key="ds_entry_text").set_value(
        "To reset the widget, hold the power button for ten seconds."
    )
    at.button(key="ds_add").click().run()
    assert any("Added 1 entry" in t for t in _texts(at, "success"))
    at.button(key="ds_wait").click().run()
    assert list(_table(at, "status")["status"]) == ["ready"]
    return at


def test_datasources_text_entry_with_metadata_becomes_ready_and_is_found(page: Page):
    at = _ready_datasource(page)
    assert not at.exception and not at.error
    assert any("1 of 1 processed" in s.label for s in at.status)
    table = _table(at, "status")
    assert list(table["name"]) == ["reset.txt"]
    assert json.loads(table["metadata"][0]) == {"product": "widget"}
    assert "1 of 1 entries processed" in at.get("progress")[-1].proto.text

    at.text_input(key="ds_query").set_value("how do I reset the widget")
    at.text_area(key="ds_where").set_value('{"md_product": "widget"}')
    at.button(key="ds_search").click().run()
    assert not at.error
    assert any("hold the power button" in t.value for t in at.text)
    at.text_area(key="ds_where").set_value('{"md_product": "other"}')
    at.button(key="ds_search").click().run()
    assert any("Nothing found" in t for t in _texts(at, "info"))


def test_apps_yaml_error_shows_its_line(page: Page):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value(CHAT_APP.replace("kind: llm", "kind: nope"))
    at.button(key="apps_create").click().run()
    assert not at.exception
    errors = _texts(at, "error")
    assert errors[0].startswith("APP_INVALID: ")
    assert any(e.startswith("line 8, steps[0].kind") for e in errors[1:]), errors
    assert not at.success


def test_apps_edit_versions_restore_and_delete(page: Page):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value(CHAT_APP)
    at.button(key="apps_create").click().run()
    [editor] = [t for t in at.text_area if t.key.startswith("apps_yaml_")]
    editor.set_value(CHAT_APP.replace("name: Echo chat", "name: Renamed chat"))
    at.button(key="apps_save").click().run()
    assert any("Saved Renamed chat as version 2" in t for t in _texts(at, "success"))
    assert list(_table(at, "current")["version"]) == [2, 1]
    at.toggle(key="apps_diff").set_value(True).run()
    [diff] = [c.value for c in at.code if c.language == "diff"]
    assert "-name: Echo chat" in diff and "+name: Renamed chat" in diff
    at.button(key="apps_restore").click().run()
    assert any("Restored version 1 as version 3" in t for t in _texts(at, "success"))
    assert list(_table(at, "name")["name"]) == ["Echo chat"]
    assert "name: Echo chat" in [t for t in at.text_area if t.key.startswith("apps_yaml_")][0].value
    at.text_input(key="apps_q").set_value("nothing like this").run()
    assert any("No app matches" in c.value for c in at.caption)
    at.text_input(key="apps_q").set_value("echo").run()
    assert at.button(key="apps_delete").disabled
    at.checkbox(key="apps_delete_confirm").check().run()
    at.button(key="apps_delete").click().run()
    assert any("Deleted Echo chat" in t for t in _texts(at, "success"))
    at.text_input(key="apps_q").set_value("").run()
    assert any("No apps yet" in c.value for c in at.caption)


def test_runs_lists_the_playground_run_and_opens_it(page: Page):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value(CHAT_APP)
    at.button(key="apps_create").click().run()
    at = page("playground").run()
    at.chat_input(key="pg_question").set_value("Say hello.").run()
    assert not at.exception and not at.error
    at = page("runs").run()
    assert not at.exception and not at.error
    table = _table(at, "latency ms")
    assert list(table["status"]) == ["succeeded"]
    assert table["tokens out"][0] > 0
    assert at.json[0].value and "Say hello." in at.json[0].value


def test_settings_creates_token_shown_once_and_revokes_it(page: Page):
    at = page("settings").run()
    assert not at.exception and not at.error
    at.text_input(key="settings_token_name").set_value("ci")
    [create] = [b for b in at.button if b.label == "Create token"]
    create.click().run()
    assert any("Copy it now" in t for t in _texts(at, "success"))
    secret = at.code[0].value
    assert secret.startswith("af_")
    tokens = _table(at, "prefix")
    assert "ci" in list(tokens["name"])
    at.run()
    assert not at.code
    ci = tokens["id"][list(tokens["name"]).index("ci")]
    at.selectbox(key="settings_revoke_pick").set_value(ci)
    at.button(key="settings_revoke").click().run()
    assert any("Revoked ci" in t for t in _texts(at, "success"))
    # Revoked tokens stay listed (the API keeps them); the secret no longer works.
    runs = page("runs")
    runs.session_state["appforge_token"] = secret
    runs.run()
    assert _texts(runs, "error") == ["TOKEN_INVALID: the token is unknown or revoked"]
    at.button(key="settings_models").click().run()
    assert not at.error
    aliases = _table(at, "alias")
    assert "default" in list(aliases["alias"])


def test_page_shows_api_error_without_trace(page: Page):
    at = page("runs")
    at.session_state["appforge_token"] = "af_wrong_token"
    at.run()
    assert not at.exception
    [error] = _texts(at, "error")
    assert error == "TOKEN_INVALID: the token is unknown or revoked"


def test_builder_entry_opens_the_apps_page(page: Page):
    at = page("app").run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Apps"]


def test_builder_without_token_asks_to_sign_in(page: Page, monkeypatch):
    for name in ("APPFORGE_TOKEN", "APPFORGE_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    at = page("apps")
    del at.session_state["appforge_token"]
    at.run()
    assert not at.exception
    assert any("Sign in" in i.value for i in at.info)
    # A wrong token is refused with a message, and the form stays.
    at.text_input(key="signin_token").set_value("af_not_a_token")
    [sign_in] = [b for b in at.button if b.label == "Sign in"]
    sign_in.click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "Sign-in refused: TOKEN_INVALID: the token is unknown or revoked. "
        "Check the token and try again."
    ]
    assert "appforge_token" not in at.session_state
    assert [t.label for t in at.text_input] == ["API token"] and not at.dataframe
    # The right one is accepted: the page shows, and a builder session was started
    # (its claim goes to the browser, which trades it for the http-only cookie).
    at.text_input(key="signin_token").set_value("af_test_admin_token_0123456789")
    [sign_in] = [b for b in at.button if b.label == "Sign in"]
    sign_in.click().run()
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == ["Apps"] and not at.info
    assert at.session_state["appforge_token"] == "af_test_admin_token_0123456789"
    assert at.session_state["appforge_builder_session"]


def test_builder_sign_out_ends_the_session(page: Page, client: TestClient, monkeypatch):
    for name in ("APPFORGE_TOKEN", "APPFORGE_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    at = page("settings")
    del at.session_state["appforge_token"]
    at.run()
    at.text_input(key="signin_token").set_value("af_test_admin_token_0123456789")
    [sign_in] = [b for b in at.button if b.label == "Sign in"]
    sign_in.click().run()
    session_id = at.session_state["appforge_builder_session"]
    at.button(key="settings_sign_out").click().run()
    assert not at.exception
    assert any("Signed out." in w.value for w in at.warning)
    assert [t.label for t in at.text_input if t.key == "signin_token"] == ["API token"]
    # The session has ended on the server: there is nothing left to end.
    r = client.delete(f"/api/builder/sessions/{session_id}")
    assert r.status_code == 404


def test_datasources_delete_entry_then_datasource(page: Page):
    at = _ready_datasource(page)
    at.button(key="ds_entry_retry").click().run()  # a processed entry may be redone
    assert any("Queued reset.txt again" in t for t in _texts(at, "success"))
    at.button(key="ds_wait").click().run(timeout=120)
    assert "ready" in " ".join(str(d.value) for d in at.dataframe)
    at.button(key="ds_entry_delete").click().run()
    assert any("Deleted entry reset.txt" in t for t in _texts(at, "success"))
    assert any("No entries yet" in c.value for c in at.caption)
    assert at.button(key="ds_delete").disabled
    at.checkbox(key="ds_confirm").check().run()
    at.button(key="ds_delete").click().run()
    assert any("Deleted datasource help-center" in t for t in _texts(at, "success"))
    assert [s.key for s in at.selectbox] == ["ds_new_type"]  # no datasource left to pick


def test_prompts_create_version_promote_diff_and_render(page: Page):
    at = page("prompts").run()
    assert not at.exception and not at.error
    at.text_input(key="pr_uc_name").set_value("support")
    [b for b in at.button if b.label == "Create use case"][0].click().run()
    assert any("Created use case support" in t for t in _texts(at, "success"))
    at.text_input(key="pr_p_name").set_value("greeting")
    [b for b in at.button if b.label == "Create prompt"][0].click().run()
    assert any("Created prompt greeting" in t for t in _texts(at, "success"))
    for template in ("Hi {{ name }}!", "Hello {{ name }}!"):
        at.text_area(key="pr_template").set_value(template)
        [b for b in at.button if b.label == "Create version"][0].click().run()
        assert not at.error
    versions = _table(at, "variables")
    assert list(versions["version"]) == [1, 2] and list(versions["variables"]) == ["name"] * 2
    at.selectbox(key="pr_label_version").set_value(1)
    at.button(key="pr_promote").click().run()
    assert any("Version 1 is now production" in t for t in _texts(at, "success"))
    assert list(_table(at, "variables")["labels"]) == ["production", ""]
    at.toggle(key="pr_diff").set_value(True).run()
    assert "+Hello {{ name }}!" in at.code[-1].value
    at.text_area(key="pr_variables").set_value('{"name": "Ada"}')
    at.selectbox(key="pr_render_v").set_value(2)
    at.button(key="pr_render").click().run()
    assert at.code[-1].value == "Hello Ada!"


def test_apps_check_without_saving_shows_problems_then_ok(page: Page):
    at = page("apps").run()
    at.text_area(key="apps_new_yaml").set_value(
        CHAT_APP.replace("    history: 2\n", "    history: 2\n    model: nowhere\n")
    )
    at.button(key="apps_new_check").click().run()
    assert not at.exception
    errors = _texts(at, "error")
    assert errors[0].startswith("APP_INVALID: ")
    assert any(e.startswith("line 12, steps[0].model") for e in errors[1:]), errors
    at.text_area(key="apps_new_yaml").set_value(CHAT_APP)
    at.button(key="apps_new_check").click().run()
    assert any("No problems" in t for t in _texts(at, "success"))
    assert any("No apps yet" in c.value for c in at.caption)  # nothing was saved
