"""Compare evaluations: two evaluations of a dataset side by side. The aggregate deltas
on top (pass rate, each scorer's mean, latency, tokens: B against A), then each case
with both outputs, scores and verdicts: the regressed cases first (passed in A, fail in
B), then the improved, then the unchanged, a page at a time."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from appforge.client import Client, EvaluationComparison, EvaluationInfo
from builder.connection import ERRORS, get_client, show_error
from builder.page_controls import choose, page_offset

LISTED = 200  # the newest evaluations offered to compare
PAGE_SIZE = 20  # cases shown at a time
GROUPS = {
    "regressed": "Regressed: passed in A, fail in B",
    "improved": "Improved: failed in A, pass in B",
    "same": "Unchanged",
    "missing": "Not in both (or not finished in both)",
}


def _label(info: EvaluationInfo, apps: dict[str, str]) -> str:
    when = info.created_at.strftime("%Y-%m-%d %H:%M:%S")
    app = apps.get(info.app_uuid, info.app_uuid[:8])
    version = f" v{info.app_version}" if info.app_version else ""
    rate = info.summary.get("pass_rate")
    passed = "" if rate is None else f" · {rate:.0%} passed"
    return f"{when} · {app}{version} on {info.dataset_name} · {info.status}{passed}"


def _pick(client: Client) -> tuple[str, str]:
    """Evaluations A (before) and B (after); by default the two newest, the newer as B."""
    try:
        found = client.list_evaluations(limit=LISTED)
        apps = {a.uuid: a.name for a in client.list_apps(limit=500)}
    except ERRORS as exc:
        show_error(exc)
        st.stop()
    if len(found) < 2:
        st.info("Run two evaluations (Evaluations page) to compare them.")
        st.stop()
    by_id = {e.id: e for e in found}
    a_col, b_col = st.columns(2)
    with a_col:
        a = choose("A (before)", by_id, "cmp_a", lambda e: _label(e, apps), index=1)
    with b_col:
        b = choose("B (after)", by_id, "cmp_b", lambda e: _label(e, apps))
    return a, b


def _figure(value: float | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "rate":
        return f"{value:.0%}"
    if kind == "ms":
        return f"{value:.0f} ms"
    if kind == "score":
        return f"{value:.2f}"
    return f"{value:g}"


def _delta(change: dict[str, Any], kind: str) -> str | None:
    diff = change.get("delta")
    if not diff:  # unknown, or no change: no arrow
        return None
    if kind == "rate":
        return f"{diff * 100:+.0f} pts"
    if kind == "ms":
        return f"{diff:+.0f} ms"
    if kind == "score":
        return f"{diff:+.2f}"
    return f"{diff:+g}"


def _metric(where: Any, label: str, change: dict[str, Any], kind: str, lower_better: bool) -> None:
    where.metric(
        label,
        _figure(change.get("b"), kind),
        _delta(change, kind),
        delta_color="inverse" if lower_better else "normal",
        help=f"A: {_figure(change.get('a'), kind)}",
    )


def _aggregate(compared: EvaluationComparison) -> None:
    """The deltas of B against A, and how many cases changed which way."""
    agg = compared.aggregate
    counts = {g: sum(1 for c in compared.cases if c["change"] == g) for g in GROUPS}
    cols = st.columns(6)
    _metric(cols[0], "Pass rate", agg["pass_rate"], "rate", False)
    cols[1].metric("Regressed", counts["regressed"])
    cols[2].metric("Improved", counts["improved"])
    cols[3].metric("Unchanged", counts["same"])
    latency = agg["latency_ms"]
    _metric(cols[4], "Latency p50", latency["p50"], "ms", True)
    _metric(cols[5], "Tokens", agg["tokens"], "count", True)
    scores = agg.get("scores") or {}
    if scores:
        score_cols = st.columns(min(6, len(scores)))
        for n, (name, change) in enumerate(scores.items()):
            _metric(score_cols[n % len(score_cols)], f"Mean {name}", change, "score", False)
    a, b = compared.a, compared.b
    if (a.dataset_id, a.dataset_revision) != (b.dataset_id, b.dataset_revision):
        st.warning(
            f"A ran on {a.dataset_name} revision {a.dataset_revision}, B on {b.dataset_name}"
            f" revision {b.dataset_revision}: cases are matched by their id."
        )


def _output(side: dict[str, Any] | None) -> str:
    if side is None:
        return ""
    output = side.get("output")
    if output is None:
        return ""
    if len(output) == 1 and isinstance(next(iter(output.values())), str):
        return str(next(iter(output.values())))
    return json.dumps(output, ensure_ascii=False)


def _passed(side: dict[str, Any] | None) -> str:
    if side is None or side.get("passed") is None:
        return "–"
    return "✓ pass" if side["passed"] else "✗ fail"


def _table(cases: list[dict[str, Any]]) -> None:
    """All cases in one table, in the page's order."""
    st.dataframe(
        [
            {
                "change": c["change"],
                "input": json.dumps(c["input"], ensure_ascii=False),
                "A": _passed(c["a"]),
                "B": _passed(c["b"]),
                "A output": _output(c["a"]),
                "B output": _output(c["b"]),
            }
            for c in cases
        ],
        hide_index=True,
    )


def _side(title: str, side: dict[str, Any] | None) -> None:
    st.markdown(f"**{title}** {_passed(side)}")
    if side is None:
        st.caption("Not in this evaluation.")
        return
    st.code(_output(side) or "(no output)", language=None, wrap_lines=True)
    for score in side.get("scores") or []:
        mark = "✓" if score.get("passed") else "✗"
        st.caption(
            f"{mark} {score.get('scorer')} {float(score.get('score', 0)):.2f}: "
            f"{score.get('reason', '')}"
        )


def _case(case: dict[str, Any]) -> None:
    with st.container(border=True):
        st.markdown(f"**{case['change']}** · input `{json.dumps(case['input'])}`")
        if case.get("expected"):
            st.caption(f"expected {json.dumps(case['expected'], ensure_ascii=False)}")
        left, right = st.columns(2)
        with left:
            _side("A", case["a"])
        with right:
            _side("B", case["b"])


def _cases(compared: EvaluationComparison) -> None:
    """Each case side by side, grouped: regressed, improved, unchanged (and missing)."""
    ordered = [c for g in GROUPS for c in compared.cases if c["change"] == g]
    _table(ordered)
    start = page_offset(len(ordered), PAGE_SIZE, "cmp_page", "Cases page")
    shown = ordered[start : start + PAGE_SIZE]
    for group, title in GROUPS.items():
        members = [c for c in shown if c["change"] == group]
        if members:
            st.subheader(f"{title} ({sum(c['change'] == group for c in ordered)})")
        for case in members:
            _case(case)


st.title("Compare evaluations")
client = get_client()
a_id, b_id = _pick(client)
if a_id == b_id:
    st.info("Pick two different evaluations.")
    st.stop()
try:
    compared = client.compare_evaluations(a_id, b_id)
except ERRORS as exc:
    show_error(exc)
    st.stop()
_aggregate(compared)
_cases(compared)
