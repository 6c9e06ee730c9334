"""Operations: readiness, Prometheus metrics, JSON logs and traces, on the real app in-process.

The OTLP collector is a stand-in on 127.0.0.1 (the network edge)."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from app_docs import TEXT_APP, YAML
from fastapi.testclient import TestClient
from openai_v1 import V1
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families
from waiting import poll_until

from appforge.core.db import make_engine, migrate
from appforge.core.logs import ContextFilter, JsonFormatter
from appforge.core.settings import Settings

MakeClient = Callable[..., TestClient]
ADMIN_TOKEN = "af_test_admin_token_0123456789"  # tests/conftest.py's
PG_SERVER = os.environ.get("APPFORGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
METRICS_TOKEN = "metrics-scraper-token-0123456789"


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


# --- readiness ------------------------------------------------------------------------


def test_ready_when_every_backend_answers(client: TestClient):
    r = client.get("/api/health/ready", headers={"Authorization": ""})
    assert r.status_code == 200, r.text
    checks = r.json()["checks"]
    assert r.json()["status"] == "ready"
    assert {"database", "vector_store", "model:local", "shutdown"} <= set(checks)
    assert all(c["ok"] for c in checks.values())


def test_ready_503_when_a_model_server_or_redis_is_closed(
    make_client: MakeClient, make_settings: Callable[..., Settings]
):
    settings = make_settings(
        models={"default": "local:smollm2", "remote": "srv:some-model"},
        providers={"srv": {"base_url": _closed_url(), "max_retries": 0}},
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    client = make_client(settings)
    r = client.get("/api/health/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["error"]["code"] == "NOT_READY" and body["request_id"]
    checks = body["error"]["details"]["checks"]
    assert not checks["model:srv"]["ok"] and checks["model:srv"]["error"]
    assert not checks["redis"]["ok"]
    assert checks["database"]["ok"] and checks["model:local"]["ok"]
    assert "model:srv" in body["error"]["message"] and "redis" in body["error"]["message"]
    # Without a token, or with a runner key (a widget shows it to anyone): what failed,
    # not why (the reasons name the servers behind the API).
    made = client.post("/api/tokens", json={"name": "widget", "role": "runner"})
    runner = {"Authorization": f"Token {made.json()['token']}"}
    for headers in ({"Authorization": ""}, runner):
        seen = client.get("/api/health/ready", headers=headers).json()
        assert seen["error"]["details"]["checks"]["model:srv"]["error"] is None
        assert "127.0.0.1" not in json.dumps(seen)


class _StallingModelServer:
    """An OpenAI-compatible model server on 127.0.0.1 whose ``GET /v1/models`` stalls
    until the test releases it.

    While stalled it sends one byte of a header every 20 ms, so the client's own read
    timeout (the readiness timeout too) never fires: only readiness's bound on the
    whole check can end the wait. After 60 s it answers anyway, so a readiness
    without that bound sees the check pass and the test fails instead of hanging."""

    def __init__(self) -> None:
        self.released = threading.Event()
        released = self.released

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = json.dumps({"data": [{"id": "some-model"}]}).encode()
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Stall: ")
                give_up = time.monotonic() + 60
                while not released.wait(0.02) and time.monotonic() < give_up:
                    self.wfile.write(b"a")
                self.wfile.write(b"\r\nConnection: close\r\n")
                self.wfile.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stalling_model_server() -> Iterator[_StallingModelServer]:
    server = _StallingModelServer()
    yield server
    server.close()


def test_ready_503_naming_a_check_that_outlasts_the_timeout(
    make_client: MakeClient,
    make_settings: Callable[..., Settings],
    stalling_model_server: _StallingModelServer,
):
    settings = make_settings(
        models={"default": "local:smollm2", "remote": "srv:some-model"},
        providers={"srv": {"base_url": stalling_model_server.url, "max_retries": 0}},
        health={"timeout_seconds": 0.2, "cache_seconds": 0},
    )
    client = make_client(settings)
    r = client.get("/api/health/ready")
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["error"]["code"] == "NOT_READY"
    assert "model:srv" in body["error"]["message"]
    check = body["error"]["details"]["checks"]["model:srv"]
    assert not check["ok"]
    assert "no answer within 0.2 s" in check["error"]
    # The server answers now: the next probe checks again and finds it ready (polled, as
    # the 0.2 s bound also holds the other checks, which a loaded machine may delay).
    stalling_model_server.released.set()

    def ready() -> dict[str, Any] | None:
        r = client.get("/api/health/ready")
        return r.json() if r.status_code == 200 else None

    answer = poll_until(ready)
    assert answer["status"] == "ready" and answer["checks"]["model:srv"]["ok"]


@pytest.fixture
def doomed_postgres() -> Iterator[str]:
    """A migrated PostgreSQL database the test may drop."""
    name = f"appforge_ready_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(f"{PG_SERVER}/{name}")
    migrate(engine)
    engine.dispose()
    yield name
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_ready_503_when_the_database_is_down(
    make_client: MakeClient, make_settings: Callable[..., Settings], doomed_postgres: str
):
    settings = make_settings(
        database_url=f"{PG_SERVER}/{doomed_postgres}",
        health={"cache_seconds": 0, "timeout_seconds": 30},
        auth={"cache_seconds": 0},  # every token is looked up in the database
    )
    client = make_client(settings)
    assert client.get("/api/health/ready").status_code == 200
    with psycopg.connect(f"{PG_SERVER}/test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{doomed_postgres}" WITH (FORCE)')
    # Probed as a load balancer does, without a token; and with one, whose lookup needs
    # the database that is gone: it counts as none (no reasons shown), where it was
    # 503 DATABASE_UNAVAILABLE from the lookup, without the checks.
    for headers in ({"Authorization": ""}, {}):
        r = client.get("/api/health/ready", headers=headers)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "NOT_READY", r.text
        checks = r.json()["error"]["details"]["checks"]
        assert not checks["database"]["ok"] and checks["vector_store"]["ok"]
        assert checks["database"]["error"] is None
    # Liveness is not readiness; probed without a token too (its check could need the
    # database by now, which is gone).
    assert client.get("/api/health", headers={"Authorization": ""}).status_code == 200


# --- metrics --------------------------------------------------------------------------


def _scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_off_by_default_and_guarded(
    client: TestClient, make_client: MakeClient, make_settings: Callable[..., Settings]
):
    assert client.get("/metrics").status_code == 404
    on = make_client(make_settings(metrics={"enabled": True, "token": METRICS_TOKEN}))
    assert on.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert on.get("/metrics").status_code == 401  # the admin token is not the metrics token
    admin_only = make_client(make_settings(metrics={"enabled": True}))
    assert admin_only.get("/metrics").status_code == 200
    assert admin_only.get("/metrics", headers={"Authorization": ""}).status_code == 401


def test_metrics_count_runs_tokens_requests_and_errors(make_v1: Callable[..., V1]):
    client = make_v1(
        metrics={"enabled": True, "token": METRICS_TOKEN},
        models={"default": "openai:gpt-test", "gone": "srv:m"},
        providers={"srv": {"base_url": _closed_url(), "max_retries": 0}},
    ).client
    app = client.post("/api/apps", content=TEXT_APP, headers=YAML).json()["uuid"]
    broken = TEXT_APP.replace("name: Echo", "name: Broken").replace(
        "kind: llm\n", "kind: llm\n    model: gone\n"
    )
    broken_uuid = client.post("/api/apps", content=broken, headers=YAML).json()["uuid"]
    before = _scrape(client)
    url = f"/api/apps/{app}/run"
    usage = [client.post(url, json={"input": {"question": "Hi?"}}).json()["run"]["usage"]]
    with client.stream("POST", url, json={"input": {"question": "Bye?"}, "stream": True}) as r:
        last = json.loads(list(r.iter_lines())[-1])
    usage.append(last["run"]["usage"])
    failed = client.post(f"/api/apps/{broken_uuid}/run", json={"input": {"question": "x"}})
    assert failed.json()["error"]["code"] == "PROVIDER_UNAVAILABLE"
    after = _scrape(client)

    assert _value(after, "appforge_runs_total", app=app, status="succeeded") == 2
    assert _value(after, "appforge_run_seconds_count", app=app) == 2
    assert _value(after, "appforge_run_ttft_seconds_count", app=app) == 2
    assert _value(after, "appforge_tokens_total", app=app, direction="in") == sum(
        u["prompt_tokens"] for u in usage
    )
    assert _value(after, "appforge_tokens_total", app=app, direction="out") == sum(
        u["completion_tokens"] for u in usage
    )
    route = {"route": "/api/apps/{app_uuid}/run", "method": "POST"}
    requests = "appforge_http_requests_total"
    assert (
        _value(after, requests, status="200", **route)
        - _value(before, requests, status="200", **route)
        == 2
    )
    code = {"code": "PROVIDER_UNAVAILABLE"}
    errors = "appforge_model_errors_total"
    assert _value(after, errors, **code) - _value(before, errors, **code) == 1
    assert _value(after, "appforge_active_runs") == 0
    assert _value(after, "appforge_active_streams") == 0
    assert ("appforge_queue_depth", (("queue", "ingestion"),)) in after
    assert ("appforge_queue_oldest_age_seconds", (("queue", "webhooks"),)) in after


def test_metrics_count_rate_limit_refusals(
    make_client: MakeClient, make_settings: Callable[..., Settings]
):
    client = make_client(
        make_settings(
            metrics={"enabled": True, "token": METRICS_TOKEN},
            rate_limit={"requests": 1, "window_seconds": 3600, "burst": 1},
        )
    )
    before = _value(_scrape(client), "appforge_rate_limit_refusals_total")
    assert client.get("/api/apps").status_code == 200
    assert client.get("/api/apps").status_code == 429
    after = _scrape(client)  # /metrics is not rate limited
    assert _value(after, "appforge_rate_limit_refusals_total") == before + 1


# --- JSON logs ------------------------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above, as ``APPFORGE_LOG_FORMAT=json`` writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_json_logs_name_requests_and_runs_and_never_secrets(
    make_v1: Callable[..., V1], json_logs: io.StringIO
):
    client = make_v1(datasources={"url_allowlist": ["127.0.0.1"]}).client
    secrets = [ADMIN_TOKEN]
    made = client.post("/api/tokens", json={"name": "ops-runner", "role": "runner"}).json()
    signed = client.post(
        "/api/tokens", json={"name": "ops-signed", "require_signature": True}
    ).json()
    secrets += [made["token"], signed["token"], signed["signing_secret"]]
    hook_secret = "whsec-" + uuid.uuid4().hex
    secrets.append(hook_secret)
    hook = {"url": _closed_url(), "events": ["app.updated"], "secret": hook_secret}
    assert client.post("/api/webhooks", json=hook).status_code == 201
    app = client.post("/api/apps", content=TEXT_APP, headers=YAML).json()["uuid"]
    as_runner = {"Authorization": f"Bearer {made['token']}", "X-Request-ID": "req-ops-run-1"}
    r = client.post(f"/api/apps/{app}/run", json={"input": {"question": "Hi?"}}, headers=as_runner)
    assert r.status_code == 200
    run_id = r.json()["run"]["id"]
    with client.stream(
        "POST", f"/api/apps/{app}/run", json={"input": {"question": "Yo?"}, "stream": True}
    ) as streamed:
        assert list(streamed.iter_lines())
    wrong = {"Authorization": f"Token {made['token']}x"}
    assert client.get("/api/apps", headers=wrong).status_code == 401

    text = json_logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    runs = [
        line
        for line in lines
        if line.get("run_id") == run_id and line["logger"] != "appforge.access"
    ]
    assert runs and runs[0]["app_uuid"] == app and runs[0]["request_id"] == "req-ops-run-1"
    access = [
        line
        for line in lines
        if line["logger"] == "appforge.access" and line.get("request_id") == "req-ops-run-1"
    ]
    assert len(access) == 1
    assert access[0]["route"] == "/api/apps/{app_uuid}/run" and access[0]["status"] == 200
    assert access[0]["latency_ms"] >= 0 and access[0]["method"] == "POST"
    for secret in secrets:
        assert secret not in text


# --- traces ---------------------------------------------------------------------------


class _Collector:
    """An OTLP/HTTP collector stand-in on 127.0.0.1: keeps every span it is sent."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[Any] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        collector.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = (
            [v.string_value for v in value.array_value.values]
            if kind == "array_value"
            else getattr(value, kind)
        )
    return out


