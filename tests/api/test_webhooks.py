"""Webhooks: a real HTTP receiver on 127.0.0.1 checks signatures; outbox survives restarts."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from app_docs import TEXT_APP, YAML
from fastapi.testclient import TestClient
from sqlalchemy import update
from waiting import poll_until

from api.tables import WebhookDelivery
from api.webhook_delivery import WebhookDispatcher
from appforge.core.db import utcnow
from appforge.core.settings import Settings

SECRET = "s3cret-webhook-key"
FAST = {"poll_seconds": 0.05, "backoff_seconds": 0.05, "max_backoff_seconds": 0.2}
ALLOW = {"url_allowlist": ["127.0.0.1"]}
V1 = {"type": "text", "template_text": "Hello {{name}}", "commit_message": "one"}
V2 = {"type": "text", "template_text": "Hi {{name}}", "commit_message": "two"}


class Receiver:
    """An HTTP server on 127.0.0.1 that verifies each signature and records the payloads."""

    def __init__(self, port: int = 0, status: int = 200, secret: str = SECRET) -> None:
        received: list[dict[str, Any]] = []
        self.received = received
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers["X-Appforge-Timestamp"]
                mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
                valid = hmac.compare_digest(
                    "sha256=" + mac.hexdigest(), self.headers["X-Appforge-Signature"]
                )
                received.append(
                    {
                        "valid": valid,
                        "event": self.headers["X-Appforge-Event"],
                        "delivery": self.headers["X-Appforge-Delivery"],
                        "payload": json.loads(body),
                    }
                )
                self.send_response(outer.status if valid else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _subscribe(client: TestClient, url: str, events: list[str]) -> str:
    r = client.post("/api/webhooks", json={"url": url, "events": events, "secret": SECRET})
    assert r.status_code == 201, r.text
    assert SECRET not in r.text
    return str(r.json()["id"])


def _wait(
    client: TestClient, hook: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Poll the delivery log until ``done`` holds."""

    def deliveries() -> list[dict[str, Any]]:
        r = client.get(f"/api/webhooks/{hook}/deliveries")
        assert r.status_code == 200, r.text
        assert SECRET not in r.text
        log: list[dict[str, Any]] = r.json()
        return log

    def done_log() -> list[dict[str, Any]] | None:
        log = deliveries()
        return log if done(log) else None

    return poll_until(done_log, interval=0.05, detail=deliveries)


