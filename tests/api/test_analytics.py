"""App analytics in SQL, checked against the runs the test made (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from app_docs import TEXT_APP
from fastapi.testclient import TestClient
from sqlalchemy import insert

from appforge.core.db import make_engine
from appforge.core.settings import Settings
from runs.tables import Run


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def test_analytics_match_stored_runs(db_client: TestClient, create: Callable[..., Any]):
    app = create(db_client)
    url = f"/api/apps/{app['uuid']}/run"
    for q in ("one", "two", "three"):
        assert db_client.post(url, json={"input": {"question": q}}).status_code == 200
    broken = TEXT_APP.replace('user: "{{ input.question }}"', 'user: "{{ 1 // 0 }}"')
    assert (
        db_client.patch(
            f"/api/apps/{app['uuid']}", content=broken, headers={"Content-Type": "application/yaml"}
        ).status_code
        == 200
    )
    assert db_client.post(url, json={"input": {"question": "four"}}).status_code == 500
    runs = db_client.get(f"/api/apps/{app['uuid']}/runs").json()
    assert len(runs) == 4

    r = db_client.get(f"/api/apps/{app['uuid']}/analytics", params={"bucket": "hour"})
    assert r.status_code == 200, r.text
    body = r.json()
    totals = body["totals"]
    assert (totals["runs"], totals["errors"], totals["cancelled"]) == (4, 1, 0)
    assert totals["error_rate"] == 0.25
    latencies = [run["latency_ms"] for run in runs]
    assert totals["latency_ms"]["p50"] == _nearest_rank(latencies, 0.5)
    assert totals["latency_ms"]["p95"] == _nearest_rank(latencies, 0.95)
    ttfts = [run["ttft_ms"] for run in runs if run["ttft_ms"] is not None]
    assert len(ttfts) == 3
    assert totals["ttft_ms"]["p50"] == _nearest_rank(ttfts, 0.5)
    prompt = sum(run["usage"].get("prompt_tokens", 0) for run in runs)
    completion = sum(run["usage"].get("completion_tokens", 0) for run in runs)
    assert totals["tokens"] == {
        "prompt": prompt,
        "completion": completion,
        "total": prompt + completion,
    }
    hours = {
        datetime.fromisoformat(run["created_at"]).astimezone(UTC).strftime("%Y-%m-%dT%H:00:00Z")
        for run in runs
    }
    assert [b["bucket"] for b in body["series"]] == sorted(hours)
    assert sum(b["runs"] for b in body["series"]) == 4
    versions = {v["app_version"]: (v["runs"], v["errors"]) for v in body["by_version"]}
    assert versions == {1: (3, 0), 2: (1, 1)}


def test_analytics_window_and_bad_params(client: TestClient, create: Callable[..., Any]):
    app = create(client)
    client.post(f"/api/apps/{app['uuid']}/run", json={"input": {"question": "x"}})
    base = f"/api/apps/{app['uuid']}/analytics"
    past = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    older = (datetime.now(UTC) - timedelta(days=20)).isoformat()
    empty = client.get(base, params={"from": past, "to": older}).json()
    assert empty["totals"]["runs"] == 0 and empty["series"] == []
    day = client.get(base, params={"bucket": "day"}).json()
    assert day["series"][0]["bucket"] == datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    bad = client.get(base, params={"bucket": "week"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
    backwards = client.get(base, params={"from": older, "to": past})
    assert backwards.status_code == 422
    assert client.get("/api/apps/nope/analytics").json()["error"]["code"] == "APP_NOT_FOUND"


PINNED = """\
name: Pinned
input:
  q: {type: string, required: true}
steps:
  - id: answer
    kind: llm
    prompt: {ref: greeter, label: production, variables: {q: "{{ input.q }}"}}
    params: {temperature: 0, seed: 1, max_tokens: 6}
output:
  answer: "{{ answer.text }}"
"""


def test_prompt_analytics_per_version_and_label(db_client: TestClient):
    uc = db_client.post("/api/v1/use-cases", json={"name": "Greet"}).json()["id"]
    pid = db_client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "greeter"}).json()["id"]
    for text in ("Say hi to {{ q }}.", "Say hello to {{ q }}."):
        body = {"type": "text", "template_text": text}
        assert db_client.post(f"/api/v1/prompts/{pid}/versions", json=body).status_code == 201
    promote = f"/api/v1/prompts/{pid}/versions/{{}}/promote"
    db_client.post(promote.format(1), json={"label": "production"})
    app = db_client.post(
        "/api/apps", content=PINNED, headers={"Content-Type": "application/yaml"}
    ).json()
    run = f"/api/apps/{app['uuid']}/run"
    for name in ("Ada", "Bo"):
        assert db_client.post(run, json={"input": {"q": name}}).status_code == 200
    db_client.post(promote.format(2), json={"label": "production"})
    assert db_client.post(run, json={"input": {"q": "Cy"}}).status_code == 200

    r = db_client.get(f"/api/v1/prompts/{pid}/analytics")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totals"]["runs"] == 3 and body["totals"]["errors"] == 0
    assert {v["prompt_version"]: v["runs"] for v in body["by_version"]} == {1: 2, 2: 1}
    assert [(x["label"], x["runs"]) for x in body["by_label"]] == [("production", 3)]
    runs = db_client.get(f"/api/apps/{app['uuid']}/runs").json()
    assert body["totals"]["tokens"]["completion"] == sum(
        x["usage"]["completion_tokens"] for x in runs
    )
    missing = db_client.get("/api/v1/prompts/nope/analytics")
    assert missing.status_code == 404


def _store_runs(url: str, app_uuid: str, runs: list[tuple[datetime, str, Any, Any, int]]) -> None:
    """Runs at chosen times (status, latency, ttft, tokens in; one token out each)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            insert(Run),
            [
                {
                    "id": f"run-{n}", "app_uuid": app_uuid, "app_version": 1,
                    "session_id": f"s{n}", "status": status, "stream": False,
                    "input": {"question": "q"}, "output": {}, "steps": [],
                    "usage": {"prompt_tokens": tokens, "completion_tokens": 1},
                    "latency_ms": latency, "ttft_ms": ttft, "created_at": at,
                }
                for n, (at, status, latency, ttft, tokens) in enumerate(runs)
            ],
        )  # fmt: skip
    engine.dispose()


