"""Ingestion under hostile entries: zip bombs and oversized entries fail alone and keep no
vectors; a URL that trickles its answer fails at the fetch deadline and holds one worker
only, so entries behind it are ingested meanwhile. Real app, real Chroma, real model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from hostile_http import HostileServer
from sqlalchemy import update
from waiting import poll_until

from appforge.core.db import transaction
from appforge.core.settings import Settings
from datasources.embedding import Embedder
from datasources.queue import IngestionQueue
from datasources.store import DatasourceStore
from datasources.tables import Entry
from tests.datasources.support import get_entry, make_docx_bomb, wait_for_entry

TEXT = " ".join(f"Line {i} of the manual explains step {i}." for i in range(30))


def _state(client: TestClient) -> Any:
    app: Any = client.app
    return app.state.api


def _datasource(client: TestClient, **extra: Any) -> str:
    r = client.post("/api/datasources", json={"name": "limits", "type": "mixed", **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _add(client: TestClient, ds: str, **data: Any) -> str:
    r = client.post(f"/api/datasources/{ds}/entries", json={"entry_data": data})
    assert r.status_code == 201, r.text
    return str(r.json()["uuid"])


def _vectors(client: TestClient, ds: str, entry: str | None = None) -> int:
    return int(_state(client).datasources.index.count(ds, entry))


def test_entry_over_the_chunk_limit_fails_and_keeps_no_vectors(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources={"max_chunks_per_entry": 3}))
    ds = _datasource(client, chunk_size=120)
    files = {"file": ("manual.txt", TEXT.encode())}  # about 13 chunks of 120
    r = client.post(f"/api/datasources/{ds}/entries/upload", files=files)
    assert r.status_code == 201, r.text
    big = r.json()["uuid"]
    small = _add(client, ds, name="note", content="Short enough for three chunks.")
    failed = wait_for_entry(client, ds, big)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("ENTRY_TOO_LARGE:")
    assert "MAX_CHUNKS_PER_ENTRY" in failed["error"]
    assert wait_for_entry(client, ds, small)["status"] == "ready"
    assert _vectors(client, ds, big) == 0
    assert _vectors(client, ds) == 1


def test_text_entry_over_the_chunk_limit_is_refused_at_once(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources={"max_chunks_per_entry": 3, "workers": 0}))
    ds = _datasource(client, chunk_size=120)
    r = client.post(
        f"/api/datasources/{ds}/entries", json={"entry_data": {"name": "m", "content": TEXT}}
    )
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "ENTRY_TOO_LARGE"
    assert "MAX_CHUNKS_PER_ENTRY" in error["message"]
    assert error["details"] == {"size": len(TEXT), "limit": 360}
    assert client.get(f"/api/datasources/{ds}/entries").json() == []
    assert _add(client, ds, name="fits", content=TEXT[:360])


def test_docx_bomb_entry_fails_and_the_worker_goes_on(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(datasources={"workers": 1}))
    ds = _datasource(client)
    bomb = make_docx_bomb(40 * 1024 * 1024)  # 40 MiB of paragraphs in about 150 KB
    r = client.post(f"/api/datasources/{ds}/entries/upload", files={"file": ("b.docx", bomb)})
    assert r.status_code == 201, r.text
    bombed = r.json()["uuid"]
    after = _add(client, ds, name="after", content="Entries after the bomb are ingested.")
    failed = wait_for_entry(client, ds, bombed)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("ARCHIVE_TOO_LARGE:")
    assert wait_for_entry(client, ds, after)["status"] == "ready"
    assert _vectors(client, ds, bombed) == 0


def test_a_failed_retry_removes_the_vectors_of_the_earlier_attempt(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    embedder: Embedder,
):
    client = make_client(make_settings(datasources={"workers": 0}))
    ds = _datasource(client, chunk_size=120)
    entry = _add(client, ds, name="manual", content=TEXT)
    state = _state(client)
    assert state.ingestion.run_once() == [entry]
    assert _vectors(client, ds, entry) > 3
    # Taken again (as after a crash) by a worker whose limit the entry is now over.
    with transaction(state.db) as db:
        db.execute(update(Entry).where(Entry.uuid == entry).values(status="pending"))
    strict = make_settings(datasources={"workers": 0, "max_chunks_per_entry": 3})
    store = DatasourceStore(strict, state.db, state.datasources.index, embedder)
    assert IngestionQueue(store).run_once() == [entry]
    body = get_entry(client, ds, entry)
    assert body["status"] == "failed" and body["error"].startswith("ENTRY_TOO_LARGE:")
    assert _vectors(client, ds, entry) == 0


def test_trickling_url_fails_at_the_deadline_and_does_not_hold_the_queue(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    timeout = 6.0
    settings = make_settings(
        datasources={"url_allowlist": ["127.0.0.1"], "fetch_timeout": timeout, "workers": 2}
    )
    client = make_client(settings)
    ds = _datasource(client)
    # The whole answer takes 60 s at one byte per 0.5 s; no single read is slow.
    with HostileServer("trickle", interval=0.5) as server:
        slow = _add(client, ds, name="slow", url=server.url)
        behind = _add(client, ds, name="behind", content="Queued behind the slow page.")
        ready = wait_for_entry(client, ds, behind)
        failed = wait_for_entry(client, ds, slow)
        poll_until(server.all_hung_up, interval=0.1)  # the deadline ended the read
    assert ready["status"] == "ready"
    assert failed["status"] == "failed"
    assert failed["error"].startswith("FETCH_TIMEOUT:"), failed["error"]
    assert server.completed == 0
    # The entry behind was done while the slow one was still being fetched.
    assert datetime.fromisoformat(ready["updated_at"]) < datetime.fromisoformat(
        failed["updated_at"]
    )
    assert server.requests == 1


def test_a_file_with_nul_characters_is_ingested_without_them(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
):
    # PostgreSQL's text columns refuse NUL: the keyword rows failed the whole entry there.
    client = make_client(make_settings(database_url=backend))
    ds = _datasource(client)
    files = {"file": ("log.txt", b"pump\x00 seal\x00 replaced on Monday")}
    r = client.post(f"/api/datasources/{ds}/entries/upload", files=files)
    assert r.status_code == 201, r.text
    ready = wait_for_entry(client, ds, r.json()["uuid"])
    assert (ready["status"], ready["error"]) == ("ready", None), ready
    for mode in ("keyword", "vector"):
        found = client.post(
            f"/api/datasources/{ds}/search", json={"query": "pump seal", "mode": mode}
        ).json()["results"]
        assert [hit["text"] for hit in found] == ["pump seal replaced on Monday"], mode
    nothing = client.post(
        f"/api/datasources/{ds}/entries/upload", files={"file": ("nul.txt", b"\x00\x00")}
    )
    failed = wait_for_entry(client, ds, nothing.json()["uuid"])
    assert failed["status"] == "failed" and "has no text" in failed["error"], failed
