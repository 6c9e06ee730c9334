"""The app editor: a form and a YAML editor side by side, kept in sync.

The document dict in ``st.session_state`` is the source of truth. Editing the form
rewrites the YAML text from the document; editing the YAML (or pressing "Apply to
form") parses it into the document and redraws the form. Form widgets carry a
generation number in their keys: when the document changes from outside the form
(YAML applied, a step added, moved or removed) the generation moves on and every
widget is drawn afresh from the document.

``scope`` names one editor's state (``<scope>_doc``, ``<scope>_gen``,
``<scope>_problems``); ``yaml_key`` is the key of its YAML text area. The steps
part of the form is drawn by ``step_editor``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from appforge.client import ApiError, Client
from builder import app_form as af
from builder import renames, step_editor
from builder.connection import ERRORS, show_error
from builder.step_editor import Change, select

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
    # Written over the text it was edited from (when that parses): comments stay.
    over = None if st.session_state.get(f"{scope}_problems") else st.session_state.get(yaml_key)
    st.session_state[yaml_key] = af.dump(doc, over=over)
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


# --- the form -------------------------------------------------------------------------


def _app_fields(doc: dict[str, Any], new: dict[str, Any], k: str) -> None:
    shown = af.text(doc.get("name"))
    af.put(new, "name", shown, st.text_input("App name", value=shown, key=k + "name"))
    shown = af.text(doc.get("description"))
    value = st.text_input("Description", value=shown, key=k + "description")
    af.put(new, "description", shown, value)
    shown = af.text(doc.get("type", "text"))
    kind = select("App type", ["chat", "text"], shown, k + "type")
    af.put(new, "type", shown, kind)
    # Public or private is set in one place: the Share panel of a saved app.


def _ui_fields(doc: dict[str, Any], new: dict[str, Any], k: str) -> None:
    """The ``ui:`` block: how the chat page and the widget look (empty fields: left out)."""
    old = af.mapping(doc.get("ui"))
    ui = af.copy_doc(old)
    with st.expander("Chat page and widget", expanded=bool(old)):
        for key, label in (("title", "Page title"), ("accent", "Accent colour (#rrggbb)")):
            shown = af.text(old.get(key))
            af.put(ui, key, shown, st.text_input(label, value=shown, key=k + "ui_" + key), True)
        shown = af.text(old.get("welcome"))
        value = st.text_area("Welcome message", value=shown, key=k + "ui_welcome", height=80)
        af.put(ui, "welcome", shown, value, drop_empty=True)
        listed = "\n".join(af.text(x) for x in af.items(old.get("suggestions")))
        value = st.text_area(
            "Suggested questions (one per line)", value=listed, key=k + "ui_sugg", height=80
        )
        if value != listed:
            lines = [line.strip() for line in value.splitlines() if line.strip()]
            if lines:
                ui["suggestions"] = lines
            else:
                ui.pop("suggestions", None)
    if ui != old:
        if ui:
            new["ui"] = ui
        else:
            new.pop("ui", None)


def _openai_fields(doc: dict[str, Any], new: dict[str, Any], k: str) -> None:
    """The ``openai:`` block: the input a chat message fills and the output that is the
    answer, on ``/v1/chat/completions`` and the chat page (empty: chosen automatically)."""
    old = af.mapping(doc.get("openai"))
    section = af.copy_doc(old)
    inputs, outputs = af.openai_choices(new)  # the inputs and outputs as just edited
    with st.expander("Chat message and answer (OpenAI endpoint, chat page)", expanded=bool(old)):
        for key, label, options in (
            ("input", "Chat message input", inputs),
            ("output", "Answer output", outputs),
        ):
            shown = af.text(old.get(key))
            value = select(label, options, shown, k + "oa_" + key, format_func=_automatic)
            af.put(section, key, shown, value, drop_empty=True)
    if section != old:
        if section:
            new["openai"] = section
        else:
            new.pop("openai", None)


def _automatic(value: str) -> str:
    return value or "(automatic)"


def _inputs(doc: dict[str, Any], new: dict[str, Any], k: str, change: Change) -> None:
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
            value = select(f"Input type (row {n})", af.INPUT_TYPES, shown, key + "type")
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


def _output(doc: dict[str, Any], new: dict[str, Any], k: str, change: Change) -> None:
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
    for line in st.session_state.pop(f"{scope}_followed", None) or []:
        st.toast(line)
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
            step_editor.steps(doc, new, k, step_editor.Pickers(client), change)
            _output(doc, new, k, change)
            _openai_fields(doc, new, k)
            _ui_fields(doc, new, k)
            followed = renames.follow(doc, new)  # references follow a renamed row
            if new != doc:
                _commit(scope, yaml_key, new, redraw=bool(followed))
                problems = []
            if followed:  # drawn again at once: the fields holding the references change
                st.session_state[f"{scope}_followed"] = followed
                st.rerun()
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