def test_analytics_series_by_hour_and_day_over_since_until(
    db_client: TestClient, create: Callable[..., Any], backend: str | None, settings: Settings
):
    app = create(db_client)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    base = midnight - timedelta(days=3) + timedelta(hours=10)
    minutes = [5, 20, 40, 65, 26 * 60 + 5, 27 * 60 + 5, -60, 28 * 60]
    stored = [
        ("succeeded", 100.0, 10.0, 5),
        ("failed", 300.0, None, 4),
        ("succeeded", 200.0, 30.0, 6),
        ("succeeded", 400.0, 20.0, 7),
        ("timeout", 900.0, None, 0),
        ("cancelled", 50.0, 5.0, 1),
        ("succeeded", 1.0, 1.0, 1),  # before the range
        ("running", None, None, 0),  # not finished: not counted
    ]
    runs = [(base + timedelta(minutes=m), *row) for m, row in zip(minutes, stored, strict=True)]
    _store_runs(backend or settings.resolved_database_url(), app["uuid"], runs)
    url = f"/api/apps/{app['uuid']}/analytics"
    since, until = base.isoformat(), (base + timedelta(hours=30)).isoformat()

    hourly = db_client.get(url, params={"since": since, "until": until, "bucket": "hour"})
    assert hourly.status_code == 200, hourly.text
    body = hourly.json()
    totals = body["totals"]
    assert (totals["runs"], totals["errors"], totals["cancelled"]) == (6, 2, 1)
    stamp = "%Y-%m-%dT%H:00:00Z"
    hours = [base + timedelta(hours=h) for h in (0, 1, 26, 27)]
    assert [b["bucket"] for b in body["series"]] == [h.strftime(stamp) for h in hours]
    first = body["series"][0]
    assert (first["runs"], first["errors"]) == (3, 1)
    assert first["latency_ms"]["p50"] == 200.0 and first["latency_ms"]["p95"] == 300.0
    assert (first["ttft_ms"]["p50"], first["ttft_ms"]["p95"]) == (10.0, 30.0)
    assert first["tokens"] == {"prompt": 15, "completion": 3, "total": 18}
    assert [b["runs"] for b in body["series"]] == [3, 1, 1, 1]
    assert [b["errors"] for b in body["series"]] == [1, 0, 1, 0]

    daily = db_client.get(url, params={"since": since, "until": until, "bucket": "day"}).json()
    days = [midnight - timedelta(days=3), midnight - timedelta(days=2)]
    assert [b["bucket"] for b in daily["series"]] == [
        d.strftime("%Y-%m-%dT00:00:00Z") for d in days
    ]
    assert [b["runs"] for b in daily["series"]] == [4, 2]
    assert daily["series"][0]["latency_ms"]["p95"] == 400.0
    # The older names of the range give the same answer.
    old = db_client.get(url, params={"from": since, "to": until, "bucket": "hour"}).json()
    assert old == body


def test_analytics_range_is_bounded_in_buckets(client: TestClient, create: Callable[..., Any]):
    app = create(client)
    url = f"/api/apps/{app['uuid']}/analytics"
    until = datetime(2026, 6, 1, tzinfo=UTC)
    since = (until - timedelta(hours=2001)).isoformat()
    too_many = client.get(
        url, params={"since": since, "until": until.isoformat(), "bucket": "hour"}
    )
    assert too_many.status_code == 422
    error = too_many.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and "2001 hour buckets" in error["message"]
    assert error["details"] == {"buckets": "2001", "max_buckets": "2000"}
    by_day = client.get(url, params={"since": since, "until": until.isoformat(), "bucket": "day"})
    assert by_day.status_code == 200 and by_day.json()["series"] == []
    both = client.get(url, params={"since": since, "from": since})
    assert both.status_code == 422
    uc = client.post("/api/v1/use-cases", json={"name": "Bounds"}).json()["id"]
    pid = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "p"}).json()["id"]
    prompt = client.get(
        f"/api/v1/prompts/{pid}/analytics",
        params={"since": since, "until": until.isoformat(), "bucket": "hour"},
    )
    assert prompt.status_code == 422 and "2001 hour buckets" in prompt.json()["error"]["message"]
    early = client.get(url, params={"until": "0001-01-03T00:00:00Z"})
    assert early.status_code == 422