def test_traces_one_span_per_run_and_step_without_prompt_text(make_v1: Callable[..., V1]):
    collector = _Collector()
    try:
        v1 = make_v1(otel={"endpoint": collector.url})
        client = v1.client
        app = client.post("/api/apps", content=TEXT_APP, headers=YAML).json()["uuid"]
        headers = {"X-Request-ID": "req-traced-1"}
        body = {"input": {"question": "What is secret-question-42?"}}
        run = client.post(f"/api/apps/{app}/run", json=body, headers=headers).json()["run"]
        client.app.state.api.services.tracing.flush()  # type: ignore[attr-defined]
        spans = {span.name: span for span in collector.spans}
        root, step = spans["run Echo"], spans["llm answer"]
        assert step.trace_id == root.trace_id and step.parent_span_id == root.span_id
        top = _attributes(root)
        assert top["appforge.run_id"] == run["id"] and top["appforge.app_uuid"] == app
        assert top["appforge.request_id"] == "req-traced-1"
        assert top["appforge.status"] == "succeeded"
        call = _attributes(step)
        assert call["gen_ai.request.model"] == "gpt-test"
        assert call["gen_ai.usage.input_tokens"] == run["usage"]["prompt_tokens"]
        assert call["gen_ai.usage.output_tokens"] == run["usage"]["completion_tokens"]
        assert "appforge.ttft_ms" in call
        assert "secret-question-42" not in str([_attributes(s) for s in collector.spans])

        ds = client.post("/api/datasources", json={"name": "docs", "type": "text"}).json()
        entry = {"entry_data": {"name": "refunds", "content": "Refunds take five days."}}
        added = client.post(f"/api/datasources/{ds['uuid']}/entries", json=entry).json()

        def ingested() -> bool:
            listed = client.get(f"/api/datasources/{ds['uuid']}/entries").json()
            return listed[0]["status"] == "ready"

        poll_until(ingested)
        client.app.state.api.services.tracing.flush()  # type: ignore[attr-defined]
        ingest = _attributes(next(s for s in collector.spans if s.name == "ingest text"))
        assert ingest["appforge.entry_uuid"] == added["uuid"]
        assert (ingest["appforge.status"], ingest["appforge.chunks"]) == ("ready", 1)
    finally:
        collector.close()


def test_traces_off_by_default(client: TestClient):
    services = client.app.state.api.services  # type: ignore[attr-defined]
    assert services.tracing.enabled is False
