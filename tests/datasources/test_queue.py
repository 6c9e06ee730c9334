"""The ingestion queue: idempotent re-processing, lease take-over, several workers on
one PostgreSQL database, and the Chroma server mode."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.orm import Session
from waiting import poll_until

from appforge.core.db import make_engine, migrate, session_factory, transaction, utcnow
from appforge.core.settings import Settings
from datasources.embedding import Embedder
from datasources.index import VectorIndex, collection_name, make_client
from datasources.queue import IngestionQueue
from datasources.store import DatasourceStore
from datasources.tables import Entry
from tests.datasources.support import Pages, get_entry, lease_until, wait_for_entry

TEXT = " ".join(f"Line {i} of the manual explains step {i}." for i in range(30))


def _state(client: TestClient) -> Any:
    app: Any = client.app
    return app.state.api


def _setup(client: TestClient, n: int = 1) -> tuple[str, list[str]]:
    ds = client.post(
        "/api/datasources", json={"name": "q", "type": "text", "chunk_size": 120}
    ).json()
    entries = []
    for i in range(n):
        r = client.post(
            f"/api/datasources/{ds['uuid']}/entries",
            json={"entry_data": {"name": f"e{i}", "content": f"{i}: {TEXT}"}},
        )
        assert r.status_code == 201
        entries.append(r.json()["uuid"])
    return ds["uuid"], entries


def _set(client: TestClient, entry: str, **values: Any) -> None:
    with transaction(_state(client).db) as db:
        db.execute(update(Entry).where(Entry.uuid == entry).values(**values))


def test_reprocessing_an_entry_leaves_no_duplicate_vectors(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources={"workers": 0}))
    ds, (entry,) = _setup(client)
    queue: IngestionQueue = _state(client).ingestion
    assert queue.run_once() == [entry]
    first = get_entry(client, ds, entry)
    total = first["chunks_total"]
    assert first["status"] == "ready" and total > 3
    index: VectorIndex = _state(client).datasources.index
    assert index.count(ds, entry) == total
    # As if the worker had died half-way: the entry is claimable again.
    _set(client, entry, status="pending")
    assert queue.run_once() == [entry]
    again = get_entry(client, ds, entry)
    assert again["status"] == "ready" and again["attempts"] == 2
    assert index.count(ds, entry) == total
    assert queue.run_once() == []


def test_expired_lease_is_taken_over_and_the_old_worker_stops(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources={"workers": 0}))
    ds, (entry,) = _setup(client)
    queue: IngestionQueue = _state(client).ingestion
    (stale,) = queue.claim()
    assert stale.uuid == entry
    assert queue.run_once() == []  # leased: nobody else takes it
    _set(client, entry, lease_until=utcnow() - timedelta(seconds=1))
    assert queue.run_once() == [entry]
    assert get_entry(client, ds, entry)["status"] == "ready"
    # The first worker wakes up: its writes are refused, the entry stays ready.
    queue.process([stale])
    body = get_entry(client, ds, entry)
    assert body["status"] == "ready" and body["attempts"] == 2
    assert _state(client).datasources.index.count(ds, entry) == body["chunks_total"]


def test_stopping_gives_back_held_entries_at_once(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources={"workers": 0, "embedding_batch": 2}))
    ds = client.post("/api/datasources", json={"name": "q", "type": "text"}).json()["uuid"]
    entries = [
        client.post(
            f"/api/datasources/{ds}/entries", json={"entry_data": {"name": n, "content": n}}
        ).json()["uuid"]
        for n in ("one", "two", "three")
    ]
    queue: IngestionQueue = _state(client).ingestion
    claimed = queue.claim_work()  # one entry, and one more through the batch queue
    assert len(claimed) == 2
    assert queue.run_once() == [entries[2]]  # the third; the held ones are leased
    assert len(queue.queue.held.tokens) == 2  # what run_once wrote is no longer held
    queue.stop()  # as a worker does on SIGTERM: no waiting for the 60 s lease
    assert not queue.queue.held.tokens
    for entry in claimed:
        body = get_entry(client, ds, entry.uuid)
        assert (body["status"], body["attempts"]) == ("pending", 0)
    assert sorted(IngestionQueue(_state(client).datasources).run_once()) == sorted(
        e.uuid for e in claimed
    )


def test_worker_gives_up_after_repeated_deaths(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources={"workers": 0}))
    ds, (entry,) = _setup(client)
    _set(client, entry, attempts=3)
    assert _state(client).ingestion.run_once() == [entry]
    body = get_entry(client, ds, entry)
    assert body["status"] == "failed" and body["error"].startswith("INGEST_FAILED:")


def test_an_entry_worked_longer_than_its_lease_is_not_taken_by_another_worker(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
    pages: Pages,
):
    """A fetch may take longer than the lease (fetch_timeout 120 s, lease 1.5 s): the
    working worker renews its claim, so a second worker never takes the entry."""
    settings = make_settings(
        database_url=backend,
        datasources={
            "workers": 0,
            "lease_seconds": 1.5,
            "fetch_timeout": 120,
            "url_allowlist": ["127.0.0.1"],
        },
    )
    client = make_client(settings)
    asked, release = threading.Event(), threading.Event()
    url = pages.add("/slow.html", b"<p>A page that takes its time.</p>")
    pages.on_request["/slow.html"] = lambda: (asked.set(), release.wait(120))
    ds = client.post("/api/datasources", json={"name": "web", "type": "url"}).json()["uuid"]
    made = client.post(
        f"/api/datasources/{ds}/entries", json={"entry_data": {"name": "s", "url": url}}
    )
    entry = made.json()["uuid"]
    first = IngestionQueue(_state(client).datasources)
    worked: list[list[str]] = []
    thread = threading.Thread(target=lambda: worked.append(first.run_once()))
    thread.start()
    try:
        assert asked.wait(120)  # the first worker is fetching, and the page does not answer
        claimed_until = lease_until(client, entry)
        # Renewed while the fetch goes on: the claim outlives its first lease.
        poll_until(lambda: lease_until(client, entry) > claimed_until)
        second = IngestionQueue(_state(client).datasources)
        later = claimed_until + timedelta(milliseconds=1)  # the first lease is over
        assert second.queue.claim(1, now=later) == []
    finally:
        release.set()
        thread.join(120)
    assert worked == [[entry]]
    body = get_entry(client, ds, entry)
    assert (body["status"], body["attempts"]) == ("ready", 1)
    assert pages.requests["/slow.html"] == 1
    assert lease_until(client, entry) is None  # the claim ended with the result


@pytest.mark.postgres
def test_several_workers_on_postgresql_process_each_entry_once(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    postgres_url: str,
    embedder: Embedder,
    tmp_path: Path,
):
    from tests.conftest import _empty_postgres

    _empty_postgres(postgres_url)
    # Small claims, so the three workers really compete for the entries.
    settings = make_settings(
        database_url=postgres_url, datasources={"workers": 0, "embedding_batch": 2}
    )
    client = make_client(settings)
    ds, entries = _setup(client, n=8)
    processed: list[str] = []
    lock = threading.Lock()
    engines = []

    def worker() -> None:
        # Its own engine and sessions: as another process would have.
        engine = make_engine(postgres_url)
        engines.append(engine)
        store = DatasourceStore(
            settings, session_factory(engine), _state(client).datasources.index, embedder
        )
        queue = IngestionQueue(store)
        while done := queue.run_once():
            with lock:
                processed.extend(done)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for engine in engines:
        engine.dispose()
    assert sorted(processed) == sorted(entries)  # each exactly once
    listed = client.get(f"/api/datasources/{ds}/entries").json()
    assert {e["status"] for e in listed} == {"ready"}
    assert {e["attempts"] for e in listed} == {1}
    index: VectorIndex = _state(client).datasources.index
    assert index.count(ds) == sum(e["chunks_total"] for e in listed)


def test_chroma_server_mode(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    chroma_server: str,
):
    settings = make_settings(chroma_url=chroma_server)
    client = make_client(settings)
    ds, (entry,) = _setup(client)
    assert wait_for_entry(client, ds, entry)["status"] == "ready"
    hits = client.post(
        f"/api/datasources/{ds}/search", json={"query": "step 7 of the manual"}
    ).json()
    assert hits["results"][0]["metadata"]["entry_uuid"] == entry
    remote = make_client_for(chroma_server)
    assert collection_name(ds) in [c.name for c in remote.list_collections()]
    assert not (settings.home / "chroma").exists()  # nothing written locally
    assert client.delete(f"/api/datasources/{ds}").status_code == 204
    assert collection_name(ds) not in [c.name for c in remote.list_collections()]


def make_client_for(url: str) -> Any:
    return make_client(url, Path("/nonexistent"))


def test_a_retry_answers_what_it_did_even_when_a_worker_claims_the_entry_at_once(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    """A worker may claim a retried entry between the retry's commit and its answer; the
    answer is still the entry as the retry left it (``pending``), not the worker's."""
    client = make_client(make_settings(datasources={"workers": 0}))
    ds, (entry,) = _setup(client)
    queue: IngestionQueue = _state(client).ingestion
    assert queue.run_once() == [entry]
    claimed: list[Any] = []
    fired: list[bool] = []

    def worker_claims(session: Any) -> None:  # right after the retry commits
        if not fired:  # once: the claim commits too
            fired.append(True)
            claimed.append(queue.claim())

    event.listen(Session, "after_commit", worker_claims)
    try:
        r = client.post(f"/api/datasources/{ds}/entries/{entry}/retry")
    finally:
        event.remove(Session, "after_commit", worker_claims)
    assert r.status_code == 200, r.text
    assert [e.uuid for e in claimed[0]] == [entry]  # the worker did take it at once
    assert (r.json()["status"], r.json()["attempts"]) == ("pending", 0)
    assert get_entry(client, ds, entry)["status"] == "processing"


