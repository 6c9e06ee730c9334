"""Evaluations: run an app over a dataset's cases and score each run. Start one (dataset,
app and app version, managed prompts at another label or version, model and parameters,
scorers from a form per type, concurrency); watch it fill in (cases done of all, each
case's result as it arrives, the summary so far), cancel it; the past evaluations, newest
first, a page at a time."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from appforge.client import AppInfo, CaseResult, Client, EvaluationInfo
from builder.connection import ERRORS, get_client, show_error
from builder.page_controls import show_flash
from builder.scorer_form import ScorerFormError, scorer_rows, scorer_specs

PAGE_SIZE = 20  # evaluations listed at a time
RESULTS_PAGE = 50  # case results shown at a time
PIN_MODES = ["as the app pins it", "label", "version"]


def prompt_refs(definition: Any) -> list[str]:
    """The managed prompts an app definition pins (``{"ref": ...}``), in order, once each."""
    found: list[str] = []
    if isinstance(definition, dict):
        if isinstance(definition.get("ref"), str):
            found.append(definition["ref"])
        for value in definition.values():
            found.extend(prompt_refs(value))
    elif isinstance(definition, list):
        for item in definition:
            found.extend(prompt_refs(item))
    return list(dict.fromkeys(found))


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


# --- starting one -----------------------------------------------------------------------


def _app_and_version(client: Client, apps: list[AppInfo]) -> tuple[AppInfo, int | None, Any]:
    """The app, its version (None: the current one) and that version's definition."""
    by_uuid = {a.uuid: a for a in apps}
    app_col, version_col = st.columns([3, 1])
    uuid = app_col.selectbox(
        "App", list(by_uuid), key="ev_app", format_func=lambda u: by_uuid[u].name
    )
    app = by_uuid[uuid]
    versions = [v.version for v in client.app_versions(uuid) if v.version != app.version]
    version = version_col.selectbox(
        "App version",
        [None, *sorted(versions, reverse=True)],
        key=f"ev_app_version_{uuid}",
        format_func=lambda v: f"current ({app.version})" if v is None else str(v),
    )
    if version is None:
        return app, None, app.definition
    return app, int(version), client.get_app_version(uuid, int(version)).definition


def _overrides(definition: Any) -> dict[str, Any] | None:
    """Managed prompts at another label or version, another model, parameters; None (and
    an error shown) when the parameters are not a JSON object."""
    overrides: dict[str, Any] = {}
    pins: dict[str, Any] = {}
    for n, ref in enumerate(prompt_refs(definition)):
        mode_col, value_col = st.columns([2, 3])
        mode = mode_col.selectbox(f"Prompt {ref}", PIN_MODES, key=f"ev_pin_mode_{n}_{ref}")
        if mode == "label":
            label = value_col.text_input(f"Label of {ref}", key=f"ev_pin_label_{n}_{ref}")
            if label.strip():
                pins[ref] = {"label": label.strip()}
        elif mode == "version":
            version = value_col.number_input(
                f"Version of {ref}", min_value=1, step=1, key=f"ev_pin_version_{n}_{ref}"
            )
            pins[ref] = {"version": int(version)}
    if pins:
        overrides["prompts"] = pins
    model_col, params_col = st.columns(2)
    model = model_col.text_input("Model of every llm step (empty: the app's)", key="ev_model")
    if model.strip():
        overrides["model"] = model.strip()
    params = params_col.text_input('Parameters (JSON), e.g. {"temperature": 0}', key="ev_params")
    if params.strip():
        try:
            overrides["params"] = json.loads(params)
        except json.JSONDecodeError as exc:
            st.error(f"OVERRIDE_INVALID: the parameters are not JSON: {exc.msg}")
            return None
    return overrides


