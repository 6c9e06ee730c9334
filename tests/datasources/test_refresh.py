"""URL entries refreshed on their schedule, and entries re-ingested in place.

A real HTTP server on 127.0.0.1 serves the page; the test changes what it serves
and runs the refresh job with a ``now`` days ahead (nobody waits a day). An
unchanged page embeds nothing again; a changed one replaces the entry's chunks
(old ones searchable until then, gone after); a failed fetch keeps them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from waiting import poll_until

from api.tables import WebhookDelivery
from appforge.core.db import transaction, utcnow
from appforge.core.settings import Settings
from datasources import bodies
from datasources.fetch import Fetched
from datasources.refresh import RefreshJob
from datasources.tables import Entry
from tests.datasources.support import Pages, get_entry, lease_until

OLD = "<html><body><h1>Kettle</h1><p>The kettle descales with citric acid.</p></body></html>"
NEW = "<html><body><h1>Kettle</h1><p>The kettle now descales with white vinegar.</p></body></html>"


def _state(client: TestClient) -> Any:
    app: Any = client.app
    return app.state.api


def _settings(
    make_settings: Callable[..., Settings], database_url: str | None = None, **more: Any
) -> Settings:
    return make_settings(
        database_url=database_url,
        datasources={"workers": 0, "url_allowlist": ["127.0.0.1"], **more},
        rate_limit={"enabled": False},
    )


def _url_entry(client: TestClient, url: str, refresh: str = "daily") -> tuple[str, str]:
    ds = client.post("/api/datasources", json={"name": "web", "type": "url"}).json()["uuid"]
    r = client.post(
        f"/api/datasources/{ds}/entries",
        json={"entry_data": {"name": "kettle", "url": url}, "refresh": refresh},
    )
    assert r.status_code == 201, r.text
    assert r.json()["refresh"] == refresh and r.json()["next_refresh_at"] is None
    entry = r.json()["uuid"]
    assert _state(client).ingestion.run_once() == [entry]
    return ds, entry


def _texts(client: TestClient, ds: str, query: str, mode: str) -> list[str]:
    r = client.post(
        f"/api/datasources/{ds}/search", json={"query": query, "mode": mode, "top_k": 10}
    )
    assert r.status_code == 200, r.text
    return [hit["text"] for hit in r.json()["results"]]


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _chunks(client: TestClient, ds: str, entry: str) -> tuple[int, int]:
    """The entry's chunks in the vector index and in the keyword index."""
    store = _state(client).datasources
    return store.index.count(ds, entry), store.keywords.count(ds, entry)


