"""Datasources and their entries: the Promptly paths, plus entry status, upload and search.

Adding an entry answers 201 at once with status ``pending``; the ingestion
workers (:mod:`datasources.queue`) extract, chunk, embed and index it, and
``GET .../entries/<entry_uuid>`` shows the progress. Routes are plain ``def``:
FastAPI runs them in its thread pool, so embedding and Chroma calls never
block the event loop.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from api.access import Reader, Writer
from api.audit import Action, Actor, record
from api.data_uris import FileData, decode_file
from api.deps import Who
from api.input_checks import refuse_unstorable
from api.state import api_state
from datasources.entries import NewEntry, Refresh
from datasources.errors import (
    DATABASE_STAGE,
    DISK_FULL_STAGE,
    EntryInvalidError,
    VectorStoreUnavailableError,
)
from datasources.queue import IngestionQueue
from datasources.search import DEFAULT_KEYWORD_WEIGHT, Mode, SearchOptions
from datasources.store import BeforeCommit, DatasourceStore
from datasources.tables import Datasource, Entry
from datasources.updates import update_datasource, update_entry

router = APIRouter(prefix="/api/datasources", tags=["datasources"])

Name = Annotated[str, Field(min_length=1, max_length=200)]


class DatasourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    type: Literal["text", "url", "file", "mixed"] = Field(
        description="What entries it takes: text content, URLs, files, or any (mixed)."
    )
    chunk_size: int | None = Field(
        default=None, ge=50, le=20_000, description="Characters per chunk; empty = the default."
    )
    chunk_overlap: int | None = Field(
        default=None, ge=0, le=5_000, description="Characters shared by neighbouring chunks."
    )
    search_mode: Mode = Field(
        default="hybrid",
        description="How a search that names no mode searches it: vector, keyword or hybrid.",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> DatasourceCreate:
        if self.chunk_size and self.chunk_overlap and self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class DatasourceUpdate(BaseModel):
    """Fields to change; a field left out stays as it is (null: back to the default)."""

    model_config = ConfigDict(extra="forbid")

    chunk_size: int | None = Field(
        default=None,
        ge=50,
        le=20_000,
        description="Characters per chunk; null = the default. A change re-ingests the "
        "entries (searchable on their old chunks meanwhile).",
    )
    chunk_overlap: int | None = Field(
        default=None, ge=0, le=5_000, description="Characters shared by neighbouring chunks."
    )
    search_mode: Mode = Field(default="hybrid", description="vector, keyword or hybrid.")


class DatasourcePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    uuid: str
    name: str
    type: str
    chunk_size: int | None
    chunk_overlap: int | None
    search_mode: str = Field(description="vector, keyword or hybrid: the default mode.")
    created_at: datetime
    updated_at: datetime


class DatasourceDetail(DatasourcePublic):
    entries: dict[str, int] = Field(description="Entries per status.")


class DatasourceUpdated(DatasourcePublic):
    requeued: int = Field(description="Entries handed back to ingestion (new chunk settings).")


class EntryData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        default=None, description="The entry's name; empty: the name a data URI file gives."
    )
    content: str | None = Field(default=None, description="Text (text and mixed datasources).")
    url: Annotated[str, Field(max_length=4000)] | None = Field(
        default=None, description="A page or document to fetch (url and mixed datasources)."
    )
    file: str | None = Field(
        default=None,
        description="Base64 file bytes, or a data URI `data:<media type>;name=<file name>;"
        "base64,<bytes>` whose media type and name are used (file and mixed datasources).",
    )
    media_type: str | None = Field(
        default=None, max_length=200, description="The file's media type; else from its name."
    )


REFRESH_TEXT = (
    "URL entries: fetch the page again daily or weekly and re-ingest it when it changed; "
    "none (the default): never."
)


class EntryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry_data: EntryData
    entry_metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Scalar values; each key is md_<key> on the entry's chunks.",
    )
    refresh: Refresh = Field(default="none", description=REFRESH_TEXT)


class EntryUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh: Refresh = Field(description=REFRESH_TEXT)


class EntryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    uuid: str
    datasource_uuid: str
    name: str
    type: str = Field(description="text, url or file")
    url: str | None
    media_type: str | None
    size_bytes: int
    content_hash: str
    entry_metadata: dict[str, Any]
    status: str = Field(
        description="pending, processing, ready or failed; refreshing while a scheduled "
        "refresh fetches its URL (still searchable)"
    )
    stage: str | None = Field(
        default=None,
        description="While processing: loading model, extracting, embedding n/m (chunks "
        "embedded of all) or indexing; pending after the vector store could not be "
        "reached: waiting for the vector store; pending after the disk was full: "
        "waiting for disk space; pending after the database was away or locked when its "
        "chunks were written: waiting for the database; empty otherwise.",
    )
    error: str | None = Field(
        description="Why it failed; on a ready entry, why its last refresh or re-ingestion "
        "failed (it kept its previous chunks)."
    )
    refresh: str = Field(default="none", description="none, daily or weekly (URL entries)")
    last_refreshed_at: datetime | None = Field(
        default=None, description="URL entries: when the page was last fetched."
    )
    next_refresh_at: datetime | None = Field(
        default=None, description="When the next scheduled refresh is due (none: never)."
    )
    chunks_total: int | None
    chunks_done: int
    attempts: int
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _stage_while_processing(self) -> EntryPublic:
        # An entry given back to the queue (its worker stopped) may keep its last stage;
        # one given back for the vector store, a full disk or the database says it waits
        # for it.
        waits = (VectorStoreUnavailableError.stage, DISK_FULL_STAGE, DATABASE_STAGE)
        waiting = self.status == "pending" and self.stage in waits
        if self.status != "processing" and not waiting:
            self.stage = None
        return self


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, Field(min_length=1, max_length=10_000)]
    top_k: int = Field(default=4, ge=1, le=100)
    where: dict[str, Any] | None = Field(default=None, description="A metadata filter.")
    mode: Mode | None = Field(
        default=None,
        description="vector, keyword or hybrid; empty: the datasource's own search_mode.",
    )
    keyword_weight: float = Field(
        default=DEFAULT_KEYWORD_WEIGHT,
        ge=0,
        le=1,
        description="Hybrid mode: the keyword list's weight in the fusion (vector: 1 - it).",
    )


class SearchHit(BaseModel):
    id: str = Field(description="<entry_uuid>:<n>")
    text: str
    score: float = Field(
        description="vector: cosine similarity (1 - cosine distance); keyword: -bm25 "
        "(SQLite) or ts_rank (PostgreSQL), higher is better; hybrid: reciprocal rank "
        "fusion in (0, 1], 1 = first in both lists."
    )
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    results: list[SearchHit]


def _store(request: Request) -> DatasourceStore:
    store: DatasourceStore = api_state(request).datasources
    return store


def _entry_public(entry: Entry) -> EntryPublic:
    return EntryPublic.model_validate(
        {
            **{k: getattr(entry, k) for k in EntryPublic.model_fields if k != "type"},
            "type": entry.kind,
        }
    )


def _datasource_public(row: Datasource) -> DatasourcePublic:
    return DatasourcePublic.model_validate(row)


def _audit_datasource(
    who: Actor, action: Action, changed: list[str] | None = None
) -> BeforeCommit[Datasource]:
    """The store's ``before_commit``: the audit event in the change's transaction."""

    def add(db: Session, row: Datasource) -> None:
        details: dict[str, Any] = {"name": row.name, "type": row.type}
        if changed is not None:
            details["changed"] = changed
        record(db, who, action, row.uuid, details)

    return add


def _wake(request: Request) -> None:
    """Tell this process's ingestion workers that entries are waiting."""
    queue: IngestionQueue | None = api_state(request).ingestion
    if queue is not None:
        queue.wake()


