"""Datasources: create; chunk settings; add entries (text, URLs on a refresh schedule, files)
with metadata; progress; search by mode; delete."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import streamlit as st

from appforge.client import Client, DatasourceInfo, EntryInfo
from builder.connection import ERRORS, get_client, show_error
from builder.page_controls import choose, confirmed_delete, flash_and_rerun, show_flash

DONE = ("ready", "failed", "refreshing")  # refreshing: searchable, nothing to wait for
REFRESH = ["none", "daily", "weekly"]
MODES = ["", "hybrid", "vector", "keyword"]  # "": the datasource's own search_mode
FLASH = "ds_flash"


def upload_limit_mb() -> int:
    """The uploader's limit: Streamlit's ``server.maxUploadSize`` (``appforge serve``
    sets it from ``APPFORGE_DATASOURCES__MAX_FILE_BYTES``)."""
    return int(st.get_option("server.maxUploadSize"))


def _metadata(rows: list[tuple[str, str]]) -> dict[str, Any]:
    """Key/value rows as entry metadata; values that read as JSON keep their type."""
    found: dict[str, Any] = {}
    for key, raw in rows:
        key = key.strip()
        if not key:
            continue
        try:
            found[key] = json.loads(raw)
        except json.JSONDecodeError:
            found[key] = raw
    return found


def _metadata_rows() -> list[tuple[str, str]]:
    """The metadata editor: key/value rows (the button for one more row is outside the form)."""
    st.markdown("Metadata (searchable as `md_<key>`)")
    rows = []
    for n in range(st.session_state.setdefault("ds_meta_count", 1)):
        key_col, value_col = st.columns(2)
        key = key_col.text_input(f"Metadata key {n + 1}", key=f"ds_meta_key_{n}")
        value = value_col.text_input(f"Metadata value {n + 1}", key=f"ds_meta_value_{n}")
        rows.append((key, value))
    return rows


def _one_more_row() -> None:
    st.session_state["ds_meta_count"] = st.session_state.get("ds_meta_count", 1) + 1


def _add_entries(client: Client, uuid: str) -> None:
    st.subheader("Add entries")
    # One form: nothing is sent until "Add", so a slow upload cannot race the
    # fields typed meanwhile (a rerun for the upload would reset them).
    with st.form("ds_add_form", border=False):
        name = st.text_input("Entry name (for pasted text)", key="ds_entry_name")
        text = st.text_area("Pasted text", key="ds_entry_text", height=150)
        url = st.text_input("Or a URL", key="ds_entry_url")
        refresh = st.selectbox(
            "Fetch the URL again",
            REFRESH,
            key="ds_entry_refresh",
            help="daily or weekly: re-ingested only when the page changed",
        )
        # A file uploader cannot be emptied; a new key after each add gives a fresh one.
        round_ = st.session_state.setdefault("ds_add_round", 0)
        files = st.file_uploader(
            f"Or files (up to {upload_limit_mb()} MB each)",
            accept_multiple_files=True,
            key=f"ds_entry_files_{round_}",
        )
        rows = _metadata_rows()
        submitted = st.form_submit_button("Add", key="ds_add")
    st.button("Add a metadata row", key="ds_meta_more", on_click=_one_more_row)
    if submitted:
        metadata = _metadata(rows)
        added, failed = 0, False
        try:
            if text.strip():
                client.add_entry(uuid, name or "pasted text", content=text, metadata=metadata)
                added += 1
            if url.strip():
                client.add_entry(
                    uuid, name or url.strip(), url=url.strip(), metadata=metadata, refresh=refresh
                )
                added += 1
            for upload in files or []:
                # Multipart, streamed: a large file never goes base64 in a JSON body.
                client.upload_entry(
                    uuid,
                    upload,
                    filename=upload.name,
                    media_type=upload.type or None,
                    metadata=metadata,
                )
                added += 1
        except ERRORS as exc:
            show_error(exc)
            failed = True
        message = f"Added {added} entr{'y' if added == 1 else 'ies'}"
        if added and not failed:
            _clear_entry_form()
            flash_and_rerun(FLASH, message)
        elif added:
            st.success(message)
        elif not failed:
            st.warning("Paste some text, give a URL or choose files first.")


def _clear_entry_form() -> None:
    """After a successful add: empty fields, one empty metadata row, a fresh uploader."""
    count = st.session_state.get("ds_meta_count", 1)
    for key in (
        "ds_entry_name",
        "ds_entry_text",
        "ds_entry_url",
        "ds_entry_refresh",
        "ds_meta_count",
    ):
        st.session_state.pop(key, None)
    for n in range(count):
        st.session_state.pop(f"ds_meta_key_{n}", None)
        st.session_state.pop(f"ds_meta_value_{n}", None)
    st.session_state["ds_add_round"] = st.session_state.get("ds_add_round", 0) + 1


def _wait(client: Client, uuid: str, timeout: float = 300.0) -> list[EntryInfo]:
    """Poll the entries, showing progress, until none is pending or processing."""
    with st.status("Processing entries…") as status:
        bar = st.progress(0.0)
        deadline = time.monotonic() + timeout
        while True:
            entries = client.list_entries(uuid)
            done = sum(e.status in DONE for e in entries)
            bar.progress(done / len(entries) if entries else 1.0, text=f"{done}/{len(entries)}")
            if done == len(entries) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        failed = sum(e.status == "failed" for e in entries)
        label = f"{done} of {len(entries)} processed" + (f", {failed} failed" if failed else "")
        status.update(label=label, state="error" if failed else "complete")
    return entries


def _entries(client: Client, uuid: str) -> None:
    """The entries table; while some are still processing it refreshes itself each second."""
    st.subheader("Entries")
    try:
        fetched = [client.list_entries(uuid)]
    except ERRORS as exc:
        show_error(exc)
        return
    busy = any(e.status not in DONE for e in fetched[0])

    @st.fragment(run_every=1.0 if busy else None)
    def live() -> None:
        # The page's own run shows what it fetched; each refresh fetches anew.
        _entries_table(client, uuid, fetched.pop() if fetched else None, busy)

    live()


def _rows(entries: list[EntryInfo]) -> list[dict[str, Any]]:
    """The entries table's rows."""
    return [
        {
            "name": e.name,
            "status": e.status,
            "stage": e.stage or "",
            "chunks": f"{e.chunks_done}/{e.chunks_total or '?'}",
            "metadata": json.dumps(e.entry_metadata),
            "refresh": e.refresh if e.type == "url" else "",
            "last refreshed": _when(e.last_refreshed_at),
            "next refresh": _when(e.next_refresh_at),
            "error": e.error or "",
            "uuid": e.uuid,
        }
        for e in entries
    ]


