"""The scorers of a new evaluation, as forms: one row per scorer, with the fields its type
takes (see *Evaluations* in the README), turned into the API's scorer objects.

The rows live in ``st.session_state["ev_scorers"]`` as ``{"id", "type"}``; each field is
a widget keyed ``ev_sc_<id>_<field>``, so rows keep their values across reruns and a
removed row takes its values with it. Empty fields are left out (the server's defaults
apply); what cannot be read (a schema that is not JSON, a number that is not one) is a
``ScorerFormError`` naming the scorer and the field, before anything is sent.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from appforge.client import SCORER_TYPES, Scorer, ScorerType

# A line on each type the server takes (SCORER_TYPES, through the client).
HINTS: dict[ScorerType, str] = {
    "equals": "the output is the reference (text compared without surrounding spaces)",
    "contains": "the reference text is in the output",
    "regex": "the pattern (RE2) matches somewhere in the output",
    "json_schema": "the output is valid against the JSON Schema",
    "number_close": "the output's number is within the tolerance of the reference",
    "similarity": "MiniLM cosine similarity of output and reference, passed at the threshold",
    "cites": "the reference source is among the run's sources",
    "latency_ms": "the run took at most this many milliseconds",
    "tokens": "the run used at most this many tokens",
    "judge": "a managed prompt, run by a model, answers with a score",
}
ROWS = "ev_scorers"
DEFAULT_OUTPUT = ""  # the select box's "app's first output" choice


class ScorerFormError(ValueError):
    """A scorer field that cannot be read; the message names the scorer and the field."""


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = st.session_state.setdefault(ROWS, [])
    return rows


def _add(kind: str) -> None:
    rows = _rows()
    next_id = max((r["id"] for r in rows), default=0) + 1
    rows.append({"id": next_id, "type": kind})


def _add_chosen() -> None:
    # Read when clicked: the type picked in the same interaction counts.
    _add(str(st.session_state.get("ev_sc_new_type") or SCORER_TYPES[0]))


def _remove(row_id: int) -> None:
    st.session_state[ROWS] = [r for r in _rows() if r["id"] != row_id]
    for key in [k for k in st.session_state if str(k).startswith(f"ev_sc_{row_id}_")]:
        del st.session_state[key]


def scorer_rows(output_keys: list[str]) -> None:
    """The scorer rows (each with its fields and a Remove button), then "Add scorer"."""
    st.markdown("**Scorers**")
    if not _rows():
        _add("equals")  # a new evaluation starts with the commonest scorer
    for row in list(_rows()):
        with st.container(border=True):
            head, remove = st.columns([5, 1])
            head.markdown(f"`{row['type']}`: {HINTS[row['type']]}")
            remove.button(
                "Remove", key=f"ev_sc_{row['id']}_remove", on_click=_remove, args=(row["id"],)
            )
            _fields(row["id"], row["type"], output_keys)
    kind_col, add_col = st.columns([3, 1])
    kind_col.selectbox("Scorer type", SCORER_TYPES, key="ev_sc_new_type")
    add_col.button("Add scorer", key="ev_sc_add", on_click=_add_chosen)


def _fields(row_id: int, kind: str, output_keys: list[str]) -> None:
    key = f"ev_sc_{row_id}_"
    name_col, output_col = st.columns(2)
    name_col.text_input("Name (default: the type)", key=key + "name")
    if kind not in ("latency_ms", "tokens"):
        outputs = [DEFAULT_OUTPUT, *output_keys]
        default = "sources" if kind == "cites" else "the app's first"
        output_col.selectbox(
            "Output key",
            outputs,
            key=key + "output",
            format_func=lambda k: k or f"default ({default})",
        )
    if kind in ("equals", "contains", "number_close", "similarity", "cites"):
        st.text_input("Reference (empty: the case's expected value)", key=key + "value")
    elif kind == "regex":
        st.text_input("Pattern (RE2)", key=key + "value")
    elif kind == "json_schema":
        st.text_area("JSON Schema (empty: the case's expected value)", key=key + "value")
    if kind == "judge":
        prompt_col, label_col, model_col = st.columns(3)
        prompt_col.text_input("Judge prompt (managed prompt name or id)", key=key + "prompt")
        label_col.text_input("Its label", value="production", key=key + "label")
        model_col.text_input("Model (alias)", value="default", key=key + "model")
    threshold = {
        "similarity": "Threshold (default 0.7)",
        "judge": "Passing score (default 0.5)",
        "number_close": "Tolerance (default 0)",
        "latency_ms": "Maximum latency (ms)",
        "tokens": "Maximum tokens",
    }.get(kind)
    if threshold:
        st.text_input(threshold, key=key + "threshold")


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ScorerFormError(f"{where}: '{text}' is not a number") from None
    return value


def _value(kind: str, text: str, where: str) -> Any:
    """The reference as the API takes it: text, or parsed JSON (schema) or a number."""
    if kind == "json_schema":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScorerFormError(f"{where}: not JSON (line {exc.lineno}): {exc.msg}") from None
    if kind == "number_close":
        return _number(text, where)
    return text


def _spec(row_id: int, kind: ScorerType) -> Scorer:
    def field(name: str) -> str:
        return str(st.session_state.get(f"ev_sc_{row_id}_{name}") or "").strip()

    spec: Scorer = {"type": kind}
    where = f"scorer {field('name') or kind}"
    if field("name"):
        spec["name"] = field("name")
    if field("output"):
        spec["output"] = field("output")
    if field("prompt"):
        spec["prompt"] = field("prompt")
    if field("label"):
        spec["label"] = field("label")
    if field("model"):
        spec["model"] = field("model")
    if field("value"):
        spec["value"] = _value(kind, field("value"), f"{where}, reference")
    if field("threshold"):
        spec["threshold"] = _number(field("threshold"), f"{where}, threshold")
    return spec


def scorer_specs() -> list[Scorer]:
    """The scorers of the rows as API objects; ``ScorerFormError`` if a field is unreadable."""
    return [_spec(r["id"], r["type"]) for r in _rows()]
