"""The steps part of the app editor's form: each step's box (move, remove, id), the
llm step (model, prompt, history, params) and the retrieve step (datasources, query,
top_k, min_score, search mode and keyword weight, where), and the pickers that offer
models, datasources and managed prompts from the API.

Like the rest of the form (``app_editor``), each widget shows a value of the
document and writes it back into ``new`` only when the person changed it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

import streamlit as st

from appforge.client import Client, ModelsInfo
from builder import app_form as af
from builder.connection import ERRORS, show_error

MODELS_TTL = 60.0

# A structural edit (add, move, remove) run as a button's callback: (what, *args).
Change = Callable[..., None]


class Pickers:
    """What the pickers offer, asked of the API only when a step needs it."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @cached_property
    def models(self) -> ModelsInfo | None:
        """The configured models, asked at most once a minute (each answer checks
        reachability); None when the API did not answer."""
        cached = st.session_state.get("apps_models_cache")
        if cached is not None and time.monotonic() - cached[0] < MODELS_TTL:
            models: ModelsInfo = cached[1]
            return models
        try:
            models = self.client.list_models(timeout=2.0)
        except ERRORS as exc:
            show_error(exc)
            return None
        st.session_state["apps_models_cache"] = (time.monotonic(), models)
        return models

    @cached_property
    def datasources(self) -> list[str]:
        try:
            return [d.name for d in self.client.list_datasources()]
        except ERRORS as exc:
            show_error(exc)
            return []

    @cached_property
    def prompts(self) -> dict[str, str]:
        """``ref -> shown name`` of the managed prompts of every use case."""
        found: list[af.ManagedPrompt] = []
        try:
            for use_case in self.client.list_use_cases():
                for prompt in self.client.list_prompts(use_case.id):
                    found.append(af.ManagedPrompt(prompt.id, prompt.name, use_case.name))
        except ERRORS as exc:
            show_error(exc)
        return af.prompt_refs(found)


def select(label: str, options: list[str], shown: str, key: str, **kw: Any) -> str:
    """A select box showing the document's value even when it is not among the options."""
    options = af.with_current(options, shown)
    if shown not in options:
        options = [shown, *options]
    return str(st.selectbox(label, options, index=options.index(shown), key=key, **kw))


def _number(label: str, shown: float | int | None, key: str, lo: Any, hi: Any, step: Any) -> Any:
    """A number field; its bounds only when the document's value is inside them (the
    API, not the widget, reports a value out of range, at its line)."""
    inside = shown is None or lo <= shown <= hi
    bounds = {"min_value": lo, "max_value": hi} if inside else {}
    return st.number_input(label, value=shown, step=step, key=key, **bounds)


# --- the prompt of an llm step ----------------------------------------------------------


def _system_and_user(base: dict[str, Any], prompt: dict[str, Any], key: str, n: int) -> None:
    shown = af.text(base.get("system"))
    value = st.text_area(f"System prompt (step {n})", value=shown, key=key + "system")
    af.put(prompt, "system", shown, value, drop_empty=True)
    shown = af.text(base.get("user"))
    value = st.text_area(f"User prompt (step {n})", value=shown, key=key + "user")
    af.put(prompt, "user", shown, value)


def _messages(
    base: dict[str, Any], prompt: dict[str, Any], key: str, n: int, change: Change
) -> None:
    """Message rows (role, content, remove) and a button for one more."""
    i = n - 1
    messages = []
    for j, old in enumerate(af.items(base.get("messages"))):
        old = af.mapping(old)
        message, m = af.copy_doc(old), j + 1
        role_col, content_col, remove_col = st.columns([2, 7, 2], vertical_alignment="bottom")
        shown = af.text(old.get("role", "user"))
        with role_col:
            role = select(f"Role (step {n}, message {m})", af.ROLES, shown, f"{key}m{j}_role")
        af.put(message, "role", shown, role)
        shown = af.text(old.get("content"))
        content = content_col.text_area(
            f"Content (step {n}, message {m})", value=shown, key=f"{key}m{j}_content"
        )
        af.put(message, "content", shown, content)
        remove_col.button(
            f"Remove message {m} (step {n})",
            key=f"{key}m{j}_rm",
            on_click=change,
            args=("remove_message", i, j),
        )
        messages.append(message)
    af.put(prompt, "messages", af.items(base.get("messages")), messages)
    st.button(
        f"Add a message (step {n})", key=key + "m_add", on_click=change, args=("add_message", i)
    )