def _entries_table(
    client: Client, uuid: str, entries: list[EntryInfo] | None, was_busy: bool
) -> None:
    refresh, wait = st.columns(2)
    refresh.button("Refresh", key="ds_refresh")
    waited = wait.button("Wait until processed", key="ds_wait")
    try:
        if waited:
            entries = _wait(client, uuid)
        elif entries is None:
            entries = client.list_entries(uuid)
            if was_busy and all(e.status in DONE for e in entries):
                st.rerun(scope="app")  # all done: stop refreshing, show the final table
    except ERRORS as exc:
        show_error(exc)
        return
    if not entries:
        st.caption("No entries yet.")
        return
    done = sum(e.status in DONE for e in entries)
    st.progress(done / len(entries), text=f"{done} of {len(entries)} entries processed")
    st.dataframe(_rows(entries), hide_index=True)
    names = {e.uuid: e.name for e in entries}
    statuses = {e.uuid: e.status for e in entries}
    picked = st.selectbox("Entry", list(names), key="ds_entry_pick", format_func=lambda u: names[u])
    retry, delete = st.columns(2)
    if retry.button(
        "Retry entry", key="ds_entry_retry", disabled=statuses[picked] not in ("ready", "failed")
    ):
        try:
            client.retry_entry(uuid, picked)
        except ERRORS as exc:
            show_error(exc)
        else:
            flash_and_rerun(FLASH, f"Queued {names[picked]} again")
    kinds = {e.uuid: e for e in entries}
    if kinds[picked].type == "url":
        _schedule(client, uuid, kinds[picked])
    if delete.button("Delete entry", key="ds_entry_delete"):
        try:
            client.delete_entry(uuid, picked)
        except ERRORS as exc:
            show_error(exc)
        else:
            flash_and_rerun(FLASH, f"Deleted entry {names[picked]}")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else ""


def _schedule(client: Client, uuid: str, entry: EntryInfo) -> None:
    """A URL entry's refresh schedule."""
    column, button = st.columns(2)
    picked = column.selectbox(
        "Refresh schedule",
        REFRESH,
        index=REFRESH.index(entry.refresh) if entry.refresh in REFRESH else 0,
        key=f"ds_schedule_{entry.uuid}",
    )
    if button.button("Set schedule", key="ds_schedule_set", disabled=picked == entry.refresh):
        try:
            client.update_entry(uuid, entry.uuid, refresh=picked)
        except ERRORS as exc:
            show_error(exc)
        else:
            flash_and_rerun(FLASH, f"{entry.name}: refreshed {picked}")


