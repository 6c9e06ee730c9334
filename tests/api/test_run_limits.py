"""Per-app concurrency limits and run timeouts."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from app_docs import STREAMED_APP, YAML
from fastapi.testclient import TestClient
from openai_edge import Reply, serve_edge, sse_chunk
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from appforge.core.db import make_engine
from appforge.core.home import DATABASE_FILE
from appforge.core.settings import OpenAISettings, Settings

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


def _refusals(reason: str) -> float:
    """This process's ``appforge_run_refusals_total`` for ``reason``."""
    return REGISTRY.get_sample_value("appforge_run_refusals_total", {"reason": reason}) or 0.0


def test_run_limit_max_active_runs_is_429(db_client: TestClient, create: Callable[..., Any]):
    app = create(db_client, LONG_APP.format(timeout=300, tokens=48))
    url = f"/api/apps/{app['uuid']}/run"
    refused = _refusals("app")
    with db_client.stream("POST", url, json={"stream": True}) as r:
        lines = r.iter_lines()
        first = json.loads(next(lines))
        assert "story" in first["output"]
        busy = db_client.post(url, json={})
        assert busy.status_code == 429
        assert _refusals("app") == refused + 1  # appforge_run_refusals_total{reason="app"}
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


PUBLIC_APP = STREAMED_APP.replace("type: chat", "type: chat\npublic: true")


def _first_words(client: TestClient, url: str, body: dict[str, Any], held: ExitStack) -> None:
    """Start a streamed run and read up to its first words; it goes on (held open)."""
    answer = held.enter_context(client.stream("POST", url, json=body))
    assert answer.status_code == 200, answer.read()
    lines = answer.iter_lines()
    assert "Green tea" in next(line for line in lines if line.strip())
    held.callback(lambda: [None for _ in lines])  # read to its end before it closes


def test_run_limit_per_anonymous_address(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    """One anonymous caller could open streams without end: they took every run thread
    of the process and every place among the public app's active runs, and nobody
    else's run started. Its runs at once are limited by its address;
    callers with a token are not counted, and an ended run gives its place back."""
    gate = threading.Event()
    events = [sse_chunk("Green tea", None), sse_chunk(" steeps.", "stop")]
    with serve_edge() as edge, ExitStack() as held:
        edge.replies = [Reply(200, None, sse=events, gate=gate)]
        settings = make_settings(
            runs={"max_active_per_client": 2},
            openai=OpenAISettings(base_url=edge.url),
            models={"default": "openai:gpt-test"},
        )
        client = make_client(settings)
        made = client.post("/api/apps", content=PUBLIC_APP, headers=YAML)
        assert made.status_code == 201, made.text
        admin = client.headers.pop("Authorization")
        url = f"/api/apps/{made.json()['uuid']}/run"
        stream = {"input": {"q": "tea"}, "stream": True}
        try:
            for _ in range(2):
                _first_words(client, url, stream, held)
            refused = [
                client.post(url, json={"input": {"q": "tea"}}),
                client.post(url, json=stream),
                client.post(
                    "/v1/chat/completions",
                    json={"model": "Streamed", "messages": [{"role": "user", "content": "tea"}]},
                ),
            ]
            for answer in refused:
                assert answer.status_code == 429, answer.text
                assert answer.headers["retry-after"] == "1"
            assert refused[0].json()["error"]["code"] == "TOO_MANY_ACTIVE_RUNS"
            assert refused[0].json()["error"]["details"] == {"limit": 2, "per": "client"}
            # A caller with a token is not counted with the address.
            with_token = {"Authorization": admin}
            with client.stream("POST", url, json=stream, headers=with_token) as ran:
                assert ran.status_code == 200
                gate.set()
                assert json.loads(list(ran.iter_lines())[-1])["done"] is True
        finally:  # the model answers, before the streams are read to their ends
            gate.set()
    runs = client.get("/api/runs", headers=with_token).json()
    assert len(runs) == 3  # the refused ones were not stored
    again = client.post(url, json={"input": {"q": "tea"}})  # the places are free again
    assert again.status_code == 200, again.text


def _scraped_refusals(client: TestClient, reason: str, token: str | None = None) -> float:
    """``appforge_run_refusals_total{reason}`` as ``GET /metrics`` shows it."""
    headers = {"Authorization": token} if token is not None else {}
    scraped = client.get("/metrics", headers=headers)
    assert scraped.status_code == 200, scraped.text
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            if sample.name == "appforge_run_refusals_total" and sample.labels == {"reason": reason}:
                return float(sample.value)
    return 0.0


def test_run_limit_per_anonymous_address_counts_every_process_and_app(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
):
    """Each API process counted an address's runs in its own memory: behind N processes
    one address had N times the limit going, and with four it held every place among a
    public app's runs. The runs are counted in the database, over every app; the run
    records a keyed hash of the address, never the address."""
    gate = threading.Event()
    events = [sse_chunk("Green tea", None), sse_chunk(" steeps.", "stop")]
    with serve_edge() as edge, ExitStack() as held:
        edge.replies = [Reply(200, None, sse=events, gate=gate)]
        settings = make_settings(
            database_url=backend,
            runs={"max_active_per_client": 2},
            openai=OpenAISettings(base_url=edge.url),
            models={"default": "openai:gpt-test"},
            metrics={"enabled": True},
        )
        one, other = make_client(settings), make_client(settings)  # two API processes
        refused_before = _scraped_refusals(one, "client")
        urls = []
        for name in ("Tea", "Coffee"):
            doc = PUBLIC_APP.replace("name: Streamed", f"name: {name}")
            made = one.post("/api/apps", content=doc, headers=YAML)
            assert made.status_code == 201, made.text
            urls.append(f"/api/apps/{made.json()['uuid']}/run")
        admin = one.headers.pop("Authorization")
        other.headers.pop("Authorization")
        stream = {"input": {"q": "tea"}, "stream": True}
        try:
            _first_words(one, urls[0], stream, held)
            _first_words(other, urls[1], stream, held)
            for client, url in ((one, urls[0]), (other, urls[0]), (one, urls[1])):
                refused = client.post(url, json=stream)
                assert refused.status_code == 429, refused.text
                error = refused.json()["error"]
                assert error["code"] == "TOO_MANY_ACTIVE_RUNS"
                assert error["details"] == {"limit": 2, "per": "client"}
            assert _scraped_refusals(one, "client", admin) == refused_before + 3
        finally:
            gate.set()
        engine = make_engine(backend or f"sqlite:///{settings.home / DATABASE_FILE}")
        try:
            with engine.connect() as conn:
                clients = conn.execute(text("SELECT client FROM runs")).scalars().all()
        finally:
            engine.dispose()
        assert len(clients) == 2  # the refused runs were not stored
        assert len(set(clients)) == 1 and re.fullmatch(r"[0-9a-f]{32}", clients[0])
    again = other.post(urls[0], json={"input": {"q": "tea"}})  # the places are free again
    assert again.status_code == 200, again.text
    assert one.get("/api/runs", headers={"Authorization": admin}).json()[0]["status"] == "succeeded"
