"""Apps: list with search, create from a template or blank, edit the YAML, versions, delete."""

from __future__ import annotations

import difflib
from pathlib import Path

import streamlit as st

from appforge.client import AppInfo
from builder.connection import ERRORS, get_client, show_error

EXAMPLES = Path(__file__).resolve().parents[2] / "apps_yaml" / "examples"
BLANK = """version: 1
name: My app
type: chat
input:
  question: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt:
      user: "{{ input.question }}"
output:
  answer: "{{ answer.text }}"
"""


def templates() -> dict[str, str]:
    """Blank, then each example app of ``apps_yaml/examples`` by file name."""
    found = {"Blank": BLANK}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        found[path.stem] = path.read_text()
    return found


def _use_template() -> None:
    st.session_state["apps_new_yaml"] = templates()[st.session_state["apps_template"]]


def _flash() -> None:
    message = st.session_state.pop("apps_flash", None)
    if message:
        st.success(message)


def _label(app: AppInfo) -> str:
    return f"{app.name} ({app.uuid[:8]})"


st.title("Apps")
client = get_client()
_flash()

query = st.text_input("Search apps", key="apps_q")
try:
    apps = client.list_apps(q=query or None)
except ERRORS as exc:
    show_error(exc)
    st.stop()
if apps:
    st.dataframe(
        [
            {
                "name": a.name,
                "type": a.type,
                "version": a.version,
                "public": a.public,
                "uuid": a.uuid,
            }
            for a in apps
        ],
        hide_index=True,
    )
else:
    st.caption("No apps yet." if not query else "No app matches.")

st.subheader("Create an app")
st.selectbox("Template", list(templates()), key="apps_template", on_change=_use_template)
if "apps_new_yaml" not in st.session_state:
    _use_template()
new_yaml = st.text_area("App YAML", key="apps_new_yaml", height=300)
if st.button("Validate and create", key="apps_create"):
    try:
        created = client.create_app(new_yaml)
    except ERRORS as exc:
        show_error(exc)
    else:
        st.session_state["apps_flash"] = f"Created {created.name} (version {created.version})"
        st.session_state["apps_open"] = created.uuid
        st.rerun()

if not apps:
    st.stop()

st.subheader("Open an app")
by_uuid = {a.uuid: a for a in apps}
if st.session_state.get("apps_open") not in by_uuid:
    st.session_state.pop("apps_open", None)
uuid = st.selectbox("App", list(by_uuid), key="apps_open", format_func=lambda u: _label(by_uuid[u]))
app = by_uuid[uuid]
editor_key = f"apps_yaml_{uuid}"
if editor_key not in st.session_state:
    try:
        st.session_state[editor_key] = client.get_app_yaml(uuid)
    except ERRORS as exc:
        show_error(exc)
        st.stop()
st.caption(f"{app.type} app, version {app.version}, {'public' if app.public else 'private'}")
edited = st.text_area("YAML", key=editor_key, height=400)
if st.button("Validate and save", key="apps_save"):
    try:
        saved = client.update_app(uuid, edited)
    except ERRORS as exc:
        show_error(exc)
    else:
        st.session_state["apps_flash"] = f"Saved {saved.name} as version {saved.version}"
        st.rerun()

st.markdown("**Versions**")
try:
    versions = client.app_versions(uuid)
except ERRORS as exc:
    show_error(exc)
    versions = []
st.dataframe([{"version": v.version, "current": v.current} for v in versions], hide_index=True)
older = [v.version for v in versions if not v.current]
if older:
    chosen = st.selectbox("Older version", older, key="apps_restore_version")
    if st.toggle("Show its diff with the current version", key="apps_diff"):
        try:
            before = client.get_app_version_yaml(uuid, chosen)
            current = client.get_app_yaml(uuid)
        except ERRORS as exc:
            show_error(exc)
        else:
            diff = difflib.unified_diff(
                before.splitlines(keepends=True),
                current.splitlines(keepends=True),
                f"version {chosen}",
                f"version {app.version} (current)",
            )
            st.code("".join(diff) or "(no difference)", language="diff")
    if st.button("Restore", key="apps_restore"):
        try:
            restored = client.restore_app_version(uuid, chosen)
        except ERRORS as exc:
            show_error(exc)
        else:
            st.session_state.pop(editor_key, None)
            st.session_state["apps_flash"] = (
                f"Restored version {chosen} as version {restored.version}"
            )
            st.rerun()

st.markdown("**Delete**")
confirm = st.checkbox(
    f"Yes, delete {app.name} with its versions, sessions and runs", key="apps_delete_confirm"
)
if st.button("Delete app", key="apps_delete", disabled=not confirm, type="primary"):
    try:
        client.delete_app(uuid)
    except ERRORS as exc:
        show_error(exc)
    else:
        st.session_state.pop(editor_key, None)
        st.session_state.pop("apps_open", None)
        st.session_state.pop("apps_delete_confirm", None)
        st.session_state["apps_flash"] = f"Deleted {app.name}"
        st.rerun()