def _audit_entry(who: Actor, action: Action, **extra: Any) -> BeforeCommit[Entry]:
    """The store's ``before_commit`` for an entry (never its content)."""

    def add(db: Session, row: Entry) -> None:
        details = {"datasource_uuid": row.datasource_uuid, "name": row.name, "type": row.kind}
        record(db, who, action, row.uuid, {**details, **extra})

    return add


def _added(
    request: Request, datasource_uuid: str, new: NewEntry, who: Actor, **extra: Any
) -> EntryPublic:
    audit = _audit_entry(who, "entry.created", **extra)
    entry = _store(request).add_entry(datasource_uuid, new, before_commit=audit)
    _wake(request)
    return _entry_public(entry)


@router.get("", response_model=list[DatasourcePublic])
def list_datasources_route(request: Request, _: Reader) -> list[DatasourcePublic]:
    """List datasources, oldest first."""
    return [_datasource_public(r) for r in _store(request).all()]


@router.post("", response_model=DatasourcePublic, status_code=status.HTTP_201_CREATED)
def create_datasource_route(
    request: Request, body: DatasourceCreate, _: Writer, who: Who
) -> DatasourcePublic:
    """Create a datasource (``type``: text, url, file or mixed); 409 if the name is taken."""
    row = _store(request).create(
        body.name,
        body.type,
        body.chunk_size,
        body.chunk_overlap,
        search_mode=body.search_mode,
        before_commit=_audit_datasource(who, "datasource.created"),
    )
    return _datasource_public(row)


