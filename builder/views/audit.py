"""Audit log (admin tokens): who created, changed or deleted what, newest first, filtered."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

import streamlit as st

from appforge.client import PermissionDeniedError
from builder.connection import ERRORS, get_client, show_error

st.title("Audit log")
client = get_client()


def _day_start(day: date | None, *, after: bool = False) -> datetime | None:
    """The start of ``day`` in UTC (of the next day with ``after``: the day is included)."""
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=1 if after else 0), time(0), UTC)


left, middle, right = st.columns(3)
actor = left.text_input("Actor (token name or id, or anonymous)", key="audit_actor")
action = middle.text_input("Action (app.created, or a prefix such as app.)", key="audit_action")
target = right.text_input("Target id", key="audit_target")
left, middle, right = st.columns(3)
start = left.date_input("From (UTC)", value=None, key="audit_from")
end = middle.date_input("To (UTC, included)", value=None, key="audit_to")
size = int(right.number_input("Per page", 10, 500, 100, step=10, key="audit_size"))
page = int(st.number_input("Page", min_value=1, value=1, key="audit_page"))
st.button("Refresh", key="audit_refresh")
try:
    log = client.audit(
        actor=actor.strip() or None,
        action=action.strip() or None,
        target=target.strip() or None,
        start=_day_start(start),
        end=_day_start(end, after=True),
        limit=size,
        offset=(page - 1) * size,
    )
except PermissionDeniedError as exc:
    st.info("Only admin tokens can read the audit log.")
    show_error(exc)
    st.stop()
except ERRORS as exc:
    show_error(exc)
    st.stop()
if not log.events:
    st.caption(f"No events on this page ({log.total} match).")
    st.stop()
first = (page - 1) * size + 1
st.caption(f"Events {first}-{first + len(log.events) - 1} of {log.total}, newest first.")
st.dataframe(
    [
        {
            "at": e.at,
            "actor": e.actor,
            "address": e.actor_address,
            "action": e.action,
            "target": e.target_type,
            "target id": e.target_id,
            "details": json.dumps(e.details, sort_keys=True),
        }
        for e in log.events
    ],
    hide_index=True,
)