def _start(client: Client, apps: list[AppInfo]) -> None:
    """The form of a new evaluation; Start sends it and opens it."""
    try:
        datasets = client.list_datasets()
    except ERRORS as exc:
        show_error(exc)
        return
    if not datasets or not apps:
        st.info("An evaluation needs a dataset (Datasets page) and an app (Apps page).")
        return
    names = {d.id: f"{d.name} ({d.case_count} cases)" for d in datasets}
    dataset = str(
        st.selectbox("Dataset", list(names), key="ev_dataset", format_func=lambda i: names[i])
    )
    try:
        app, version, definition = _app_and_version(client, apps)
    except ERRORS as exc:
        show_error(exc)
        return
    overrides = _overrides(definition)
    scorer_rows(list(definition.get("output") or {}))
    concurrency = st.number_input("Cases run at once", min_value=1, value=4, key="ev_concurrency")
    if not st.button("Start evaluation", key="ev_start", type="primary") or overrides is None:
        return
    try:
        scorers = scorer_specs()
    except ScorerFormError as exc:
        st.error(f"SCORER_INVALID: {exc}")
        return
    try:
        made = client.start_evaluation(
            dataset,
            app.uuid,
            scorers,
            app_version=version,
            overrides=overrides,
            concurrency=int(concurrency),
        )
    except ERRORS as exc:
        show_error(exc)
        return
    st.session_state["ev_open"] = made.id
    st.session_state["ev_list_page"] = 0
    st.session_state["ev_flash"] = f"Started evaluation {made.id[:8]} of {app.name}"
    st.rerun()


# --- the past ones ----------------------------------------------------------------------


def _label(info: EvaluationInfo, apps: dict[str, str]) -> str:
    when = info.created_at.strftime("%Y-%m-%d %H:%M:%S")
    app = apps.get(info.app_uuid, info.app_uuid[:8])
    return f"{when} · {app} on {info.dataset_name} · {info.status}"


def _past(client: Client, apps: dict[str, str]) -> str | None:
    """The evaluations table (a page at a time, newest first); the one opened, if any."""
    page = st.session_state.setdefault("ev_list_page", 0)
    try:
        found = client.list_evaluations(limit=PAGE_SIZE + 1, offset=page * PAGE_SIZE)
    except ERRORS as exc:
        show_error(exc)
        return None
    shown = found[:PAGE_SIZE]
    if not shown:
        st.caption("No evaluations yet.")
        return None
    st.dataframe(
        [
            {
                "started": e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                "status": e.status,
                "app": apps.get(e.app_uuid, e.app_uuid[:8]),
                "version": e.app_version,
                "dataset": f"{e.dataset_name} (rev {e.dataset_revision})",
                "cases": f"{e.cases_done}/{e.cases_total}",
                "pass rate": _percent(e.summary.get("pass_rate")),
                "id": e.id,
            }
            for e in shown
        ],
        hide_index=True,
    )
    newer, older = st.columns(2)
    if newer.button("Newer", key="ev_newer", disabled=page == 0):
        st.session_state["ev_list_page"] = page - 1
        st.rerun()
    if older.button("Older", key="ev_older", disabled=len(found) <= PAGE_SIZE):
        st.session_state["ev_list_page"] = page + 1
        st.rerun()
    by_id = {e.id: e for e in shown}
    if st.session_state.get("ev_open") not in by_id:
        st.session_state["ev_open"] = shown[0].id
    return str(
        st.selectbox(
            "Open evaluation",
            list(by_id),
            key="ev_open",
            format_func=lambda i: _label(by_id[i], apps),
        )
    )


# --- one, live --------------------------------------------------------------------------