def _managed(
    base: dict[str, Any], prompt: dict[str, Any], key: str, n: int, pickers: Pickers
) -> None:
    """A managed prompt picked by name, and the label (or pinned version) to use."""
    refs = pickers.prompts
    shown = af.text(base.get("ref"))
    options = af.with_current(list(refs), shown)
    if shown not in options:
        options = [shown, *options]
    ref = st.selectbox(
        f"Managed prompt (step {n})",
        options,
        index=options.index(shown),
        key=key + "ref",
        format_func=lambda r: refs.get(r) or r or "(pick a prompt)",
    )
    af.put(prompt, "ref", shown, ref)
    if not refs:
        st.caption("No managed prompts yet: create one on the Prompts page.")
    shown = af.text(base.get("label", "production"))
    value = st.text_input(f"Prompt label (step {n})", value=shown, key=key + "label")
    af.put(prompt, "label", shown, value)
    if base.get("version") is not None:
        st.caption(f"Pinned to version {base['version']} in the YAML: the label is not used.")


def _prompt(
    step: dict[str, Any],
    new: dict[str, Any],
    key: str,
    n: int,
    pickers: Pickers,
    change: Change,
) -> None:
    """The prompt of an llm step: system/user, a message list, or a managed prompt."""
    shown = af.prompt_source(step.get("prompt"))
    source = st.radio(
        f"Prompt source (step {n})",
        af.PROMPT_SOURCES,
        index=af.PROMPT_SOURCES.index(shown),
        horizontal=True,
        key=key + "source",
    )
    if source != shown:
        new["prompt"] = af.prompt_for(source, step.get("prompt"))
    base = af.mapping(new.get("prompt"))
    prompt = af.copy_doc(base)
    key += f"p{af.PROMPT_SOURCES.index(source)}_"
    if source == "System and user":
        _system_and_user(base, prompt, key, n)
    elif source == "Messages":
        _messages(base, prompt, key, n, change)
    else:
        _managed(base, prompt, key, n, pickers)
    if prompt != base:
        new["prompt"] = prompt


# --- steps ------------------------------------------------------------------------------


def _llm(
    step: dict[str, Any],
    new: dict[str, Any],
    key: str,
    n: int,
    pickers: Pickers,
    change: Change,
) -> None:
    shown = af.text(step.get("model", "default"))
    options = af.model_options(pickers.models, shown)
    labels = af.model_labels(pickers.models)
    picked = select(
        f"Model (step {n})",
        options,
        shown,
        key + "model",
        format_func=lambda m: f"{m} — {labels[m]}" if m in labels else m,
    )
    af.put(new, "model", shown, picked)
    if picked in labels and pickers.models is not None and pickers.models.hint:
        st.caption(pickers.models.hint)
    _prompt(step, new, key, n, pickers, change)
    history, temperature, max_tokens = st.columns(3)
    shown_int = af.integer(step.get("history"), 0)
    with history:
        value = _number(f"History turns (step {n})", shown_int, key + "history", 0, 100, 1)
    af.put(new, "history", shown_int, value)
    base = af.mapping(step.get("params"))
    params = af.copy_doc(base)
    shown_float = af.number(base.get("temperature"))
    with temperature:
        value = _number(f"Temperature (step {n})", shown_float, key + "temp", 0.0, 2.0, 0.1)
    af.put(params, "temperature", shown_float, value, drop_empty=True)
    shown_max = base.get("max_tokens") if isinstance(base.get("max_tokens"), int) else None
    with max_tokens:
        value = _number(f"Max tokens (step {n})", shown_max, key + "max_tokens", 1, 32768, 1)
    af.put(params, "max_tokens", shown_max, value, drop_empty=True)
    if params != base:
        new["params"] = params


