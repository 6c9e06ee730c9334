"""The app editor: a form and a YAML editor side by side, kept in sync.

The document dict in ``st.session_state`` is the source of truth. Editing the form
rewrites the YAML text from the document; editing the YAML (or pressing "Apply to
form") parses it into the document and redraws the form. Form widgets carry a
generation number in their keys: when the document changes from outside the form
(YAML applied, a step added, moved or removed) the generation moves on and every
widget is drawn afresh from the document.

``scope`` names one editor's state (``<scope>_doc``, ``<scope>_gen``,
``<scope>_problems``); ``yaml_key`` is the key of its YAML text area.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from appforge.client import ApiError, Client
from builder import app_form as af
from builder.connection import ERRORS, show_error

MODELS_TTL = 60.0
YAML_LABEL = "App YAML"


# --- state ----------------------------------------------------------------------------


def _doc(scope: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = st.session_state.get(f"{scope}_doc")
    return doc


def _bump(scope: str) -> None:
    st.session_state[f"{scope}_gen"] = st.session_state.get(f"{scope}_gen", 0) + 1


def load(scope: str, yaml_key: str, text: str) -> None:
    """Put a YAML text in the editor (before its widgets are drawn, or in a callback)."""
    st.session_state[yaml_key] = text
    doc, problems = af.parse(text)
    st.session_state[f"{scope}_doc"] = doc
    st.session_state[f"{scope}_problems"] = problems
    _bump(scope)


def loaded(scope: str, yaml_key: str) -> bool:
    return yaml_key in st.session_state and f"{scope}_doc" in st.session_state


def forget(scope: str, yaml_key: str) -> None:
    """Drop the editor's state; the next draw loads the app again."""
    for key in (yaml_key, f"{scope}_doc", f"{scope}_problems"):
        st.session_state.pop(key, None)
    _bump(scope)


def apply_yaml(scope: str, yaml_key: str) -> None:
    """Parse the YAML text into the document; keep the problems (with lines) if it fails."""
    doc, problems = af.parse(st.session_state.get(yaml_key, ""))
    st.session_state[f"{scope}_problems"] = problems
    if doc is not None:
        st.session_state[f"{scope}_doc"] = doc
        _bump(scope)


def _commit(scope: str, yaml_key: str, doc: dict[str, Any], redraw: bool) -> None:
    st.session_state[f"{scope}_doc"] = doc
    st.session_state[yaml_key] = af.dump(doc)
    st.session_state[f"{scope}_problems"] = []
    if redraw:
        _bump(scope)


def _change(scope: str, yaml_key: str, change: str, *args: Any) -> None:
    """A structural edit from a button (runs as its callback, before the page is drawn)."""
    old = _doc(scope)
    if old is None:
        return
    doc = af.copy_doc(old)
    steps = af.items(doc.get("steps"))
    if change == "add_step":
        kind = st.session_state.get(args[0], "llm")
        doc["steps"] = [*steps, af.new_step(kind, steps)]
    elif change == "remove_step":
        doc["steps"] = [s for i, s in enumerate(steps) if i != args[0]]
    elif change == "move_step":
        doc["steps"] = af.moved(steps, args[0], args[1])
    elif change in ("add_input", "add_output"):
        field = "input" if change == "add_input" else "output"
        rows = af.mapping(doc.get(field))
        name = af.unique_name(field if field == "input" else "result", set(rows))
        value: Any = {"type": "string"} if field == "input" else ""
        doc[field] = {**rows, name: value}
    elif change in ("remove_input", "remove_output"):
        field = "input" if change == "remove_input" else "output"
        rows = af.mapping(doc.get(field))
        doc[field] = {k: v for i, (k, v) in enumerate(rows.items()) if i != args[0]}
    elif change == "add_message":
        prompt = steps[args[0]]["prompt"]
        prompt["messages"] = [*af.items(prompt.get("messages")), {"role": "user", "content": ""}]
    elif change == "remove_message":
        prompt = steps[args[0]]["prompt"]
        prompt["messages"] = [m for j, m in enumerate(prompt["messages"]) if j != args[1]]
    _commit(scope, yaml_key, doc, redraw=True)


