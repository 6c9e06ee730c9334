"""The ingestion queue: workers that turn pending entries into indexed chunks.

The queue is the ``datasource_entries`` table itself, run by the one lease queue
(``appforge.core.queue``): a worker claims the oldest entries that are
``pending``, or ``processing`` with an expired lease (their worker died). While
it works, the worker renews its lease (``LeaseQueue.renewing``: a fetch or an
extraction longer than ``lease_seconds`` keeps its claim); every write is guarded
by its claim token, so a worker that lost its claim stops instead of clobbering.

Processing is idempotent, and an entry's chunks are replaced whole: its new
chunks are embedded first, then written to the keyword index
(:mod:`datasources.keywords`, one transaction that refuses rows of an entry
deleted meanwhile, so no keyword row outlives its entry) and upserted under the
same ids (``<entry_uuid>:<n>``) in the vector index, the old ones past the new
count removed last. So an entry processed again (``reingest``: new chunk
settings, a changed page) stays searchable on its old chunks until its new ones
replace them; if that fails, it keeps the old ones and goes back to ``ready``
with the error. A first ingestion that fails keeps no chunks. Entries that find
the disk full go back to ``pending`` (attempt undone), and none is claimed for a while.

Each worker thread claims either one URL entry alone (its fetch may take up to
``fetch_timeout``) or a batch of text and file entries embedded together, so a
slow URL holds one worker and nothing queued behind it. A URL entry whose refresh
found it changed is not fetched again: its body, kept by the refresh
(:mod:`datasources.bodies`), is what gets embedded and hashed, and it is removed
once the entry is ready or failed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.exc import IntegrityError

from appforge.core.db import statement_timed_out, storage_full, unavailable, utcnow
from appforge.core.queue import Claimed, LeaseQueue, LeaseTable
from appforge.core.tracing import Tracing
from appforge.core.values import storable_text
from appforge.core.workers import Workers
from datasources import bodies
from datasources.chunking import Piece, split_within
from datasources.entries import chunk_metadata, next_refresh
from datasources.errors import (
    DATABASE_STAGE,
    DISK_FULL_STAGE,
    DatasourceError,
    VectorStoreUnavailableError,
)
from datasources.extract import Segment, extract_segments, markdown_sections
from datasources.fetch import fetch
from datasources.store import DatasourceStore
from datasources.tables import Datasource, Entry

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
DISK_RECHECK_SECONDS = 30.0
# An entry's embedded chunks, kept until all are there: (n, text, metadata, vector).
_Buffer = list[tuple[int, str, dict[str, Any], Any]]


class _LostClaim(Exception):
    """The entry was deleted, or taken over by another worker."""


class _Stopping(Exception):
    pass


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Pending entries, and entries whose worker stopped reporting (its process died)."""
    return or_(
        Entry.status == "pending",
        and_(Entry.status == "processing", Entry.lease_until < now),
    )


def _claimable_local(now: datetime) -> ColumnElement[bool]:
    """Claimable entries that need no fetching: they may share a worker's batch."""
    return and_(_claimable(now), Entry.kind != "url")


# The entries table as a lease queue: claimed oldest first, "processing" while claimed.
ENTRIES = LeaseTable(Entry, "uuid", _claimable, "created_at", "processing")
LOCAL_ENTRIES = LeaseTable(Entry, "uuid", _claimable_local, "created_at", "processing")