def _summary(info: EvaluationInfo) -> None:
    summary = info.summary
    cols = st.columns(5)
    cols[0].metric("Status", info.status)
    cols[1].metric("Cases done", f"{info.cases_done} / {info.cases_total}")
    cols[2].metric("Pass rate", _percent(summary.get("pass_rate")))
    latency = summary.get("latency_ms") or {}
    cols[3].metric("Latency p50 / p95", f"{_ms(latency.get('p50'))} / {_ms(latency.get('p95'))}")
    cols[4].metric("Tokens", (summary.get("tokens") or {}).get("total", 0))
    done = info.cases_done / info.cases_total if info.cases_total else 1.0
    st.progress(done, text=f"{info.cases_done} of {info.cases_total} cases done")
    scores = summary.get("scores") or {}
    if scores:
        st.caption("Mean score: " + " · ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    if info.error:
        st.error(f"{info.error.get('code')}: {info.error.get('message')}")
    st.caption(
        f"evaluation {info.id} · dataset {info.dataset_name} revision {info.dataset_revision}"
        f" · app version {info.app_version or 'current'} · concurrency {info.concurrency}"
        + (f" · overrides {json.dumps(info.overrides)}" if info.overrides else "")
    )


def _verdict(score: dict[str, Any]) -> str:
    return f"{'✓' if score.get('passed') else '✗'} {float(score.get('score', 0)):.2f}"


def _output(output: dict[str, Any] | None) -> str:
    """An output as one line: a single text value as is, else JSON."""
    if output is None:
        return ""
    if len(output) == 1 and isinstance(next(iter(output.values())), str):
        return str(next(iter(output.values())))
    return json.dumps(output, ensure_ascii=False)


def _results_table(results: list[CaseResult], scorers: list[str]) -> None:
    rows = []
    for r in results:
        row: dict[str, Any] = {
            "#": r.n + 1,
            "status": r.status,
            "passed": "" if r.passed is None else "✓" if r.passed else "✗",
            "input": json.dumps(r.input, ensure_ascii=False),
            "output": _output(r.output),
        }
        by_scorer = {s.get("scorer"): s for s in r.scores}
        for name in scorers:
            row[name] = _verdict(by_scorer[name]) if name in by_scorer else ""
        row["latency ms"] = None if r.latency_ms is None else round(r.latency_ms)
        row["tokens"] = r.tokens
        row["error"] = f"{r.error.get('code')}: {r.error.get('message')}" if r.error else ""
        rows.append(row)
    st.dataframe(rows, hide_index=True)


def _results(client: Client, info: EvaluationInfo) -> None:
    """The case results (a page at a time), and one case's reasons."""
    pages = max(1, -(-info.cases_total // RESULTS_PAGE))
    key = f"ev_results_page_{info.id}"
    if pages > 1:
        st.number_input(f"Results page (of {pages})", min_value=1, max_value=pages, key=key)
    offset = (st.session_state.get(key, 1) - 1) * RESULTS_PAGE
    results = client.evaluation_results(info.id, limit=RESULTS_PAGE, offset=offset)
    scorers = [str(s.get("name") or s.get("type")) for s in info.scorers]
    _results_table(results, scorers)
    scored = [r for r in results if r.scores]
    if not scored:
        return
    by_n = {r.n: r for r in scored}
    n = st.selectbox(
        "Case", list(by_n), key=f"ev_case_{info.id}", format_func=lambda i: f"#{i + 1}"
    )
    for score in by_n[n].scores:
        st.markdown(f"**{score.get('scorer')}** {_verdict(score)}: {score.get('reason', '')}")
    if by_n[n].run_id:
        st.caption(f"run {by_n[n].run_id} (open it on the Runs page)")


def _cancel(client: Client, info: EvaluationInfo) -> None:
    if st.button("Cancel evaluation", key="ev_cancel", disabled=info.ended):
        try:
            cancelled = client.cancel_evaluation(info.id)
        except ERRORS as exc:
            show_error(exc)
        else:
            st.session_state["ev_flash"] = (
                f"Cancelled evaluation {info.id[:8]}:"
                f" {cancelled.cases_done} of {cancelled.cases_total} cases done"
            )
            st.rerun(scope="app")


def _watch(client: Client, evaluation_id: str) -> None:
    """The opened evaluation; while it runs it refreshes itself each second."""
    try:
        fetched = [client.get_evaluation(evaluation_id)]
    except ERRORS as exc:
        show_error(exc)
        return
    running = not fetched[0].ended

    @st.fragment(run_every=1.0 if running else None)
    def live() -> None:
        # The page's own run shows what it fetched; each refresh fetches anew.
        try:
            info = fetched.pop() if fetched else client.get_evaluation(evaluation_id)
            if running and info.ended:
                st.rerun(scope="app")  # ended: stop refreshing, show the final state
            _summary(info)
            _cancel(client, info)
            _results(client, info)
        except ERRORS as exc:
            show_error(exc)

    live()


st.title("Evaluations")
client = get_client()
show_flash("ev_flash")
try:
    apps = client.list_apps(limit=500)
except ERRORS as exc:
    show_error(exc)
    st.stop()
with st.expander("Start an evaluation", expanded=not st.session_state.get("ev_open")):
    _start(client, apps)
st.subheader("Evaluations")
opened = _past(client, {a.uuid: a.name for a in apps})
if opened:
    _watch(client, opened)