def _all_delivered(n: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda log: len(log) == n and all(d["status"] == "delivered" for d in log)


def _prompt(client: TestClient, use_case: str = "Support") -> str:
    uc = client.post("/api/v1/use-cases", json={"name": use_case}).json()["id"]
    r = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "greet"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_webhooks_deliver_signed_prompt_and_app_events(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    receiver: Receiver,
):
    client = make_client(make_settings(database_url=backend, datasources=ALLOW, webhooks=FAST))
    events = [
        "prompt.created",
        "prompt.updated",
        "prompt.deployed",
        "prompt.rolled_back",
        "prompt.deleted",
        "app.updated",
    ]
    hook = _subscribe(client, receiver.url, events)
    assert SECRET not in client.get("/api/webhooks").text
    assert SECRET not in client.get(f"/api/webhooks/{hook}").text

    pid = _prompt(client)
    for body in (V1, V2):
        assert client.post(f"/api/v1/prompts/{pid}/versions", json=body).status_code == 201
    r = client.post(f"/api/v1/prompts/{pid}/versions/1/promote", json={"label": "production"})
    assert r.status_code == 200, r.text
    r = client.post(
        f"/api/v1/prompts/{pid}/deploy", json={"environment": "production", "version": 2}
    )
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/prompts/{pid}/rollback", json={"environment": "production"})
    assert r.status_code == 200, r.text
    # A change that fails emits nothing: deploying a missing version is rolled back.
    r = client.post(
        f"/api/v1/prompts/{pid}/deploy", json={"environment": "production", "version": 9}
    )
    assert r.status_code == 404
    assert client.delete(f"/api/v1/prompts/{pid}").status_code == 204
    app = client.post("/api/apps", content=TEXT_APP, headers=YAML).json()
    r = client.patch(f"/api/apps/{app['uuid']}", content=TEXT_APP + "\n# edited\n", headers=YAML)
    assert r.status_code == 200, r.text

    log = _wait(client, hook, _all_delivered(8))
    assert all(d["attempts"] == 1 and d["last_status_code"] == 200 for d in log)
    got = sorted(receiver.received, key=lambda m: m["payload"]["timestamp"])
    assert all(m["valid"] for m in got)
    assert [m["event"] for m in got] == [
        "prompt.created",
        "prompt.updated",
        "prompt.updated",
        "prompt.deployed",
        "prompt.deployed",
        "prompt.rolled_back",
        "prompt.deleted",
        "app.updated",
    ]
    by_event: dict[str, list[dict[str, Any]]] = {}
    for m in got:
        assert m["payload"]["event"] == m["event"]
        assert m["payload"]["timestamp"].endswith("Z")
        by_event.setdefault(m["event"], []).append(m["payload"]["data"])
    assert len(got) == 8
    assert {m["delivery"] for m in got} == {d["id"] for d in log}
    (created,) = by_event["prompt.created"]
    assert (created["promptId"], created["promptName"], created["by"]) == (pid, "greet", "admin")
    assert sorted(d["version"] for d in by_event["prompt.updated"]) == [1, 2]
    deployed = {
        (d["version"], d["environment"], d["deployedBy"]) for d in by_event["prompt.deployed"]
    }
    assert deployed == {(1, "production", "admin"), (2, "production", "admin")}
    (rolled,) = by_event["prompt.rolled_back"]
    assert (rolled["version"], rolled["previousVersion"], rolled["by"]) == (1, 2, "admin")
    assert by_event["prompt.deleted"][0]["promptId"] == pid
    (updated,) = by_event["app.updated"]
    assert (updated["appId"], updated["version"], updated["by"]) == (app["uuid"], 2, "admin")


def test_webhook_retried_until_receiver_is_up(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources=ALLOW, webhooks={**FAST, "max_attempts": 100}))
    port = _closed_port()
    hook = _subscribe(client, f"http://127.0.0.1:{port}/hook", ["prompt.created"])
    _prompt(client)

    log = _wait(client, hook, lambda log: len(log) == 1 and log[0]["attempts"] >= 2)
    assert log[0]["status"] in ("pending", "delivering")
    assert log[0]["last_status_code"] is None and log[0]["last_error"]
    receiver = Receiver(port)
    try:
        (done,) = _wait(client, hook, _all_delivered(1))
        assert done["last_status_code"] == 200 and done["last_error"] is None
        assert done["log"][0]["error"] and done["log"][-1]["status_code"] == 200
        assert len(done["log"]) == done["attempts"]
        assert [m["delivery"] for m in receiver.received] == [done["id"]]
        assert receiver.received[0]["valid"]
    finally:
        receiver.close()


def test_webhook_non_2xx_fails_after_max_attempts(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    receiver: Receiver,
):
    receiver.status = 500
    client = make_client(make_settings(datasources=ALLOW, webhooks={**FAST, "max_attempts": 3}))
    hook = _subscribe(client, receiver.url, ["prompt.created"])
    _prompt(client)
    (failed,) = _wait(client, hook, lambda log: bool(log) and log[0]["status"] == "failed")
    assert failed["attempts"] == 3 and failed["last_status_code"] == 500
    assert [a["status_code"] for a in failed["log"]] == [500, 500, 500]
    assert len(receiver.received) == 3


def test_webhook_event_survives_restart(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    receiver: Receiver,
):
    stopped = make_settings(
        database_url=backend, datasources=ALLOW, webhooks={**FAST, "workers": 0}
    )
    first = make_client(stopped)
    hook = _subscribe(first, receiver.url, ["prompt.created"])
    pid = _prompt(first)
    (pending,) = first.get(f"/api/webhooks/{hook}/deliveries").json()
    assert pending["status"] == "pending" and pending["attempts"] == 0
    first.__exit__(None, None, None)
    assert receiver.received == []

    second = make_client(make_settings(database_url=backend, datasources=ALLOW, webhooks=FAST))
    (done,) = _wait(second, hook, _all_delivered(1))
    assert done["id"] == pending["id"]
    assert [m["payload"]["data"]["promptId"] for m in receiver.received] == [pid]


