"""Apps: list with search; create from a template or blank and edit, with a form and
a YAML editor kept in sync; public/private toggle; versions with diff and restore; delete."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import streamlit as st

from appforge.client import AppInfo, Client
from builder import app_editor, app_form, datasource_choice, share
from builder.connection import ERRORS, get_client, show_error
from builder.page_controls import confirmed_delete, flash_and_rerun, show_flash

CREATE, EDIT = "Create an app", "Edit an app"
NEW_SCOPE, NEW_YAML = "apps_new", "apps_new_yaml"


def _use_template() -> None:
    app_editor.load(NEW_SCOPE, NEW_YAML, app_form.templates()[st.session_state["apps_template"]])


def _go_to(mode: str, uuid: str | None = None) -> None:
    """After an action: show this mode (and app) on the next run, before its widgets exist."""
    st.session_state["apps_next"] = (mode, uuid)


def _take_next() -> None:
    mode, uuid = st.session_state.pop("apps_next", (None, None))
    if mode:
        st.session_state["apps_mode"] = mode
    if uuid:
        st.session_state["apps_open"] = uuid


def _label(app: AppInfo) -> str:
    return f"{app.name} ({app.uuid[:8]})"


def _create(client: Client) -> None:
    st.subheader("Create an app")
    st.selectbox(
        "Template", list(app_form.templates()), key="apps_template", on_change=_use_template
    )
    if not app_editor.loaded(NEW_SCOPE, NEW_YAML):
        _use_template()
    # Asked above the editor, from the document as the editor leaves it in this run.
    choices = st.container()
    app_editor.render(client, NEW_SCOPE, NEW_YAML)
    with choices:
        ready = datasource_choice.resolved(client, NEW_SCOPE, NEW_YAML)
    app_editor.check_button(client, NEW_YAML, "apps_new_check")
    if not ready:
        st.caption("Choose or create the app's datasources above to create it.")
    if st.button("Validate and create", key="apps_create", type="primary", disabled=not ready):
        text = st.session_state[NEW_YAML]
        try:
            created = client.create_app(text)
        except ERRORS as exc:
            app_editor.show_api_error(exc, text)
        else:
            st.session_state["apps_flash"] = f"Created {created.name} (version {created.version})"
            _go_to(EDIT, created.uuid)
            st.rerun()


def _save_edit(
    client: Client, app: AppInfo, scope: str, editor_key: str, edit: Callable[[str], str]
) -> AppInfo | None:
    """Save ``edit`` of the stored YAML as a new version; the editor's unsaved text gets
    the same edit (or is reloaded if that fails). None: refused (the error is shown)."""
    try:
        saved = client.update_app(app.uuid, edit(client.get_app_yaml(app.uuid)))
    except (*ERRORS, ValueError) as exc:
        show_error(exc)
        return None
    try:
        app_editor.load(scope, editor_key, edit(st.session_state[editor_key]))
    except (KeyError, ValueError):
        app_editor.forget(scope, editor_key)
    return saved


def _public_toggle(client: Client, app: AppInfo, scope: str, editor_key: str) -> None:
    """Public/private: flipping it saves a new version at once (the editor follows)."""
    tries = st.session_state.get("apps_public_tries", 0)
    public = st.toggle(
        "Public: anyone can run it without a token (saves a new version)",
        value=app.public,
        key=f"apps_public_{app.uuid}_{app.version}_{tries}",
    )
    if public == app.public:
        return
    saved = _save_edit(client, app, scope, editor_key, lambda t: app_form.set_public(t, public))
    if saved is None:
        st.session_state["apps_public_tries"] = tries + 1  # the toggle shows the truth again
        return
    st.session_state["apps_flash"] = (
        f"{saved.name} is now {'public' if saved.public else 'private'} (version {saved.version})"
    )
    st.rerun()


def _save_origins(client: Client, app: AppInfo, scope: str, editor_key: str) -> None:
    """The Share panel's origins: saved into the app's ``origins:`` as a new version."""
    saved = _save_edit(
        client,
        app,
        scope,
        editor_key,
        lambda t: app_form.set_origins(t, share.origins_from(st.session_state, app)),
    )
    if saved is not None:
        listed = saved.definition.get("origins") or []
        st.session_state["apps_flash"] = (
            f"{saved.name}: {len(listed)} browser origin(s) allowed (version {saved.version})"
        )
        st.rerun()


st.title("Apps")
client = get_client()
_take_next()
show_flash("apps_flash")

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

mode = st.radio("Mode", [CREATE, EDIT], key="apps_mode", horizontal=True)
if mode == CREATE:
    _create(client)
    st.stop()
if not apps:
    st.info("No app to edit: create one first." if not query else "No app matches the search.")
    st.stop()

st.subheader("Edit an app")
by_uuid = {a.uuid: a for a in apps}
if st.session_state.get("apps_open") not in by_uuid:
    st.session_state.pop("apps_open", None)
uuid = st.selectbox("App", list(by_uuid), key="apps_open", format_func=lambda u: _label(by_uuid[u]))
app = by_uuid[uuid]
scope, editor_key = f"apps_edit_{uuid}", f"apps_yaml_{uuid}"
if not app_editor.loaded(scope, editor_key):
    try:
        app_editor.load(scope, editor_key, client.get_app_yaml(uuid))
    except ERRORS as exc:
        show_error(exc)
        st.stop()
st.caption(f"{app.type} app, version {app.version}, {'public' if app.public else 'private'}")
share.panel(
    client,
    app,
    lambda: _public_toggle(client, app, scope, editor_key),
    lambda: _save_origins(client, app, scope, editor_key),
)
app_editor.render(client, scope, editor_key)
app_editor.check_button(client, editor_key, "apps_check")
if st.button("Validate and save", key="apps_save", type="primary"):
    edited = st.session_state[editor_key]
    try:
        saved = client.update_app(uuid, edited)
    except ERRORS as exc:
        app_editor.show_api_error(exc, edited)
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
            app_editor.forget(scope, editor_key)
            st.session_state["apps_flash"] = (
                f"Restored version {chosen} as version {restored.version}"
            )
            st.rerun()

st.markdown("**Delete**")
if confirmed_delete(
    f"Yes, delete {app.name} with its versions, sessions and runs",
    "Delete app",
    ("apps_delete_confirm", "apps_delete"),
    lambda: client.delete_app(uuid),
):
    app_editor.forget(scope, editor_key)
    st.session_state.pop("apps_open", None)
    if len(apps) == 1:
        _go_to(CREATE)
    flash_and_rerun("apps_flash", f"Deleted {app.name}")
