"""Issue 15, findings 5 and 6, replayed against a real `appforge serve` process.

- A DOCX zip bomb fails its entry with ARCHIVE_TOO_LARGE, the worker goes on, and
  the server's memory stays near where it was.
- A URL whose server sends its answer one byte at a time fails at the fetch
  deadline, and an entry queued behind it is ingested meanwhile.
- A webhook receiver that trickles fails at the delivery timeout while another
  receiver gets its event; a receiver answering 300 MB is read no further than a
  few KB.

Throughout, a watcher calls ``/api/health`` and every call must be answered 200.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from health_watch import health_throughout
from hostile_http import HostileServer
from server_process import ServerProcess
from waiting import poll_until

from tests.datasources.support import make_docx_bomb

SECRET = "s3cret-webhook-key"
TOKEN = "af_e2e_admin_token_attacks_ingest_0123"
FETCH_TIMEOUT = 4.0
WEBHOOK_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    process = ServerProcess(
        {
            "APPFORGE_HOME": str(home),
            "APPFORGE_ADMIN_TOKEN": TOKEN,
            "APPFORGE_DATASOURCES__URL_ALLOWLIST": '["127.0.0.1"]',
            "APPFORGE_DATASOURCES__FETCH_TIMEOUT": str(FETCH_TIMEOUT),
            "APPFORGE_DATASOURCES__POLL_SECONDS": "0.2",
            "APPFORGE_WEBHOOKS__TIMEOUT": str(WEBHOOK_TIMEOUT),
            "APPFORGE_WEBHOOKS__POLL_SECONDS": "0.1",
            "APPFORGE_WEBHOOKS__MAX_ATTEMPTS": "1",
            "APPFORGE_RATE_LIMIT__ENABLED": "false",  # the tests poll entries and deliveries
        }
    )
    try:
        # Warm up before any watching: the embedding model is loaded by a first entry.
        with httpx.Client(
            base_url=process.base, headers={"Authorization": f"Token {TOKEN}"}, timeout=60
        ) as api:
            ds = _datasource(api, "warm-up")
            warm = _add(api, ds, name="warm", content="The model is loaded by this entry.")
            assert _finished_entry(api, ds, warm)["status"] == "ready"
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """200 MiB of DOCX paragraphs, under 1 MB zipped (made before any watching)."""
    data = make_docx_bomb(200 * 1024 * 1024)
    assert len(data) < 1024 * 1024
    return data


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with (
        health_throughout(server.base),
        httpx.Client(
            base_url=server.base, headers={"Authorization": f"Token {TOKEN}"}, timeout=60
        ) as client,
    ):
        yield client


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _datasource(api: httpx.Client, name: str) -> str:
    r = api.post("/api/datasources", json={"name": name, "type": "mixed"})
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _add(api: httpx.Client, ds: str, **data: Any) -> str:
    r = api.post(f"/api/datasources/{ds}/entries", json={"entry_data": data})
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _finished_entry(api: httpx.Client, ds: str, entry: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/api/datasources/{ds}/entries/{entry}").json()
        return body if body["status"] in ("ready", "failed") else None

    return poll_until(done, interval=0.2)


def test_docx_bomb_fails_its_entry_and_memory_stays_near_baseline(
    api: httpx.Client, server: ServerProcess, bomb: bytes
):
    ds = _datasource(api, "bombs")
    baseline = _rss_mb(server.proc.pid)
    r = api.post(f"/api/datasources/{ds}/entries/upload", files={"file": ("b.docx", bomb)})
    assert r.status_code == 201, r.text
    failed = _finished_entry(api, ds, r.json()["uuid"])
    assert failed["status"] == "failed"
    assert failed["error"].startswith("ARCHIVE_TOO_LARGE:"), failed["error"]
    after = _add(api, ds, name="after", content="The worker carries on after the bomb.")
    assert _finished_entry(api, ds, after)["status"] == "ready"
    # Generous: python-docx on this bomb would take gigabytes.
    assert _rss_mb(server.proc.pid) - baseline < 150


def test_trickling_url_fails_at_the_deadline_and_entries_behind_it_are_ingested(
    api: httpx.Client,
):
    ds = _datasource(api, "slow-pages")
    with HostileServer("trickle", interval=1.0) as slow:  # two minutes for the whole answer
        slow_entry = _add(api, ds, name="slow", url=slow.url)
        behind = _add(api, ds, name="behind", content="Queued behind the slow page.")
        ready = _finished_entry(api, ds, behind)
        failed = _finished_entry(api, ds, slow_entry)
        poll_until(slow.all_hung_up, interval=0.1)  # the deadline ended the read
    assert ready["status"] == "ready"
    assert failed["status"] == "failed"
    assert failed["error"].startswith("FETCH_TIMEOUT:"), failed["error"]
    assert slow.completed == 0  # it read the whole page, 151 s under a 10 s timeout
    assert datetime.fromisoformat(ready["updated_at"]) < datetime.fromisoformat(
        failed["updated_at"]
    )


def _subscribe(api: httpx.Client, url: str) -> str:
    r = api.post("/api/webhooks", json={"url": url, "events": ["prompt.created"], "secret": SECRET})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _create_prompt(api: httpx.Client) -> None:
    uc = api.post("/api/v1/use-cases", json={"name": "Webhook target"}).json()["id"]
    r = api.post(f"/api/v1/use-cases/{uc}/prompts", json={"name": "greet"})
    assert r.status_code == 201, r.text


def _finished_delivery(api: httpx.Client, hook: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        log = api.get(f"/api/webhooks/{hook}/deliveries").json()
        return log[0] if log and log[0]["status"] in ("delivered", "failed") else None

    return poll_until(done, interval=0.1)


def test_slow_and_flooding_webhook_receivers(api: httpx.Client):
    with (
        HostileServer("trickle", interval=1.0) as slow,
        HostileServer("flood", flood_bytes=300 * 1024 * 1024) as flood,
        HostileServer("instant") as fast,
    ):
        hooks = {
            "slow": _subscribe(api, slow.url),
            "flood": _subscribe(api, flood.url),
            "fast": _subscribe(api, fast.url),
        }
        _create_prompt(api)
        results = {name: _finished_delivery(api, hook) for name, hook in hooks.items()}
        poll_until(lambda: flood.closed_at, interval=0.1)
        poll_until(slow.all_hung_up, interval=0.1)  # the delivery's deadline ended the read
        flooded = flood.sent
    assert results["fast"]["status"] == "delivered"
    assert results["flood"]["status"] == "delivered"
    assert flooded < 32 * 1024 * 1024, flooded  # not the 300 MB
    assert results["slow"]["status"] == "failed"
    assert "APPFORGE_WEBHOOKS__TIMEOUT" in results["slow"]["last_error"]
    assert slow.completed == 0  # it read the whole answer, 157 s under a 10 s timeout
    assert datetime.fromisoformat(results["fast"]["delivered_at"]) < datetime.fromisoformat(
        results["slow"]["updated_at"]
    )
