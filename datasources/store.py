"""Datasources and entries: create, list, delete, add entries, search.

Adding an entry only stores it (the row, and a file's bytes under
``APPFORGE_HOME/files/<datasource>/<entry>``) with status ``pending``; the
ingestion queue (:mod:`datasources.queue`) does the slow work. Every method is
blocking: the API calls them from its thread pool.

Each method that changes something opens its own transaction; its
``before_commit`` callback, if given, receives that session and the changed row
before the commit, so a caller above (the API's audit log) can add rows that
commit or roll back with the change.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from sqlalchemy import and_, case, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appforge.core.db import failure_reason, transaction, utcnow
from appforge.core.modes import private_dir, write_private
from appforge.core.settings import Settings
from datasources import filters
from datasources.embedding import Embedder
from datasources.entries import ACCEPTS, NewEntry, check_metadata, check_refresh
from datasources.errors import (
    DatasourceError,
    DatasourceExistsError,
    DatasourceNotFoundError,
    DuplicateEntryError,
    EntryBusyError,
    EntryInvalidError,
    EntryNotFoundError,
    EntryTooLargeError,
    VectorStoreUnavailableError,
)
from datasources.fetch import Allowlist, check_url
from datasources.index import Hit, VectorIndex, make_client, server_address
from datasources.keywords import KeywordIndex
from datasources.search import (
    Mode,
    SearchOptions,
    fuse,
    merge,
    pick_mode,
)
from datasources.tables import Datasource, Entry, VectorDeletion

TYPES = ("text", "url", "file", "mixed")
log = logging.getLogger(__name__)
_Row = TypeVar("_Row")
# Called with a change's open session and its row, just before the change commits.
BeforeCommit = Callable[[Session, _Row], None]


def _deletion(db: Session, datasource_uuid: str, entry_uuid: str | None) -> VectorDeletion:
    """Note, in the transaction deleting its row, that an entry's or a datasource's
    vectors are to be removed."""
    deletion = VectorDeletion(
        id=str(uuid.uuid4()), datasource_uuid=datasource_uuid, entry_uuid=entry_uuid
    )
    db.add(deletion)
    return deletion


def _before_commit(hook: BeforeCommit[_Row] | None, db: Session, row: _Row) -> None:
    if hook is not None:
        hook(db, row)


# Pieces a file entry is copied in, from an upload to the home's files.
COPY_BYTES = 1024 * 1024
# A vector search short of live hits (vectors of deleted entries not removed yet among
# the nearest) asks the index again for 4 times as many, at most this many times, and
# for at most this many hits per datasource (or its depth, if larger).
MAX_VECTOR_REFILLS = 2
MAX_VECTOR_REFILL_HITS = 1000


def _forget(path: Path | None) -> None:
    """Remove the file of an entry that was not stored after all."""
    if path is not None:
        path.unlink(missing_ok=True)


class DatasourceStore:
    """Datasources and entries in the database, files on disk, chunks in the index."""

    def __init__(
        self,
        settings: Settings,
        db: sessionmaker[Session],
        index: VectorIndex,
        embedder: Embedder,
    ) -> None:
        self.settings = settings
        self.db = db
        self.index = index
        self.embedder = embedder
        self.keywords = KeywordIndex(db)
        self.files = settings.home / "files"

    @classmethod
    def open(
        cls, settings: Settings, db: sessionmaker[Session], embedder: Embedder | None = None
    ) -> DatasourceStore:
        """The store on the configured Chroma (server, else files in the home); blocking."""
        if embedder is None:
            embedder = Embedder(
                settings.datasources.embedding_model,
                batch_size=settings.datasources.embedding_batch,
            )
        path, url = settings.home / "chroma", settings.chroma_url
        if url:  # connected on first use: the server may come up after this process
            timeout = settings.chroma_timeout_seconds
            connect = partial(make_client, url, path, timeout)
            index = VectorIndex(where=server_address(url), connect=connect)
        else:
            index = VectorIndex(make_client(None, path), files=path)
        return cls(settings, db, index, embedder)

    def close(self) -> None:
        """Close the vector index (files, threads, connections); the store is unusable after."""
        self.index.close()

    # --- datasources -------------------------------------------------------

    def create(
        self,
        name: str,
        type: str,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        *,
        search_mode: Mode = "hybrid",
        before_commit: BeforeCommit[Datasource] | None = None,
    ) -> Datasource:
        """Store a new datasource; 409 if the name is taken."""
        now = utcnow()
        row = Datasource(
            uuid=str(uuid.uuid4()),
            name=name,
            type=type,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            search_mode=search_mode,
            created_at=now,
            updated_at=now,
        )
        try:
            with transaction(self.db) as db:
                db.add(row)
                _before_commit(before_commit, db, row)
        except IntegrityError as exc:
            raise DatasourceExistsError(
                f"a datasource named {name!r} exists", details={"name": name}
            ) from exc
        return row

    def all(self) -> list[Datasource]:
        with self.db() as db:
            return list(db.scalars(select(Datasource).order_by(Datasource.created_at)))

    def get(self, datasource_uuid: str) -> Datasource:
        with self.db() as db:
            row = db.get(Datasource, datasource_uuid)
        if row is None:
            raise DatasourceNotFoundError(f"no datasource '{datasource_uuid}'")
        return row

    def resolve(self, name_or_uuid: str) -> Datasource | None:
        """The datasource with this uuid or name."""
        with self.db() as db:
            return db.scalar(
                select(Datasource).where(
                    or_(Datasource.uuid == name_or_uuid, Datasource.name == name_or_uuid)
                )
            )

    def delete(
        self, datasource_uuid: str, *, before_commit: BeforeCommit[Datasource] | None = None
    ) -> None:
        """Delete a datasource with its entries, their files, vectors and keyword rows
        (``VECTOR_STORE_UNAVAILABLE``, nothing deleted, when the vectors could not be)."""
        self.index.heartbeat()
        with transaction(self.db) as db:
            row = db.get(Datasource, datasource_uuid)
            if row is None:
                raise DatasourceNotFoundError(f"no datasource '{datasource_uuid}'")
            db.delete(row)
            deletion = _deletion(db, datasource_uuid, None)
            _before_commit(before_commit, db, row)
        self._vectors_gone(deletion)
        shutil.rmtree(self.files / datasource_uuid, ignore_errors=True)

    def _vectors_gone(self, deletion: VectorDeletion) -> bool:
        """Remove the vectors of what was just deleted, then the note that they are to
        be removed; whether they were. The store answered a moment ago; if it has just
        gone away, the note stays, and :meth:`sweep_deletions` removes them later."""
        what = deletion.entry_uuid or deletion.datasource_uuid
        try:
            self.remove_vectors(deletion.datasource_uuid, deletion.entry_uuid)
        except VectorStoreUnavailableError:
            log.warning("the vector store went away: the vectors of deleted %s go later", what)
            return False
        try:
            with transaction(self.db) as db:
                db.execute(delete(VectorDeletion).where(VectorDeletion.id == deletion.id))
        except Exception as exc:  # the vectors are gone; a sweep removes them again
            reason = failure_reason(exc)
            if reason is None:
                raise
            log.warning("the note of deleted %s stays (%s): removed again later", what, reason)
        return True

    def remove_vectors(self, datasource_uuid: str, entry_uuid: str | None) -> None:
        """Remove an entry's vectors, or a whole datasource's (``entry_uuid`` None)."""
        if entry_uuid is None:
            self.index.drop(datasource_uuid)
        else:
            self.index.delete_entry(datasource_uuid, entry_uuid)

    def note_deletion(self, datasource_uuid: str, entry_uuid: str | None) -> None:
        """Note that vectors of a deleted entry (or datasource: None) are still to be
        removed, when removing them failed after the row went (a worker's own writes)."""
        with transaction(self.db) as db:
            _deletion(db, datasource_uuid, entry_uuid)

    def note_writing(self, entry: Entry) -> str | None:
        """Note, before a worker writes an entry's vectors, that they are to be removed if
        the entry's row goes: a worker killed after its writes landed, for an entry deleted
        while it wrote (the deletion's own removal came first), left them for good. The
        note goes once the vectors are written (:meth:`writing_done`); a killed worker's
        stays, and :meth:`sweep_deletions` acts on it once the row is gone. Its id, or
        None if the entry is gone already. Older notes of the entry are a killed
        worker's too (a deletion's notes name rows that are gone): this one replaces
        them."""
        with transaction(self.db) as db:
            if db.get(Entry, entry.uuid) is None:
                return None
            db.execute(delete(VectorDeletion).where(VectorDeletion.entry_uuid == entry.uuid))
            return _deletion(db, entry.datasource_uuid, entry.uuid).id

    def writing_done(self, note: str, entry_uuid: str) -> None:
        """The vectors :meth:`note_writing` announced are written: drop its note, unless
        the entry was deleted meanwhile (then its vectors are to go: the worker removes
        them, or a sweep does)."""
        live = exists().where(Entry.uuid == entry_uuid)
        with transaction(self.db) as db:
            db.execute(delete(VectorDeletion).where(VectorDeletion.id == note, live))

    def sweep_deletions(self, batch: int = 100) -> int:
        """Remove the vectors of deleted entries and datasources that the vector store
        missed when they were deleted, or that a worker killed meanwhile left (oldest
        first, up to ``batch``); how many were removed. Notes of entries still stored
        are a worker's at work (or a killed one's, replaced at the entry's next write):
        left alone. Any number of processes may sweep at once: removing twice is
        harmless."""
        gone = or_(
            and_(
                VectorDeletion.entry_uuid.is_(None),
                ~exists().where(Datasource.uuid == VectorDeletion.datasource_uuid),
            ),
            and_(
                VectorDeletion.entry_uuid.is_not(None),
                ~exists().where(Entry.uuid == VectorDeletion.entry_uuid),
            ),
        )
        with self.db() as db:
            pending = db.scalars(
                select(VectorDeletion).where(gone).order_by(VectorDeletion.created_at).limit(batch)
            ).all()
        done = 0
        for deletion in pending:
            if not self._vectors_gone(deletion):
                break  # the store is away: the next round tries again
            done += 1
        if done:
            log.info("removed the vectors of %d deletions the vector store had missed", done)
        return done

    def stats(self, datasource_uuid: str) -> dict[str, int]:
        """Entries per status."""
        with self.db() as db:
            rows = db.execute(
                select(Entry.status, func.count())
                .where(Entry.datasource_uuid == datasource_uuid)
                .group_by(Entry.status)
            )
            return {status: int(n) for status, n in rows}

    def _live_vector_hits(
        self,
        datasource_uuids: Sequence[str],
        embedding: Any,
        depth: int,
        where: dict[str, Any] | None,
    ) -> list[Hit]:
        """The ``depth`` nearest chunks of entries still stored. Vectors of deleted
        entries not removed yet (:meth:`_of_live_entries`) would take places among the
        nearest and leave a search short of ``depth``: while the nearest hold such, the
        index is asked for more (see :data:`MAX_VECTOR_REFILLS`), until ``depth`` live
        chunks are found or the index has no more."""
        asked, most = depth, max(depth, MAX_VECTOR_REFILL_HITS)
        for _ in range(MAX_VECTOR_REFILLS + 1):
            lists = [self.index.query(u, embedding, asked, where) for u in datasource_uuids]
            found = merge(lists, asked)
            live = self._of_live_entries(found)
            if len(live) >= depth or len(found) < asked or asked >= most:
                break
            gone = len(found) - len(live)
            log.info(
                "%d of the %d nearest chunks are of deleted entries: asking for more", gone, asked
            )
            asked = min(asked * 4, most)
        return live[:depth]

    def _of_live_entries(self, hits: list[Hit]) -> list[Hit]:
        """The hits whose entry is still stored: the vectors of a deleted entry that the
        vector store missed removing (:meth:`sweep_deletions` removes them later), or
        that a worker killed while indexing it left, never answer a search."""
        named = {str(hit.metadata.get("entry_uuid")) for hit in hits}
        if not named:
            return hits
        with self.db() as db:
            live = set(db.scalars(select(Entry.uuid).where(Entry.uuid.in_(named))))
        return [hit for hit in hits if hit.metadata.get("entry_uuid") in live]

    # --- entries -----------------------------------------------------------

    def add_entry(
        self,
        datasource_uuid: str,
        new: NewEntry,
        *,
        before_commit: BeforeCommit[Entry] | None = None,
    ) -> Entry:
        """Store an entry as ``pending``; 409 if the same content is already there."""
        source = self.get(datasource_uuid)
        kind = new.kind
        if kind not in ACCEPTS[source.type]:
            raise EntryInvalidError(
                f"a {source.type} datasource does not take {kind} entries "
                f"(it takes: {', '.join(sorted(ACCEPTS[source.type]))})",
                details={"datasource_type": source.type, "entry_type": kind},
            )
        metadata = check_metadata(new.metadata)
        check_refresh(kind, new.refresh)
        entry_uuid = str(uuid.uuid4())
        path, data, size, digest = self._content(source, kind, new, entry_uuid)
        try:
            self._refuse_duplicate(datasource_uuid, digest)
        except DuplicateEntryError:
            _forget(path)
            raise
        now = utcnow()
        entry = Entry(
            uuid=entry_uuid,
            datasource_uuid=datasource_uuid,
            name=new.name,
            kind=kind,
            content=new.content if kind == "text" else None,
            url=data.decode() if kind == "url" else None,
            file_path=str(path.relative_to(self.settings.home)) if path is not None else None,
            media_type=new.media_type,
            size_bytes=size,
            content_hash=digest,
            entry_metadata=metadata,
            refresh=new.refresh,
            status="pending",
            chunks_done=0,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        try:
            with transaction(self.db) as db:
                db.add(entry)
                _before_commit(before_commit, db, entry)
        except IntegrityError as exc:
            _forget(path)
            self._refuse_duplicate(datasource_uuid, digest)
            self.get(datasource_uuid)  # deleted meanwhile: 404
            raise DatasourceError(f"could not store the entry: {exc.orig}") from exc
        except BaseException:
            _forget(path)  # e.g. the audit hook failed: no file without its row
            raise
        return entry

    def _content(
        self, source: Datasource, kind: str, new: NewEntry, entry_uuid: str
    ) -> tuple[Path | None, bytes, int, str]:
        """A new entry's file (copied to the home) or bytes, its size and its hash."""
        if kind == "file":
            path = self.entry_file(source.uuid, entry_uuid)
            size, digest = self._store_file(path, new.file or b"")
            return path, b"", size, digest
        data = self._entry_bytes(kind, new)
        if kind == "text":
            self._check_text(source, new.content or "")
        return None, data, len(data), hashlib.sha256(kind.encode() + b"\0" + data).hexdigest()

    def _store_file(self, path: Path, file: bytes | BinaryIO) -> tuple[int, str]:
        """Copy a file entry to ``path`` (0600: uploads may be confidential) in pieces,
        hashing as it goes; (its size, its content hash). Over
        ``max_file_bytes`` or empty: refused, and nothing is left on disk."""
        source = io.BytesIO(file) if isinstance(file, bytes) else file
        limit = self.settings.datasources.max_file_bytes
        digest = hashlib.sha256(b"file\0")
        size = 0

        def pieces() -> Iterator[bytes]:
            nonlocal size
            while piece := source.read(COPY_BYTES):
                size += len(piece)
                if size > limit:
                    raise EntryTooLargeError(
                        f"the file is over the limit of {limit} bytes "
                        "(APPFORGE_DATASOURCES__MAX_FILE_BYTES)",
                        details={"limit": limit},
                    )
                digest.update(piece)
                yield piece

        private_dir(path.parent)
        write_private(path, pieces())
        if size == 0:
            path.unlink(missing_ok=True)
            raise EntryInvalidError("file is empty")
        return size, digest.hexdigest()

    def _entry_bytes(self, kind: str, new: NewEntry) -> bytes:
        """What a text or URL entry stores and hashes: the text or the checked URL."""
        if kind == "url":
            url = (new.url or "").strip()
            settings = self.settings.datasources
            deadline = time.monotonic() + settings.fetch_timeout  # a hanging DNS server
            check_url(url, Allowlist(settings.url_allowlist), deadline=deadline)
            return url.encode("utf-8")
        data = (new.content or "").encode("utf-8")
        if not data.strip():
            raise EntryInvalidError("content is empty")
        limit = self.settings.datasources.max_entry_bytes
        if len(data) > limit:
            raise EntryTooLargeError(
                f"the entry is {len(data)} bytes; the limit is {limit}",
                details={"size": len(data), "limit": limit},
            )
        return data

    def _check_text(self, source: Datasource, text: str) -> None:
        """A text entry over the text or chunk limit is refused now (413), not failed later."""
        limits = self.settings.datasources
        size = source.chunk_size or limits.chunk_size
        most = min(limits.max_text_chars, limits.max_chunks_per_entry * size)
        if len(text) > most:
            raise EntryTooLargeError(
                f"the text has {len(text)} characters; at most {most} fit the limits "
                "(APPFORGE_DATASOURCES__MAX_TEXT_CHARS, __MAX_CHUNKS_PER_ENTRY x chunk_size)",
                details={"size": len(text), "limit": most},
            )

    def _refuse_duplicate(self, datasource_uuid: str, digest: str) -> None:
        with self.db() as db:
            existing = db.scalar(
                select(Entry).where(
                    Entry.datasource_uuid == datasource_uuid, Entry.content_hash == digest
                )
            )
        if existing is not None:
            raise DuplicateEntryError(
                f"the same content is already entry '{existing.uuid}' ({existing.name!r})",
                details={"entry_uuid": existing.uuid, "name": existing.name},
            )

    def list_entries(self, datasource_uuid: str) -> list[Entry]:
        self.get(datasource_uuid)
        with self.db() as db:
            return list(
                db.scalars(
                    select(Entry)
                    .where(Entry.datasource_uuid == datasource_uuid)
                    .order_by(Entry.created_at)
                )
            )

    def get_entry(self, datasource_uuid: str, entry_uuid: str) -> Entry:
        self.get(datasource_uuid)
        with self.db() as db:
            row = db.get(Entry, entry_uuid)
        if row is None or row.datasource_uuid != datasource_uuid:
            raise EntryNotFoundError(f"datasource '{datasource_uuid}' has no entry '{entry_uuid}'")
        return row

    def delete_entry(
        self,
        datasource_uuid: str,
        entry_uuid: str,
        *,
        before_commit: BeforeCommit[Entry] | None = None,
    ) -> None:
        """Delete an entry, its file (or kept body), vectors and keyword rows (a worker busy
        with it stops); ``VECTOR_STORE_UNAVAILABLE``, nothing deleted, when the vectors
        could not be."""
        entry = self.get_entry(datasource_uuid, entry_uuid)
        self.index.heartbeat()
        with transaction(self.db) as db:
            row = db.get(Entry, entry_uuid)
            if row is None:
                return  # deleted meanwhile, by a call that removes its vectors
            db.delete(row)
            deletion = _deletion(db, datasource_uuid, entry_uuid)
            _before_commit(before_commit, db, row)
        self._vectors_gone(deletion)
        # By its place, not the row read before: a refresh may have stored a URL entry's
        # body there since (see datasources.bodies); a refresh that stores one after the
        # row went loses its claim and removes it itself.
        self.entry_file(datasource_uuid, entry.uuid).unlink(missing_ok=True)

    def retry_entry(
        self,
        datasource_uuid: str,
        entry_uuid: str,
        *,
        before_commit: BeforeCommit[Entry] | None = None,
    ) -> Entry:
        """Queue a failed (or ready) entry to be processed again from the start; a ready
        one stays searchable on its chunks until the new ones replace them."""
        self.get_entry(datasource_uuid, entry_uuid)
        with transaction(self.db) as db:
            changed = db.execute(
                update(Entry)
                .where(Entry.uuid == entry_uuid, Entry.status.in_(("failed", "ready")))
                .values(
                    reingest=Entry.status == "ready",
                    status="pending",
                    error=None,
                    attempts=0,
                    chunks_done=0,
                    chunks_total=case((Entry.status == "ready", Entry.chunks_total)),
                    stage=None,
                    claim_token=None,
                    lease_until=None,
                    updated_at=utcnow(),
                )
            )
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                raise EntryBusyError(f"entry '{entry_uuid}' is already waiting or being processed")
            # Read in the same transaction: read after it, the entry may already be a
            # worker's (``processing``), and the answer would not be what this call did.
            entry = db.get_one(Entry, entry_uuid)
            if before_commit is not None:
                before_commit(db, entry)
        return entry

    def entry_file(self, datasource_uuid: str, entry_uuid: str) -> Path:
        """Where an entry's bytes are kept: a file entry's upload, or a URL entry's body
        fetched by a refresh until it is ingested (:mod:`datasources.bodies`)."""
        return self.files / datasource_uuid / entry_uuid

    def file_path(self, entry: Entry) -> Path:
        if not entry.file_path:
            raise EntryInvalidError(f"entry '{entry.uuid}' has no file")
        return self.settings.home / entry.file_path

    # --- search ------------------------------------------------------------

    def search(
        self,
        datasource_uuids: Sequence[str],
        query: str,
        top_k: int,
        where: dict[str, Any] | None = None,
        options: SearchOptions | None = None,
    ) -> list[Hit]:
        """The ``top_k`` best chunks for ``query`` over these datasources that pass
        ``where``, best first, by the options' mode (see :mod:`datasources.search`)."""
        options = options or SearchOptions()
        limits = self.settings.datasources
        chroma_where = filters.translate(
            where,
            filters.FilterLimits(
                clauses=limits.max_filter_clauses,
                values=limits.max_filter_values,
                depth=limits.max_filter_depth,
                bytes=limits.max_filter_bytes,
            ),
        )
        with self.db() as db:
            rows = db.scalars(select(Datasource).where(Datasource.uuid.in_(datasource_uuids)))
            defaults = [row.search_mode for row in rows]
        mode = pick_mode(options.mode, defaults)
        depth = top_k if mode != "hybrid" else max(top_k, limits.fusion_depth)
        vector: list[Hit] = []
        keyword: list[Hit] = []
        if mode != "keyword":
            embedding = self.embedder.encode([query])[0]
            vector = self._live_vector_hits(datasource_uuids, embedding, depth, chroma_where)
        if mode != "vector":
            candidates = limits.keyword_candidates
            lists = [
                self.keywords.search(u, query, depth, chroma_where, candidates)
                for u in datasource_uuids
            ]
            keyword = merge(lists, depth)
        if mode == "hybrid":
            return fuse(vector, keyword, options.keyword_weight, top_k)
        return (vector or keyword)[:top_k]
