"""App analytics in SQL, checked against the runs the test made (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from app_docs import TEXT_APP
from fastapi.testclient import TestClient


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
