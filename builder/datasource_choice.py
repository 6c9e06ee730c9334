"""A template's datasources: each one the app names that does not exist is asked for.

The person picks one of their datasources, or creates one (under the template's
name or another), and the YAML is changed to name it, comments kept. Until every
datasource the app names exists, the app cannot be created: the builder never
saves a name that does not exist.
"""

from __future__ import annotations

import streamlit as st

from appforge.client import ApiError, Client
from builder import app_editor
from builder import app_form as af
from builder.connection import ERRORS, show_error

CREATE = "Create a new datasource"
TYPES = ["mixed", "text", "url", "file"]


def resolved(client: Client, scope: str, yaml_key: str) -> bool:
    """Ask for each datasource the editor's app names that does not exist; True when
    none is missing (or the YAML does not parse: the editor shows that)."""
    doc = st.session_state.get(f"{scope}_doc")
    if not isinstance(doc, dict):
        return True
    try:
        sources = client.list_datasources()
    except ERRORS as exc:
        show_error(exc)
        return False
    existing = {d.name for d in sources} | {d.uuid for d in sources}
    missing = af.missing_datasources(doc, existing)
    for n, name in enumerate(missing):
        _ask(client, scope, yaml_key, name, sorted(d.name for d in sources), n)
    return not missing


def _ask(client: Client, scope: str, yaml_key: str, name: str, names: list[str], n: int) -> None:
    key = f"{scope}_ds_{n}"
    with st.container(border=True):
        st.warning(f"This app searches the datasource '{name}', which does not exist yet.")
        choice = st.selectbox(f"Datasource for '{name}'", [*names, CREATE], key=key + "_pick")
        new_name, new_type = name, "mixed"
        if choice == CREATE:
            left, right = st.columns([3, 1])
            new_name = left.text_input("New datasource name", value=name, key=key + "_name")
            new_type = str(right.selectbox("Type", TYPES, key=key + "_type"))
        label = f"Create '{new_name.strip() or name}' and use it" if choice == CREATE else "Use it"
        # A callback: it runs before the next run draws the editor it changes.
        st.button(
            label,
            key=key + "_use",
            on_click=_use,
            args=(client, scope, yaml_key, name, choice, new_name.strip() or name, new_type, key),
        )
        error = st.session_state.pop(key + "_error", None)
        if error:
            st.error(error)


def _use(
    client: Client,
    scope: str,
    yaml_key: str,
    name: str,
    choice: str,
    new_name: str,
    kind: str,
    key: str,
) -> None:
    """Point the app at the chosen datasource, creating it first if asked."""
    picked = choice
    if choice == CREATE:
        try:
            picked = client.create_datasource(new_name, kind).name
        except ERRORS as exc:
            st.session_state[key + "_error"] = (
                f"{exc.code}: {exc.message}"
                if isinstance(exc, ApiError)
                else f"API_UNREACHABLE: {type(exc).__name__}"
            )
            return
        st.session_state["apps_flash"] = f"Created datasource {picked}: add entries to it"
    doc = af.with_datasource(st.session_state[f"{scope}_doc"], name, picked)
    app_editor.load(scope, yaml_key, af.dump(doc, over=st.session_state.get(yaml_key)))