@router.get("/{datasource_uuid}", response_model=DatasourceDetail)
def get_datasource_route(request: Request, datasource_uuid: str, _: Reader) -> DatasourceDetail:
    """One datasource, with its number of entries per status."""
    store = _store(request)
    row = store.get(datasource_uuid)
    return DatasourceDetail(
        **_datasource_public(row).model_dump(), entries=store.stats(datasource_uuid)
    )


@router.patch("/{datasource_uuid}", response_model=DatasourceUpdated)
def update_datasource_route(
    request: Request, datasource_uuid: str, body: DatasourceUpdate, _: Writer, who: Who
) -> DatasourceUpdated:
    """Change a datasource's chunk settings or default search mode (fields left out stay).
    New chunk settings re-ingest its entries through the queue: each goes back to
    ``pending`` and keeps its old chunks, searchable, until its new ones replace them;
    ``requeued`` says how many. 422 ``CHUNK_SETTINGS_INVALID`` if the overlap would not be
    below the size."""
    changes = body.model_dump(include=body.model_fields_set)
    audit = _audit_datasource(who, "datasource.updated", sorted(changes))
    row, requeued = update_datasource(
        _store(request), datasource_uuid, changes, before_commit=audit
    )
    if requeued:
        _wake(request)
    return DatasourceUpdated(**_datasource_public(row).model_dump(), requeued=requeued)


@router.delete("/{datasource_uuid}", status_code=status.HTTP_204_NO_CONTENT)
def delete_datasource_route(request: Request, datasource_uuid: str, _: Writer, who: Who) -> None:
    """Delete a datasource with all its entries, their files and vectors."""
    audit = _audit_datasource(who, "datasource.deleted")
    _store(request).delete(datasource_uuid, before_commit=audit)


@router.post(
    "/{datasource_uuid}/entries",
    response_model=EntryPublic,
    status_code=status.HTTP_201_CREATED,
)
def add_entry_route(
    request: Request, datasource_uuid: str, body: EntryCreate, _: Writer, who: Who
) -> EntryPublic:
    """Add an entry: ``entry_data`` has a name and one of ``content``, ``url`` or ``file``
    (base64, or a ``data:<media type>;name=<file name>;base64,...`` URI). Answers at once
    with status ``pending``; 409 ``DUPLICATE_ENTRY`` if the same content is already in the
    datasource."""
    data = body.entry_data
    file: FileData | None = None
    if data.file is not None:
        limit = api_state(request).settings.datasources.max_file_bytes
        file = decode_file(data.file, limit)
    name = data.name or (file.name if file else None)
    if not name:
        raise EntryInvalidError("entry_data.name is required (or a data URI file's name=)")
    new = NewEntry(
        name=name,
        content=data.content,
        url=data.url,
        file=file.data if file else None,
        media_type=data.media_type or (file.media_type if file else None),
        metadata=body.entry_metadata,
        refresh=body.refresh,
    )
    return _added(request, datasource_uuid, new, who)


