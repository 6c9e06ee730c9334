"""Runs: an app's recent runs (status, latency, tokens); open one to see what happened."""

from __future__ import annotations

import streamlit as st

from builder.connection import ERRORS, get_client, pick_app, show_error

st.title("Runs")
client = get_client()
app = pick_app(client, "runs_app")
uuid = app.uuid
status = st.selectbox(
    "Status", ["any", "succeeded", "failed", "cancelled", "timeout", "running"], key="runs_status"
)
st.button("Refresh", key="runs_refresh")
try:
    runs = client.list_runs(uuid, status=None if status == "any" else status)
except ERRORS as exc:
    show_error(exc)
    st.stop()
if not runs:
    st.caption("No runs yet.")
    st.stop()
st.dataframe(
    [
        {
            "id": r.id,
            "status": r.status,
            "latency ms": round(r.latency_ms) if r.latency_ms is not None else None,
            "tokens in": r.usage.get("prompt_tokens"),
            "tokens out": r.usage.get("completion_tokens"),
            "version": r.app_version,
            "session": r.session_id,
        }
        for r in runs
    ],
    hide_index=True,
)
run_id = st.selectbox("Open run", [r.id for r in runs], key="runs_open")
try:
    record = client.get_run(run_id)
except ERRORS as exc:
    show_error(exc)
    st.stop()
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
for step in record.steps:
    title = f"{step.get('id', '?')} ({step.get('kind', '?')})"
    with st.expander(title):
        st.json(step)
st.caption(f"usage: {record.usage}")
