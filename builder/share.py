"""The Share panel of an opened app: how its end users reach it.

The chat page's link, the widget's snippet (Streamlit's code blocks have a copy
button), the public switch and the origins a browser may call the app from,
a runner key made for this app only, and a live preview of the page.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import streamlit as st
import streamlit.components.v1 as components

from appforge.client import AppInfo, Client
from builder.connection import ERRORS, api_url, show_error

RUNNER_KEY = "share_key_{uuid}"


def snippet(base: str, app: AppInfo, key: str | None) -> str:
    """The ``<script>`` tag that adds the widget to a page."""
    ui = app.definition.get("ui") or {}
    attrs = [f'src="{base}/embed.js"', f'data-app="{app.uuid}"']
    if key:
        attrs.append(f'data-key="{html.escape(key)}"')
    if isinstance(ui, dict) and ui.get("accent"):
        attrs.append(f'data-accent="{html.escape(str(ui["accent"]))}"')
    return "<script " + " ".join(attrs) + " async></script>"


def page_link(base: str, app: AppInfo, key: str | None) -> str:
    return f"{base}/chat/{app.uuid}" + (f"#key={key}" if key else "")


ORIGINS = "share_app_origins_{uuid}_{version}"


def origins_from(state: Any, app: AppInfo) -> list[str]:
    """The origins typed in the panel's app origins box, one per line."""
    text = str(state.get(ORIGINS.format(uuid=app.uuid, version=app.version), ""))
    return [line.strip() for line in text.splitlines() if line.strip()]


def panel(
    client: Client,
    app: AppInfo,
    public_switch: Callable[[], None],
    save_origins: Callable[[], None],
) -> None:
    """The panel itself; ``public_switch`` draws the app's public/private toggle and
    ``save_origins`` saves the origins typed in its box into the app."""
    base = api_url()
    with st.expander("Share", expanded=False):
        public_switch()
        _app_origins(app, save_origins)
        key = st.session_state.get(RUNNER_KEY.format(uuid=app.uuid))
        if not app.public and not key:
            st.info(
                "This app is private: its page and widget need a runner key. "
                "Make one below, or make the app public."
            )
        st.markdown("**Chat page**")
        st.code(page_link(base, app, key), language=None)
        st.markdown("**Widget**: paste this into any web page")
        st.code(snippet(base, app, key), language="html")
        _runner_key(client, app)
        if app.public or key:
            st.markdown("**Preview**")
            components.iframe(page_link(base, app, key), height=520)


def _app_origins(app: AppInfo, save_origins: Callable[[], None]) -> None:
    listed = app.definition.get("origins") or []
    with st.form(f"share_origins_form_{app.uuid}", clear_on_submit=False):
        st.text_area(
            "Browser origins that may call this app's API from their pages (CORS; one "
            "per line, e.g. https://shop.example). Its own chat page and widget need none.",
            value="\n".join(str(o) for o in listed),
            key=ORIGINS.format(uuid=app.uuid, version=app.version),
            height=80,
        )
        if st.form_submit_button("Save origins (a new version)"):
            save_origins()


def _runner_key(client: Client, app: AppInfo) -> None:
    st.markdown("**A runner key for this app**: it may only run this app, from these origins")
    with st.form(f"share_key_form_{app.uuid}", clear_on_submit=False):
        name = st.text_input("Key name", value=f"{app.name} widget", key=f"share_name_{app.uuid}")
        origins_text = st.text_area(
            "Origins the key may be used from (one per line, e.g. https://shop.example; "
            "empty: any)",
            key=f"share_origins_{app.uuid}",
            height=80,
        )
        made = st.form_submit_button("Create the key")
    if not made:
        return
    origins = [line.strip() for line in origins_text.splitlines() if line.strip()]
    try:
        token = client.create_token(
            name.strip() or f"{app.name} widget",
            role="runner",
            apps=[app.uuid],
            origins=origins or None,
        )
    except ERRORS as exc:
        show_error(exc)
        return
    st.session_state[RUNNER_KEY.format(uuid=app.uuid)] = token.token
    st.session_state["apps_flash"] = (
        f"Runner key '{token.name}' created: it is in the Share panel's link and snippet "
        "for this browser session only; keep it now"
    )
    st.rerun()