def _chunking(client: Client, source: DatasourceInfo) -> None:
    """Chunk settings (changing them re-ingests every entry) and the default mode."""
    with st.expander("Chunk settings and search mode"):
        with st.form("ds_chunking", border=False):
            size = st.number_input(
                "Chunk size (characters; 0: the default)",
                min_value=0,
                max_value=20_000,
                value=source.chunk_size or 0,
                key="ds_chunk_size",
            )
            overlap = st.number_input(
                "Chunk overlap (characters; -1: the default)",
                min_value=-1,
                max_value=5_000,
                value=-1 if source.chunk_overlap is None else source.chunk_overlap,
                key="ds_chunk_overlap",
            )
            modes = MODES[1:]
            mode = st.selectbox(
                "Default search mode",
                modes,
                index=modes.index(source.search_mode) if source.search_mode in modes else 0,
                key="ds_default_mode",
            )
            saved = st.form_submit_button("Save", key="ds_chunking_save")
    if saved:
        try:
            changed = client.update_datasource(
                source.uuid,
                chunk_size=int(size) or None,
                chunk_overlap=None if overlap < 0 else int(overlap),
                search_mode=mode,
            )
        except ERRORS as exc:
            show_error(exc)
        else:
            again = f"; {changed.requeued} entries are re-ingested" if changed.requeued else ""
            flash_and_rerun(FLASH, f"Saved the settings of {changed.name}{again}")


def _search(client: Client, uuid: str) -> None:
    st.subheader("Search")
    query = st.text_input("Query", key="ds_query")
    where_text = st.text_area('Metadata filter (JSON), e.g. {"md_product": "x"}', key="ds_where")
    top_k = st.number_input("Results", min_value=1, max_value=100, value=4, key="ds_top_k")
    mode_column, weight_column = st.columns(2)
    mode = mode_column.selectbox(
        "Mode",
        MODES,
        key="ds_mode",
        format_func=lambda m: m or "the datasource's own",
        help="vector: embeddings; keyword: full-text; hybrid: both, fused by rank",
    )
    weight = weight_column.slider(
        "Keyword weight (hybrid)", 0.0, 1.0, 0.5, 0.05, key="ds_keyword_weight"
    )
    if st.button("Search", key="ds_search") and query:
        try:
            where = json.loads(where_text) if where_text.strip() else None
        except json.JSONDecodeError as exc:
            st.error(f"FILTER_INVALID: not JSON (line {exc.lineno}): {exc.msg}")
            return
        try:
            found = client.search(
                uuid,
                query,
                top_k=int(top_k),
                where=where,
                mode=mode or None,
                keyword_weight=float(weight),
            )
        except ERRORS as exc:
            show_error(exc)
            return
        if not found.results:
            st.info("Nothing found.")
        for hit in found.results:
            with st.container(border=True):
                st.markdown(f"**{hit.score:.3f}** · `{json.dumps(hit.metadata)}`")
                st.text(hit.text)


st.title("Datasources")
client = get_client()
show_flash(FLASH)
try:
    datasources = client.list_datasources()
except ERRORS as exc:
    show_error(exc)
    st.stop()

with st.form("ds_create"):
    st.subheader("Create a datasource")
    new_name = st.text_input("Name", key="ds_new_name")
    new_type = st.selectbox("Type", ["mixed", "text", "url", "file"], key="ds_new_type")
    if st.form_submit_button("Create") and new_name:
        try:
            made = client.create_datasource(new_name, new_type)
        except ERRORS as exc:
            show_error(exc)
        else:
            st.session_state["ds_pick"] = made.uuid
            flash_and_rerun(FLASH, f"Created datasource {made.name}")

if not datasources:
    st.stop()
by_uuid = {d.uuid: d for d in datasources}
uuid = choose("Datasource", by_uuid, "ds_pick", lambda d: f"{d.name} ({d.type})")
_chunking(client, by_uuid[uuid])
_add_entries(client, uuid)
_entries(client, uuid)
_search(client, uuid)

st.subheader("Delete the datasource")
if confirmed_delete(
    f"Yes, delete {by_uuid[uuid].name} and its entries",
    "Delete datasource",
    ("ds_confirm", "ds_delete"),
    lambda: client.delete_datasource(uuid),
):
    st.session_state.pop("ds_pick", None)
    flash_and_rerun(FLASH, f"Deleted datasource {by_uuid[uuid].name}")
