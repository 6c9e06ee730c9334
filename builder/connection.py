"""The one place the builder gets its API client, and shows API errors.

The client comes from ``st.session_state`` (``appforge_url``, ``appforge_token``
and, in tests, ``appforge_http``: a ready ``httpx.Client`` such as FastAPI's
``TestClient``), else from the environment (``APPFORGE_URL``, ``APPFORGE_TOKEN``),
else from the browser's sign-in cookie; with none of them a sign-in form asks for
a token (``builder.signin``). The server's ``APPFORGE_ADMIN_TOKEN`` is never used:
whoever can reach the builder would otherwise be an admin.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import streamlit as st

from appforge.client import ApiError, AppInfo, Client
from builder import signin

# What a page catches around an API call: shown with show_error, never as a trace.
ERRORS = (ApiError, httpx.HTTPError, TimeoutError)

DEFAULT_URL = "http://127.0.0.1:8000"


def api_url() -> str:
    """The API base URL: the session's choice, else ``APPFORGE_URL``, else the default."""
    url = st.session_state.get("appforge_url") or os.environ.get("APPFORGE_URL") or DEFAULT_URL
    return str(url).rstrip("/")


def _token() -> str | None:
    """The typed-in token (this tab), else ``APPFORGE_TOKEN``, else the session cookie."""
    token = st.session_state.get("appforge_token") or os.environ.get("APPFORGE_TOKEN")
    if token:
        return str(token)
    return signin.cookie_secret(api_url())


def get_client() -> Client:
    """The client for this browser session; stops the page with a sign-in form if the
    browser is not signed in."""
    signin.after_sign_in(api_url())
    token = _token()
    if token is not None and not signin.cookie_accepted(api_url(), token, _client_for):
        token = None
    if token is None:
        signin.form(api_url(), _client_for)
        st.stop()
    return _client_for(token)


def _client_for(token: str) -> Client:
    """A client with this credential, kept for the browser session."""
    url = api_url()
    key = (url, token)
    cached = st.session_state.get("_appforge_client")
    if cached is not None and cached[0] == key:
        client: Client = cached[1]
        return client
    client = Client(url, token, http=st.session_state.get("appforge_http"))
    st.session_state["_appforge_client"] = (key, client)
    return client


def problems(exc: ApiError) -> list[str]:
    """The validation problems of an error body, each ``line N, path: message``."""
    found: list[str] = []
    details: Any = exc.details
    errors = details.get("errors", []) if isinstance(details, dict) else []
    for problem in errors if isinstance(errors, list) else []:
        if not isinstance(problem, dict):
            continue
        line = problem.get("line")
        where = f"line {line}, " if line else ""
        path = problem.get("path") or problem.get("loc") or "document"
        found.append(f"{where}{path}: {problem.get('message') or problem.get('msg', '')}")
    return found


def api_error_text(exc: Exception) -> str:
    """An error of an API call as one line, ``CODE: message``."""
    if isinstance(exc, ApiError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return f"TIMEOUT: {exc}"
    return f"API_UNREACHABLE: {api_url()} did not answer ({type(exc).__name__})"


def show_error(exc: Exception) -> None:
    """An API error as ``CODE: message`` (and its problems); never a stack trace."""
    st.error(api_error_text(exc))
    if isinstance(exc, ApiError):
        for problem in problems(exc):
            st.error(problem)


def pick_app(client: Client, key: str) -> AppInfo:
    """A select box over the apps, keeping its choice when the page is left and opened
    again; stops the page with a hint when there are no apps."""
    try:
        apps = client.list_apps()
    except ERRORS as exc:
        show_error(exc)
        st.stop()
    if not apps:
        st.info("No apps yet: create one on the Apps page.")
        st.stop()
    by_uuid = {a.uuid: a for a in apps}
    # The widget's own state goes when the page is left: the choice is also kept
    # under a key of its own, and given back to the widget when the page returns.
    kept = f"{key}_chosen"
    if key not in st.session_state and st.session_state.get(kept) in by_uuid:
        st.session_state[key] = st.session_state[kept]
    uuid = st.selectbox(
        "App", list(by_uuid), key=key, format_func=lambda u: f"{by_uuid[u].name} ({u[:8]})"
    )
    st.session_state[kept] = uuid
    return by_uuid[uuid]