def _retrieve(
    step: dict[str, Any], new: dict[str, Any], key: str, n: int, pickers: Pickers
) -> None:
    current = [str(d) for d in af.items(step.get("datasources"))]
    options = af.with_current(pickers.datasources, current)
    picked = st.multiselect(
        f"Datasources (step {n})",
        options,
        default=current,
        key=key + "datasources",
        placeholder="Pick datasources",
    )
    af.put(new, "datasources", current, picked)
    shown = af.text(step.get("query"))
    af.put(new, "query", shown, st.text_input(f"Query (step {n})", value=shown, key=key + "query"))
    top_k, min_score = st.columns(2)
    shown_int = af.integer(step.get("top_k"), 4)
    with top_k:
        value = _number(f"Top k (step {n})", shown_int, key + "top_k", 1, 100, 1)
    af.put(new, "top_k", shown_int, value)
    shown_float = af.number(step.get("min_score"))
    with min_score:
        value = _number(f"Min score (step {n})", shown_float, key + "min_score", -1.0, 1.0, 0.05)
    af.put(new, "min_score", shown_float, value, drop_empty=True)
    _search_mode(step, new, key, n)
    where = step.get("where")
    shown = af.json_text(where)
    label = f"Where filter, JSON (step {n})"
    raw = st.text_area(label, value=shown, key=key + "where", help='e.g. {"md_product": "x"}')
    if raw != shown:
        value, error = af.parse_json_object(raw)
        if error:
            st.error(f"JSON_INVALID: {label}: {error}")
        else:
            af.put(new, "where", where, value, drop_empty=True)


# How a retrieve step searches; "" leaves ``mode`` out (the datasources' own search_mode).
MODES = ["", "hybrid", "vector", "keyword"]


def _search_mode(step: dict[str, Any], new: dict[str, Any], key: str, n: int) -> None:
    """The step's ``mode`` and, for hybrid search, its ``keyword_weight``."""
    mode_column, weight_column = st.columns(2)
    shown = af.text(step.get("mode"))
    with mode_column:
        mode = select(
            f"Search mode (step {n})",
            MODES,
            shown,
            key + "mode",
            format_func=lambda m: m or "the datasources' own",
            help="vector: embeddings; keyword: full-text; hybrid: both, fused by rank.",
        )
    af.put(new, "mode", shown, mode, drop_empty=True)
    shown_weight = af.number(step.get("keyword_weight"))
    with weight_column:
        weight = _number(
            f"Keyword weight (step {n})",
            0.5 if shown_weight is None else shown_weight,
            key + "keyword_weight",
            0.0,
            1.0,
            0.05,
        )
    if shown_weight is not None or weight != 0.5:  # 0.5 is the default: left out
        af.put(new, "keyword_weight", shown_weight, weight)


def _step(step: Any, i: int, count: int, key: str, pickers: Pickers, change: Change) -> Any:
    """Step ``i`` of ``count`` in its box (move, remove, id, its kind's fields); the step
    as the person left it."""
    n = i + 1
    if not isinstance(step, dict):
        st.warning(f"Step {n} is not a mapping: fix it in the YAML.")
        return step
    kind = step.get("kind")
    head, up, down, remove = st.columns([4, 2, 2, 2], vertical_alignment="bottom")
    head.markdown(f"**Step {n}** · `{kind}`")
    up.button(
        f"Up (step {n})",
        key=key + "up",
        disabled=i == 0,
        on_click=change,
        args=("move_step", i, -1),
    )
    down.button(
        f"Down (step {n})",
        key=key + "down",
        disabled=i == count - 1,
        on_click=change,
        args=("move_step", i, 1),
    )
    remove.button(f"Remove (step {n})", key=key + "rm", on_click=change, args=("remove_step", i))
    edited = af.copy_doc(step)
    shown = af.text(step.get("id"))
    af.put(edited, "id", shown, st.text_input(f"Id (step {n})", value=shown, key=key + "id"))
    if kind == "llm":
        _llm(step, edited, key, n, pickers, change)
    elif kind == "retrieve":
        _retrieve(step, edited, key, n, pickers)
    else:
        st.warning(
            f"Step {n} has kind '{kind}', which the form does not edit: "
            f"use one of {', '.join(af.STEP_KINDS)} in the YAML."
        )
    return edited


def steps(
    doc: dict[str, Any], new: dict[str, Any], k: str, pickers: Pickers, change: Change
) -> None:
    """The steps in order, each in its box, then a kind picker and "Add step"."""
    st.markdown("**Steps**")
    if "steps" in doc and not isinstance(doc["steps"], list):
        st.warning("steps must be a list: fix it in the YAML.")
        return
    old = af.items(doc.get("steps"))
    out: list[Any] = []
    for i, step in enumerate(old):
        with st.container(border=True):
            out.append(_step(step, i, len(old), f"{k}s{i}_", pickers, change))
    if out != old:
        new["steps"] = out
    kind_col, add_col = st.columns([3, 2], vertical_alignment="bottom")
    kind_col.selectbox("New step kind", af.STEP_KINDS, key=k + "new_kind")
    add_col.button(
        "Add step", key=k + "add_step", on_click=change, args=("add_step", k + "new_kind")
    )