# --- what pickers offer ---------------------------------------------------------------


def _models(client: Client) -> dict[str, Any]:
    """The configured models, asked at most once a minute (each answer checks reachability)."""
    cached = st.session_state.get("apps_models_cache")
    if cached is not None and time.monotonic() - cached[0] < MODELS_TTL:
        models: dict[str, Any] = cached[1]
        return models
    try:
        models = client.list_models(timeout=2.0)
    except ERRORS as exc:
        show_error(exc)
        return {}
    st.session_state["apps_models_cache"] = (time.monotonic(), models)
    return models


def _datasources(client: Client) -> list[str]:
    try:
        return [str(d["name"]) for d in client.list_datasources()]
    except ERRORS as exc:
        show_error(exc)
        return []


def _managed_prompts(client: Client) -> dict[str, str]:
    found: list[dict[str, Any]] = []
    try:
        for use_case in client.list_use_cases():
            for prompt in client.list_prompts(use_case["id"]):
                found.append({**prompt, "use_case": use_case["name"]})
    except ERRORS as exc:
        show_error(exc)
    return af.prompt_refs(found)


class _Pickers:
    """What the pickers offer, asked of the API only when a step needs it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._cache: dict[str, Any] = {}

    def get(self, what: str) -> Any:
        if what not in self._cache:
            load = {"models": _models, "datasources": _datasources, "prompts": _managed_prompts}
            self._cache[what] = load[what](self.client)
        return self._cache[what]


# --- the form -------------------------------------------------------------------------


def _select(label: str, options: list[str], shown: str, key: str, **kw: Any) -> str:
    """A select box showing the document's value even when it is not among the options."""
    options = af.with_current(options, shown)
    if shown not in options:
        options = [shown, *options]
    return str(st.selectbox(label, options, index=options.index(shown), key=key, **kw))


def _app_fields(doc: dict[str, Any], new: dict[str, Any], k: str) -> None:
    shown = af.text(doc.get("name"))
    af.put(new, "name", shown, st.text_input("App name", value=shown, key=k + "name"))
    shown = af.text(doc.get("description"))
    value = st.text_input("Description", value=shown, key=k + "description")
    af.put(new, "description", shown, value)
    left, right = st.columns(2)
    shown = af.text(doc.get("type", "text"))
    with left:
        kind = _select("App type", ["chat", "text"], shown, k + "type")
    af.put(new, "type", shown, kind)
    public = bool(doc.get("public", False))
    checked = right.checkbox(
        "Public", value=public, key=k + "public", help="Runnable without a token"
    )
    af.put(new, "public", public, checked)


def _number(label: str, shown: float | int | None, key: str, lo: Any, hi: Any, step: Any) -> Any:
    """A number field; its bounds only when the document's value is inside them (the
    API, not the widget, reports a value out of range, at its line)."""
    inside = shown is None or lo <= shown <= hi
    bounds = {"min_value": lo, "max_value": hi} if inside else {}
    return st.number_input(label, value=shown, step=step, key=key, **bounds)


def _inputs(doc: dict[str, Any], new: dict[str, Any], k: str, change: Any) -> None:
    st.markdown("**Inputs**")
    rows: list[tuple[str, Any]] = []
    for i, (name, old) in enumerate(af.input_rows(doc)):
        n, key = i + 1, f"{k}in{i}_"
        spec = af.copy_doc(old)
        box = st.container(border=True)
        top = box.columns([3, 2])
        new_name = top[0].text_input(f"Input name (row {n})", value=name, key=key + "name")
        shown = af.text(old.get("type", "string"))
        with top[1]:
            value = _select(f"Input type (row {n})", af.INPUT_TYPES, shown, key + "type")
        af.put(spec, "type", shown, value)
        shown = af.text(old.get("description"))
        value = box.text_input(f"Input description (row {n})", value=shown, key=key + "desc")
        af.put(spec, "description", shown, value)
        bottom = box.columns(2, vertical_alignment="center")
        required = bool(old.get("required", False))
        checked = bottom[0].checkbox(f"Required (row {n})", value=required, key=key + "req")
        af.put(spec, "required", required, checked)
        bottom[1].button(
            f"Remove input {n}", key=key + "rm", on_click=change, args=("remove_input", i)
        )
        rows.append((new_name.strip() or name, spec))
    inputs = af.rows_to_mapping(rows)
    if len(inputs) < len(rows):
        st.warning("Two inputs have the same name: only the last one is kept.")
    if inputs != af.mapping(doc.get("input")):
        new["input"] = inputs
    st.button("Add an input", key=k + "in_add", on_click=change, args=("add_input",))


