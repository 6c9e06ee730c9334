"""The keyword index: every chunk's text in the database, searched by full-text search.

Rows of ``datasource_chunks`` (written by the ingestion step beside the
vectors, gone with their entry through ``ON DELETE CASCADE``) are indexed by
the database itself, as the migration made it:

- SQLite: an FTS5 table (Porter stemming, Unicode words) kept in step by
  triggers; a hit's ``score`` is ``-bm25``, higher is better.
- PostgreSQL: a generated ``tsvector`` column (English configuration) with a
  GIN index; a hit's ``score`` is ``ts_rank``, higher is better.

The two scores are on different scales: compare them only within one search.
A query matches a chunk holding any of its words (stop words aside), ranked by
how many and how rare. Metadata filters are applied in Python to the best
``candidates`` matches (the same meaning as Chroma's, :func:`filters.holds`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from datasources import filters
from datasources.index import Hit
from datasources.tables import Chunk, Datasource, Entry

# Words too common to say anything about which chunk answers (the query's others do).
STOP_WORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its "
    "me my no not of on or our so than that the their them then there these they this to "
    "was we what when where which who why will with you your".split()
)
MAX_TERMS = 64
_INSERT_BATCH = 500

_SQLITE_SEARCH = text(
    "SELECT c.chunk_id, c.text, c.chunk_metadata, bm25(datasource_chunks_fts) AS rank "
    "FROM datasource_chunks_fts JOIN datasource_chunks AS c "
    "ON c.id = datasource_chunks_fts.rowid "
    "WHERE datasource_chunks_fts MATCH :query AND c.datasource_uuid = :datasource "
    "ORDER BY rank LIMIT :limit"
)
_POSTGRES_SEARCH = text(
    "SELECT chunk_id, text, chunk_metadata, ts_rank(tsv, q) AS rank "
    "FROM datasource_chunks, to_tsquery('english', :query) AS q "
    "WHERE datasource_uuid = :datasource AND tsv @@ q "
    "ORDER BY rank DESC, id LIMIT :limit"
)


def terms(query: str) -> list[str]:
    """The query's distinct words, lower case, stop words dropped (all of them, if the
    query is nothing else), at most ``MAX_TERMS``."""
    words = list(dict.fromkeys(re.findall(r"\w+", query.lower())))
    kept = [w for w in words if w not in STOP_WORDS] or words
    return kept[:MAX_TERMS]


class KeywordIndex:
    """Chunks in the database for keyword search. Blocking: call from threads."""

    def __init__(self, db: sessionmaker[Session]) -> None:
        self.db = db
        engine: Engine = db.kw["bind"]
        self.dialect = engine.dialect.name

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert chunks (``chunk_id``, ``datasource_uuid``, ``entry_uuid``, ``text``,
        ``chunk_metadata``) in one transaction; an entry deleted meanwhile makes it fail
        (``IntegrityError``) with nothing written."""
        if not rows:
            return
        with self.db() as db, db.begin():
            for start in range(0, len(rows), _INSERT_BATCH):
                db.execute(insert(Chunk), list(rows[start : start + _INSERT_BATCH]))

    def replace_entry(self, entry_uuid: str, rows: Sequence[dict[str, Any]]) -> None:
        """An entry's chunks become ``rows`` (as :meth:`add` takes them) in one
        transaction: a search sees the old chunks or the new ones, never neither or
        both. An entry deleted meanwhile makes it fail (``IntegrityError``)."""
        with self.db() as db, db.begin():
            _lock_parents(db, entry_uuid)
            db.execute(delete(Chunk).where(Chunk.entry_uuid == entry_uuid))
            for start in range(0, len(rows), _INSERT_BATCH):
                db.execute(insert(Chunk), list(rows[start : start + _INSERT_BATCH]))

    def delete_entry(self, entry_uuid: str) -> None:
        """Remove every chunk of one entry."""
        with self.db() as db, db.begin():
            db.execute(delete(Chunk).where(Chunk.entry_uuid == entry_uuid))

    def count(self, datasource_uuid: str, entry_uuid: str | None = None) -> int:
        """Chunks stored for a datasource, or for one of its entries."""
        query = select(func.count()).select_from(Chunk)
        query = query.where(Chunk.datasource_uuid == datasource_uuid)
        if entry_uuid is not None:
            query = query.where(Chunk.entry_uuid == entry_uuid)
        with self.db() as db:
            return int(db.scalar(query) or 0)

    def search(
        self,
        datasource_uuid: str,
        query: str,
        top_k: int,
        where: dict[str, Any] | None = None,
        candidates: int = 200,
    ) -> list[Hit]:
        """The ``top_k`` best matches of ``query`` passing ``where`` (a translated filter),
        best first; with a filter, it looks among the best ``candidates`` matches."""
        words = terms(query)
        if not words:
            return []
        if self.dialect == "sqlite":
            statement, match = _SQLITE_SEARCH, " OR ".join(f'"{w}"' for w in words)
        else:
            statement, match = _POSTGRES_SEARCH, " | ".join(words)
        limit = max(top_k, candidates) if where else top_k
        params = {"query": match, "datasource": datasource_uuid, "limit": limit}
        with self.db() as db:
            rows = db.execute(statement, params).all()
        hits: list[Hit] = []
        for chunk_id, chunk_text, metadata, rank in rows:
            meta = _json(metadata)
            if filters.holds(where, meta):
                score = -float(rank) if self.dialect == "sqlite" else float(rank)
                hits.append(Hit(id=chunk_id, text=chunk_text, score=score, metadata=meta))
                if len(hits) == top_k:
                    break
        return hits


def _json(value: Any) -> dict[str, Any]:
    """A JSON column read through ``text()`` comes back as a string on SQLite."""
    if isinstance(value, str):
        import json

        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return dict(value or {})


def _lock_parents(db: Session, entry_uuid: str) -> None:
    """Take the entry's datasource row, then the entry's, ``FOR KEY SHARE`` (PostgreSQL;
    nothing on SQLite) before any chunk row: in the order a delete of either takes
    them, then cascades to the chunks. Taken the other way round (chunk rows first,
    the parents only at the inserts' foreign-key checks), a replacement and a delete
    of the datasource deadlocked."""
    found = db.scalar(select(Entry.datasource_uuid).where(Entry.uuid == entry_uuid))
    if found is None:
        return  # deleted: the inserts fail on their foreign key (IntegrityError)
    for key, value in ((Datasource.uuid, found), (Entry.uuid, entry_uuid)):
        db.execute(select(key).where(key == value).with_for_update(read=True, key_share=True))
