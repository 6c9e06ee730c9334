"""Streamed runs: NDJSON and SSE chunks, their concatenation, the done and error lines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from app_docs import TEXT_APP
from fastapi.testclient import TestClient

CHAIN_APP = """\
version: 1
name: Chain
input:
  topic: {type: string, required: true}
  divisor: {type: integer, default: 1}
steps:
  - id: draft
    kind: llm
    prompt:
      user: "Write one sentence about {{ input.topic }}."
    params: {temperature: 0, seed: 5, max_tokens: 8}
  - id: polish
    kind: llm
    prompt:
      user: "Improve ({{ 10 // input.divisor }}): {{ draft.text }}"
    params: {temperature: 0, seed: 5, max_tokens: 8}
output:
  draft: "{{ draft.text }}"
  final: "{{ polish.text }}"
  steps: "{{ [draft.model, polish.model] }}"
"""


def _ndjson(
    client: TestClient, url: str, body: dict[str, Any], **headers: str
) -> tuple[list[dict[str, Any]], Any]:
    with client.stream("POST", url, json=body, headers=headers) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
        return lines, r


def _stitch(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in chunks:
        for k, v in c["output"].items():
            out[k] = out.get(k, "") + v if isinstance(v, str) else v
    return out


def test_stream_ndjson_concatenates_to_stored_output(
    db_client: TestClient, create: Callable[..., Any]
):
    app = create(db_client, CHAIN_APP)
    url = f"/api/apps/{app['uuid']}/run"
    lines, r = _ndjson(db_client, url, {"input": {"topic": "tea"}, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.headers["x-request-id"]
    *chunks, last = lines
    assert last["done"] is True
    assert last["run"]["status"] == "succeeded"
    assert set(last["run"]) == {"id", "status", "usage", "latency_ms"}
    sid = last["session"]["id"]
    assert all(c["session"]["id"] == sid and len(c["output"]) == 1 for c in chunks)
    draft_chunks = [c for c in chunks if "draft" in c["output"]]
    assert len(draft_chunks) > 1  # streamed piece by piece, not whole
    # all draft pieces arrive before any piece of the later step
    keys = [next(iter(c["output"])) for c in chunks]
    assert keys.index("final") > max(i for i, k in enumerate(keys) if k == "draft")
    stitched = _stitch(chunks)
    stored = db_client.get(f"/api/runs/{last['run']['id']}").json()
    assert stitched == stored["output"]
    assert isinstance(stitched["steps"], list)  # non-string values arrive whole, once
    assert sum("steps" in c["output"] for c in chunks) == 1
    plain = db_client.post(url, json={"input": {"topic": "tea"}}).json()
    assert plain["output"] == stitched  # same seed, same bytes


def test_stream_sse_carries_same_json(client: TestClient, create: Callable[..., Any]):
    app = create(client)
    url = f"/api/apps/{app['uuid']}/run"
    body = {"input": {"question": "Say hello"}, "stream": True}
    with client.stream("POST", url, json=body, headers={"Accept": "text/event-stream"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [block for block in raw.split("\n\n") if block]
    parsed = []
    for n, block in enumerate(events, start=1):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert fields["id"] == str(n)
        parsed.append((fields["event"], json.loads(fields["data"])))
    assert parsed[-1][0] == "done" and parsed[-1][1]["done"] is True
    assert {e for e, _ in parsed[:-1]} == {"chunk"}
    stitched = _stitch([d for _, d in parsed[:-1]])
    plain = client.post(url, json={"input": {"question": "Say hello"}}).json()
    assert stitched == plain["output"]


def test_stream_failure_after_first_byte_sends_error_line(
    client: TestClient, create: Callable[..., Any]
):
    app = create(client, CHAIN_APP)
    url = f"/api/apps/{app['uuid']}/run"
    lines, r = _ndjson(client, url, {"input": {"topic": "tea", "divisor": 0}, "stream": True})
    assert r.status_code == 200
    *chunks, last = lines
    assert chunks and all("draft" in c["output"] for c in chunks)
    assert set(last) == {"error", "request_id"}
    assert last["error"]["code"] == "TEMPLATE_ERROR"
    assert last["request_id"] == r.headers["x-request-id"]
    run = client.get(f"/api/runs/{last['error']['details']['run_id']}").json()
    assert run["status"] == "failed"
    assert run["output"]["draft"] == _stitch(chunks)["draft"]  # partial output is kept


def test_stream_failure_before_first_byte_is_plain_error(
    client: TestClient, create: Callable[..., Any]
):
    text = TEXT_APP.replace(
        'user: "{{ input.question }}"', 'user: "{{ input.question ~ (1 / 0) }}"'
    )
    app = create(client, text)
    r = client.post(
        f"/api/apps/{app['uuid']}/run", json={"input": {"question": "x"}, "stream": True}
    )
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "TEMPLATE_ERROR"


def test_stream_input_error_is_plain_422(client: TestClient, create: Callable[..., Any]):
    app = create(client)
    r = client.post(f"/api/apps/{app['uuid']}/run", json={"input": {}, "stream": True})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "INPUT_INVALID"