@pytest.mark.postgres
def test_a_database_restart_while_an_entry_is_fetched_keeps_the_work(
    empty_postgres: str,  # first: dropped after the API's shutdown
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    pages: Pages,
    monkeypatch: pytest.MonkeyPatch,
):
    """The database restarts (or fails over) while a worker fetches a URL entry: its
    next write met a connection the server had ended, and the work was dropped with
    an error, the entry held until its lease ran out (a minute). It is written on a
    new connection. Connections used within the last moment are not pinged before
    use; this test makes that moment an hour."""
    import psycopg

    monkeypatch.setattr("appforge.core.db.PING_AFTER_IDLE_SECONDS", 3600.0)
    engine = make_engine(empty_postgres)
    migrate(engine)
    engine.dispose()
    settings = make_settings(
        database_url=empty_postgres,
        datasources={"workers": 0, "url_allowlist": ["127.0.0.1"]},
    )
    client = make_client(settings)
    ds = client.post("/api/datasources", json={"name": "web", "type": "url"}).json()["uuid"]
    url = pages.add("/manual", f"<html><body><p>{TEXT}</p></body></html>".encode())
    made = client.post(
        f"/api/datasources/{ds}/entries", json={"entry_data": {"name": "manual", "url": url}}
    )
    assert made.status_code == 201, made.text
    server, name = empty_postgres.rsplit("/", 1)

    def restart() -> None:  # as the database restarts, every session of it ends
        with psycopg.connect(f"{server}/test", autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

    pages.on_request["/manual"] = restart
    queue = IngestionQueue(_state(client).datasources)
    assert queue.run_once() == [made.json()["uuid"]]
    assert pages.requests["/manual"] == 1
    entry = get_entry(client, ds, made.json()["uuid"])
    assert (entry["status"], entry["attempts"], entry["error"]) == ("ready", 1, None), entry
    assert entry["chunks_total"] > 0


@pytest.mark.postgres
@pytest.mark.parametrize("limit", ["lock", "statement"])
def test_an_entry_whose_chunks_meet_a_busy_database_waits_and_is_not_failed(
    empty_postgres: str,  # first: dropped after the API's shutdown
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    limit: str,
):
    """Writing an entry's chunks met the database busy (a lock held past the lock
    timeout) or away, and the entry was failed for good, though nothing was wrong with
    it, when the database answered again by the time the failure was written. It is
    given back instead, its attempt undone, and ingested once the database answers.
    A statement past the statement timeout still fails the entry, its attempt counted:
    its own writes may be why, and given back it would be tried for ever."""
    import psycopg

    engine = make_engine(empty_postgres)
    migrate(engine)
    engine.dispose()
    timeouts = {"lock_timeout_seconds": 0.5, "statement_timeout_seconds": 0}
    if limit == "statement":  # the wait for the lock runs into the statement's limit
        timeouts = {"lock_timeout_seconds": 0, "statement_timeout_seconds": 0.5}
    settings = make_settings(
        database_url=empty_postgres, datasources={"workers": 0}, postgres=timeouts
    )
    client = make_client(settings)
    ds = client.post("/api/datasources", json={"name": "kb", "type": "text"}).json()["uuid"]
    made = client.post(
        f"/api/datasources/{ds}/entries", json={"entry_data": {"name": "manual", "content": TEXT}}
    )
    assert made.status_code == 201, made.text
    entry_uuid = made.json()["uuid"]
    queue = IngestionQueue(_state(client).datasources)
    claimed = queue.claim_work()
    assert [e.uuid for e in claimed] == [entry_uuid]
    # A keyword row under the entry's first chunk id, in a transaction left open: the
    # worker's insert of that chunk waits for it, past the lock timeout.
    with psycopg.connect(empty_postgres) as blocker:
        blocker.execute(
            "INSERT INTO datasource_chunks (chunk_id, datasource_uuid, entry_uuid, text,"
            " chunk_metadata) VALUES (%s, %s, %s, 'blocker', '{}')",
            (f"{entry_uuid}:0", ds, entry_uuid),
        )
        queue.process(claimed)
        waiting = get_entry(client, ds, entry_uuid)
        blocker.rollback()
    if limit == "statement":
        assert (waiting["status"], waiting["attempts"]) == ("failed", 1), waiting
        assert "statement timeout" in waiting["error"]
        return
    assert (waiting["status"], waiting["attempts"], waiting["error"]) == ("pending", 0, None)
    assert waiting["stage"] == "waiting for the database", waiting
    assert queue.run_once() == [entry_uuid]
    entry = get_entry(client, ds, entry_uuid)
    assert (entry["status"], entry["attempts"], entry["error"]) == ("ready", 1, None), entry
