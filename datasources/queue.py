"""The ingestion queue: workers that turn pending entries into indexed chunks.

The queue is the ``datasource_entries`` table itself, run by the one lease queue
(``appforge.core.queue``): a worker claims the oldest entries that are
``pending``, or ``processing`` with an expired lease (their worker died). While
it works, the worker extends its lease with each batch; every write is guarded
by its claim token, so a worker that lost its claim stops instead of clobbering.

Processing is idempotent: the entry's old vectors are deleted before the new
ones are written under the same ids (``<entry_uuid>:<n>``); an entry that fails
keeps no vectors. Each batch's chunks also go to the keyword index
(:mod:`datasources.keywords`), which refuses rows of an entry deleted meanwhile,
so no keyword row outlives its entry.

Each worker thread claims either one URL entry alone (its fetch may take up to
``fetch_timeout``) or a batch of text and file entries embedded together, so a
slow URL holds one worker and nothing queued behind it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from appforge.core.queue import Claimed, LeaseQueue, LeaseTable, Workers
from appforge.core.tracing import Tracing
from datasources.chunking import Piece, split_segments
from datasources.entries import chunk_metadata
from datasources.errors import DatasourceError, EntryTooLargeError
from datasources.extract import Segment, extract_segments, markdown_sections
from datasources.fetch import fetch
from datasources.store import DatasourceStore
from datasources.tables import Datasource, Entry

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


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
        if not self.queue.has_claimable():
            return []
        entries = self.claim_work()
        if entries:
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
        started = time.perf_counter()
        work: list[tuple[Entry, list[Piece], dict[str, Any]]] = []
        totals: dict[str, tuple[Entry, dict[str, Any]]] = {}
        for entry in entries:
            try:
                chunks, meta = self._prepare(entry)
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
            self._index(work, lost)
        except _Stopping:
            release = {
                e.uuid: (e, {"status": "pending", "chunks_done": 0, "stage": None})
                for e, _, _ in work
            }
            self._report({k: v for k, v in release.items() if k not in lost})
            return
        except Exception as exc:  # Chroma or the model broke: every unfinished entry fails
            for entry, _, _ in work:
                if entry.uuid not in lost:
                    self._fail(entry, exc)
            return
        log.info(
            "ingested %d entries (%d chunks) in %.0f ms",
            len(work),
            sum(len(c) for _, c, _ in work),
            (time.perf_counter() - started) * 1000,
        )

    def _prepare(self, entry: Entry) -> tuple[list[Piece], dict[str, Any]]:
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
        segments, source = self._segments(entry)
        chunks = self._split(segments, size, overlap)
        # Idempotent: what an earlier attempt (or ingestion) wrote goes first.
        self.store.keywords.delete_entry(entry.uuid)
        if entry.attempts > 1:
            self.store.index.delete_entry(entry.datasource_uuid, entry.uuid)
        return chunks, chunk_metadata(entry, source)

    def _split(self, segments: list[Segment], size: int, overlap: int) -> list[Piece]:
        """The text's chunks; :class:`EntryTooLargeError` past ``max_chunks_per_entry``."""
        limit = self.settings.max_chunks_per_entry
        # No chunk holds more than ``size`` characters: refuse longer texts before splitting.
        length = sum(len(s.text) for s in segments)
        chunks = [] if length > limit * size else split_segments(segments, size, overlap)
        if length > limit * size or len(chunks) > limit:
            raise EntryTooLargeError(
                f"the entry makes more than {limit} chunks "
                "(APPFORGE_DATASOURCES__MAX_CHUNKS_PER_ENTRY)",
                details={"limit": limit},
            )
        return chunks

    def _index(self, work: list[tuple[Entry, list[Piece], dict[str, Any]]], lost: set[str]) -> None:
        """Embed and upsert all chunks of ``work`` in batches, reporting progress."""
        pending = [
            (entry, n, piece.text, {**meta, **piece.metadata})
            for entry, pieces, meta in work
            for n, piece in enumerate(pieces)
        ]
        remaining = {entry.uuid: len(chunks) for entry, chunks, _ in work}
        done: dict[str, int] = dict.fromkeys(remaining, 0)
        finished: dict[str, tuple[Entry, dict[str, Any]]] = {
            e.uuid: (e, {"status": "ready", "stage": None}) for e, c, _ in work if not c
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
            by_source: dict[str, list[int]] = {}
            for i, (entry, _, _, _) in enumerate(batch):
                by_source.setdefault(entry.datasource_uuid, []).append(i)
            for datasource_uuid, rows in by_source.items():
                self.store.index.add(
                    datasource_uuid,
                    [f"{batch[i][0].uuid}:{batch[i][1]}" for i in rows],
                    vectors[rows],
                    [batch[i][2] for i in rows],
                    [dict(batch[i][3]) for i in rows],
                )
            lost |= self._add_keywords(batch)
            for entry, _, _, _ in batch:
                done[entry.uuid] += 1
            progress = self._progress(work, {b[0].uuid for b in batch}, done, remaining, lost)
            progress.update(finished)
            finished = {}
            newly_lost = self._report(progress)
            for entry_uuid in newly_lost:
                self._forget_if_deleted(progress[entry_uuid][0])
            lost |= newly_lost
        if finished:
            lost |= self._report(finished)

    @staticmethod
    def _progress(
        work: list[tuple[Entry, list[Piece], dict[str, Any]]],
        in_batch: set[str],
        done: dict[str, int],
        remaining: dict[str, int],
        lost: set[str],
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
                progress[entry.uuid] = (entry, {"status": "ready", "chunks_done": n, "stage": None})
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

    def _add_keywords(self, batch: list[tuple[Entry, int, str, dict[str, Any]]]) -> set[str]:
        """Write the batch's chunks to the keyword index, one transaction per entry; the
        uuids of entries deleted meanwhile (their rows are refused: no orphans)."""
        by_entry: dict[str, list[dict[str, Any]]] = {}
        entries: dict[str, Entry] = {}
        for entry, n, text, meta in batch:
            entries[entry.uuid] = entry
            by_entry.setdefault(entry.uuid, []).append(
                {
                    "chunk_id": f"{entry.uuid}:{n}",
                    "datasource_uuid": entry.datasource_uuid,
                    "entry_uuid": entry.uuid,
                    "text": text,
                    "chunk_metadata": dict(meta),
                }
            )
        gone: set[str] = set()
        for entry_uuid, rows in by_entry.items():
            try:
                self.store.keywords.add(rows)
            except IntegrityError:
                gone.add(entry_uuid)
                self._forget_if_deleted(entries[entry_uuid])
        return gone

    def _fail(self, entry: Entry, exc: Exception) -> None:
        if isinstance(exc, DatasourceError):
            error = str(exc)
        else:  # a bug or a broken dependency: keep the worker alive
            log.exception("entry %s failed", entry.uuid, exc_info=exc)
            error = f"INGEST_FAILED: {type(exc).__name__}: {exc}"
        log.info("entry %s failed: %s", entry.uuid, error)
        failed = {"status": "failed", "error": error[:2000], "stage": None}
        if self._report({entry.uuid: (entry, failed)}):
            self._forget_if_deleted(entry)
            return
        try:  # a failed entry keeps no chunks (an earlier attempt's, or a partial batch)
            self.store.keywords.delete_entry(entry.uuid)
            self.store.index.delete_entry(entry.datasource_uuid, entry.uuid)
        except Exception:
            log.exception("could not remove the vectors of failed entry %s", entry.uuid)

    def _segments(self, entry: Entry) -> tuple[list[Segment], str]:
        """The entry's text in segments (pages, sections) and its ``source`` (the URL,
        else the entry's name). Text content is read as Markdown (its headings make
        sections)."""
        if entry.kind == "text":
            return markdown_sections(entry.content or ""), entry.name
        if entry.kind == "url":
            assert entry.url is not None
            fetched = fetch(entry.url, self.settings)
            body, url, media = fetched.body, fetched.url, fetched.media_type
            return extract_segments(body, url, media, self.settings), entry.url
        data = self.store.file_path(entry).read_bytes()
        return extract_segments(data, entry.name, entry.media_type, self.settings), entry.name

    def _forget_if_deleted(self, entry: Entry) -> None:
        """Our entry vanished while we worked: remove what we wrote for it."""
        with self.db() as db:
            still_there = db.get(Entry, entry.uuid) is not None
            source_there = db.get(Datasource, entry.datasource_uuid) is not None
        if not source_there:
            self.store.index.drop(entry.datasource_uuid)
        elif not still_there:
            self.store.index.delete_entry(entry.datasource_uuid, entry.uuid)

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


def requeue_all(engine: Engine) -> int:
    """Hand every entry to the ingestion workers again (after a restore: vectors are not
    in a backup); how many entries were requeued."""
    with engine.begin() as conn:
        result = conn.execute(
            update(Entry).values(
                status="pending",
                error=None,
                chunks_total=None,
                chunks_done=0,
                stage=None,
                attempts=0,
                claim_token=None,
                lease_until=None,
            )
        )
    return int(result.rowcount)
