"""Settings: the API base URL, API tokens (create shows the secret once; revoke), models."""

from __future__ import annotations

import streamlit as st

from builder.connection import ERRORS, api_url, get_client, show_error

st.title("Settings")

st.subheader("API")
url = st.text_input("API base URL", value=api_url(), key="settings_url")
if st.button("Use this URL", key="settings_url_save") and url:
    st.session_state["appforge_url"] = url.rstrip("/")
    st.rerun()
client = get_client()
try:
    health = client.health()
except ERRORS as exc:
    show_error(exc)
    st.stop()
st.caption(f"{api_url()}: {health.status}")
if st.button("Sign out", key="settings_sign_out"):
    st.session_state.pop("appforge_token", None)
    st.session_state.pop("_appforge_client", None)
    st.rerun()

st.subheader("API tokens")
with st.form("settings_token_form"):
    name = st.text_input("Name", key="settings_token_name")
    is_admin = st.checkbox("Admin", key="settings_token_admin")
    if st.form_submit_button("Create token") and name:
        try:
            made = client.create_token(name, is_admin=is_admin)
        except ERRORS as exc:
            show_error(exc)
        else:
            # Not kept in session state: the secret is shown in this run only.
            st.success(f"Token {made.name} created. Copy it now: it is not shown again.")
            st.code(made.token, language=None)
try:
    tokens = client.list_tokens()
except ERRORS as exc:
    show_error(exc)
    tokens = []
if tokens:
    st.dataframe(
        [{"name": t.name, "prefix": t.prefix, "admin": t.is_admin, "id": t.id} for t in tokens],
        hide_index=True,
    )
    names = {t.id: f"{t.name} ({t.prefix}…)" for t in tokens}
    doomed = st.selectbox(
        "Token", list(names), key="settings_revoke_pick", format_func=lambda i: names[i]
    )
    if st.button("Revoke", key="settings_revoke"):
        try:
            client.revoke_token(doomed)
        except ERRORS as exc:
            show_error(exc)
        else:
            st.session_state["settings_flash"] = f"Revoked {names[doomed]}"
            st.rerun()
flash = st.session_state.pop("settings_flash", None)
if flash:
    st.success(flash)

st.subheader("Models")
if st.button("Check reachability", key="settings_models"):
    try:
        models = client.list_models()
    except ERRORS as exc:
        show_error(exc)
    else:
        st.markdown("**Aliases**")
        st.dataframe(
            [
                {
                    "alias": a.name,
                    "target": a.target,
                    "reachable": a.reachable,
                    "error": a.error.message if a.error else "",
                }
                for a in models.aliases
            ],
            hide_index=True,
        )
        st.markdown("**Providers**")
        st.dataframe(
            [
                {
                    "provider": p.name,
                    "kind": p.kind,
                    "target": p.target,
                    "configured": p.configured,
                    "reachable": p.reachable,
                    "error": p.error.message if p.error else "",
                }
                for p in models.providers
            ],
            hide_index=True,
        )