def test_refresh_embeds_only_a_changed_page_and_replaces_its_chunks(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    client = make_client(_settings(make_settings))
    url = pages.add("/kettle", OLD.encode())
    ds, entry = _url_entry(client, url)
    first = get_entry(client, ds, entry)
    assert first["status"] == "ready" and first["last_refreshed_at"] is not None
    fetched_at = first["last_refreshed_at"]
    job: RefreshJob = _state(client).refresh
    assert job.refresh_due() == {}  # due in a day, not now

    later = utcnow() + timedelta(days=1, minutes=1)
    assert job.refresh_due(later) == {entry: "unchanged"}
    same = get_entry(client, ds, entry)
    assert same["status"] == "ready" and same["attempts"] == first["attempts"]
    assert same["last_refreshed_at"] != fetched_at
    assert _moment(same["last_refreshed_at"]) == later
    assert _moment(same["next_refresh_at"]) == later + timedelta(days=1)
    assert not _state(client).ingestion.queue.has_claimable()  # nothing to embed again
    assert job.refresh_due(later) == {}  # the next one is a day after that

    pages.add("/kettle", NEW.encode())
    much_later = later + timedelta(days=2)
    assert job.refresh_due(much_later) == {entry: "changed"}
    waiting = get_entry(client, ds, entry)
    assert waiting["status"] == "pending"
    # Until the new chunks replace them, the old ones are still found.
    assert any("citric" in t for t in _texts(client, ds, "citric acid", "keyword"))
    assert _state(client).ingestion.run_once() == [entry]
    done = get_entry(client, ds, entry)
    assert done["status"] == "ready" and done["error"] is None
    assert any("vinegar" in t for t in _texts(client, ds, "white vinegar", "keyword"))
    assert not any("citric" in t for t in _texts(client, ds, "citric acid", "hybrid"))
    assert _chunks(client, ds, entry) == (done["chunks_total"], done["chunks_total"])


def test_a_failed_refresh_keeps_the_old_chunks_and_says_why(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    client = make_client(_settings(make_settings))
    url = pages.add("/kettle", OLD.encode())
    ds, entry = _url_entry(client, url, refresh="weekly")
    before = get_entry(client, ds, entry)
    pages.routes["/kettle"] = (500, {"Content-Type": "text/plain"}, b"down")
    now = utcnow() + timedelta(days=8)
    assert _state(client).refresh.refresh_due(now) == {entry: "failed"}
    after = get_entry(client, ds, entry)
    assert after["status"] == "ready" and after["error"].startswith("FETCH_FAILED")
    assert after["last_refreshed_at"] == before["last_refreshed_at"]
    assert _moment(after["next_refresh_at"]) == now + timedelta(days=7)  # not at once again
    assert any("citric" in t for t in _texts(client, ds, "citric acid", "vector"))
    assert _chunks(client, ds, entry) == (before["chunks_total"], before["chunks_total"])


def test_schedule_set_by_patch_and_bad_refresh_input_refused(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    client = make_client(_settings(make_settings))
    url = pages.add("/kettle", OLD.encode())
    ds, entry = _url_entry(client, url, refresh="none")
    body = get_entry(client, ds, entry)
    assert body["next_refresh_at"] is None
    path = f"/api/datasources/{ds}/entries/{entry}"
    r = client.patch(path, json={"refresh": "weekly"})
    assert r.status_code == 200, r.text
    assert r.json()["refresh"] == "weekly" and r.json()["next_refresh_at"] is not None
    due = _state(client).refresh.refresh_due(utcnow() + timedelta(days=6))
    assert due == {}
    assert client.patch(path, json={"refresh": "none"}).json()["next_refresh_at"] is None
    assert _state(client).refresh.refresh_due(utcnow() + timedelta(days=30)) == {}
    for bad in ({"refresh": "hourly"}, {"refresh": "daily", "url": "x"}, {}):
        r = client.patch(path, json=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"
    text_ds = client.post("/api/datasources", json={"name": "t", "type": "text"}).json()["uuid"]
    r = client.post(
        f"/api/datasources/{text_ds}/entries",
        json={"entry_data": {"name": "n", "content": "a note"}, "refresh": "daily"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "ENTRY_INVALID"
    assert client.get(f"/api/datasources/{text_ds}/entries").json() == []
    missing = client.patch(f"/api/datasources/{ds}/entries/nope", json={"refresh": "daily"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ENTRY_NOT_FOUND"
    events = client.get("/api/audit", params={"action": "entry.updated"}).json()
    assert sorted(e["details"]["refresh"] for e in events) == ["none", "weekly"]


def test_each_due_entry_is_claimed_once_and_a_dead_claim_comes_back(
    backend: str | None,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    pages: Pages,
):
    client = make_client(_settings(make_settings, backend, lease_seconds=30))
    ds = client.post("/api/datasources", json={"name": "web", "type": "url"}).json()["uuid"]
    entries = set()
    for n in range(3):
        body = {"entry_data": {"name": f"p{n}", "url": pages.add(f"/p{n}", OLD.encode())}}
        r = client.post(f"/api/datasources/{ds}/entries", json={**body, "refresh": "daily"})
        entries.add(r.json()["uuid"])
        assert _state(client).ingestion.run_once() == [r.json()["uuid"]]
    store = _state(client).datasources
    later = utcnow() + timedelta(days=2)
    # Two processes' jobs claim at the same moment: each entry goes to one of them.
    jobs = [RefreshJob(store), RefreshJob(store)]
    barrier = threading.Barrier(2)
    claimed: list[list[str]] = [[], []]

    def claim(i: int) -> None:
        barrier.wait()
        claimed[i] = [e.uuid for e in jobs[i].queue.claim(3, now=later)]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed[0] + claimed[1]) == sorted(entries)
    assert {get_entry(client, ds, e)["status"] for e in entries} == {"refreshing"}
    # Both "died" holding them: once their leases end, another process refreshes them.
    assert RefreshJob(store).refresh_due(later + timedelta(seconds=10)) == {}
    outcomes = RefreshJob(store).refresh_due(later + timedelta(seconds=31))
    assert outcomes == dict.fromkeys(entries, "unchanged")
    assert {get_entry(client, ds, e)["status"] for e in entries} == {"ready"}


def test_the_server_runs_the_refresh_job_in_the_background(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    settings = make_settings(
        datasources={"workers": 1, "url_allowlist": ["127.0.0.1"], "refresh_poll_seconds": 0.2},
        rate_limit={"enabled": False},
    )
    client = make_client(settings)
    ds = client.post("/api/datasources", json={"name": "web", "type": "url"}).json()["uuid"]
    url = pages.add("/kettle", OLD.encode())
    body = {"entry_data": {"name": "kettle", "url": url}, "refresh": "daily"}
    entry = client.post(f"/api/datasources/{ds}/entries", json=body).json()["uuid"]
    poll_until(lambda: get_entry(client, ds, entry)["status"] == "ready")
    fetched_at = get_entry(client, ds, entry)["last_refreshed_at"]
    with transaction(_state(client).db) as db:  # as if a day had gone by
        db.execute(
            update(Entry)
            .where(Entry.uuid == entry)
            .values(next_refresh_at=utcnow() - timedelta(seconds=1))
        )

    def refreshed() -> dict[str, Any] | None:
        now = get_entry(client, ds, entry)
        return now if now["last_refreshed_at"] != fetched_at else None

    again = poll_until(refreshed)
    assert again["status"] == "ready" and again["error"] is None
    assert _moment(again["next_refresh_at"]) > utcnow() + timedelta(hours=23)


def _make_due(client: TestClient, entry: str) -> None:
    """As if a day had gone by since the entry was last fetched."""
    with transaction(_state(client).db) as db:
        db.execute(
            update(Entry)
            .where(Entry.uuid == entry)
            .values(next_refresh_at=utcnow() - timedelta(seconds=1))
        )


def test_a_refresh_only_worker_refreshes_due_entries_and_runs_no_other_queue(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    pages: Pages,
    tmp_path: Path,
):
    # The API process runs no queue (no ingestion workers, no webhook workers).
    settings = make_settings(
        datasources={"workers": 0, "url_allowlist": ["127.0.0.1"]},
        webhooks={"workers": 0},
        rate_limit={"enabled": False},
    )
    client = make_client(settings)
    ds, entry = _url_entry(client, pages.add("/kettle", OLD.encode()))
    fetched_at = get_entry(client, ds, entry)["last_refreshed_at"]
    # Work for the other queues: an entry to ingest, a webhook delivery to send.
    notes = client.post("/api/datasources", json={"name": "notes", "type": "text"}).json()["uuid"]
    note = {"entry_data": {"name": "n", "content": "The kettle holds a litre."}}
    r = client.post(f"/api/datasources/{notes}/entries", json=note)
    assert r.status_code == 201, r.text
    queued = r.json()["uuid"]
    hook = {"url": pages.base + "/hook", "events": ["prompt.created"], "secret": "hook-secret-1"}
    assert client.post("/api/webhooks", json=hook).status_code == 201
    use_case = client.post("/api/v1/use-cases", json={"name": "Ops"}).json()["id"]
    r = client.post(f"/api/v1/use-cases/{use_case}/prompts", json={"name": "greet"})
    assert r.status_code == 201, r.text
    _make_due(client, entry)

    log_path = tmp_path / "worker.log"
    exe = Path(sys.executable).parent / "appforge"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [str(exe), "--home", str(settings.home), "worker", "--only", "refresh"],
            env={
                **os.environ,
                "APPFORGE_DATASOURCES__URL_ALLOWLIST": '["127.0.0.1"]',
                "APPFORGE_DATASOURCES__REFRESH_POLL_SECONDS": "0.1",
                # Were ingestion or webhooks running, they would look for work this often.
                "APPFORGE_DATASOURCES__WORKERS": "1",
                "APPFORGE_DATASOURCES__POLL_SECONDS": "0.1",
                "APPFORGE_WEBHOOKS__WORKERS": "1",
                "APPFORGE_WEBHOOKS__POLL_SECONDS": "0.1",
                "APPFORGE_SHUTDOWN_GRACE_SECONDS": "0.5",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def refreshed_after(before: str) -> Callable[[], dict[str, Any] | None]:
            def check() -> dict[str, Any] | None:
                assert worker.poll() is None, log_path.read_text()
                now = get_entry(client, ds, entry)
                return now if now["last_refreshed_at"] != before else None

            return check

        first = poll_until(refreshed_after(fetched_at), detail=log_path.read_text)
        assert first["status"] == "ready" and first["error"] is None
        assert _moment(first["next_refresh_at"]) > utcnow() + timedelta(hours=23)
        # A second round, so the other queues, had they run, had many polls to claim in.
        _make_due(client, entry)
        second = poll_until(refreshed_after(first["last_refreshed_at"]), detail=log_path.read_text)
        assert second["status"] == "ready"
        # Seen while the worker still runs: stopping gives back what it holds.
        waiting = get_entry(client, notes, queued)
        assert (waiting["status"], waiting["attempts"], waiting["stage"]) == ("pending", 0, None)
        with _state(client).db() as db:
            delivery = db.query(WebhookDelivery).one()
            assert (delivery.status, delivery.attempts) == ("pending", 0)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert "appforge worker: refresh (pid" in log_path.read_text()


NEWER = "<html><body><h1>Kettle</h1><p>The kettle now descales with lemon juice.</p></body></html>"


def _body_file(client: TestClient, ds: str, entry: str) -> Path:
    """Where a refresh keeps a changed page's body until it is ingested."""
    files: Path = _state(client).datasources.files
    return files / ds / entry


def _row(client: TestClient, entry: str) -> Entry | None:
    with _state(client).db() as db:
        row: Entry | None = db.get(Entry, entry)
        return row


def test_a_changed_page_is_fetched_once_and_the_body_compared_is_the_one_embedded(
    backend: str | None,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    pages: Pages,
):
    client = make_client(_settings(make_settings, backend))
    url = pages.add("/kettle", OLD.encode())
    ds, entry = _url_entry(client, url)
    assert pages.requests["/kettle"] == 1
    pages.add("/kettle", NEW.encode())
    assert _state(client).refresh.refresh_due(utcnow() + timedelta(days=2)) == {entry: "changed"}
    assert pages.requests["/kettle"] == 2
    kept = _body_file(client, ds, entry)
    assert kept.stat().st_mode & 0o777 == 0o600
    row = _row(client, entry)
    assert row is not None and row.status == "pending" and row.reingest
    assert row.file_path == str(kept.relative_to(_state(client).settings.home))
    # The page changes again before the ingestion: what is embedded is what was compared.
    pages.add("/kettle", NEWER.encode())
    assert _state(client).ingestion.run_once() == [entry]
    assert pages.requests["/kettle"] == 2  # from the refresh to ready: one request
    done = get_entry(client, ds, entry)
    assert done["status"] == "ready" and done["error"] is None
    assert any("vinegar" in t for t in _texts(client, ds, "white vinegar", "keyword"))
    assert any("vinegar" in t for t in _texts(client, ds, "descale with vinegar", "vector"))
    assert not any("lemon" in t for t in _texts(client, ds, "lemon juice", "hybrid"))
    assert not kept.exists() and not any(kept.parent.iterdir())
    row = _row(client, entry)
    assert row is not None and row.file_path is None and not row.reingest
    assert row.body_hash == hashlib.sha256(NEW.encode()).hexdigest()
    # The next refresh compares with that body: the lemon page is a change.
    later = utcnow() + timedelta(days=5)
    assert _state(client).refresh.refresh_due(later) == {entry: "changed"}
    assert _state(client).ingestion.run_once() == [entry]
    assert pages.requests["/kettle"] == 3
    assert any("lemon" in t for t in _texts(client, ds, "lemon juice", "keyword"))
    assert _state(client).refresh.refresh_due(later + timedelta(days=2)) == {entry: "unchanged"}
    assert not kept.exists()


def test_an_entry_deleted_after_its_refresh_leaves_no_body(
    backend: str | None,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    pages: Pages,
):
    client = make_client(_settings(make_settings, backend))
    ds, entry = _url_entry(client, pages.add("/kettle", OLD.encode()))
    pages.add("/kettle", NEW.encode())
    assert _state(client).refresh.refresh_due(utcnow() + timedelta(days=2)) == {entry: "changed"}
    kept = _body_file(client, ds, entry)
    assert kept.is_file()
    assert client.delete(f"/api/datasources/{ds}/entries/{entry}").status_code == 204
    assert not kept.exists()
    assert _state(client).ingestion.run_once() == []
    assert not kept.exists() and pages.requests["/kettle"] == 2


@pytest.mark.parametrize("deleted", ["entry", "datasource"])
def test_an_entry_deleted_while_it_is_refreshed_leaves_no_body(
    deleted: str,
    backend: str | None,
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    pages: Pages,
):
    client = make_client(_settings(make_settings, backend))
    ds, entry = _url_entry(client, pages.add("/kettle", OLD.encode()))
    pages.add("/kettle", NEW.encode())
    store = _state(client).datasources
    if deleted == "entry":  # between the refresh's claim and its write
        pages.on_request["/kettle"] = lambda: store.delete_entry(ds, entry)
    else:
        pages.on_request["/kettle"] = lambda: store.delete(ds)
    assert _state(client).refresh.refresh_due(utcnow() + timedelta(days=2)) == {entry: "changed"}
    assert pages.requests["/kettle"] == 2 and _row(client, entry) is None
    kept = _body_file(client, ds, entry)
    assert not kept.exists()
    if deleted == "datasource":
        assert not kept.parent.exists()
    assert _state(client).ingestion.run_once() == []


def test_a_kept_body_that_fails_to_ingest_goes_and_a_stale_one_is_removed(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    client = make_client(_settings(make_settings))
    ds, entry = _url_entry(client, pages.add("/kettle", OLD.encode()))
    before = get_entry(client, ds, entry)
    pages.add("/kettle", b"<html><body></body></html>")  # nothing to read in it
    later = utcnow() + timedelta(days=2)
    assert _state(client).refresh.refresh_due(later) == {entry: "changed"}
    kept = _body_file(client, ds, entry)
    assert kept.is_file()
    assert _state(client).ingestion.run_once() == [entry]
    failed = get_entry(client, ds, entry)
    assert failed["status"] == "ready" and failed["error"].startswith("EXTRACT_FAILED")
    assert any("citric" in t for t in _texts(client, ds, "citric acid", "keyword"))
    assert failed["chunks_total"] == before["chunks_total"]
    row = _row(client, entry)
    assert row is not None and row.file_path is None
    assert row.body_hash == hashlib.sha256(OLD.encode()).hexdigest()
    assert not kept.exists() and pages.requests["/kettle"] == 2
    # A body left by a refresh that died before its write goes with the next refresh.
    pages.add("/kettle", OLD.encode())
    bodies.keep(kept, Fetched(url=pages.base + "/kettle", body=b"stale", media_type=None))
    assert _state(client).refresh.refresh_due(later + timedelta(days=2)) == {entry: "unchanged"}
    assert not kept.exists()


def test_a_refresh_batch_fetched_longer_than_its_lease_keeps_its_claims(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], pages: Pages
):
    """One job fetches its batch one entry after another: while the first page hangs
    (past the 1.5 s lease), the second entry's claim is renewed, not taken."""
    settings = _settings(make_settings, lease_seconds=1.5, fetch_timeout=120, refresh_batch=2)
    client = make_client(settings)
    ds = client.post("/api/datasources", json={"name": "web", "type": "url"}).json()["uuid"]
    entries = []
    for n in range(2):
        body = {"entry_data": {"name": f"p{n}", "url": pages.add(f"/p{n}", OLD.encode())}}
        r = client.post(f"/api/datasources/{ds}/entries", json={**body, "refresh": "daily"})
        entries.append(r.json()["uuid"])
        assert _state(client).ingestion.run_once() == [entries[-1]]
    for n, entry in enumerate(entries):  # due now, /p0 first
        with transaction(_state(client).db) as db:
            due = utcnow() - timedelta(minutes=2 - n)
            db.execute(update(Entry).where(Entry.uuid == entry).values(next_refresh_at=due))
    asked, release = threading.Event(), threading.Event()
    pages.on_request["/p0"] = lambda: (asked.set(), release.wait(120))
    store = _state(client).datasources
    outcomes: list[dict[str, str]] = []
    thread = threading.Thread(target=lambda: outcomes.append(RefreshJob(store).refresh_due()))
    thread.start()
    try:
        assert asked.wait(120)
        claimed_until = lease_until(client, entries[1])
        assert claimed_until is not None
        poll_until(lambda: (lease_until(client, entries[1]) or claimed_until) > claimed_until)
        later = claimed_until + timedelta(milliseconds=1)  # its first lease is over
        assert RefreshJob(store).queue.claim(2, now=later) == []
    finally:
        release.set()
        thread.join(120)
    assert outcomes == [dict.fromkeys(entries, "unchanged")]
    assert pages.requests["/p1"] == 2  # ingested once, refreshed once: by one job
