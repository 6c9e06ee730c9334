"""Tables of the datasources package: datasources and their entries.

An entry's chunks are also rows (``datasource_chunks``): the keyword index beside
the vectors, searched with SQLite FTS5 or PostgreSQL full-text search (the
index itself is made by the migration: see ``datasources.keywords``). They go
with their entry (``ON DELETE CASCADE``).

An entry's row is the ingestion queue: ``status`` goes ``pending`` ->
``processing`` -> ``ready`` | ``failed``; a URL entry with a ``refresh`` schedule
goes ``ready`` -> ``refreshing`` -> ``ready`` (or ``pending`` when its page
changed) while the refresh job (:mod:`datasources.refresh`) holds it. A worker
that claims an entry writes its ``claim_token`` and a ``lease_until`` it keeps
extending while it works; an entry in ``processing`` whose lease ran out belongs
to a dead worker and is claimed again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from appforge.core.db import Base, UTCDateTime, unmanaged, utcnow


class Datasource(Base):
    __tablename__ = "datasources"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    chunk_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chunk_overlap: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The search mode used when a search names none: vector, keyword or hybrid.
    search_mode: Mapped[str] = mapped_column(String(16), default="hybrid", server_default="vector")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Entry(Base):
    __tablename__ = "datasource_entries"
    __table_args__ = (
        UniqueConstraint("datasource_uuid", "content_hash"),
        Index("ix_datasource_entries_status_created_at", "status", "created_at"),
    )

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    datasource_uuid: Mapped[str] = mapped_column(
        ForeignKey("datasources.uuid", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(16))  # text | url | file
    content: Mapped[str | None] = mapped_column(Text, nullable=True)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Relative to the home: a file entry's bytes; a URL entry's body kept by its refresh
    # until it is ingested (datasources.bodies).
    file_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    media_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    content_hash: Mapped[str] = mapped_column(String(64))
    entry_metadata: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # While processing: loading model, extracting, embedding n/m or indexing.
    stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    chunks_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # URL entries: none, daily or weekly; when last fetched again and next due.
    refresh: Mapped[str] = mapped_column(String(8), default="none", server_default="none")
    last_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_refresh_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # The hash of the fetched body the chunks were made from (URL entries).
    body_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Processed again while its old chunks stay searchable; a failure keeps them.
    reingest: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Chunk(Base):
    """One chunk of an entry, for keyword search (the vectors are in Chroma)."""

    __tablename__ = "datasource_chunks"

    # An integer key: SQLite's FTS5 index refers to rows by it.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    chunk_id: Mapped[str] = mapped_column(String(64), unique=True)  # <entry_uuid>:<n>
    datasource_uuid: Mapped[str] = mapped_column(
        ForeignKey("datasources.uuid", ondelete="CASCADE"), index=True
    )
    entry_uuid: Mapped[str] = mapped_column(
        ForeignKey("datasource_entries.uuid", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(Text)
    chunk_metadata: Mapped[dict[str, Any]] = mapped_column(JSON)


class VectorDeletion(Base):
    """Vectors still to remove from the vector store: those of an entry (``entry_uuid``)
    or a whole datasource (None) whose row is gone. Written in the transaction that
    deletes the row and removed once the vector store has removed them, so vectors
    the store missed (it went away at that moment) are removed later, by the
    refresh job's rounds (:meth:`datasources.store.DatasourceStore.sweep_deletions`).
    A worker writes one too while it writes an entry's vectors (``note_writing``):
    the sweep acts on it only once the entry's row is gone."""

    __tablename__ = "vector_deletions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # No foreign keys: the rows they name are deleted in the same transaction.
    datasource_uuid: Mapped[str] = mapped_column(String(36), index=True)
    entry_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Made by the migration in raw SQL: SQLite's FTS5 index (and its shadow tables), and
# PostgreSQL's generated tsvector column with its GIN index.
unmanaged("datasource_chunks_fts", "datasource_chunks.tsv", "ix_datasource_chunks_tsv")