def test_webhook_create_refuses_internal_urls_and_unknown_events(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings())
    for url in (
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x",
        "file:///etc/passwd",
    ):
        r = client.post(
            "/api/webhooks", json={"url": url, "events": ["app.updated"], "secret": SECRET}
        )
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"]["code"] == "URL_REFUSED"
        assert SECRET not in r.text
    r = client.post(
        "/api/webhooks",
        json={"url": "https://example.com/h", "events": ["prompt.exploded"], "secret": SECRET},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert client.get("/api/webhooks").json() == []


def test_webhook_metadata_refused_even_with_loopback_allowed(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources=ALLOW))
    body = {"url": "http://169.254.169.254/", "events": ["app.updated"], "secret": SECRET}
    r = client.post("/api/webhooks", json=body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "URL_REFUSED"


def test_webhook_routes_need_admin_and_delete(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    receiver: Receiver,
):
    client = make_client(make_settings(datasources=ALLOW, webhooks={**FAST, "workers": 0}))
    hook = _subscribe(client, receiver.url, ["prompt.created"])
    user = client.post("/api/tokens", json={"name": "user"}).json()["token"]
    r = client.get("/api/webhooks", headers={"Authorization": f"Token {user}"})
    assert r.status_code == 403
    _prompt(client)
    assert len(client.get(f"/api/webhooks/{hook}/deliveries").json()) == 1
    assert client.delete(f"/api/webhooks/{hook}").status_code == 204
    r = client.get(f"/api/webhooks/{hook}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "WEBHOOK_NOT_FOUND"
    _prompt(client, "Other")  # no subscriber left: nothing queued, nothing fails
    assert client.get("/api/webhooks").json() == []


def test_webhook_url_checked_again_at_delivery(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    receiver: Receiver,
):
    first = make_client(make_settings(datasources=ALLOW, webhooks={**FAST, "workers": 0}))
    hook = _subscribe(first, receiver.url, ["prompt.created"])
    _prompt(first)
    first.__exit__(None, None, None)
    # Restarted without the allow-list: the loopback receiver is now refused.
    second = make_client(make_settings(webhooks={**FAST, "max_attempts": 1}))
    (failed,) = _wait(second, hook, lambda log: bool(log) and log[0]["status"] == "failed")
    assert failed["last_error"].startswith("URL_REFUSED")
    assert failed["last_status_code"] is None
    assert receiver.received == []


# --- demote and use-case events, PATCH (edit, pause, resume), retention -------------------
#
# These run no delivery thread (workers: 0) and drive the dispatcher's own
# functions, so nothing races a timer.

STOPPED = {**FAST, "workers": 0}


def _dispatcher(client: TestClient) -> WebhookDispatcher:
    dispatcher: WebhookDispatcher = client.app.state.api.webhooks  # type: ignore[attr-defined]
    return dispatcher


def _drain(client: TestClient) -> int:
    """Attempt every due delivery (each receiver answers at once); how many attempts."""
    attempts = 0
    while n := _dispatcher(client).run_once():
        attempts += n
    return attempts


def _log(client: TestClient, hook: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/webhooks/{hook}/deliveries")
    assert r.status_code == 200, r.text
    log: list[dict[str, Any]] = r.json()
    return log


def test_webhook_demote_and_use_case_delete_events(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    receiver: Receiver,
):
    client = make_client(make_settings(database_url=backend, datasources=ALLOW, webhooks=STOPPED))
    hook = _subscribe(
        client, receiver.url, ["prompt.undeployed", "prompt.deleted", "use_case.deleted"]
    )
    uc = client.post("/api/v1/use-cases", json={"name": "Doomed"}).json()["id"]
    pids = []
    for name in ("greet", "bye"):
        r = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": name})
        assert r.status_code == 201, r.text
        pids.append(r.json()["id"])
    assert client.post(f"/api/v1/prompts/{pids[0]}/versions", json=V1).status_code == 201
    r = client.post(f"/api/v1/prompts/{pids[0]}/versions/1/promote", json={"label": "beta"})
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/prompts/{pids[0]}/versions/1/demote", json={"label": "beta"})
    assert r.status_code == 200 and r.json()["labels"] == []
    # A demote that fails (the label is gone) emits nothing.
    r = client.post(f"/api/v1/prompts/{pids[0]}/versions/1/demote", json={"label": "beta"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "LABEL_NOT_FOUND"
    # Not subscribed: a use case deleted while nobody listens leaves no trace either.
    assert client.delete(f"/api/v1/use-cases/{uc}").status_code == 204
    assert client.get(f"/api/v1/prompts/{pids[0]}").status_code == 404

    assert _drain(client) == 4
    log = _log(client, hook)
    assert len(log) == 4 and all(d["status"] == "delivered" for d in log)
    assert all(m["valid"] for m in receiver.received)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for m in receiver.received:
        assert m["payload"]["event"] == m["event"]
        by_event.setdefault(m["event"], []).append(m["payload"]["data"])
    assert sorted(by_event) == ["prompt.deleted", "prompt.undeployed", "use_case.deleted"]
    (undeployed,) = by_event["prompt.undeployed"]
    assert undeployed == {
        "promptId": pids[0],
        "promptName": "greet",
        "useCaseId": uc,
        "version": None,
        "previousVersion": 1,
        "environment": "beta",
        "notes": None,
        "by": "admin",
    }
    deleted = sorted(by_event["prompt.deleted"], key=lambda d: d["promptName"])
    assert [(d["promptId"], d["promptName"]) for d in deleted] == [
        (pids[1], "bye"),
        (pids[0], "greet"),
    ]
    assert all(d["useCaseId"] == uc and d["by"] == "admin" for d in deleted)
    (gone,) = by_event["use_case.deleted"]
    assert gone == {"useCaseId": uc, "useCaseName": "Doomed", "promptIds": pids, "by": "admin"}


def test_webhook_patch_refuses_bad_input_and_changes_nothing(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    receiver: Receiver,
):
    client = make_client(make_settings(database_url=backend, datasources=ALLOW, webhooks=STOPPED))
    hook = _subscribe(client, receiver.url, ["prompt.created"])
    before = client.get(f"/api/webhooks/{hook}").json()
    refused_urls = (
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x",
        "http://192.168.1.1/x",
        "file:///etc/passwd",
    )
    cases: list[tuple[dict[str, Any], int, str]] = [
        *[({"url": url, "active": False}, 422, "URL_REFUSED") for url in refused_urls],
        ({"events": ["prompt.exploded"]}, 422, "VALIDATION_ERROR"),
        ({"events": []}, 422, "VALIDATION_ERROR"),
        ({"url": ""}, 422, "VALIDATION_ERROR"),
        ({"secret": "short"}, 422, "VALIDATION_ERROR"),
        ({"active": "paused"}, 422, "VALIDATION_ERROR"),
        ({"created_by": "mallory"}, 422, "VALIDATION_ERROR"),
    ]
    for body, code, error in cases:
        r = client.patch(f"/api/webhooks/{hook}", json=body)
        assert r.status_code == code, (body, r.text)
        assert set(r.json()) == {"error", "request_id"}
        assert r.json()["error"]["code"] == error, (body, r.text)
        assert r.headers["X-Request-ID"] == r.json()["request_id"]
    r = client.patch("/api/webhooks/nope", json={"url": "http://10.0.0.1/x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "WEBHOOK_NOT_FOUND"
    user = client.post("/api/tokens", json={"name": "user"}).json()["token"]
    r = client.patch(
        f"/api/webhooks/{hook}",
        json={"active": False},
        headers={"Authorization": f"Token {user}"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    assert client.get(f"/api/webhooks/{hook}").json() == before

    # A valid edit: new events, URL and secret; queued deliveries use the new ones.
    _prompt(client)
    rotated = Receiver(secret="an0ther-s3cret")
    try:
        r = client.patch(
            f"/api/webhooks/{hook}",
            json={
                "url": rotated.url,
                "events": ["prompt.deleted", "prompt.created", "prompt.created"],
                "secret": "an0ther-s3cret",
            },
        )
        assert r.status_code == 200, r.text
        assert "an0ther-s3cret" not in r.text and SECRET not in r.text
        edited = r.json()
        assert edited == {
            **before,
            "url": rotated.url,
            "events": ["prompt.created", "prompt.deleted"],
        }
        assert client.get(f"/api/webhooks/{hook}").json() == edited
        assert _drain(client) == 1
        assert receiver.received == []
        assert [(m["event"], m["valid"]) for m in rotated.received] == [("prompt.created", True)]
    finally:
        rotated.close()


def test_webhook_paused_receives_nothing_and_resumed_receives_new_events(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    receiver: Receiver,
):
    client = make_client(make_settings(database_url=backend, datasources=ALLOW, webhooks=STOPPED))
    hook = _subscribe(client, receiver.url, ["prompt.created"])
    dispatcher = _dispatcher(client)

    def pause(active: bool) -> None:
        r = client.patch(f"/api/webhooks/{hook}", json={"active": active})
        assert r.status_code == 200 and r.json()["active"] is active, r.text
        assert client.get(f"/api/webhooks/{hook}").json()["active"] is active

    queued = _prompt(client, "Queued")  # pending when the webhook is paused
    pause(False)
    (skipped,) = _log(client, hook)
    assert skipped["status"] == "skipped" and skipped["last_error"] == "webhook paused"
    assert skipped["next_attempt_at"] is None and skipped["attempts"] == 0
    assert skipped["payload"]["data"]["promptId"] == queued
    _prompt(client, "While paused")  # nothing is queued for a paused webhook
    assert len(_log(client, hook)) == 1
    pause(False)  # pausing again changes nothing
    assert _drain(client) == 0

    # Paused between a worker's claim and its attempt: the attempt is not made.
    pause(True)
    in_flight = _prompt(client, "In flight")
    (claimed,) = dispatcher.claim()
    pause(False)
    dispatcher.deliver(claimed)
    newest = _log(client, hook)[0]
    assert newest["payload"]["data"]["promptId"] == in_flight
    assert (newest["status"], newest["attempts"], newest["log"]) == ("skipped", 0, [])

    pause(True)
    assert _drain(client) == 0  # skipped deliveries stay skipped after resuming
    resumed = _prompt(client, "Resumed")
    assert _drain(client) == 1
    assert [m["payload"]["data"]["promptId"] for m in receiver.received] == [resumed]
    assert [d["status"] for d in _log(client, hook)] == ["delivered", "skipped", "skipped"]


def test_webhook_retention_deletes_only_old_finished_deliveries(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    receiver: Receiver,
):
    settings = make_settings(
        database_url=backend,
        datasources=ALLOW,
        webhooks={**STOPPED, "max_attempts": 1, "retention_days": 30},
    )
    client = make_client(settings)
    ok = _subscribe(client, receiver.url, ["prompt.created"])
    bad = _subscribe(client, f"http://127.0.0.1:{_closed_port()}/hook", ["prompt.created"])
    factory = client.app.state.api.db  # type: ignore[attr-defined]

    def backdate() -> None:
        """Every delivery so far was created 31 days ago; the pending ones retry tomorrow."""
        now = utcnow()
        with factory() as db:
            db.execute(update(WebhookDelivery).values(created_at=now - timedelta(days=31)))
            db.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.status == "pending")
                .values(next_attempt_at=now + timedelta(days=1))
            )
            db.commit()

    old = _prompt(client, "Old")
    assert _drain(client) == 2  # one delivered, one failed
    old_pending = _prompt(client, "Old but pending")
    backdate()
    new = _prompt(client, "New")
    assert _drain(client) == 2
    statuses = sorted(d["status"] for d in _log(client, ok) + _log(client, bad))
    assert statuses == ["delivered", "delivered", "failed", "failed", "pending", "pending"]

    kept_forever = {**settings.webhooks.model_dump(), "retention_days": 0}
    keeper = WebhookDispatcher(
        factory,
        make_settings(webhooks=kept_forever),
        client.app.state.api.key,  # type: ignore[attr-defined]
    )
    assert keeper.purge() == 0
    assert _dispatcher(client).purge(batch=1) == 2
    assert _dispatcher(client).purge() == 0
    for hook in (ok, bad):
        left = {
            (d["payload"]["data"]["promptId"], d["status"] if d["status"] == "pending" else "done")
            for d in _log(client, hook)
        }
        assert left == {(old_pending, "pending"), (new, "done")}
    assert [m["payload"]["data"]["promptId"] for m in receiver.received] == [old, new]
