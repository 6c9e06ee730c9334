"""Datasets: the cases evaluations run on. Create, rename, describe and delete a dataset;
its cases a page at a time (input, expected, metadata), each editable and deletable;
add a case by hand, import a JSONL or CSV file, export the cases; add a stored run as a
case (by its id, optionally with its output as the expected answer)."""

from __future__ import annotations

import json
from typing import Any, Literal, NoReturn

import streamlit as st

from appforge.client import CaseInfo, Client, DatasetInfo
from builder.connection import ERRORS, get_client, show_error
from builder.page_controls import (
    choose,
    confirmed_delete,
    flash_and_rerun,
    page_offset,
    show_flash,
)

PAGE_SIZE = 50
Format = Literal["jsonl", "csv"]
FORMATS: dict[str, Format] = {"JSONL": "jsonl", "CSV": "csv"}
FLASH = "dsets_flash"  # what a change says on the page's next run


def _done(message: str) -> NoReturn:
    flash_and_rerun(FLASH, message)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _object(text: str, what: str) -> dict[str, Any] | None:
    """A JSON object typed into a field (empty: ``{}``); an error shown and None if not."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        st.error(f"CASE_INVALID: {what} is not JSON (line {exc.lineno}): {exc.msg}")
        return None
    if not isinstance(value, dict):
        st.error(f'CASE_INVALID: {what} must be a JSON object, like {{"question": "..."}}')
        return None
    return value


def _create(client: Client) -> None:
    with st.form("dsets_create", clear_on_submit=True):
        st.subheader("Create a dataset")
        name = st.text_input("Name", key="dsets_new_name")
        description = st.text_input("Description", key="dsets_new_description")
        if st.form_submit_button("Create dataset") and name.strip():
            try:
                made = client.create_dataset(name.strip(), description)
            except ERRORS as exc:
                show_error(exc)
            else:
                st.session_state["dsets_pick"] = made.id
                _done(f"Created dataset {made.name}")


def _rename(client: Client, dataset: DatasetInfo) -> None:
    with st.expander("Rename or describe"), st.form(f"dsets_rename_{dataset.id}"):
        name = st.text_input("Name", value=dataset.name, key=f"dsets_name_{dataset.id}")
        description = st.text_input(
            "Description", value=dataset.description, key=f"dsets_desc_{dataset.id}"
        )
        if st.form_submit_button("Save"):
            try:
                saved = client.update_dataset(dataset.id, name=name, description=description)
            except ERRORS as exc:
                show_error(exc)
            else:
                _done(f"Saved dataset {saved.name}")


def _page_of_cases(client: Client, dataset: DatasetInfo) -> tuple[int, list[CaseInfo]]:
    """The cases of the page chosen (a page number shows when there are more than fit)."""
    offset = page_offset(dataset.case_count, PAGE_SIZE, f"dsets_page_{dataset.id}")
    return offset, client.list_cases(dataset.id, limit=PAGE_SIZE, offset=offset)


def _cases(client: Client, dataset: DatasetInfo) -> None:
    st.subheader("Cases")
    st.caption(f"{dataset.case_count} cases · revision {dataset.revision}")
    if not dataset.case_count:
        st.caption("No cases yet: add one below, import a file, or add a run.")
        return
    try:
        offset, cases = _page_of_cases(client, dataset)
    except ERRORS as exc:
        show_error(exc)
        return
    st.dataframe(
        [
            {
                "#": offset + n + 1,
                "input": _compact(c.input),
                "expected": _compact(c.expected),
                "metadata": _compact(c.metadata),
                "id": c.id,
            }
            for n, c in enumerate(cases)
        ],
        hide_index=True,
    )
    if cases:
        _edit_case(client, dataset, offset, cases)


def _edit_case(client: Client, dataset: DatasetInfo, offset: int, cases: list[CaseInfo]) -> None:
    """Edit or delete one case of the page."""
    by_id = {c.id: (offset + n + 1, c) for n, c in enumerate(cases)}
    picked = st.selectbox(
        "Case",
        list(by_id),
        key="dsets_case",
        format_func=lambda i: f"#{by_id[i][0]} · {_compact(by_id[i][1].input)[:60]}",
    )
    number, case = by_id[picked]
    texts = {
        part: st.text_area(
            part.capitalize() + " (JSON)",
            value=json.dumps(getattr(case, part), indent=2, ensure_ascii=False),
            key=f"dsets_case_{part}_{case.id}",
        )
        for part in ("input", "expected", "metadata")
    }
    save, delete = st.columns(2)
    if save.button("Save case", key="dsets_case_save"):
        values = {part: _object(text, part) for part, text in texts.items()}
        if all(v is not None for v in values.values()):
            try:
                client.update_case(dataset.id, case.id, **values)
            except ERRORS as exc:
                show_error(exc)
            else:
                _done(f"Saved case #{number}")
    if delete.button("Delete case", key="dsets_case_delete"):
        try:
            client.delete_case(dataset.id, case.id)
        except ERRORS as exc:
            show_error(exc)
        else:
            _done(f"Deleted case #{number}")


def _add_case(client: Client, dataset: DatasetInfo) -> None:
    with st.expander("Add a case"), st.form("dsets_add_case", clear_on_submit=True):
        texts = {
            "input": st.text_area('Input (JSON), e.g. {"question": "..."}', key="dsets_add_in"),
            "expected": st.text_area('Expected (JSON), e.g. {"answer": "..."}', key="dsets_add_ex"),
            "metadata": st.text_area("Metadata (JSON)", key="dsets_add_md"),
        }
        if st.form_submit_button("Add case"):
            values = {part: _object(text, part) for part, text in texts.items()}
            if all(v is not None for v in values.values()):
                try:
                    added = client.add_cases(dataset.id, [values])
                except ERRORS as exc:
                    show_error(exc)
                else:
                    _done(f"Added a case (revision {added.revision})")


def _import(client: Client, dataset: DatasetInfo) -> None:
    """Upload a JSONL or CSV file of cases (all or nothing); the uploader is fresh after."""
    round_ = st.session_state.setdefault("dsets_import_round", 0)
    upload = st.file_uploader(
        "Import cases: a JSONL or CSV file",
        type=["jsonl", "ndjson", "json", "csv"],
        key=f"dsets_import_{round_}",
    )
    if st.button("Import", key="dsets_import", disabled=upload is None) and upload is not None:
        fmt: Format = "csv" if upload.name.lower().endswith(".csv") else "jsonl"
        try:
            added = client.import_cases(dataset.id, upload.getvalue(), fmt)
        except ERRORS as exc:
            show_error(exc)
        else:
            st.session_state["dsets_import_round"] = round_ + 1
            _done(f"Imported {len(added.ids)} cases from {upload.name} (revision {added.revision})")


def _export(client: Client, dataset: DatasetInfo) -> None:
    """Export: fetched when asked for (a dataset can be large), then a download button."""
    choice_col, get_col = st.columns([2, 1])
    label = choice_col.radio("Export as", list(FORMATS), horizontal=True, key="dsets_export_as")
    fmt = FORMATS[str(label)]
    wanted = (dataset.id, dataset.revision, fmt)
    if get_col.button("Prepare export", key="dsets_export"):
        try:
            st.session_state["dsets_exported"] = (wanted, client.export_cases(dataset.id, fmt))
        except ERRORS as exc:
            show_error(exc)
    exported = st.session_state.get("dsets_exported")
    if exported and exported[0] == wanted:
        st.download_button(
            f"Download {dataset.name}.{fmt}",
            exported[1],
            file_name=f"{dataset.name}.{fmt}",
            mime="text/csv" if fmt == "csv" else "application/x-ndjson",
            key="dsets_download",
        )


def _add_run(client: Client, dataset: DatasetInfo) -> None:
    """A stored run (its id, from the Runs page) as a new case."""
    run_col, expected_col = st.columns([3, 2])
    run_id = run_col.text_input("Add a run as a case: its id", key="dsets_run_id")
    from_output = expected_col.checkbox("Expected from its output", key="dsets_run_expected")
    if st.button("Add run", key="dsets_run_add") and run_id.strip():
        try:
            added = client.run_to_dataset(
                run_id.strip(), dataset.id, expected_from_output=from_output
            )
        except ERRORS as exc:
            show_error(exc)
        else:
            _done(f"Added run {run_id.strip()[:8]} as a case (revision {added.revision})")


def _delete(client: Client, dataset: DatasetInfo) -> None:
    st.subheader("Delete the dataset")
    if confirmed_delete(
        f"Yes, delete {dataset.name} and its cases",
        "Delete dataset",
        ("dsets_confirm", "dsets_delete"),
        lambda: client.delete_dataset(dataset.id),
    ):
        st.session_state.pop("dsets_pick", None)
        _done(f"Deleted dataset {dataset.name}")


st.title("Datasets")
client = get_client()
show_flash(FLASH)
try:
    datasets = client.list_datasets()
except ERRORS as exc:
    show_error(exc)
    st.stop()
_create(client)
if not datasets:
    st.caption("No datasets yet.")
    st.stop()
by_id = {d.id: d for d in datasets}
picked = choose("Dataset", by_id, "dsets_pick", lambda d: f"{d.name} ({d.case_count} cases)")
dataset = by_id[picked]
if dataset.description:
    st.caption(dataset.description)
_rename(client, dataset)
_cases(client, dataset)
_add_case(client, dataset)
st.subheader("Import and export")
_import(client, dataset)
_export(client, dataset)
st.subheader("Add from a run")
_add_run(client, dataset)
_delete(client, dataset)
