"""Prompts: use cases and prompts; versions; create a version (text or chat); labels and
deployments with their history; side-by-side diff; render preview; the apps that pin it."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from appforge.client import Client, PromptVersionInfo
from builder.connection import ERRORS, get_client, show_error
from builder.page_controls import show_flash

ROLES = ["system", "user", "assistant"]


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


def _template(version: PromptVersionInfo) -> str:
    """A version's template as text: the text, or ``role: content`` per chat message."""
    if version.type == "text":
        return version.template_text or ""
    return "\n".join(f"{m['role']}: {m['content']}" for m in version.template_messages or [])


def _message_rows() -> list[dict[str, str]]:
    """The chat message editor: role/content rows, with add and remove buttons."""
    rows: list[int] = st.session_state.setdefault("pr_msg_rows", [0, 1])
    out = []
    for n, row in enumerate(rows, 1):
        role_col, content_col, remove_col = st.columns([2, 7, 2], vertical_alignment="bottom")
        role = role_col.selectbox(
            f"Message role (row {n})", ROLES, index=min(n - 1, 1), key=f"pr_msg_role_{row}"
        )
        content = content_col.text_area(f"Message content (row {n})", key=f"pr_msg_content_{row}")
        if remove_col.button(f"Remove message {n}", key=f"pr_msg_rm_{row}"):
            st.session_state["pr_msg_rows"] = [r for r in rows if r != row]
            st.rerun()
        out.append({"role": role, "content": content})
    if st.button("Add a message", key="pr_msg_add"):
        st.session_state["pr_msg_rows"] = [*rows, max(rows, default=-1) + 1]
        st.rerun()
    return out


def _new_version(client: Client, prompt_id: str) -> None:
    st.subheader("New version")
    kind = st.radio("Version type", ["text", "chat"], horizontal=True, key="pr_type")
    text: str | None = None
    messages: list[dict[str, str]] | None = None
    if kind == "text":
        st.caption("Jinja variables like `{{ name }}`.")
        text = st.text_area("Template", key="pr_template")
        ready = bool(text.strip())
    else:
        messages = _message_rows()
        ready = bool(messages) and all(m["content"].strip() for m in messages)
    schema = _json_field("Variables schema (JSON)", "pr_schema", default="")
    defaults = _json_field("Model defaults (JSON)", "pr_defaults")
    commit = st.text_input("Commit message", key="pr_commit")
    if not st.button("Create version", key="pr_create_version"):
        return
    if not ready:
        st.warning("Write the template (every message needs content) first.")
        return
    if schema is None or defaults is None:
        st.error("JSON_INVALID: fix the JSON fields above first; nothing was created.")
        return
    try:
        made = client.create_version(
            prompt_id,
            type=kind,
            template_text=text,
            template_messages=messages,
            model_defaults=defaults,
            variables_schema=schema or None,
            commit_message=commit.strip() or None,
        )
    except ERRORS as exc:
        show_error(exc)
    else:
        st.session_state["pr_flash"] = f"Created version {made.version_number}"
        st.rerun()


def _label_moves(client: Client, prompt_id: str, numbers: list[int]) -> None:
    """Promote, demote, deploy (with notes) and roll back a label."""
    version = st.selectbox("Version", numbers, index=len(numbers) - 1, key="pr_label_version")
    label = st.text_input("Label", value="production", key="pr_label")
    notes = st.text_input("Deployment notes", key="pr_notes")
    promote, demote, deploy, rollback = st.columns(4)
    try:
        if promote.button("Promote", key="pr_promote"):
            client.promote(prompt_id, version, label)
            st.session_state["pr_flash"] = f"Version {version} is now {label}"
            st.rerun()
        if demote.button("Demote", key="pr_demote"):
            client.demote(prompt_id, version, label)
            st.session_state["pr_flash"] = f"Version {version} is no longer {label}"
            st.rerun()
        if deploy.button("Deploy", key="pr_deploy"):
            client.deploy(prompt_id, label, version, notes)
            st.session_state["pr_flash"] = f"Deployed version {version} to {label}"
            st.rerun()
        if rollback.button("Roll back", key="pr_rollback"):
            back = client.rollback(prompt_id, label, notes or None)
            st.session_state["pr_flash"] = f"Rolled {label} back to version {back.version}"
            st.rerun()
    except ERRORS as exc:
        show_error(exc)


