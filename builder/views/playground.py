"""Playground: chat with an app. The question goes in the box at the bottom, the
answer streams in below the earlier turns (Stop ends it), with its sources and, on
demand, its steps. The side panel holds the app's other inputs and its sessions."""

from __future__ import annotations

import json
from collections.abc import Generator
from datetime import datetime
from typing import Any

import streamlit as st

from appforge.client import AppInfo, Client
from builder.connection import ERRORS, api_error_text, get_client, pick_app, show_error
from builder.transcript import (
    answer_text,
    chat_input_name,
    session_messages,
    show_answer_details,
    show_message,
)

LISTED_SESSIONS = 20


def _chat(uuid: str) -> dict[str, Any]:
    """This app's conversation in the browser session: its session id and messages.

    An answer still marked ``streaming`` was cut off by a rerun (Stop, or another
    click while it was written): its stream was closed, so it is stopped.
    """
    chats: dict[str, dict[str, Any]] = st.session_state.setdefault("pg_chats", {})
    chat = chats.setdefault(uuid, {"session_id": None, "messages": []})
    for message in chat["messages"]:
        if message.get("status") == "streaming":
            message["status"] = "stopped"
    return chat


def _field(uuid: str, name: str, spec: dict[str, Any]) -> Any:
    """One input widget from the app's declared input (type, default, description)."""
    kind = spec.get("type", "string")
    label = name + (" *" if spec.get("required") else "")
    help_text = spec.get("description") or None
    key = f"pg_in_{uuid}_{name}"
    default = spec.get("default")
    if kind == "integer":
        return int(st.number_input(label, value=int(default or 0), step=1, key=key, help=help_text))
    if kind == "number":
        return float(st.number_input(label, value=float(default or 0), key=key, help=help_text))
    if kind == "boolean":
        return st.checkbox(label, value=bool(default), key=key, help=help_text)
    if kind == "string" and spec.get("enum"):
        return st.selectbox(label, spec["enum"], key=key, help=help_text)
    if kind == "string":
        return st.text_input(label, value=str(default or ""), key=key, help=help_text)
    raw = st.text_area(f"{label} (JSON)", value=json.dumps(default), key=key, help=help_text)
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _side_inputs(uuid: str, declared: dict[str, Any], main: str | None) -> dict[str, Any]:
    """The app's inputs other than the one the chat box fills."""
    others = {name: spec or {} for name, spec in declared.items() if name != main}
    if not others:
        return {}
    st.subheader("Inputs")
    return {name: _field(uuid, name, spec) for name, spec in others.items()}


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _open_session(client: Client, app: AppInfo, session_id: str) -> None:
    """Load a stored session of this app into the chat; another app's is refused.

    A button's callback: it runs before the page, which then draws the session.
    """
    notice = None
    try:
        session = client.get_session(session_id)
    except ERRORS as exc:
        notice = api_error_text(exc)
    else:
        if session.app_uuid != app.uuid:
            notice = (
                f"SESSION_OF_ANOTHER_APP: session {session_id} belongs to another app; "
                "open it from that app's playground."
            )
        else:
            chat = _chat(app.uuid)
            chat["session_id"] = session.id
            main = chat_input_name(app.definition)
            chat["messages"] = session_messages(session, app.definition, main)
    st.session_state["pg_notice"] = notice


def _open_typed_session(client: Client, app: AppInfo) -> None:
    wanted = str(st.session_state.get("pg_session_id") or "").strip()
    if wanted:
        _open_session(client, app, wanted)


def _new_chat(uuid: str) -> None:
    chat = _chat(uuid)
    chat["session_id"] = None
    chat["messages"] = []