def _prompt(
    step: dict[str, Any], new: dict[str, Any], key: str, n: int, pickers: _Pickers, change: Any
) -> None:
    """The prompt of an llm step: system/user, a message list, or a managed prompt."""
    i = n - 1
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
        shown = af.text(base.get("system"))
        value = st.text_area(f"System prompt (step {n})", value=shown, key=key + "system")
        af.put(prompt, "system", shown, value, drop_empty=True)
        shown = af.text(base.get("user"))
        value = st.text_area(f"User prompt (step {n})", value=shown, key=key + "user")
        af.put(prompt, "user", shown, value)
    elif source == "Messages":
        messages = []
        for j, old in enumerate(af.items(base.get("messages"))):
            old = af.mapping(old)
            message, m = af.copy_doc(old), j + 1
            role_col, content_col, remove_col = st.columns([2, 7, 2], vertical_alignment="bottom")
            shown = af.text(old.get("role", "user"))
            with role_col:
                role = _select(f"Role (step {n}, message {m})", af.ROLES, shown, f"{key}m{j}_role")
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
    else:
        refs: dict[str, str] = pickers.get("prompts")
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
    if prompt != base:
        new["prompt"] = prompt


def _llm(
    step: dict[str, Any], new: dict[str, Any], key: str, n: int, pickers: _Pickers, change: Any
) -> None:
    shown = af.text(step.get("model", "default"))
    options = af.model_options(pickers.get("models"), shown)
    af.put(new, "model", shown, _select(f"Model (step {n})", options, shown, key + "model"))
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
    step: dict[str, Any], new: dict[str, Any], key: str, n: int, pickers: _Pickers
) -> None:
    current = [str(d) for d in af.items(step.get("datasources"))]
    options = af.with_current(pickers.get("datasources"), current)
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


def _steps(
    doc: dict[str, Any], new: dict[str, Any], k: str, pickers: _Pickers, change: Any
) -> None:
    st.markdown("**Steps**")
    if "steps" in doc and not isinstance(doc["steps"], list):
        st.warning("steps must be a list: fix it in the YAML.")
        return
    steps = af.items(doc.get("steps"))
    out: list[Any] = []
    for i, step in enumerate(steps):
        n, key = i + 1, f"{k}s{i}_"
        with st.container(border=True):
            if not isinstance(step, dict):
                st.warning(f"Step {n} is not a mapping: fix it in the YAML.")
                out.append(step)
                continue
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
                disabled=i == len(steps) - 1,
                on_click=change,
                args=("move_step", i, 1),
            )
            remove.button(
                f"Remove (step {n})", key=key + "rm", on_click=change, args=("remove_step", i)
            )
            edited = af.copy_doc(step)
            shown = af.text(step.get("id"))
            af.put(
                edited, "id", shown, st.text_input(f"Id (step {n})", value=shown, key=key + "id")
            )
            if kind == "llm":
                _llm(step, edited, key, n, pickers, change)
            elif kind == "retrieve":
                _retrieve(step, edited, key, n, pickers)
            else:
                st.warning(
                    f"Step {n} has kind '{kind}', which the form does not edit: "
                    f"use one of {', '.join(af.STEP_KINDS)} in the YAML."
                )
            out.append(edited)
    if out != steps:
        new["steps"] = out
    kind_col, add_col = st.columns([3, 2], vertical_alignment="bottom")
    kind_col.selectbox("New step kind", af.STEP_KINDS, key=k + "new_kind")
    add_col.button(
        "Add step", key=k + "add_step", on_click=change, args=("add_step", k + "new_kind")
    )


