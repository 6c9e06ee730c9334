"""Per-app concurrency limits and run timeouts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

LONG_APP = """\
version: 1
name: Long
limits: {{max_active_runs: 1, timeout_seconds: {timeout}}}
input:
  topic: {{type: string, default: the sea}}
steps:
  - id: story
    kind: llm
    prompt:
      user: "Write a very long story about {{{{ input.topic }}}}."
    params: {{temperature: 0, seed: 1, max_tokens: {tokens}}}
output:
  story: "{{{{ story.text }}}}"
"""


def test_run_limit_max_active_runs_is_429(db_client: TestClient, create: Callable[..., Any]):
    app = create(db_client, LONG_APP.format(timeout=300, tokens=48))
    url = f"/api/apps/{app['uuid']}/run"
    with db_client.stream("POST", url, json={"stream": True}) as r:
        lines = r.iter_lines()
        first = json.loads(next(lines))
        assert "story" in first["output"]
        busy = db_client.post(url, json={})
        assert busy.status_code == 429
        assert busy.json()["error"]["code"] == "TOO_MANY_ACTIVE_RUNS"
        assert busy.headers["retry-after"] == "1"
        rest = [json.loads(line) for line in lines if line]
        assert rest[-1]["done"] is True
    assert db_client.post(url, json={}).status_code == 200  # the place is free again
    statuses = [run["status"] for run in db_client.get(f"/api/apps/{app['uuid']}/runs").json()]
    assert sorted(statuses) == ["succeeded", "succeeded"]  # the refused run was not stored


def test_run_timeout_stores_timeout_with_partial_output(
    client: TestClient, create: Callable[..., Any]
):
    app = create(client, LONG_APP.format(timeout=0.5, tokens=400))
    r = client.post(f"/api/apps/{app['uuid']}/run", json={})
    assert r.status_code == 504
    err = r.json()["error"]
    assert err["code"] == "RUN_TIMEOUT"
    run = client.get(f"/api/runs/{err['details']['run_id']}").json()
    assert run["status"] == "timeout"
    assert run["error"]["code"] == "RUN_TIMEOUT"
    assert 0 < run["usage"]["completion_tokens"] < 400
    assert run["latency_ms"] < 30_000
    listed = client.get(f"/api/apps/{app['uuid']}/runs", params={"status": "timeout"}).json()
    assert [x["id"] for x in listed] == [run["id"]]