def _sessions_panel(client: Client, app: AppInfo, chat: dict[str, Any]) -> None:
    """New chat, this app's recent sessions (first question and time), open by id.

    Drawn last, so that it lists the session a message just started."""
    st.subheader("Sessions")
    notice = st.session_state.pop("pg_notice", None)
    if notice:
        st.error(notice)
    st.button(
        "New chat",
        key="pg_new",
        icon=":material/add:",
        use_container_width=True,
        on_click=_new_chat,
        args=(app.uuid,),
    )
    try:
        sessions = client.list_sessions(app.uuid, limit=LISTED_SESSIONS)
    except ERRORS as exc:
        show_error(exc)
        sessions = []
    for session in sessions:
        if not session.turns:
            continue  # its only run failed or was stopped: nothing to show
        question = " ".join((session.first_input or "").split())
        label = f"{question[:48]}{'…' if len(question) > 48 else ''} · {_when(session.created_at)}"
        st.button(
            label,
            key=f"pg_open_{session.id}",
            type="primary" if session.id == chat["session_id"] else "secondary",
            help=f"{session.turns} turns · session {session.id}",
            use_container_width=True,
            on_click=_open_session,
            args=(client, app, session.id),
        )
    with st.expander("Open a session by id"):
        st.text_input("Session id", key="pg_session_id")
        st.button("Open", key="pg_session_open", on_click=_open_typed_session, args=(client, app))
    st.caption(f"Session: {chat['session_id'] or 'new'}")


def _merge(output: dict[str, Any], pieces: dict[str, Any]) -> None:
    for key, piece in pieces.items():
        output[key] = output.get(key, "") + piece if isinstance(piece, str) else piece


def _stream(client: Client, app: AppInfo, inputs: dict[str, Any], chat: dict[str, Any]) -> None:
    """Ask for the answer and write it as it comes. Stop (or any click) reruns the
    page, which interrupts this at its next update: the stream is closed then, and
    the server cancels the run."""
    answer: dict[str, Any] = {"role": "assistant", "text": "", "status": "streaming"}
    answer.update(output={}, run_id=None, error=None)
    chat["messages"].append(answer)
    with st.chat_message("assistant"):
        placeholder = st.empty()
        placeholder.markdown("…")
        stop = st.empty()
        stop.button("Stop", key="pg_stop", icon=":material/stop_circle:")
        chunks = client.stream(app.uuid, inputs, chat["session_id"])
        try:
            for chunk in chunks:
                chat["session_id"] = chunk.session_id
                if chunk.run is not None:
                    answer["run_id"] = chunk.run.id
                _merge(answer["output"], chunk.output)
                text = answer_text(app.definition, answer["output"])
                if text != answer["text"]:
                    answer["text"] = text
                    placeholder.markdown(text)
            answer["status"] = "done"
        except ERRORS as exc:
            answer.update(status="failed", error=api_error_text(exc))
        finally:
            if isinstance(chunks, Generator):  # closing it ends the request: the run stops
                chunks.close()
        stop.empty()
        show_answer_details(client, app.definition, answer)


def _send(client: Client, app: AppInfo, text: str, values: dict[str, Any]) -> None:
    chat = _chat(app.uuid)
    main = chat_input_name(app.definition)
    inputs = {**values, main: text} if main is not None else values
    chat["messages"].append({"role": "user", "text": text})
    with st.chat_message("user"):
        st.markdown(text)
    _stream(client, app, inputs, chat)


st.title("Playground")
client = get_client()
with st.sidebar:
    app = pick_app(client, "pg_app")
chat = _chat(app.uuid)
declared: dict[str, Any] = app.definition.get("input") or {}
main = chat_input_name(app.definition)
with st.sidebar:
    values = _side_inputs(app.uuid, declared, main)
    run_inputs = main is None and st.button("Run with these inputs", key="pg_run_inputs")

if not chat["messages"]:
    st.caption(f"Ask {app.name} something: type below, the answer streams in here.")
for message in chat["messages"]:
    show_message(client, app.definition, message)
if main is None:
    hint = "This app takes no message: set its inputs in the side panel and run it there"
else:
    hint = f"Message {app.name}"
question = st.chat_input(hint, key="pg_question", disabled=main is None)
if question:
    _send(client, app, question, values)
elif run_inputs:
    _send(client, app, json.dumps(values, ensure_ascii=False), values)
with st.sidebar:
    _sessions_panel(client, app, chat)
