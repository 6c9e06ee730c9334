"""The Prompts page against the real API: chat versions, JSON errors, diff, deployments,
and the apps that pin a prompt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

Page = Callable[[str], AppTest]


def _table(at: AppTest, column: str) -> Any:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def _widget(at: AppTest, kind: str, label: str) -> Any:
    [found] = [w for w in getattr(at, kind) if w.label == label]
    return found


class Api:
    """The test API, for setting up and checking what the page did."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Token {token}"}

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.client.request(method, path, headers=self.headers, **kwargs)
        assert answer.status_code < 300, answer.text
        return answer.json() if answer.content else None

    def prompt(self, *templates: str) -> str:
        """A use case 'support' with a prompt 'greeting' and a text version per template."""
        use_case = self.call("POST", "/api/v1/use-cases", json={"name": "support"})
        prompt = self.call(
            "POST", f"/api/v1/use-cases/{use_case['id']}/prompts", json={"name": "greeting"}
        )
        for template in templates:
            body = {"type": "text", "template_text": template}
            self.call("POST", f"/api/v1/prompts/{prompt['id']}/versions", json=body)
        return str(prompt["id"])

    def versions(self, prompt_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", f"/api/v1/prompts/{prompt_id}/versions")
        return found


def _api(client: TestClient, admin_token: str) -> Api:
    return Api(client, admin_token)


def test_prompts_create_chat_version_with_schema_and_defaults(
    page: Page, client: TestClient, admin_token: str
):
    api = _api(client, admin_token)
    prompt_id = api.prompt()
    at = page("prompts").run()
    assert not at.exception and not at.error
    _widget(at, "radio", "Version type").set_value("chat").run()
    assert [s.value for s in at.selectbox if s.label.startswith("Message role")] == [
        "system",
        "user",
    ]
    _widget(at, "button", "Add a message").click().run()
    _widget(at, "selectbox", "Message role (row 3)").set_value("assistant").run()
    _widget(at, "button", "Remove message 3").click().run()
    assert not [s for s in at.selectbox if s.label == "Message role (row 3)"]
    _widget(at, "text_area", "Message content (row 1)").set_value("You greet people.")
    _widget(at, "text_area", "Message content (row 2)").set_value("Greet {{ name }}.")
    schema = '{"type": "object", "properties": {"name": {"type": "string"}}}'
    _widget(at, "text_area", "Variables schema (JSON)").set_value(schema)
    _widget(at, "text_area", "Model defaults (JSON)").set_value('{"temperature": 0.2}')
    _widget(at, "text_input", "Commit message").set_value("chat greeting")
    at.run()
    assert not at.error
    _widget(at, "button", "Create version").click().run()
    assert not at.exception and not at.error
    assert any("Created version 1" in t for t in _texts(at, "success"))
    table = _table(at, "template")
    assert list(table["type"]) == ["chat"] and list(table["variables"]) == ["name"]
    assert table["template"][0] == "system: You greet people.\nuser: Greet {{ name }}."
    [version] = api.versions(prompt_id)
    assert version["template_messages"] == [
        {"role": "system", "content": "You greet people."},
        {"role": "user", "content": "Greet {{ name }}."},
    ]
    assert version["variables_schema"]["properties"] == {"name": {"type": "string"}}
    assert version["model_defaults"]["temperature"] == 0.2
    assert version["commit_message"] == "chat greeting"


def test_prompts_bad_json_is_a_clear_error_and_creates_nothing(
    page: Page, client: TestClient, admin_token: str
):
    api = _api(client, admin_token)
    prompt_id = api.prompt()
    at = page("prompts").run()
    at.text_area(key="pr_template").set_value("Hi {{ name }}")
    _widget(at, "text_area", "Model defaults (JSON)").set_value("{temperature: 1}")
    _widget(at, "text_area", "Variables schema (JSON)").set_value("[1]")
    at.run()
    assert _texts(at, "error") == [
        "JSON_INVALID: Variables schema (JSON) must be a JSON object",
        "JSON_INVALID: Model defaults (JSON) (line 1): "
        "Expecting property name enclosed in double quotes",
    ]
    _widget(at, "button", "Create version").click().run()
    assert not at.exception and not at.success
    assert _texts(at, "error")[-1] == (
        "JSON_INVALID: fix the JSON fields above first; nothing was created."
    )
    assert api.versions(prompt_id) == []
    # A schema the API refuses: its error, from the body.
    _widget(at, "text_area", "Variables schema (JSON)").set_value('{"type": 7}')
    _widget(at, "text_area", "Model defaults (JSON)").set_value('{"temperature": 9}')
    at.run()
    _widget(at, "button", "Create version").click().run()
    errors = _texts(at, "error")
    assert errors and errors[0].split(":")[0].isupper() and "Traceback" not in " ".join(errors)
    assert api.versions(prompt_id) == []


def test_prompts_diff_side_by_side_and_deploy_history(
    page: Page, client: TestClient, admin_token: str
):
    api = _api(client, admin_token)
    api.prompt("Hi {{ name }}!", "Hello {{ name }}!\nBye.")
    at = page("prompts").run()
    assert not at.exception and not at.error
    at.toggle(key="pr_diff").set_value(True).run()
    left, right, unified = (c.value for c in at.code)
    assert (left, right) == ("Hi {{ name }}!", "Hello {{ name }}!\nBye.")
    assert "-Hi {{ name }}!" in unified and "+Hello {{ name }}!" in unified and "+Bye." in unified
    assert any(c.startswith("1 added, 0 removed, 1 modified lines") for c in _texts(at, "caption"))

    assert any("No label was ever moved" in c for c in _texts(at, "caption"))
    at.text_input(key="pr_label").set_value("staging")
    at.text_input(key="pr_notes").set_value("first try")
    at.selectbox(key="pr_label_version").set_value(1)
    at.button(key="pr_deploy").click().run()
    assert any("Deployed version 1 to staging" in t for t in _texts(at, "success"))
    at.selectbox(key="pr_label_version").set_value(2)
    at.text_input(key="pr_notes").set_value("")
    at.button(key="pr_deploy").click().run()
    at.text_input(key="pr_label").set_value("production")
    at.button(key="pr_promote").click().run()
    assert any("Version 2 is now production" in t for t in _texts(at, "success"))
    at.text_input(key="pr_label").set_value("staging")
    at.button(key="pr_rollback").click().run()
    assert any("Rolled staging back to version 1" in t for t in _texts(at, "success"))
    assert not at.error
    history = _table(at, "previous version")
    moves = sorted(
        zip(history["label"], history["action"], history["version"], history["notes"], strict=True)
    )
    assert [m[:2] for m in moves] == [
        ("production", "promote"),
        ("staging", "deploy"),
        ("staging", "deploy"),
        ("staging", "rollback"),
    ]
    assert ("staging", "deploy", 1, "first try") in moves
    now = _table(at, "since")
    assert dict(zip(now["label"], now["version"], strict=True)) == {"production": 2, "staging": 1}
    assert list(_table(at, "variables")["labels"]) == ["staging", "production"]


def test_prompts_lists_the_apps_that_pin_it(page: Page, client: TestClient, admin_token: str):
    api = _api(client, admin_token)
    prompt_id = api.prompt("Answer: {{ question }}")
    api.call(
        "POST", f"/api/v1/prompts/{prompt_id}/versions/1/promote", json={"label": "production"}
    )
    at = page("prompts").run()
    assert any("No app pins this prompt" in c for c in _texts(at, "caption"))

    # Pin it from the Apps page form: the step's prompt becomes the managed prompt.
    apps = page("apps").run()
    _widget(apps, "radio", "Prompt source (step 1)").set_value("Managed prompt").run()
    picker = _widget(apps, "selectbox", "Managed prompt (step 1)")
    assert picker.options == ["(pick a prompt)", "greeting (support)"]
    picker.set_value("greeting").run()
    _widget(apps, "text_input", "App name").set_value("Pinned bot").run()
    _widget(apps, "button", "Validate and create").click().run()
    assert not apps.exception and not apps.error, _texts(apps, "error")
    [app] = api.call("GET", "/api/apps")
    assert app["definition"]["steps"][0]["prompt"]["ref"] == "greeting"

    at.run()
    pinned = _table(at, "pinned by")
    assert list(pinned["app"]) == ["Pinned bot"] and list(pinned["step"]) == ["answer"]
    assert list(pinned["pinned by"]) == ["label production"]
    assert list(pinned["app uuid"]) == [app["uuid"]]
