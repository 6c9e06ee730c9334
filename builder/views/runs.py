"""Runs: the runs of every app (or one), newest first, with time, app, version, session,
the first words of the input, status, latency and tokens; filtered by app, status and
time. Opening one shows its input, output, error and each step: the rendered prompt,
the answer, timings and tokens; and adds it to a dataset as an evaluation case."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import streamlit as st

from appforge.client import Client, RunList, RunRecord, RunRow
from builder.connection import ERRORS, get_client, show_error

ALL_APPS = ""
STATUSES = ["any", "succeeded", "failed", "cancelled", "timeout", "running"]
PERIODS: dict[str, timedelta | None] = {
    "Any time": None,
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "Between dates": None,
}
PAGE_SIZE = 50


def _filters(client: Client) -> tuple[str | None, str | None, datetime | None, datetime | None]:
    """The app (uuid, or None for all), status and time range chosen above the table."""
    try:
        apps = {a.uuid: a.name for a in client.list_apps(limit=500)}
    except ERRORS as exc:
        show_error(exc)
        st.stop()
    app_col, status_col, period_col = st.columns(3)
    app = app_col.selectbox(
        "App",
        [ALL_APPS, *apps],
        key="runs_app",
        format_func=lambda u: f"{apps[u]} ({u[:8]})" if u else "All apps",
    )
    status = status_col.selectbox("Status", STATUSES, key="runs_status")
    period = period_col.selectbox("Time", list(PERIODS), key="runs_period")
    start, end = _period(period)
    return app or None, None if status == "any" else status, start, end


def _period(period: str) -> tuple[datetime | None, datetime | None]:
    if period != "Between dates":
        span = PERIODS[period]
        return (None, None) if span is None else (datetime.now(UTC) - span, None)
    today = datetime.now(UTC).date()
    picked = st.date_input("Days (UTC)", value=(today - timedelta(days=6), today), key="runs_days")
    days = [d for d in (picked if isinstance(picked, tuple) else (picked,)) if d is not None]
    if len(days) != 2:
        st.info("Pick the first and the last day.")
        st.stop()
    return _midnight(days[0]), _midnight(days[1] + timedelta(days=1))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def _table(page: RunList) -> None:
    st.dataframe(
        [
            {
                "time": r.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "app": r.app_name,
                "version": r.app_version,
                "session": r.session_id if len(r.session_id) <= 14 else r.session_id[:13] + "…",
                "input": r.input_preview,
                "status": r.status if r.error_code is None else f"{r.status} ({r.error_code})",
                "latency ms": round(r.latency_ms) if r.latency_ms is not None else None,
                "ttft ms": round(r.ttft_ms) if r.ttft_ms is not None else None,
                "tokens in": r.tokens_in,
                "tokens out": r.tokens_out,
            }
            for r in page.runs
        ],
        hide_index=True,
    )


def _label(row: RunRow) -> str:
    when = row.created_at.astimezone(UTC).strftime("%H:%M:%S")
    return f"{when} · {row.app_name} · {row.status} · {row.input_preview[:40]}"


def _messages(messages: list[dict[str, Any]]) -> None:
    st.markdown("**Rendered prompt**")
    for message in messages:
        st.caption(str(message.get("role", "?")))
        st.code(str(message.get("content", "")), language=None, wrap_lines=True)


def _step(step: dict[str, Any]) -> None:
    """One step: its timings and tokens, then what it saw and gave."""
    usage = step.get("usage") or {}
    facts = [f"{step.get('latency_ms', 0):.0f} ms"]
    if step.get("ttft_ms") is not None:
        facts.append(f"first token after {step['ttft_ms']:.0f} ms")
    if usage:
        facts.append(
            f"{usage.get('prompt_tokens', 0)} tokens in, {usage.get('completion_tokens', 0)} out"
        )
    if step.get("model"):
        facts.append(f"model {step['model']}")
    st.caption(" · ".join(facts))
    if step.get("messages"):
        _messages(step["messages"])
    if "text" in step:
        st.markdown("**Answer**")
        st.code(str(step["text"]), language=None, wrap_lines=True)
    if "query" in step:
        st.markdown(f"**Query** `{step['query']}` · {step.get('count', 0)} documents")
    for call in step.get("calls") or []:
        st.markdown(f"**Model call** ({call.get('model', '?')})")
        _messages(call.get("messages") or [])
    st.json(step, expanded=False)


def _run(record: RunRecord) -> None:
    """A stored run: its figures, input and output, error, and each step."""
    usage = record.usage
    cols = st.columns(4)
    cols[0].metric("Status", record.status)
    cols[1].metric("Latency", "–" if record.latency_ms is None else f"{record.latency_ms:.0f} ms")
    cols[2].metric("First token", "–" if record.ttft_ms is None else f"{record.ttft_ms:.0f} ms")
    tokens = f"{usage.get('prompt_tokens', 0)} / {usage.get('completion_tokens', 0)}"
    cols[3].metric("Tokens in / out", tokens)
    st.caption(
        f"run {record.id} · app {record.app_uuid} version {record.app_version}"
        f" · session {record.session_id}"
    )
    if record.error:
        st.error(f"{record.error.code}: {record.error.message}")
    left, right = st.columns(2)
    with left:
        st.markdown("**Input**")
        st.json(record.input)
    with right:
        st.markdown("**Output**")
        st.json(record.output)
    st.markdown("**Steps**")
    if not record.steps:
        st.caption("No step finished.")
    for step in record.steps:
        with st.expander(f"{step.get('id', '?')} ({step.get('kind', '?')})", expanded=True):
            _step(step)


def _to_dataset(client: Client, record: RunRecord) -> None:
    """Add the opened run to a dataset as a case: its input, and optionally its output as
    the expected answer."""
    with st.expander("Add to a dataset"):
        try:
            datasets = client.list_datasets()
        except ERRORS as exc:
            show_error(exc)
            return
        if not datasets:
            st.caption("No datasets yet: create one on the Datasets page.")
            return
        names = {d.id: d.name for d in datasets}
        dataset_col, expected_col = st.columns([3, 2])
        dataset = str(
            dataset_col.selectbox(
                "Dataset", list(names), key="runs_to_dataset", format_func=lambda i: names[i]
            )
        )
        from_output = expected_col.checkbox(
            "Expected from its output", key="runs_to_dataset_expected"
        )
        if st.button("Add to dataset", key="runs_to_dataset_add"):
            try:
                added = client.run_to_dataset(record.id, dataset, expected_from_output=from_output)
            except ERRORS as exc:
                show_error(exc)
            else:
                st.success(f"Added the run to {names[dataset]} (revision {added.revision})")


st.title("Runs")
client = get_client()
app_uuid, status, start, end = _filters(client)
st.button("Refresh", key="runs_refresh")
offset = (st.session_state.get("runs_page", 1) - 1) * PAGE_SIZE
try:
    page = client.list_all_runs(
        app=app_uuid, status=status, start=start, end=end, limit=PAGE_SIZE, offset=offset
    )
except ERRORS as exc:
    show_error(exc)
    st.stop()
pages = max(1, -(-page.total // PAGE_SIZE))
if offset and offset >= page.total:  # the filters changed under a later page
    st.session_state["runs_page"] = 1
    st.rerun()
if page.total > PAGE_SIZE:
    st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, key="runs_page")
if not page.runs:
    st.caption("No runs match." if page.total or app_uuid or status or start else "No runs yet.")
    st.stop()
st.caption(f"{page.total} runs, newest first")
_table(page)
by_id = {r.id: r for r in page.runs}
run_id = st.selectbox(
    "Open run", list(by_id), key="runs_open", format_func=lambda i: _label(by_id[i])
)
try:
    record = client.get_run(run_id)
except ERRORS as exc:
    show_error(exc)
    st.stop()
_to_dataset(client, record)
_run(record)