@router.post(
    "/{datasource_uuid}/entries/upload",
    response_model=EntryPublic,
    status_code=status.HTTP_201_CREATED,
)
def upload_entry_route(
    request: Request,
    datasource_uuid: str,
    file: Annotated[UploadFile, File(description="The file")],
    _: Writer,
    who: Who,
    name: Annotated[str | None, Form(max_length=500)] = None,
    entry_metadata: Annotated[str | None, Form(description="A JSON object")] = None,
) -> EntryPublic:
    """Add a file entry as ``multipart/form-data`` (``file``, optional ``name`` and
    ``entry_metadata`` as JSON) instead of base64; otherwise as ``POST .../entries``.
    A NUL or a lone surrogate in a field (the file's name too) is 422 naming it.

    The file is streamed to disk as it arrives and copied to the home in pieces,
    never whole in memory; over ``APPFORGE_DATASOURCES__MAX_FILE_BYTES`` it is 413
    ``ENTRY_TOO_LARGE`` (or ``PAYLOAD_TOO_LARGE`` while arriving) and nothing is stored."""
    metadata: Any = {}
    if entry_metadata:
        try:
            metadata = json.loads(entry_metadata)
        except json.JSONDecodeError as exc:
            raise EntryInvalidError("entry_metadata is not valid JSON") from exc
        if not isinstance(metadata, dict):
            raise EntryInvalidError("entry_metadata must be a JSON object")
        # As in a JSON body: a "\u0000" escape, a huge integer, NaN (422 naming the key).
        refuse_unstorable(metadata, ("body", "entry_metadata"))
    new = NewEntry(
        name=name or file.filename or "upload",
        file=file.file,
        media_type=file.content_type if file.content_type != "application/octet-stream" else None,
        metadata=metadata,
    )
    return _added(request, datasource_uuid, new, who, upload=True)


@router.get("/{datasource_uuid}/entries", response_model=list[EntryPublic])
def list_entries_route(request: Request, datasource_uuid: str, _: Reader) -> list[EntryPublic]:
    """The datasource's entries, oldest first, each with its status and progress."""
    return [_entry_public(e) for e in _store(request).list_entries(datasource_uuid)]


@router.get("/{datasource_uuid}/entries/{entry_uuid}", response_model=EntryPublic)
def get_entry_route(
    request: Request, datasource_uuid: str, entry_uuid: str, _: Reader
) -> EntryPublic:
    """One entry: status (pending, processing, ready, failed), error, chunks done/total."""
    return _entry_public(_store(request).get_entry(datasource_uuid, entry_uuid))


@router.patch("/{datasource_uuid}/entries/{entry_uuid}", response_model=EntryPublic)
def update_entry_route(
    request: Request, datasource_uuid: str, entry_uuid: str, body: EntryUpdate, _: Writer, who: Who
) -> EntryPublic:
    """Set a URL entry's ``refresh`` schedule (none, daily, weekly): due one period after
    it was last fetched. 422 ``ENTRY_INVALID`` for a text or file entry."""
    audit = _audit_entry(who, "entry.updated", refresh=body.refresh)
    entry = update_entry(
        _store(request), datasource_uuid, entry_uuid, body.refresh, before_commit=audit
    )
    return _entry_public(entry)


@router.post("/{datasource_uuid}/entries/{entry_uuid}/retry", response_model=EntryPublic)
def retry_entry_route(
    request: Request, datasource_uuid: str, entry_uuid: str, _: Writer, who: Who
) -> EntryPublic:
    """Process a failed (or ready) entry again from the start: status back to ``pending``;
    409 ``ENTRY_BUSY`` while it is pending or processing."""
    audit = _audit_entry(who, "entry.retried")
    entry = _store(request).retry_entry(datasource_uuid, entry_uuid, before_commit=audit)
    _wake(request)
    return _entry_public(entry)


@router.delete("/{datasource_uuid}/entries/{entry_uuid}", status_code=status.HTTP_204_NO_CONTENT)
def delete_entry_route(
    request: Request, datasource_uuid: str, entry_uuid: str, _: Writer, who: Who
) -> None:
    """Delete an entry with its file and vectors."""
    audit = _audit_entry(who, "entry.deleted")
    _store(request).delete_entry(datasource_uuid, entry_uuid, before_commit=audit)


@router.post("/{datasource_uuid}/search", response_model=SearchResponse)
def search_datasource_route(
    request: Request, datasource_uuid: str, body: SearchRequest, _: Reader
) -> SearchResponse:
    """The ``top_k`` best chunks for ``query`` that pass ``where``, best first, by
    ``mode``: ``vector`` (embeddings), ``keyword`` (full-text) or ``hybrid`` (both, fused
    by reciprocal rank with ``keyword_weight``); empty: the datasource's ``search_mode``.
    What ``score`` means depends on the mode (see ``SearchHit``)."""
    store = _store(request)
    store.get(datasource_uuid)
    options = SearchOptions(body.mode, body.keyword_weight)
    hits = store.search([datasource_uuid], body.query, body.top_k, body.where, options)
    return SearchResponse(
        results=[SearchHit(id=h.id, text=h.text, score=h.score, metadata=h.metadata) for h in hits]
    )
