"""Signing in to the builder, and staying signed in across reloads and new tabs.

The token typed in is checked (``GET /api/tokens/me``) before it is accepted; a
refused one gets a message and the form stays. An accepted one starts a builder
session (``POST /api/builder/sessions``): the browser trades its one-time claim
for an http-only, SameSite=Strict cookie set by the API (cookies belong to the
host, whatever the port, so the builder receives it on every page load and
reads it with ``st.context.cookies``). The builder then calls the API with the
cookie's secret; the token itself stays in this tab's server-side state only and
never appears in a URL. Sign-out ends the session on the server and clears the
cookie. The whole exchange is described in ``api/builder_sessions.py``.

The browser's part is a ``fetch`` from a frame of the builder's own page, with
its credentials and ``no-cors`` (the API's answer is not read; its cookie is kept).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

import httpx
import streamlit as st

from appforge.client import ApiError, Client, builder_cookie_name

TOKEN = "appforge_token"  # the token typed in, for this tab
SESSION = "appforge_builder_session"  # the id of the builder session started in this tab
_CLAIM = "_appforge_claim"
_CLEAR = "_appforge_clear_cookie"
_REFUSED = "_appforge_cookie_refused"  # a cookie secret the API no longer accepts
_CHECKED = "_appforge_cookie_checked"  # the cookie secret the API accepted
_NOTE = "_appforge_signin_note"
_FAILURES = (ApiError, httpx.HTTPError, TimeoutError)

ClientFor = Callable[[str], Client]


def _cookie(url: str) -> str:
    return builder_cookie_name(urlsplit(url).port)


def _cookie_value(url: str) -> str | None:
    # Copied to a dict first: outside a browser session (AppTest) the cookies'
    # mapping answers any name with a stand-in object.
    value = dict(st.context.cookies).get(_cookie(url))
    return value if isinstance(value, str) and value else None


def cookie_secret(url: str) -> str | None:
    """The session secret this browser's cookie holds, unless it was refused."""
    value = _cookie_value(url)
    if value is None or value == st.session_state.get(_REFUSED):
        return None
    return value


def cookie_accepted(url: str, credential: str, client_for: ClientFor) -> bool:
    """False if ``credential`` is the cookie's session and the API refuses it (ended,
    expired, its token revoked): the browser must sign in again."""
    if credential != cookie_secret(url) or st.session_state.get(_CHECKED) == credential:
        return True
    try:
        client_for(credential).me()
    except ApiError as exc:
        if exc.status != 401:
            return True  # not about the sign-in: the page shows it
        st.session_state[_REFUSED] = credential
        st.session_state[_NOTE] = f"Your sign-in has ended ({exc.code}): sign in again."
        return False
    except (httpx.HTTPError, TimeoutError):
        return True  # the page shows that the API does not answer
    st.session_state[_CHECKED] = credential
    return True


def form(url: str, client_for: ClientFor) -> None:
    """The sign-in form; a token is accepted only once the API has accepted it."""
    if st.session_state.pop(_CLEAR, False):
        _browser_post(url + "/builder/session/end", {})
    st.info(f"Sign in to the appforge API at {url} with an API token.")
    note = st.session_state.pop(_NOTE, None)
    if note:
        st.warning(note)
    with st.form("login"):
        token = st.text_input("API token", type="password", key="signin_token")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        _sign_in(url, token.strip(), client_for)


def _sign_in(url: str, token: str, client_for: ClientFor) -> None:
    if not token:
        st.error("Type an API token first.")
        return
    client = client_for(token)
    try:
        me = client.me()
    except ApiError as exc:
        why = "Sign-in refused" if exc.status in (401, 403) else "The API answered"
        st.error(f"{why}: {exc.code}: {exc.message}. Check the token and try again.")
        return
    except (httpx.HTTPError, TimeoutError) as exc:
        st.error(f"API_UNREACHABLE: {url} did not answer ({type(exc).__name__})")
        return
    st.session_state[TOKEN] = token
    st.session_state.pop(_REFUSED, None)
    try:
        started = client.create_builder_session()
    except _FAILURES as exc:
        code = exc.code if isinstance(exc, ApiError) else type(exc).__name__
        st.session_state[_NOTE] = (
            f"Signed in as {me.name} in this tab only ({code}): a reload signs you out."
        )
    else:
        st.session_state[SESSION] = started.id
        st.session_state[_CLAIM] = started.claim
        st.session_state[_NOTE] = f"Signed in as {me.name} ({me.role})."
    st.rerun()


def after_sign_in(url: str) -> None:
    """Right after a sign-in: the browser trades the claim for its cookie, and the
    page says who is signed in."""
    claim = st.session_state.pop(_CLAIM, None)
    if claim:
        _browser_post(url + "/builder/session", {"claim": claim})
    note = st.session_state.get(_NOTE)
    if note and st.session_state.get(TOKEN):
        st.session_state.pop(_NOTE)
        st.toast(note)


def sign_out(url: str, client: Client) -> None:
    """End the session on the server, forget the token, clear the browser's cookie
    (whose post to the API also ends the session it holds)."""
    session_id = st.session_state.pop(SESSION, None)
    secret = cookie_secret(url)
    try:
        if session_id:
            client.end_builder_session(session_id)
        elif secret and client.token == secret:
            client.end_builder_session()
    except _FAILURES:
        pass  # already ended; the cookie is cleared all the same
    if secret:
        st.session_state[_REFUSED] = secret  # this tab read it at load: no longer used
    for key in (TOKEN, "_appforge_client", _CHECKED):
        st.session_state.pop(key, None)
    st.session_state[_CLEAR] = True
    st.session_state[_NOTE] = "Signed out."
    st.rerun()


def _browser_post(url: str, fields: dict[str, str]) -> None:
    """A form post the browser makes with its cookies, from an invisible frame."""
    target = json.dumps(url).replace("</", "<\\/")
    body = json.dumps(urlencode(fields)).replace("</", "<\\/")
    st.iframe(
        "<script>fetch(" + target + ", {method: 'POST', mode: 'no-cors', "
        "credentials: 'include', headers: {'Content-Type': "
        "'application/x-www-form-urlencoded'}, body: " + body + "});</script>",
        height=1,
    )