def _deployments(client: Client, prompt_id: str) -> None:
    """Where each label points now, and the history of label moves."""
    try:
        found = client.deployments(prompt_id)
    except ERRORS as exc:
        show_error(exc)
        return
    if found.deployments:
        st.markdown("Where each label points now")
        st.dataframe(
            [
                {
                    "label": d.environment,
                    "version": d.version,
                    "since": d.deployedAt,
                    "by": d.deployedBy,
                }
                for d in found.deployments
            ],
            hide_index=True,
        )
    st.markdown("Label history")
    if not found.history:
        st.caption("No label was ever moved.")
        return
    st.dataframe(
        [
            {
                "at": m.at,
                "label": m.environment,
                "action": m.action,
                "version": m.version,
                "previous version": m.previousVersion,
                "by": m.by,
                "notes": m.notes or "",
            }
            for m in found.history
        ],
        hide_index=True,
    )


def _diff(client: Client, prompt_id: str, versions: list[PromptVersionInfo]) -> None:
    st.subheader("Diff")
    numbers = [v.version_number for v in versions]
    by_number = {v.version_number: v for v in versions}
    left, right = st.columns(2)
    before = left.selectbox("From version", numbers, index=len(numbers) - 2, key="pr_diff_from")
    after = right.selectbox("To version", numbers, index=len(numbers) - 1, key="pr_diff_to")
    if not st.toggle("Show the diff", key="pr_diff"):
        return
    for column, number in ((left, before), (right, after)):
        version = by_number[number]
        column.caption(
            f"Version {number} ({version.type}) · labels: {', '.join(version.labels) or '-'}"
        )
        column.code(_template(version), language=None, wrap_lines=True)
        column.caption(f"Model defaults: {json.dumps(version.model_defaults)}")
    try:
        found = client.diff(prompt_id, before, after)
    except ERRORS as exc:
        show_error(exc)
        return
    summary = found.summary
    st.caption(
        f"{summary.additions} added, {summary.deletions} removed, "
        f"{summary.modifications} modified lines; "
        f"{summary.model_defaults} model default changes"
    )
    st.code(found.unified or "(the templates are the same)", language="diff")


def _dependents(client: Client, prompt_id: str) -> None:
    st.subheader("Apps that pin it")
    try:
        pinned = client.dependents(prompt_id)
    except ERRORS as exc:
        show_error(exc)
        return
    if not pinned:
        st.caption("No app pins this prompt.")
        return
    st.dataframe(
        [
            {
                "app": d.name,
                "step": d.step,
                "pinned by": f"version {d.version}" if d.version else f"label {d.label}",
                "app uuid": d.app_uuid,
            }
            for d in pinned
        ],
        hide_index=True,
    )


def _versions(client: Client, prompt_id: str) -> None:
    try:
        versions = sorted(client.list_versions(prompt_id), key=lambda v: v.version_number)
    except ERRORS as exc:
        show_error(exc)
        return
    st.subheader("Versions")
    if versions:
        st.dataframe(
            [
                {
                    "version": v.version_number,
                    "type": v.type,
                    "labels": ", ".join(v.labels),
                    "variables": ", ".join(v.variables),
                    "template": _template(v),
                    "commit message": v.commit_message or "",
                }
                for v in versions
            ],
            hide_index=True,
        )
    else:
        st.caption("No versions yet.")
    _new_version(client, prompt_id)
    _dependents(client, prompt_id)
    if not versions:
        return
    numbers = [v.version_number for v in versions]
    st.subheader("Labels and deployments")
    _label_moves(client, prompt_id, numbers)
    _deployments(client, prompt_id)
    if len(numbers) > 1:
        _diff(client, prompt_id, versions)

    st.subheader("Render preview")
    preview = st.selectbox("Version to render", numbers, index=len(numbers) - 1, key="pr_render_v")
    variables = _json_field("Variables (JSON)", "pr_variables")
    if st.button("Render", key="pr_render") and variables is not None:
        try:
            rendered = client.render(prompt_id, variables, version=preview)
        except ERRORS as exc:
            show_error(exc)
        else:
            st.code(rendered.text or json.dumps(rendered.messages, indent=2))


st.title("Prompts")
client = get_client()
show_flash("pr_flash")
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
            st.session_state["pr_flash"] = f"Created use case {made_uc.name}"
            st.session_state["pr_uc"] = made_uc.id
            st.rerun()
if not use_cases:
    st.stop()
cases = {u.id: u.name for u in use_cases}
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
            st.session_state["pr_flash"] = f"Created prompt {made_p.name}"
            st.session_state["pr_prompt"] = made_p.id
            st.rerun()
if not prompts:
    st.stop()
names = {p.id: p.name for p in prompts}
if st.session_state.get("pr_prompt") not in names:
    st.session_state.pop("pr_prompt", None)
prompt_id = st.selectbox("Prompt", list(names), key="pr_prompt", format_func=names.__getitem__)
_versions(client, prompt_id)
