"""The Models section of the Settings page: providers and aliases, managed in the browser.

Lists every provider (built in, from the environment, stored) and alias with where
each is set; adds, edits and deletes stored providers (the key field is write-only:
empty keeps the stored key); tests a provider's connection, showing the models its
server lists; points an alias at a model picked from those known. The bundled model
is offered with its label (a tiny offline demo model), and the page says how to
point ``default`` at a real server.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from appforge.client import AliasConfig, Client, ProviderConfig
from builder.connection import ERRORS, show_error

REAL_SERVER_HINT = (
    "The bundled model is a tiny offline demo. For real answers, add your server below "
    "(Ollama, vLLM, llama.cpp server, OpenAI: its /v1 URL), test it, then point the alias "
    "`default` at one of its models."
)
# Models the connection tests found, by provider, for the alias picker.
TESTED = "settings_tested_models"


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_headers(text: str) -> dict[str, str]:
    """``Name: value`` lines as headers (ValueError naming a line without a colon)."""
    headers: dict[str, str] = {}
    for line in _lines(text):
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"a header line is 'Name: value', got {line[:40]!r}")
        headers[name.strip()] = value.strip()
    return headers


def model_labels(providers: list[ProviderConfig]) -> dict[str, str]:
    """``provider:model`` -> the provider's description, where it has one (the demo model)."""
    return {f"{p.name}:{m}": p.description for p in providers if p.description for m in p.models}


def known_models(providers: list[ProviderConfig]) -> list[str]:
    """``provider:model`` names to offer: each provider's listed models, and those its
    connection test found in this browser session."""
    tested: dict[str, list[str]] = st.session_state.get(TESTED, {})
    found: list[str] = []
    for p in providers:
        if p.active:
            found += [f"{p.name}:{m}" for m in [*p.models, *tested.get(p.name, [])]]
    return list(dict.fromkeys(found))


# The key fields: emptied after each change, so no secret stays in the browser session.
SECRET_FIELDS = ("settings_provider_key", "settings_edit_key")


def _flash(message: str) -> None:
    for key in SECRET_FIELDS:
        st.session_state.pop(key, None)
    st.session_state["settings_models_flash"] = message
    st.rerun()


def _provider_row(p: ProviderConfig) -> dict[str, Any]:
    return {
        "name": p.name,
        "source": p.source if p.active else f"{p.source} (hidden by env)",
        "base URL": p.base_url or "in-process",
        "key": "set" if p.has_key else "",
        "headers": ", ".join(p.headers),
        "models": ", ".join(p.models),
        "about": p.description or "",
    }


def _alias_row(a: AliasConfig) -> dict[str, Any]:
    return {
        "alias": a.name,
        "target": a.target,
        "source": a.source if a.active else f"{a.source} (hidden by env)",
        "about": a.description or "",
    }


def _add_form(client: Client) -> None:
    with st.form("settings_provider_add", clear_on_submit=True):
        st.markdown("**Add a provider** (an OpenAI-compatible server)")
        name = st.text_input("Provider name (e.g. ollama)", key="settings_provider_name")
        url = st.text_input(
            "Base URL (e.g. http://127.0.0.1:11434/v1)", key="settings_provider_url"
        )
        key = st.text_input(
            "API key (optional; stored encrypted, never shown again)",
            type="password",
            key="settings_provider_key",
        )
        models = st.text_area(
            "Models to offer (one per line; optional)", key="settings_provider_models"
        )
        headers = st.text_area(
            "Extra headers (Name: value, one per line)", key="settings_provider_headers"
        )
        if not st.form_submit_button("Add provider"):
            return
    try:
        made = client.create_provider(
            name.strip(),
            url.strip(),
            api_key=key or None,
            models=_lines(models),
            headers=parse_headers(headers),
        )
    except ValueError as exc:
        st.error(f"HEADERS_INVALID: {exc}")
    except ERRORS as exc:
        show_error(exc)
    else:
        _flash(f"Added provider {made.name}")


