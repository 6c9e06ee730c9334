"""The Settings page's token form (role, apps, origins, expiry, rate) and the Audit page,
with AppTest against the real API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

Page = Callable[[str], AppTest]

APP = """version: 1
name: Shop bot
type: text
input:
  q: {type: string, required: true}
steps:
  - id: a
    kind: llm
    prompt: {user: "{{ input.q }}"}
output:
  a: "{{ a.text }}"
"""


def _table(at: AppTest, column: str) -> Any:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def _app(client: TestClient) -> dict[str, Any]:
    r = client.post("/api/apps", content=APP, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def test_settings_creates_a_narrowed_runner_key(page: Page, client: TestClient):
    app = _app(client)
    at = page("settings").run()
    assert not at.exception and not at.error
    in_a_year = date.today() + timedelta(days=365)
    at.text_input(key="settings_token_name").set_value("shop widget")
    at.selectbox(key="settings_token_role").set_value("runner")
    at.multiselect(key="settings_token_apps").set_value([app["uuid"]])
    at.text_area(key="settings_token_origins").set_value("https://shop.example\n\n")
    at.date_input(key="settings_token_expires").set_value(in_a_year)
    at.text_input(key="settings_token_rate").set_value("30/minute")
    [create] = [b for b in at.button if b.label == "Create token"]
    create.click().run()
    assert not at.exception and not at.error
    assert any("Copy it now" in t for t in _texts(at, "success"))
    tokens = _table(at, "role")
    row = list(tokens["name"]).index("shop widget")
    assert tokens["role"][row] == "runner" and tokens["apps"][row] == "Shop bot"
    assert tokens["origins"][row] == "https://shop.example"
    assert tokens["rate limit"][row] == "30/minute"
    [made] = [t for t in client.get("/api/tokens").json() if t["name"] == "shop widget"]
    assert (made["role"], made["apps"], made["origins"]) == (
        "runner", [app["uuid"]], ["https://shop.example"],
    )  # fmt: skip
    expires = datetime.fromisoformat(made["expires_at"])
    assert expires == datetime(in_a_year.year, in_a_year.month, in_a_year.day, tzinfo=UTC)


def test_settings_refused_token_shows_the_error_and_stores_nothing(page: Page, client: TestClient):
    before = len(client.get("/api/tokens").json())
    at = page("settings").run()
    at.text_input(key="settings_token_name").set_value("bad")
    at.selectbox(key="settings_token_role").set_value("editor")
    at.text_input(key="settings_token_rate").set_value("lots")
    [create] = [b for b in at.button if b.label == "Create token"]
    create.click().run()
    assert not at.exception and not at.code
    error = _texts(at, "error")[0]  # then each problem
    assert error.startswith("VALIDATION_ERROR: ") and "rate_limit" in error
    assert len(client.get("/api/tokens").json()) == before


def test_audit_page_lists_and_filters_events(page: Page, client: TestClient):
    app = _app(client)
    client.post("/api/v1/use-cases", json={"name": "support"})
    client.post("/api/tokens", json={"name": "ed", "role": "editor"})
    at = page("audit").run()
    assert not at.exception and not at.error
    events = _table(at, "action")
    assert list(events["action"]) == ["token.created", "use_case.created", "app.created"]
    assert set(events["actor"]) == {"admin"} and set(events["address"]) == {"testclient"}
    assert any("of 3" in c for c in _texts(at, "caption"))
    at.text_input(key="audit_action").set_value("app.").run()
    events = _table(at, "action")
    assert list(events["target id"]) == [app["uuid"]]
    assert '"name": "Shop bot"' in events["details"][0]
    at.text_input(key="audit_action").set_value("").run()
    at.date_input(key="audit_to").set_value(date.today() - timedelta(days=1)).run()
    assert not at.dataframe and any("0 match" in c for c in _texts(at, "caption"))


def test_audit_page_tells_a_non_admin_it_is_for_admins(page: Page, client: TestClient):
    editor = client.post("/api/tokens", json={"name": "ed", "role": "editor"}).json()
    at = page("audit")
    at.session_state["appforge_token"] = editor["token"]
    at.run()
    assert not at.exception
    assert any("admin" in i for i in _texts(at, "info"))
    [error] = _texts(at, "error")
    assert error.startswith("FORBIDDEN: ")


def test_builder_navigation_has_the_audit_page(page: Page):
    at = page("app").run()
    assert not at.exception
    # The entry opens the Apps page; the audit page is a sibling of Settings.
    at.switch_page("views/audit.py").run()
    assert [t.value for t in at.title] == ["Audit log"]
