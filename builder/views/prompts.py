"""Prompts: use cases and prompts; versions; create a version; labels; diff; render preview."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from appforge.client import Client
from builder.connection import ERRORS, get_client, show_error


def _flash() -> None:
    message = st.session_state.pop("pr_flash", None)
    if message:
        st.success(message)


def _json_field(label: str, key: str, default: str = "{}") -> dict[str, Any] | None:
    """A JSON object typed in a text area; None (with the error shown) if it is not one."""
    raw = st.text_area(label, value=default, key=key, height=80)
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        st.error(f"JSON_INVALID: {label} (line {exc.lineno}): {exc.msg}")
        return None
    if not isinstance(value, dict):
        st.error(f"JSON_INVALID: {label} must be a JSON object")
        return None
    return value


def _versions(client: Client, prompt_id: str) -> None:
    try:
        versions = sorted(client.list_versions(prompt_id), key=lambda v: v["version_number"])
    except ERRORS as exc:
        show_error(exc)
        return
    st.subheader("Versions")
    if versions:
        st.dataframe(
            [
                {
                    "version": v["version_number"],
                    "type": v["type"],
                    "labels": ", ".join(v["labels"]),
                    "variables": ", ".join(v["variables"]),
                    "template": v["template_text"] or json.dumps(v["template_messages"]),
                }
                for v in versions
            ],
            hide_index=True,
        )
    with st.form("pr_version_form"):
        st.markdown("**New version** (text template, Jinja variables like `{{ name }}`)")
        text = st.text_area("Template", key="pr_template")
        defaults = _json_field("Model defaults (JSON)", "pr_defaults")
        if st.form_submit_button("Create version") and text and defaults is not None:
            try:
                made = client.create_version(
                    prompt_id, type="text", template_text=text, model_defaults=defaults
                )
            except ERRORS as exc:
                show_error(exc)
            else:
                st.session_state["pr_flash"] = f"Created version {made['version_number']}"
                st.rerun()
    if not versions:
        return
    numbers = [v["version_number"] for v in versions]

    st.subheader("Labels")
    version = st.selectbox("Version", numbers, index=len(numbers) - 1, key="pr_label_version")
    label = st.text_input("Label", value="production", key="pr_label")
    promote, demote = st.columns(2)
    try:
        if promote.button("Promote", key="pr_promote"):
            client.promote(prompt_id, version, label)
            st.session_state["pr_flash"] = f"Version {version} is now {label}"
            st.rerun()
        if demote.button("Demote", key="pr_demote"):
            client.demote(prompt_id, version, label)
            st.session_state["pr_flash"] = f"Version {version} is no longer {label}"
            st.rerun()
    except ERRORS as exc:
        show_error(exc)

    if len(numbers) > 1:
        st.subheader("Diff")
        left, right = st.columns(2)
        before = left.selectbox("From", numbers, index=len(numbers) - 2, key="pr_diff_from")
        after = right.selectbox("To", numbers, index=len(numbers) - 1, key="pr_diff_to")
        if st.button("Show diff", key="pr_diff"):
            try:
                st.json(client.diff(prompt_id, before, after))
            except ERRORS as exc:
                show_error(exc)

    st.subheader("Render preview")
    preview = st.selectbox("Version to render", numbers, index=len(numbers) - 1, key="pr_render_v")
    variables = _json_field("Variables (JSON)", "pr_variables")
    if st.button("Render", key="pr_render") and variables is not None:
        try:
            rendered = client.render(prompt_id, variables, version=preview)
        except ERRORS as exc:
            show_error(exc)
        else:
            st.code(rendered.get("text") or json.dumps(rendered.get("messages"), indent=2))


st.title("Prompts")
client = get_client()
_flash()
try:
    use_cases = client.list_use_cases()
except ERRORS as exc:
    show_error(exc)
    st.stop()

with st.form("pr_use_case_form"):
    st.markdown("**New use case**")
    uc_name = st.text_input("Name", key="pr_uc_name")
    if st.form_submit_button("Create use case") and uc_name:
        try:
            made_uc = client.create_use_case(uc_name)
        except ERRORS as exc:
            show_error(exc)
        else:
            st.session_state["pr_flash"] = f"Created use case {made_uc['name']}"
            st.session_state["pr_uc"] = made_uc["id"]
            st.rerun()
if not use_cases:
    st.stop()
cases = {u["id"]: u["name"] for u in use_cases}
if st.session_state.get("pr_uc") not in cases:
    st.session_state.pop("pr_uc", None)
use_case_id = st.selectbox("Use case", list(cases), key="pr_uc", format_func=cases.__getitem__)

try:
    prompts = client.list_prompts(use_case_id)
except ERRORS as exc:
    show_error(exc)
    st.stop()
with st.form("pr_prompt_form"):
    st.markdown("**New prompt**")
    p_name = st.text_input("Name", key="pr_p_name")
    if st.form_submit_button("Create prompt") and p_name:
        try:
            made_p = client.create_prompt(use_case_id, p_name)
        except ERRORS as exc:
            show_error(exc)
        else:
            st.session_state["pr_flash"] = f"Created prompt {made_p['name']}"
            st.session_state["pr_prompt"] = made_p["id"]
            st.rerun()
if not prompts:
    st.stop()
names = {p["id"]: p["name"] for p in prompts}
if st.session_state.get("pr_prompt") not in names:
    st.session_state.pop("pr_prompt", None)
prompt_id = st.selectbox("Prompt", list(names), key="pr_prompt", format_func=names.__getitem__)
_versions(client, prompt_id)
