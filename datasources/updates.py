"""Changes to datasources and entries after they were made: chunk settings, the
default search mode, an entry's refresh schedule, and handing entries back to the
ingestion queue.

New chunk settings re-ingest the datasource's entries: in the transaction that
changes the settings, every entry goes back to ``pending`` (one being processed
loses its claim: its worker stops writing). An entry that was ready is marked
``reingest``: its old chunks stay searchable until its new ones replace them (see
:mod:`datasources.queue`), and if re-ingesting fails it keeps them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine

from appforge.core.db import transaction, utcnow
from datasources.entries import Refresh, check_refresh, next_refresh
from datasources.errors import ChunkSettingsInvalidError, DatasourceNotFoundError
from datasources.store import BeforeCommit, DatasourceStore
from datasources.tables import Datasource, Entry

CHUNK_SETTINGS = ("chunk_size", "chunk_overlap")
# Entry values that hand an entry to the ingestion queue from the start.
_REQUEUED: dict[str, Any] = {
    "status": "pending",
    "error": None,
    "stage": None,
    "chunks_done": 0,
    "attempts": 0,
    "claim_token": None,
    "lease_until": None,
}


def update_datasource(
    store: DatasourceStore,
    datasource_uuid: str,
    changes: dict[str, Any],
    *,
    before_commit: BeforeCommit[Datasource] | None = None,
) -> tuple[Datasource, int]:
    """Apply ``changes`` (``chunk_size``, ``chunk_overlap``: None for the default;
    ``search_mode``); if the chunking they give differs, re-ingest every entry. The
    datasource, and how many entries went back to the queue."""
    defaults = store.settings.datasources
    with transaction(store.db) as db:
        row = db.get(Datasource, datasource_uuid)
        if row is None:
            raise DatasourceNotFoundError(f"no datasource '{datasource_uuid}'")
        before = _chunking(row, defaults.chunk_size, defaults.chunk_overlap)
        for key, value in changes.items():
            setattr(row, key, value)
        after = _chunking(row, defaults.chunk_size, defaults.chunk_overlap)
        if after[1] >= after[0]:
            raise ChunkSettingsInvalidError(
                f"chunk_overlap ({after[1]}) must be smaller than chunk_size ({after[0]})",
                details={"chunk_size": after[0], "chunk_overlap": after[1]},
            )
        row.updated_at = utcnow()
        requeued = _requeue(db, datasource_uuid) if after != before else 0
        if before_commit is not None:
            before_commit(db, row)
        db.flush()
        db.expunge(row)
    return row, requeued


def _chunking(row: Datasource, size: int, overlap: int) -> tuple[int, int]:
    """The chunk size and overlap a datasource's entries are split with."""
    return (
        row.chunk_size or size,
        overlap if row.chunk_overlap is None else row.chunk_overlap,
    )


def _requeue(db: Any, datasource_uuid: str) -> int:
    """Every entry of the datasource back to ``pending``; those that were ready (or
    being refreshed) keep their chunks until the new ones replace them."""
    had_chunks = db.execute(
        update(Entry)
        .where(
            Entry.datasource_uuid == datasource_uuid,
            Entry.status.in_(("ready", "refreshing")),
        )
        .values(reingest=True, updated_at=utcnow(), **_REQUEUED)
    ).rowcount
    others = db.execute(
        update(Entry)
        .where(
            Entry.datasource_uuid == datasource_uuid,
            Entry.status.in_(("processing", "failed")),
        )
        .values(updated_at=utcnow(), **_REQUEUED)
    ).rowcount
    return int(had_chunks or 0) + int(others or 0)


def update_entry(
    store: DatasourceStore,
    datasource_uuid: str,
    entry_uuid: str,
    refresh: Refresh,
    *,
    before_commit: BeforeCommit[Entry] | None = None,
) -> Entry:
    """Set a URL entry's refresh schedule: next due one period after it was last
    fetched (at once, if that is past); none: never."""
    entry = store.get_entry(datasource_uuid, entry_uuid)
    check_refresh(entry.kind, refresh)
    with transaction(store.db) as db:
        row = db.get(Entry, entry_uuid)
        if row is None:
            return store.get_entry(datasource_uuid, entry_uuid)  # 404
        row.refresh = refresh
        last = row.last_refreshed_at
        row.next_refresh_at = next_refresh(refresh, last) if last is not None else None
        row.updated_at = utcnow()
        if before_commit is not None:
            before_commit(db, row)
    return store.get_entry(datasource_uuid, entry_uuid)


def requeue_all(engine: Engine) -> int:
    """Hand every entry to the ingestion workers again (after a restore: vectors are not
    in a backup); how many entries were requeued."""
    with engine.begin() as conn:
        result = conn.execute(
            update(Entry).values(chunks_total=None, reingest=False, body_hash=None, **_REQUEUED)
        )
    return int(result.rowcount)
