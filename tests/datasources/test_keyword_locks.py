"""Replacing an entry's keyword rows while its datasource is deleted, on PostgreSQL.

The replacement once locked the entry's chunk rows first and its parents only at
its inserts' foreign-key checks, while a datasource delete locks the datasource row
first and then cascades to the chunks: the two deadlocked (a 500 on the delete).
Here the delete is made to arrive exactly between the replacement's DELETE of the
old chunks and its INSERT of the new ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from waiting import poll_until

from appforge.core.settings import Settings
from datasources.keywords import KeywordIndex
from tests.datasources.support import wait_for_entry


def _waiting_on_a_lock(url: str, query: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE %s",
            (query + "%",),
        ).fetchone()
    return bool(row and row[0])


def test_a_datasource_deleted_while_its_entry_is_reindexed_does_not_deadlock(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    backend: str | None,
) -> None:
    if backend is None:
        pytest.skip("row locks: PostgreSQL only")
    client = make_client(make_settings(database_url=backend, datasources={"workers": 1}))
    ds = client.post("/api/datasources", json={"name": "d", "type": "text"}).json()["uuid"]
    body = {"entry_data": {"name": "e", "content": "Kettles descale in vinegar."}}
    entry = client.post(f"/api/datasources/{ds}/entries", json=body).json()["uuid"]
    assert wait_for_entry(client, ds, entry)["status"] == "ready"
    state: Any = client.app.state.api  # type: ignore[attr-defined]
    store = state.datasources
    row = {
        "datasource_uuid": ds,
        "entry_uuid": entry,
        "chunk_id": f"{entry}:0",
        "text": "Kettles descale in vinegar.",
        "chunk_metadata": {},
    }
    engine = store.db.kw["bind"]
    replacing = threading.Event()

    def pause_after_delete(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("DELETE FROM datasource_chunks") and not replacing.is_set():
            replacing.set()  # the old chunks are locked: let the delete come, then go on
            poll_until(lambda: _waiting_on_a_lock(backend, "DELETE FROM datasources"))

    errors: list[BaseException] = []

    def replace() -> None:
        try:
            KeywordIndex(store.db).replace_entry(entry, [row])
        except BaseException as exc:  # reported below
            errors.append(exc)

    event.listen(engine, "after_cursor_execute", pause_after_delete)
    try:
        worker = threading.Thread(target=replace)
        worker.start()
        assert replacing.wait(60)
        deleted = client.delete(f"/api/datasources/{ds}")
        worker.join()
    finally:
        event.remove(engine, "after_cursor_execute", pause_after_delete)
    assert errors == []
    assert deleted.status_code == 204, deleted.text