def _output(doc: dict[str, Any], new: dict[str, Any], k: str, change: Any) -> None:
    st.markdown("**Output** (each key is an output of the run)")
    rows: list[tuple[str, Any]] = []
    output = af.mapping(doc.get("output"))
    for i, (name, template) in enumerate(output.items()):
        n, key = i + 1, f"{k}out{i}_"
        name_col, template_col, remove_col = st.columns([3, 6, 2], vertical_alignment="bottom")
        new_name = name_col.text_input(f"Output key (row {n})", value=str(name), key=key + "key")
        shown = af.text(template)
        value = template_col.text_input(f"Output template (row {n})", value=shown, key=key + "tpl")
        rows.append((new_name.strip() or str(name), template if value == shown else value))
        remove_col.button(
            f"Remove output {n}", key=key + "rm", on_click=change, args=("remove_output", i)
        )
    mapped = af.rows_to_mapping(rows)
    if len(mapped) < len(rows):
        st.warning("Two outputs have the same key: only the last one is kept.")
    if mapped != output:
        new["output"] = mapped
    st.button("Add an output", key=k + "out_add", on_click=change, args=("add_output",))


def render(client: Client, scope: str, yaml_key: str) -> None:
    """The form and the YAML editor of one app document, side by side."""
    gen = st.session_state.setdefault(f"{scope}_gen", 0)
    k = f"af_{scope}_{gen}_"

    def change(what: str, *args: Any) -> None:
        _change(scope, yaml_key, what, *args)

    problems: list[af.Problem] = st.session_state.get(f"{scope}_problems") or []
    form_col, yaml_col = st.columns(2, gap="large")
    with form_col:
        st.markdown("#### Form")
        doc = _doc(scope)
        if doc is None:
            st.info("The YAML does not parse: fix it, then the form shows the app.")
        else:
            if problems:
                st.warning("The YAML has problems: the form shows the last version that parsed.")
            new = af.copy_doc(doc)
            _app_fields(doc, new, k)
            _inputs(doc, new, k, change)
            _steps(doc, new, k, _Pickers(client), change)
            _output(doc, new, k, change)
            if new != doc:
                _commit(scope, yaml_key, new, redraw=False)
                problems = []
    with yaml_col:
        st.markdown("#### YAML")
        text = st.text_area(
            YAML_LABEL, key=yaml_key, height=700, on_change=apply_yaml, args=(scope, yaml_key)
        )
        st.button(
            "Apply to form", key=f"{scope}_apply", on_click=apply_yaml, args=(scope, yaml_key)
        )
        for problem in problems:
            st.error(str(problem))
        lines = [p.line for p in problems if p.line]
        if lines:
            st.code(af.excerpt(text, lines), language=None)


def check_button(client: Client, yaml_key: str, key: str) -> None:
    """A button that runs every save-time check on the YAML, saving nothing."""
    if not st.button("Check without saving", key=key):
        return
    text = st.session_state[yaml_key]
    try:
        client.validate_app(text)
    except ERRORS as exc:
        show_api_error(exc, text)
    else:
        st.success("No problems: it can be saved.")


def show_api_error(exc: Exception, text: str) -> None:
    """An API error; for an invalid app, also the YAML lines its problems are at."""
    show_error(exc)
    if not isinstance(exc, ApiError) or not isinstance(exc.details, dict):
        return
    lines = sorted(
        {
            p["line"]
            for p in af.items(exc.details.get("errors"))
            if isinstance(p, dict) and isinstance(p.get("line"), int)
        }
    )
    if lines:
        st.code(af.excerpt(text, lines), language=None)