class IngestionQueue:
    """Claims and processes entries; ``start`` runs it in background threads."""

    def __init__(self, store: DatasourceStore, tracing: Tracing | None = None) -> None:
        self.store = store
        self.tracing = tracing  # one span per entry processed, when tracing is on
        self.settings = store.settings.datasources
        self.db = store.db
        self.queue = LeaseQueue(store.db, ENTRIES, self.settings.lease_seconds)
        # Entries it claims are written through ``queue``: one record of held claims.
        self.local_queue = LeaseQueue(
            store.db, LOCAL_ENTRIES, self.settings.lease_seconds, self.queue.held
        )
        self.disk_full_at = float("-inf")  # when indexing last found the disk full
        self.disk_recheck_seconds = DISK_RECHECK_SECONDS
        self.workers = Workers(
            "ingest", lambda _: bool(self.run_once()), self.settings.poll_seconds
        )

    def claim(self, limit: int = 1) -> list[Entry]:
        """Take up to ``limit`` of the oldest claimable entries for this worker."""
        return self.queue.claim(limit, chunks_done=0, error=None, stage=self._first_stage())

    def _first_stage(self) -> str:
        return "extracting" if self.store.embedder.state == "loaded" else "loading model"

    def _report(self, updates: dict[str, tuple[Entry, dict[str, Any]]]) -> set[str]:
        """Write each entry's values under our claim (extending the lease while it is
        processing), in one transaction; the uuids of entries whose claim we lost."""
        return self.queue.write(
            {key: Claimed(entry.claim_token, values) for key, (entry, values) in updates.items()}
        )

    # --- processing ----------------------------------------------------------

    def claim_work(self) -> list[Entry]:
        """The oldest claimable entry: a URL entry alone, else with up to a batch of other
        text and file entries (which need no fetching) to embed together."""
        entries = self.claim(1)
        batch = self.settings.embedding_batch
        if entries and entries[0].kind != "url" and batch > 1:
            entries += self.local_queue.claim(
                batch - 1, chunks_done=0, error=None, stage=self._first_stage()
            )
        return entries

    def run_once(self) -> list[str]:
        """Claim and process some entries (see :meth:`claim_work`); their uuids (empty:
        nothing to do)."""
        full = time.monotonic() - self.disk_full_at < self.disk_recheck_seconds
        if full or not self.store.index.available() or not self.queue.has_claimable():
            return []  # nothing to do, or the vector store is away or the disk full: wait
        entries = self.claim_work()
        if entries:
            with self.queue.renewing(entries):
                entries = self._await_model(entries)
                if self.tracing is not None and self.tracing.enabled:
                    self._traced(entries)
                else:
                    self.process(entries)
        return [e.uuid for e in entries]

    def _await_model(self, entries: list[Entry]) -> list[Entry]:
        """Wait for the embedding model (claimed entries show ``loading model``, their
        leases extended meanwhile); the entries still ours, now ``extracting``. If the
        model cannot load, they go back to ``pending`` and the error is raised."""
        embedder = self.store.embedder
        if embedder.state == "loaded":
            return entries
        embedder.preload()
        extend = {e.uuid: (e, {"stage": "loading model"}) for e in entries}
        # A third of the lease: a slow load never lets the claims run out.
        while not embedder.wait_loaded(self.settings.lease_seconds / 3):
            if embedder.state != "loading":  # the load failed
                release = {e.uuid: (e, {"status": "pending", "stage": None}) for e in entries}
                self._report(release)
                embedder.load()  # one more try, in this thread: its error is raised
                break
            lost = self._report(extend)
            extend = {k: v for k, v in extend.items() if k not in lost}
        kept = [e for e in entries if e.uuid in extend]
        lost = self._report({e.uuid: (e, {"stage": "extracting"}) for e in kept})
        return [e for e in kept if e.uuid not in lost]

    def _traced(self, entries: list[Entry]) -> None:
        """:meth:`process`, with a span per entry ending on its stored outcome."""
        assert self.tracing is not None
        spans = {
            e.uuid: self.tracing.start(
                f"ingest {e.kind}",
                attributes={
                    "appforge.entry_uuid": e.uuid,
                    "appforge.datasource_uuid": e.datasource_uuid,
                    "appforge.attempt": e.attempts,
                },
            )
            for e in entries
        }
        try:
            self.process(entries)
        finally:
            with self.db() as db:
                rows = db.execute(
                    select(Entry.uuid, Entry.status, Entry.chunks_total).where(
                        Entry.uuid.in_(list(spans))
                    )
                ).all()
            for entry_uuid, status, chunks in rows:
                spans[entry_uuid].set_attributes(
                    {"appforge.status": status, "appforge.chunks": chunks or 0}
                )
            for span in spans.values():
                span.end()

    def process(self, entries: list[Entry]) -> None:
        """Extract, chunk, embed and index claimed entries; bad input fails only its entry.

        Chunks of all the entries are embedded together, in batches, so many
        small entries cost about what their chunks cost to embed.
        """
        try:
            self._process(entries)
        finally:  # a body a refresh kept goes once its entry no longer waits for it
            for entry in (e for e in entries if e.kind == "url" and e.file_path):
                bodies.discard_unless_named(self.db, entry.uuid, self.store.file_path(entry))

    def _process(self, entries: list[Entry]) -> None:
        started = time.perf_counter()
        work: list[tuple[Entry, list[Piece], dict[str, Any]]] = []
        totals: dict[str, tuple[Entry, dict[str, Any]]] = {}
        ready: dict[str, dict[str, Any]] = {}  # what each entry's row gets once it is ready
        for entry in entries:
            try:
                chunks, meta, ready[entry.uuid] = self._prepare(entry)
            except _LostClaim:
                self._forget_if_deleted(entry)
                continue
            except Exception as exc:
                self._fail(entry, exc)
                continue
            work.append((entry, chunks, meta))
            stage = f"embedding 0/{len(chunks)}"
            totals[entry.uuid] = (
                entry,
                {"chunks_total": len(chunks), "chunks_done": 0, "stage": stage},
            )
        lost = self._report(totals)
        work = [w for w in work if w[0].uuid not in lost]
        for entry in entries:
            if entry.uuid in lost:
                self._forget_if_deleted(entry)
        try:
            self._index(work, lost, ready)
        except Exception as exc:
            unfinished = [e for e, _, _ in work if e.uuid not in lost]
            if not self._give_back(unfinished, exc):  # Chroma or the model broke: they fail
                for entry in unfinished:
                    self._fail(entry, exc)
            return
        pieces, ms = sum(len(c) for _, c, _ in work), (time.perf_counter() - started) * 1000
        log.info("ingested %d entries (%d chunks) in %.0f ms", len(work), pieces, ms)

    def _give_back(self, entries: list[Entry], exc: Exception) -> bool:
        """Give the entries back, their attempt undone, if ``exc`` is no fault of theirs: a
        stop, the vector store away, the disk full (:meth:`run_once` waits for either), or
        the database away or a lock held elsewhere past its timeout (giving back needs it
        answering again: else the entries wait for their leases to end)."""
        stage: str | None = None  # a stop
        if storage_full(exc):
            log.warning("the disk is full: %d entries wait for space (%s)", len(entries), exc)
            self.disk_full_at, stage = time.monotonic(), DISK_FULL_STAGE
        elif isinstance(exc, VectorStoreUnavailableError):
            stage = exc.stage
        elif (reason := unavailable(exc)) is not None and not statement_timed_out(exc):
            # Not a statement past its timeout: the entry's own writes may be why, and a
            # give-back undoes the attempt, so it would be tried for ever.
            log.warning("%d entries wait for the database: %s", len(entries), reason)
            stage = DATABASE_STAGE
        elif not isinstance(exc, _Stopping):
            return False
        back = {"status": "pending", "chunks_done": 0, "stage": stage}
        self._report({e.uuid: (e, {**back, "attempts": Entry.attempts - 1}) for e in entries})
        return True

    def _prepare(self, entry: Entry) -> tuple[list[Piece], dict[str, Any], dict[str, Any]]:
        """The entry's chunks, the metadata they all carry, and its row's values once
        ready."""
        if entry.attempts > MAX_ATTEMPTS:
            raise DatasourceError(
                f"gave up after {MAX_ATTEMPTS} attempts (the worker died each time)",
                code="INGEST_FAILED",
            )
        with self.db() as db:
            source_row = db.get(Datasource, entry.datasource_uuid)
        if source_row is None:
            raise _LostClaim
        defaults = self.settings
        size = source_row.chunk_size or defaults.chunk_size
        overlap = source_row.chunk_overlap
        overlap = defaults.chunk_overlap if overlap is None else overlap
        segments, source, body_hash = self._segments(entry)
        chunks = split_within(segments, size, overlap, self.settings.max_chunks_per_entry)
        ready: dict[str, Any] = {"reingest": False}
        if entry.kind == "url":
            now = utcnow()
            ready.update(
                body_hash=body_hash,  # of the body embedded (a refresh may have kept it)
                last_refreshed_at=now,
                next_refresh_at=next_refresh(entry.refresh, now),
                file_path=None,
            )
        return chunks, chunk_metadata(entry, source), ready

    def _index(
        self,
        work: list[tuple[Entry, list[Piece], dict[str, Any]]],
        lost: set[str],
        ready: dict[str, dict[str, Any]],
    ) -> None:
        """Embed all chunks of ``work`` in batches, reporting progress; each entry's
        chunks replace its old ones once all of them are embedded."""
        pending = [
            (entry, n, piece.text, {**meta, **piece.metadata})
            for entry, pieces, meta in work
            for n, piece in enumerate(pieces)
        ]
        remaining = {entry.uuid: len(chunks) for entry, chunks, _ in work}
        done: dict[str, int] = dict.fromkeys(remaining, 0)
        buffers: dict[str, _Buffer] = {entry.uuid: [] for entry, _, _ in work}
        empty = [e for e, c, _ in work if not c and e.uuid not in lost]
        lost |= self._replace(empty, buffers)  # no chunks now: the old ones go
        finished: dict[str, tuple[Entry, dict[str, Any]]] = {
            e.uuid: (e, {"status": "ready", "stage": None, **ready[e.uuid]})
            for e in empty
            if e.uuid not in lost
        }
        step = self.settings.embedding_batch * 4
        for start in range(0, len(pending), step):
            if self.workers.stopping.is_set():
                raise _Stopping
            batch = [b for b in pending[start : start + step] if b[0].uuid not in lost]
            if not batch:
                continue
            vectors = self.store.embedder.encode([b[2] for b in batch])
            lost |= self._report_indexing(batch, done, remaining)
            for (entry, n, text, meta), vector in zip(batch, vectors, strict=True):
                buffers[entry.uuid].append((n, text, meta, vector))
                done[entry.uuid] += 1
            complete = {
                b[0].uuid: b[0]
                for b in batch
                if done[b[0].uuid] == remaining[b[0].uuid] and b[0].uuid not in lost
            }
            lost |= self._replace(list(complete.values()), buffers)
            progress = self._progress(work, set(complete), done, remaining, lost, ready)
            progress.update(finished)
            finished = {}
            newly_lost = self._report(progress)
            for entry_uuid in newly_lost:
                self._forget_if_deleted(progress[entry_uuid][0])
            lost |= newly_lost
        if finished:
            lost |= self._report(finished)

    def _replace(self, entries: list[Entry], buffers: dict[str, _Buffer]) -> set[str]:
        """Each entry's chunks become its buffered ones: keyword rows in one transaction,
        then the vectors, under a note that they are written (``note_writing``); the
        uuids of entries deleted meanwhile (nothing kept of them)."""
        gone: set[str] = set()
        for entry in entries:
            rows = buffers.pop(entry.uuid, [])
            note = self.store.note_writing(entry) if rows else None
            if rows and note is None:
                gone.add(entry.uuid)
                self._forget_if_deleted(entry)
                continue
            ids = [f"{entry.uuid}:{n}" for n, _, _, _ in rows]
            keyword_rows = [
                {
                    "chunk_id": chunk_id,
                    "datasource_uuid": entry.datasource_uuid,
                    "entry_uuid": entry.uuid,
                    "text": text,
                    "chunk_metadata": dict(meta),
                }
                for chunk_id, (_, text, meta, _) in zip(ids, rows, strict=True)
            ]
            try:
                self.store.keywords.replace_entry(entry.uuid, keyword_rows)
            except IntegrityError:
                gone.add(entry.uuid)
                self._forget_if_deleted(entry)
                continue
            vectors = np.stack([r[3] for r in rows]) if rows else np.zeros((0, 1))
            texts = [r[1] for r in rows]
            metas = [dict(r[2]) for r in rows]
            self.store.index.replace_entry(
                entry.datasource_uuid, entry.uuid, ids, vectors, texts, metas
            )
            if note is not None:
                self.store.writing_done(note, entry.uuid)
        return gone

    @staticmethod
    def _progress(
        work: list[tuple[Entry, list[Piece], dict[str, Any]]],
        in_batch: set[str],
        done: dict[str, int],
        remaining: dict[str, int],
        lost: set[str],
        ready: dict[str, dict[str, Any]],
    ) -> dict[str, tuple[Entry, dict[str, Any]]]:
        """What to write after a batch: the entries it finished are ready; the others
        still ours (waiting for their turn in this claim too) say how far they are, and
        their leases are extended."""
        progress: dict[str, tuple[Entry, dict[str, Any]]] = {}
        for entry, _, _ in work:
            n, total = done[entry.uuid], remaining[entry.uuid]
            if entry.uuid in lost:
                continue
            if n == total and entry.uuid in in_batch:
                values = {"status": "ready", "chunks_done": n, "stage": None, **ready[entry.uuid]}
                progress[entry.uuid] = (entry, values)
            elif n < total:
                stage = f"embedding {n}/{total}"
                progress[entry.uuid] = (entry, {"chunks_done": n, "stage": stage})
        return progress

    def _report_indexing(
        self,
        batch: list[tuple[Entry, int, str, dict[str, Any]]],
        done: dict[str, int],
        remaining: dict[str, int],
    ) -> set[str]:
        """Entries whose last chunks were just embedded show ``indexing`` (one write, and
        only in a batch that finishes some entry); the uuids of entries we lost."""
        embedded = dict(done)
        for entry, _, _, _ in batch:
            embedded[entry.uuid] += 1
        finishing = {
            entry.uuid: (entry, {"stage": "indexing"})
            for entry, _, _, _ in batch
            if embedded[entry.uuid] == remaining[entry.uuid]
        }
        if not finishing:
            return set()
        lost = self._report(finishing)
        for entry_uuid in lost:
            self._forget_if_deleted(finishing[entry_uuid][0])
        return lost

    def _fail(self, entry: Entry, exc: Exception) -> None:
        if not isinstance(exc, DatasourceError):  # a bug or a broken dependency: keep going
            log.exception("entry %s failed", entry.uuid, exc_info=exc)
        said = str(exc) if isinstance(exc, DatasourceError) else f"INGEST_FAILED: {exc!r}"
        error = storable_text(said)[:2000]  # a parser's message may quote the document
        log.info("entry %s failed: %s", entry.uuid, error)
        body: dict[str, Any] = {"file_path": None} if entry.kind == "url" else {}  # kept one
        if entry.reingest:  # it keeps the chunks it had, searchable, and says what failed
            kept = entry.chunks_total or 0
            values: dict[str, Any] = {"status": "ready", "error": error, "stage": None}
            values.update(reingest=False, chunks_total=kept, chunks_done=kept, **body)
            values.update(next_refresh_at=next_refresh(entry.refresh, utcnow()))
            if self._report({entry.uuid: (entry, values)}):
                self._forget_if_deleted(entry)
            return
        failed = {"status": "failed", "error": error, "stage": None, **body}
        if self._report({entry.uuid: (entry, failed)}):
            self._forget_if_deleted(entry)
            return
        try:  # a failed entry keeps no chunks (an earlier attempt's, or a partial batch)
            self.store.keywords.delete_entry(entry.uuid)
            self.store.index.delete_entry(entry.datasource_uuid, entry.uuid)
        except Exception:
            log.exception("could not remove the vectors of failed entry %s", entry.uuid)

    def _segments(self, entry: Entry) -> tuple[list[Segment], str, str | None]:
        """The entry's text in segments (pages, sections), its ``source`` (the URL, else
        the entry's name) and, for a URL, the hash of the body fetched. Text content is
        read as Markdown (its headings make sections)."""
        if entry.kind == "text":
            return markdown_sections(entry.content or ""), entry.name, None
        if entry.kind == "url":
            assert entry.url is not None
            kept = self.store.file_path(entry) if entry.file_path else None
            limit = self.settings.max_entry_bytes
            fetched = (kept and bodies.read(kept, limit)) or fetch(entry.url, self.settings)
            body, url, media = fetched.body, fetched.url, fetched.media_type
            segments = extract_segments(body, url, media, self.settings)
            return segments, entry.url, hashlib.sha256(body).hexdigest()
        data = self.store.file_path(entry).read_bytes()
        segments = extract_segments(data, entry.name, entry.media_type, self.settings)
        return segments, entry.name, None

    def _forget_if_deleted(self, entry: Entry) -> None:
        """Our entry vanished while we worked: remove what we wrote for it. With the
        vector store away, that is noted for the refresh job's sweep, as a deletion's
        own vectors would be (:meth:`DatasourceStore.sweep_deletions`)."""
        with self.db() as db:
            still_there = db.get(Entry, entry.uuid) is not None
            source_there = db.get(Datasource, entry.datasource_uuid) is not None
        if source_there and still_there:
            return
        gone = None if not source_there else entry.uuid  # None: the whole datasource
        try:
            self.store.remove_vectors(entry.datasource_uuid, gone)
        except VectorStoreUnavailableError:
            self.store.note_deletion(entry.datasource_uuid, gone)
            raise

    # --- threads -------------------------------------------------------------

    def wake(self) -> None:
        """Look for work now (an entry was just added)."""
        self.workers.wake()

    def start(self, workers: int) -> None:
        """Start ``workers`` threads. With any, and any datasource in the database, the
        embedding model starts loading now, in the background (readiness says when it
        is loaded), not when the first entry comes; a process that has never had a
        datasource (model servers only, say) never imports torch."""
        if workers > 0:
            with self.db() as db:
                used = db.execute(select(Datasource.uuid).limit(1)).first() is not None
            if used:
                self.store.embedder.preload()
        self.workers.start(workers)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads; an entry being processed goes back to ``pending`` (any entry
        still claimed after ``timeout``, too: another worker takes it at once)."""
        self.workers.stop(timeout)
        self.queue.release_all()  # local_queue's claims too: they share one record
