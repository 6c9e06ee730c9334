"""Playground: chat with an app, the answer streamed as it arrives, then sources and usage."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from appforge.client import AppInfo, Client
from builder.connection import ERRORS, get_client, pick_app, show_error


def _state(uuid: str) -> dict[str, Any]:
    """This app's conversation in the browser session: its session id and messages."""
    chats: dict[str, dict[str, Any]] = st.session_state.setdefault("pg_chats", {})
    return chats.setdefault(uuid, {"session_id": None, "messages": []})


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
    if kind == "string":
        return st.text_area(label, value=str(default or ""), key=key, help=help_text, height=80)
    raw = st.text_input(f"{label} (JSON)", value=json.dumps(default), key=key, help=help_text)
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _message_text(declared: dict[str, Any], values: dict[str, Any]) -> str:
    """What the user said: the first required string input, else the whole input."""
    for name, spec in declared.items():
        if spec.get("type", "string") == "string" and spec.get("required"):
            return str(values.get(name, ""))
    return json.dumps(values)


def _show_steps(client: Client, run_id: str) -> None:
    """The run's steps (rendered prompts, timings, usage), fetched only when asked for."""
    if not st.toggle("Steps and prompts", key=f"pg_steps_{run_id}"):
        return
    try:
        record = client.get_run(run_id)
    except ERRORS as exc:
        show_error(exc)
        return
    for step in record.steps:
        st.markdown(f"**{step.get('id', '?')}** ({step.get('kind', '?')})")
        st.json(step, expanded=False)


def _show_extras(message: dict[str, Any]) -> None:
    sources = message.get("sources")
    if sources:
        with st.expander("Sources"):
            if isinstance(sources, list) and all(isinstance(x, str) for x in sources):
                st.markdown("\n".join(f"{n}. `{name}`" for n, name in enumerate(sources, 1)))
            else:
                st.json(sources)
    run = message.get("run")
    if run:
        usage = ", ".join(f"{k} {v}" for k, v in run.get("usage", {}).items())
        latency = run.get("latency_ms")
        took = f"{latency:.0f} ms" if isinstance(latency, int | float) else "?"
        st.caption(f"run {run['id']} · {run['status']} · {took} · {usage or 'no usage'}")
        _show_steps(get_client(), run["id"])


def _send(client: Client, app: AppInfo, values: dict[str, Any], chat: dict[str, Any]) -> None:
    declared = app.definition.get("input", {}) or {}
    user = {"role": "user", "text": _message_text(declared, values)}
    chat["messages"].append(user)
    with st.chat_message("user"):
        st.write(user["text"])
    answer: dict[str, Any] = {"role": "assistant", "text": "", "sources": None, "run": None}
    output: dict[str, Any] = {}
    with st.chat_message("assistant"):
        placeholder = st.empty()
        try:
            for chunk in client.stream(app.uuid, values, chat["session_id"]):
                chat["session_id"] = chunk.session_id
                if chunk.done:
                    answer["run"] = chunk.run.model_dump() if chunk.run else None
                    continue
                for key, piece in chunk.output.items():
                    if isinstance(piece, str):
                        output[key] = output.get(key, "") + piece
                    else:
                        output[key] = piece
                text = output.get("answer")
                if not isinstance(text, str):
                    text = next((v for v in output.values() if isinstance(v, str)), "")
                answer["text"] = text
                placeholder.markdown(text or "…")
        except ERRORS as exc:
            show_error(exc)
        answer["sources"] = output.get("sources")
        answer["output"] = output
        _show_extras(answer)
    chat["messages"].append(answer)


st.title("Playground")
client = get_client()
app = pick_app(client, "pg_app")
uuid = app.uuid
chat = _state(uuid)

left, right = st.columns([3, 1])
with right:
    if st.button("New session", key="pg_new"):
        chat["session_id"] = None
        chat["messages"] = []
    continue_id = st.text_input("Continue session id", key="pg_continue")
    if st.button("Continue", key="pg_continue_go") and continue_id:
        try:
            session = client.get_session(continue_id.strip())
        except ERRORS as exc:
            show_error(exc)
        else:
            chat["session_id"] = session.id
            chat["messages"] = []
            for turn in session.turns:
                chat["messages"].append({"role": "user", "text": json.dumps(turn.input)})
                out = turn.output
                text = out.get("answer") if isinstance(out.get("answer"), str) else json.dumps(out)
                chat["messages"].append(
                    {"role": "assistant", "text": text, "sources": out.get("sources")}
                )
    st.caption(f"Session: {chat['session_id'] or 'new'}")

with left:
    for message in chat["messages"]:
        with st.chat_message(message["role"]):
            st.write(message["text"])
            if message["role"] == "assistant":
                _show_extras(message)
    declared: dict[str, Any] = app.definition.get("input", {}) or {}
    with st.form(f"pg_form_{uuid}"):
        values = {name: _field(uuid, name, spec or {}) for name, spec in declared.items()}
        sent = st.form_submit_button("Send")
    if sent:
        _send(client, app, values, chat)
