"""The playground's conversation: its messages, and how each one is drawn.

A message is a plain mapping kept in ``st.session_state`` (it must survive
reruns): ``{"role": "user", "text"}`` or ``{"role": "assistant", "text",
"status", "output", "run_id", "error"}`` where ``status`` is ``streaming``,
``done``, ``stopped`` or ``failed``. An answer's sources, timings and steps
come from its stored run (``GET /api/runs/<id>``), fetched once and kept.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from appforge.client import Client, RunRecord, SessionInfo
from builder.connection import ERRORS, show_error

# How many stored runs a browser session keeps at hand (oldest dropped first).
KEPT_RUNS = 200


def chat_input_name(definition: dict[str, Any]) -> str | None:
    """The input a chat message fills: ``openai.input`` if the app names one, else its
    first required string input, else its first string input (the server's rule for
    session previews, ``apps_yaml.inputs.message_input``)."""
    named = (definition.get("openai") or {}).get("input")
    if named:
        return str(named)
    declared: dict[str, Any] = definition.get("input") or {}
    strings = [n for n, spec in declared.items() if (spec or {}).get("type", "string") == "string"]
    required = [n for n in strings if (declared[n] or {}).get("required")]
    return next(iter(required or strings), None)


def answer_key(definition: dict[str, Any], output: dict[str, Any]) -> str | None:
    """The output key that is the answer: ``openai.output``, else ``answer``, else the
    first text output."""
    named = (definition.get("openai") or {}).get("output")
    if named and named in output:
        return str(named)
    if isinstance(output.get("answer"), str):
        return "answer"
    return next((k for k, v in output.items() if isinstance(v, str)), None)


def answer_text(definition: dict[str, Any], output: dict[str, Any]) -> str:
    key = answer_key(definition, output)
    value = output.get(key) if key is not None else None
    return value if isinstance(value, str) else ""


def user_text(given: dict[str, Any], main: str | None) -> str:
    """What the user said in a turn: the chat input, else the whole input as JSON."""
    value = given.get(main) if main is not None else None
    return value if isinstance(value, str) else json.dumps(given, ensure_ascii=False)


def session_messages(
    session: SessionInfo, definition: dict[str, Any], main: str | None
) -> list[dict[str, Any]]:
    """A stored session's turns as the messages of the chat, oldest first."""
    messages: list[dict[str, Any]] = []
    for turn in session.turns:
        messages.append({"role": "user", "text": user_text(turn.input, main)})
        messages.append(
            {
                "role": "assistant",
                "text": answer_text(definition, turn.output),
                "status": "done",
                "output": turn.output,
                "run_id": turn.run_id,
                "error": None,
            }
        )
    return messages


def stored_run(client: Client, run_id: str) -> RunRecord | None:
    """The stored run, fetched once per browser session (None: it could not be read)."""
    kept: dict[str, RunRecord] = st.session_state.setdefault("pg_runs", {})
    if run_id not in kept:
        try:
            kept[run_id] = client.get_run(run_id)
        except ERRORS as exc:
            show_error(exc)
            return None
        while len(kept) > KEPT_RUNS:
            kept.pop(next(iter(kept)))
    return kept[run_id]


def show_message(client: Client, definition: dict[str, Any], message: dict[str, Any]) -> None:
    """One message of the chat, with an answer's sources, run and steps."""
    with st.chat_message(message["role"]):
        if message["role"] == "user":
            st.markdown(message["text"])
            return
        if message["text"] or message["status"] != "stopped":
            st.markdown(message["text"] or "…")
        show_answer_details(client, definition, message)


def show_answer_details(
    client: Client, definition: dict[str, Any], message: dict[str, Any]
) -> None:
    """Below an answer: how it ended, its sources, other outputs, its run and steps."""
    if message["status"] == "stopped":
        st.caption("Stopped: the rest of this answer was not written.")
    elif message["status"] == "failed":
        st.error(message.get("error") or "the run failed")
    run_id = message.get("run_id")
    record = stored_run(client, run_id) if run_id else None
    output: dict[str, Any] = message.get("output") or {}
    _show_sources(record, output)
    key = answer_key(definition, output)
    others = {k: v for k, v in output.items() if k not in (key, "sources")}
    if others:
        st.json(others, expanded=False)
    if record is not None:
        _show_run(record)


def _documents(record: RunRecord | None) -> list[dict[str, Any]]:
    """What the run's retrieve steps found (as stored with each step)."""
    if record is None:
        return []
    found: list[dict[str, Any]] = []
    for step in record.steps:
        if step.get("kind") == "retrieve":
            found += [d for d in step.get("documents", []) if isinstance(d, dict)]
    return found


def _show_sources(record: RunRecord | None, output: dict[str, Any]) -> None:
    documents = _documents(record)
    names = output.get("sources")
    if not documents and not names:
        return
    with st.expander(f"Sources ({len(documents) or len(names or [])})"):
        if not documents:  # a run stored before steps kept their documents
            st.json(names, expanded=True)
            return
        for n, doc in enumerate(documents, 1):
            score = doc.get("score")
            shown = f"{score:.3f}" if isinstance(score, int | float) else "?"
            st.markdown(f"**[{n}] {doc.get('source') or doc.get('id')}** · score {shown}")
            st.text(str(doc.get("text", "")))
            metadata = doc.get("metadata") or {}
            st.caption(" · ".join(f"{k}: {json.dumps(v)}" for k, v in metadata.items()))


def _show_run(record: RunRecord) -> None:
    usage = record.usage
    tokens = f"{usage.get('prompt_tokens', 0)} in, {usage.get('completion_tokens', 0)} out"
    took = f"{record.latency_ms:.0f} ms" if record.latency_ms is not None else "?"
    first = f" · first token {record.ttft_ms:.0f} ms" if record.ttft_ms is not None else ""
    st.caption(f"run {record.id} · {record.status} · {took}{first} · {tokens}")
    if st.toggle("Steps", key=f"pg_steps_{record.id}"):
        for step in record.steps:
            _show_step(step)


def _show_step(step: dict[str, Any]) -> None:
    """One step: its kind, time and tokens; an llm step's rendered prompt, a retrieve
    step's query."""
    usage = step.get("usage") or {}
    latency = step.get("latency_ms")
    took = f"{latency:.0f} ms" if isinstance(latency, int | float) else "?"
    head = f"**{step.get('id', '?')}** · {step.get('kind', '?')} · {took}"
    if usage:
        head += f" · {usage.get('prompt_tokens', 0)} + {usage.get('completion_tokens', 0)} tokens"
    if step.get("model"):
        head += f" · {step['model']}"
    st.markdown(head)
    if step.get("kind") == "retrieve":
        st.caption(f"query: {step.get('query', '')} · {step.get('count', 0)} found")
        return
    for message in step.get("messages") or []:
        st.caption(str(message.get("role", "")))
        st.code(str(message.get("content", "")), language=None, wrap_lines=True)
    if step.get("kind") not in ("llm", "retrieve"):
        st.json(step, expanded=False)