def _edit_form(client: Client, stored: ProviderConfig) -> None:
    with st.form("settings_provider_edit"):
        st.markdown(f"**Edit {stored.name}**")
        url = st.text_input("Base URL", value=stored.base_url or "", key="settings_edit_url")
        key = st.text_input(
            "New API key (empty: keep the stored one)", type="password", key="settings_edit_key"
        )
        drop_key = st.checkbox("Remove the key", key="settings_edit_drop_key")
        models = st.text_area(
            "Models to offer", value="\n".join(stored.models), key="settings_edit_models"
        )
        shown = ", ".join(stored.headers) or "none"
        headers = st.text_area(
            f"Replace headers (stored: {shown}; empty: keep)", key="settings_edit_headers"
        )
        drop_headers = st.checkbox("Remove the headers", key="settings_edit_drop_headers")
        if not st.form_submit_button("Save provider"):
            return
    try:
        client.update_provider(
            stored.name,
            base_url=url.strip() or None,
            api_key="" if drop_key else (key or None),
            models=_lines(models),
            headers={} if drop_headers else (parse_headers(headers) or None),
        )
    except ValueError as exc:
        st.error(f"HEADERS_INVALID: {exc}")
    except ERRORS as exc:
        show_error(exc)
    else:
        _flash(f"Saved provider {stored.name}")


def _test(client: Client, name: str) -> None:
    try:
        found = client.test_provider(name)
    except ERRORS as exc:
        show_error(exc)
        return
    tested = dict(st.session_state.get(TESTED, {}))
    tested[name] = found.models
    st.session_state[TESTED] = tested
    listed = ", ".join(found.models) or "no models"
    st.success(f"{name} answered in {found.latency_ms:.0f} ms: {listed}")


def _providers(client: Client, providers: list[ProviderConfig]) -> None:
    st.markdown("**Providers**")
    st.dataframe([_provider_row(p) for p in providers], hide_index=True)
    names = list(dict.fromkeys(p.name for p in providers))
    picked = st.selectbox("Provider", names, key="settings_provider_pick")
    stored = next((p for p in providers if p.name == picked and p.source == "database"), None)
    test, delete = st.columns(2)
    if test.button("Test connection", key="settings_provider_test"):
        _test(client, picked)
    if stored is not None and delete.button("Delete provider", key="settings_provider_delete"):
        try:
            client.delete_provider(stored.name)
        except ERRORS as exc:
            show_error(exc)
        else:
            _flash(f"Deleted provider {stored.name}")
    if stored is not None:
        _edit_form(client, stored)
    else:
        st.caption(f"{picked} is set by the server's settings: change it there.")
    _add_form(client)


def _aliases(client: Client, aliases: list[AliasConfig], providers: list[ProviderConfig]) -> None:
    st.markdown("**Aliases** (apps name their model by alias, e.g. `model: default`)")
    st.dataframe([_alias_row(a) for a in aliases], hide_index=True)
    labels = model_labels(providers)
    options = known_models(providers) or ["local:smollm2"]
    alias = st.text_input("Alias", value="default", key="settings_alias_name")
    target = st.selectbox(
        "Points at",
        options,
        key="settings_alias_target",
        format_func=lambda m: f"{m} — {labels[m]}" if m in labels else m,
        help="Models of the providers above: those they list, and those a connection test found.",
    )
    if st.button("Set alias", key="settings_alias_set") and alias.strip():
        try:
            client.set_model_alias(alias.strip(), target)
        except ERRORS as exc:
            show_error(exc)
        else:
            _flash(f"Alias {alias.strip()} now points at {target}")
    stored = [a.name for a in aliases if a.source == "database"]
    if stored:
        doomed = st.selectbox("Stored alias", stored, key="settings_alias_pick")
        if st.button("Delete alias", key="settings_alias_delete"):
            try:
                client.delete_model_alias(doomed)
            except ERRORS as exc:
                show_error(exc)
            else:
                _flash(f"Deleted alias {doomed}")


def render(client: Client) -> None:
    """The Models section: providers, aliases, and how to use a real server."""
    st.subheader("Models")
    st.info(REAL_SERVER_HINT)
    flash = st.session_state.pop("settings_models_flash", None)
    if flash:
        st.success(flash)
    try:
        providers = client.list_providers()
        aliases = client.list_model_aliases()
    except ERRORS as exc:
        show_error(exc)
        return
    _providers(client, providers)
    _aliases(client, aliases, providers)
