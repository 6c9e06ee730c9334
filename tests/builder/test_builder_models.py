"""The Settings page's Models section, driven with AppTest against the real API and a real
llama_cpp.server: add a provider, test it, point an alias at it, edit and delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from builder.model_settings import parse_headers

Page = Callable[[str], AppTest]
DEMO = "tiny offline demo model (SmolLM2-135M): answers are often wrong"


def _texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def _button(at: AppTest, label: str) -> Any:
    [found] = [b for b in at.button if b.label == label]
    return found


def _table(at: AppTest, column: str) -> Any:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_settings_models_add_test_alias_edit_and_delete_a_provider(
    page: Page, client: TestClient, llama_server: str
):
    at = page("settings").run()
    assert not at.exception and not at.error
    assert any("Ollama, vLLM, llama.cpp server, OpenAI" in t for t in _texts(at, "info"))
    providers = _table(at, "base URL")
    assert DEMO in list(providers["about"])  # the bundled model, labelled
    target = at.selectbox(key="settings_alias_target")
    assert f"local:smollm2 — {DEMO}" in target.options

    # Add a provider pointing at the real server; the key field is write-only.
    at.text_input(key="settings_provider_name").set_value("llama")
    at.text_input(key="settings_provider_url").set_value(llama_server)
    at.text_input(key="settings_provider_key").set_value("sk-builder-secret-1")
    at.text_area(key="settings_provider_headers").set_value("X-Team: blue")
    _button(at, "Add provider").click().run()
    assert not at.exception and not at.error, _texts(at, "error")
    assert "Added provider llama" in _texts(at, "success")
    stored = client.get("/api/providers/llama").json()
    assert (stored["has_key"], stored["headers"]) == (True, ["X-Team"])

    # Test the connection: the server's models become pickable targets.
    at.selectbox(key="settings_provider_pick").set_value("llama").run()
    at.button(key="settings_provider_test").click().run()
    assert any("llama answered" in t and "smollm2" in t for t in _texts(at, "success"))
    at.text_input(key="settings_alias_name").set_value("default")
    at.selectbox(key="settings_alias_target").set_value("llama:smollm2")
    at.button(key="settings_alias_set").click().run()
    assert "Alias default now points at llama:smollm2" in _texts(at, "success")
    aliases = _table(at, "alias")
    assert list(aliases[aliases["alias"] == "default"]["target"]) == ["llama:smollm2"]
    [default] = client.get("/api/models/aliases").json()
    assert (default["target"], default["source"]) == ("llama:smollm2", "database")

    # Edit: a new key replaces the stored one and is never shown.
    at.selectbox(key="settings_provider_pick").set_value("llama").run()
    at.text_input(key="settings_edit_key").set_value("sk-builder-secret-2")
    _button(at, "Save provider").click().run()
    assert "Saved provider llama" in _texts(at, "success")
    shown = " ".join(
        str(e.value) for kind in ("text_input", "markdown", "code") for e in getattr(at, kind)
    )
    assert "sk-builder-secret" not in shown

    # Deleting the provider while "default" points at it is refused, with the reason.
    at.selectbox(key="settings_provider_pick").set_value("llama").run()
    at.button(key="settings_provider_delete").click().run()
    assert any(e.startswith("PROVIDER_IN_USE") for e in _texts(at, "error"))
    at.selectbox(key="settings_alias_pick").set_value("default")
    at.button(key="settings_alias_delete").click().run()
    assert "Deleted alias default" in _texts(at, "success")
    at.selectbox(key="settings_provider_pick").set_value("llama").run()
    at.button(key="settings_provider_delete").click().run()
    assert "Deleted provider llama" in _texts(at, "success")
    assert client.get("/api/providers/llama").status_code == 404

    # The step editor labels the bundled model too.
    apps = page("apps").run()
    apps.selectbox(key="apps_template").select("support-bot").run()
    [model] = [s for s in apps.selectbox if s.label == "Model (step 2)"]
    assert f"default — {DEMO}" in model.options
    assert any("Ollama" in c for c in _texts(apps, "caption"))


def test_settings_models_header_lines():
    assert parse_headers("X-A: 1\n\n  X-B:two:parts ") == {"X-A": "1", "X-B": "two:parts"}
    try:
        parse_headers("no colon")
    except ValueError as exc:
        assert "Name: value" in str(exc)
    else:
        raise AssertionError("a line without a colon was accepted")
