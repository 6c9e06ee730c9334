"""Analytics: an app's runs, or the runs that used a managed prompt, over a range of days
in hour or day buckets: runs and errors, p50/p95 latency and time to first token, and
tokens, as bar charts, with the totals above them and a table per version."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from appforge.client import AppAnalytics, BucketStats, Client, PromptAnalytics, RunStats
from builder.connection import ERRORS, get_client, pick_app, show_error

BUCKETS = {"day": timedelta(days=1), "hour": timedelta(hours=1)}


def _range() -> tuple[datetime, datetime, str]:
    """The days (UTC) and bucket chosen on the page, as ``since``..``until``."""
    today = datetime.now(UTC).date()
    days_col, bucket_col = st.columns([3, 1])
    picked = days_col.date_input(
        "Days (UTC)", value=(today - timedelta(days=6), today), max_value=today, key="an_days"
    )
    bucket = bucket_col.radio("Bucket", list(BUCKETS), horizontal=True, key="an_bucket")
    days = [d for d in (picked if isinstance(picked, tuple) else (picked,)) if d is not None]
    if len(days) != 2:
        st.info("Pick the first and the last day.")
        st.stop()
    return _midnight(days[0]), _midnight(days[1] + timedelta(days=1)), str(bucket)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def _prompt_id(client: Client) -> str:
    """A managed prompt picked by use case, then name; stops the page if there is none."""
    try:
        cases = client.list_use_cases()
        by_case = {c.id: c.name for c in cases}
        case = st.selectbox(
            "Use case", list(by_case), key="an_case", format_func=lambda i: by_case[i]
        )
        prompts = client.list_prompts(case) if case else []
    except ERRORS as exc:
        show_error(exc)
        st.stop()
    if not prompts:
        st.info("No prompts yet: create one on the Prompts page.")
        st.stop()
    names: dict[str, str] = {p.id: p.name for p in prompts}
    chosen = st.selectbox("Prompt", list(names), key="an_prompt", format_func=lambda i: names[i])
    return str(chosen)


def _frame(series: list[BucketStats], since: datetime, until: datetime, bucket: str) -> Any:
    """One row per bucket of the range, empty buckets included (no runs: zero, no latency)."""
    step = BUCKETS[bucket]
    first = since.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        first = first.replace(hour=0)
    index = pd.date_range(first, until - timedelta(microseconds=1), freq=step, name="time")
    frame = pd.DataFrame(
        0.0,
        index=index,
        columns=["runs (no error)", "errors", "tokens in", "tokens out"],
    )
    for column in ("latency p50", "latency p95", "ttft p50", "ttft p95"):
        frame[column] = float("nan")
    for point in series:
        at = pd.Timestamp(datetime.fromisoformat(point.bucket))
        frame.loc[at] = [
            point.runs - point.errors,
            point.errors,
            point.tokens.prompt,
            point.tokens.completion,
            point.latency_ms.p50,
            point.latency_ms.p95,
            point.ttft_ms.p50,
            point.ttft_ms.p95,
        ]
    frame = frame.sort_index()
    # Bucket labels that sort as time: drawn as categories, each bar as wide as its bucket.
    frame.index = frame.index.strftime("%Y-%m-%d" if bucket == "day" else "%Y-%m-%d %H:00")
    return frame


def _totals(totals: RunStats) -> None:
    cols = st.columns(6)
    cols[0].metric("Runs", totals.runs)
    cols[1].metric("Errors", totals.errors, help=f"error rate {totals.error_rate:.1%}")
    cols[2].metric("Latency p50", _ms(totals.latency_ms.p50))
    cols[3].metric("Latency p95", _ms(totals.latency_ms.p95))
    cols[4].metric("First token p50", _ms(totals.ttft_ms.p50))
    cols[5].metric("Tokens in / out", f"{totals.tokens.prompt} / {totals.tokens.completion}")


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def _charts(frame: Any) -> None:
    """Runs stacked on errors; the other figures side by side per bucket (a bucket with
    one run still shows, which a line through one point would not). A bucket without
    runs has no bar, and stays on the axis so that every chart has the same one."""
    frame = frame.fillna(0)
    height = 240
    left, right = st.columns(2)
    with left:
        st.markdown("**Runs and errors**")
        runs = frame[["runs (no error)", "errors"]]
        st.bar_chart(runs, color=["#4c78a8", "#e45756"], height=height)
        st.markdown("**Latency (ms)**")
        st.bar_chart(frame[["latency p50", "latency p95"]], stack=False, height=height)
    with right:
        st.markdown("**Tokens**")
        st.bar_chart(frame[["tokens in", "tokens out"]], stack=False, height=height)
        st.markdown("**Time to first token (ms)**")
        st.bar_chart(frame[["ttft p50", "ttft p95"]], stack=False, height=height)


def _table(rows: list[Any], key: str) -> None:
    st.dataframe(
        [
            {
                key: getattr(r, key),
                "runs": r.runs,
                "errors": r.errors,
                "latency p50 ms": r.latency_ms.p50,
                "latency p95 ms": r.latency_ms.p95,
                "ttft p50 ms": r.ttft_ms.p50,
                "tokens in": r.tokens.prompt,
                "tokens out": r.tokens.completion,
            }
            for r in rows
        ],
        hide_index=True,
    )


def _load(client: Client, since: datetime, until: datetime, bucket: str) -> Any:
    if st.radio("Analytics of", ["App", "Prompt"], horizontal=True, key="an_scope") == "App":
        app = pick_app(client, "an_app")
        return client.analytics(app.uuid, start=since, end=until, bucket=bucket)
    prompt_id = _prompt_id(client)
    return client.prompt_analytics(prompt_id, start=since, end=until, bucket=bucket)


st.title("Analytics")
client = get_client()
since, until, bucket = _range()
try:
    stats: AppAnalytics | PromptAnalytics = _load(client, since, until, bucket)
except ERRORS as exc:
    show_error(exc)
    st.stop()
_totals(stats.totals)
if not stats.totals.runs:
    st.info("No finished runs in this range.")
    st.stop()
_charts(_frame(stats.series, since, until, bucket))
if isinstance(stats, AppAnalytics):
    st.markdown("**Per app version**")
    _table(stats.by_version, "app_version")
else:
    st.markdown("**Per prompt version**")
    _table(stats.by_version, "prompt_version")
    st.markdown("**Per label**")
    _table(stats.by_label, "label")
