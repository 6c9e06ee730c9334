"""Webhook delivery against hostile receivers: one that trickles its answer fails at the
timeout and holds one delivery thread only; one that answers with a 300 MB body is
read no further than a few KB. Real receivers on 127.0.0.1 (raw sockets)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from hostile_http import HostileServer
from waiting import poll_until

from appforge.core.settings import Settings

FAST = {"poll_seconds": 0.05, "backoff_seconds": 0.05, "max_backoff_seconds": 0.2}
ALLOW = {"url_allowlist": ["127.0.0.1"]}
SECRET = "s3cret-webhook-key"
NO_LIMIT = {"enabled": False}  # the tests poll the delivery log


def _subscribe(client: TestClient, url: str) -> str:
    r = client.post(
        "/api/webhooks", json={"url": url, "events": ["prompt.created"], "secret": SECRET}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _create_prompt(client: TestClient) -> None:
    uc = client.post("/api/v1/use-cases", json={"name": "Support"}).json()["id"]
    r = client.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "greet"})
    assert r.status_code == 201, r.text


def _finished(client: TestClient, hook: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = client.get(f"/api/webhooks/{hook}/deliveries")
        assert r.status_code == 200, r.text
        log = r.json()
        return log[0] if log and log[0]["status"] in ("delivered", "failed") else None

    return poll_until(done, interval=0.2)


def test_trickling_receiver_fails_at_the_timeout_and_others_are_delivered(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    timeout = 3.0
    hooks = {**FAST, "timeout": timeout, "workers": 2, "max_attempts": 1}
    client = make_client(make_settings(datasources=ALLOW, webhooks=hooks, rate_limit=NO_LIMIT))
    # The whole answer takes 60 s at one byte per 0.5 s; no single read is slow.
    with HostileServer("trickle", interval=0.5) as slow, HostileServer("instant") as fast:
        slow_hook = _subscribe(client, slow.url)  # first: its delivery is due first
        fast_hook = _subscribe(client, fast.url)
        _create_prompt(client)
        delivered = _finished(client, fast_hook)
        failed = _finished(client, slow_hook)
        poll_until(slow.all_hung_up, interval=0.1)  # our deadline ended the read
    assert delivered["status"] == "delivered"
    assert failed["status"] == "failed"
    assert "APPFORGE_WEBHOOKS__TIMEOUT" in failed["last_error"], failed["last_error"]
    assert slow.completed == 0
    # The fast receiver got its event while the slow one was still trickling.
    assert datetime.fromisoformat(delivered["delivered_at"]) < datetime.fromisoformat(
        failed["updated_at"]
    )


def test_receiver_answering_300_mb_is_read_no_further_than_a_few_kb(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    hooks = {**FAST, "workers": 1}
    settings = make_settings(datasources=ALLOW, webhooks=hooks, rate_limit=NO_LIMIT)
    client = make_client(settings)
    with HostileServer("flood", flood_bytes=300 * 1024 * 1024) as flood:
        hook = _subscribe(client, flood.url)
        _create_prompt(client)
        delivered = _finished(client, hook)
        poll_until(lambda: flood.closed_at, interval=0.05)  # the sender saw us hang up
        sent = flood.sent
    assert delivered["status"] == "delivered"
    assert delivered["last_status_code"] == 200
    # What the kernel's socket buffers took before we closed, not the 300 MB.
    assert sent < 32 * 1024 * 1024, sent
