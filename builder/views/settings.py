"""Settings: the API base URL; API tokens with their role, apps, origins, expiry and rate
limit (create shows the secret once; revoke); the models: providers and aliases
(``builder.model_settings``), and which answer now."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import streamlit as st

from appforge.client import TokenInfo, TokenRole
from builder import model_settings, signin
from builder.connection import ERRORS, api_url, get_client, show_error

ROLES: list[TokenRole] = ["admin", "editor", "viewer", "runner"]
ROLE_HELP = (
    "admin: everything; editor: apps, datasources, prompts, runs; viewer: reads them; "
    "runner: runs apps and reads its own sessions and runs by id (lists none)"
)

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
    signin.sign_out(api_url(), client)

st.subheader("API tokens")
try:
    app_names = {a.uuid: a.name for a in client.list_apps(limit=500)}
except ERRORS as exc:
    show_error(exc)
    app_names = {}


def _expiry(day: date | None) -> datetime | None:
    """A token picked to expire on ``day`` stops working at its start (UTC)."""
    return None if day is None else datetime.combine(day, time(0), UTC)


def _token_form() -> None:
    """Create a token: role, apps, origins, expiry and rate; its secret is shown once."""
    with st.form("settings_token_form"):
        name = st.text_input("Name", key="settings_token_name")
        role = st.selectbox("Role", ROLES, index=1, key="settings_token_role", help=ROLE_HELP)
        apps = st.multiselect(
            "Apps (none: every app)",
            list(app_names),
            format_func=lambda u: f"{app_names[u]} ({u[:8]})",
            key="settings_token_apps",
        )
        origins = st.text_area(
            "Browser origins (runner keys; one per line, e.g. https://shop.example)",
            key="settings_token_origins",
        )
        expires = st.date_input(
            "Expires on (UTC; empty: never)", value=None, key="settings_token_expires"
        )
        rate = st.text_input(
            "Rate limit (e.g. 60/minute; empty: the server's)", key="settings_token_rate"
        )
        if not (st.form_submit_button("Create token") and name):
            return
    try:
        made = client.create_token(
            name,
            role=role,
            apps=apps or None,
            origins=[o.strip() for o in origins.splitlines() if o.strip()] or None,
            expires_at=_expiry(expires),
            rate_limit=rate.strip() or None,
        )
    except ERRORS as exc:
        show_error(exc)
    else:
        # Not kept in session state: the secret is shown in this run only.
        st.success(f"Token {made.name} created. Copy it now: it is not shown again.")
        st.code(made.token, language=None)


def _token_row(t: TokenInfo) -> dict[str, Any]:
    apps = "all" if t.apps is None else ", ".join(app_names.get(u, u) for u in t.apps)
    return {
        "name": t.name,
        "prefix": t.prefix,
        "role": t.role,
        "apps": apps,
        "origins": "any" if t.origins is None else ", ".join(t.origins),
        "expires": t.expires_at,
        "rate limit": t.rate_limit or "server's",
        "last used": t.last_used_at,
        "revoked": t.revoked_at,
        "id": t.id,
    }


_token_form()
try:
    tokens = client.list_tokens()
except ERRORS as exc:
    show_error(exc)
    tokens = []
if tokens:
    st.dataframe([_token_row(t) for t in tokens], hide_index=True)
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

model_settings.render(client)
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
                    "about": a.description or "",
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
