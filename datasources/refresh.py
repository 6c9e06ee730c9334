"""URL entries fetched again on their schedule (``refresh``: daily or weekly).

The job is a :class:`appforge.core.queue.Periodic` round over a lease queue on
the entries table: it claims entries that are ``ready``, on a schedule and due
(``next_refresh_at`` passed), or ``refreshing`` with an expired lease (the
process refreshing them died). A claimed entry shows ``refreshing``: it stays
searchable, and no other process claims it, on PostgreSQL either (``FOR UPDATE
SKIP LOCKED``), and the claims are renewed while the batch is fetched one entry
after another (``LeaseQueue.renewing``). For each, it fetches the URL and
compares the body's hash with the one the entry's chunks were made from:

- unchanged: back to ``ready``, ``last_refreshed_at`` now and the next time due;
  nothing is embedded again;
- changed: the body fetched is kept (:mod:`datasources.bodies`, in the entry's
  place in the home's files folder) and the entry goes back to ``pending`` with
  ``reingest`` set and its ``file_path`` naming that body, in the one write under
  the claim; the ingestion queue chunks and embeds that very body (no second
  fetch, and the hash compared is the hash of what is embedded), its old chunks
  searchable until the new ones replace them, and removes the body after;
- the fetch failed: back to ``ready`` with the old chunks, the ``error`` said,
  and due again one period later.

A write under a claim that was lost (the entry was deleted or changed meanwhile)
is dropped, and so is a body kept for it (an entry deleted after the write has its
body removed with it). A body that could not be written (a full disk) is not kept:
the ingestion then fetches the page itself. ``now`` can be given to
:meth:`RefreshJob.run` (tests), so nobody waits a day.

Each round first removes the vectors of deleted entries and datasources that the
vector store missed when they were deleted (:meth:`DatasourceStore.sweep_deletions`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, or_

from appforge.core.db import failure_reason, utcnow
from appforge.core.queue import Claimed, LeaseQueue, LeaseTable
from appforge.core.workers import Periodic
from datasources import bodies
from datasources.entries import next_refresh
from datasources.errors import DatasourceError
from datasources.fetch import Fetched, fetch
from datasources.store import DatasourceStore
from datasources.tables import Datasource, Entry

log = logging.getLogger(__name__)

Outcome = Literal["unchanged", "changed", "failed"]
SWEEP_BATCH = 100  # deletions whose vectors one round removes


def _due(now: datetime) -> ColumnElement[bool]:
    """Ready URL entries whose refresh is due, and refreshes whose process died."""
    return or_(
        and_(
            Entry.status == "ready",
            Entry.kind == "url",
            Entry.refresh != "none",
            Entry.next_refresh_at <= now,
        ),
        and_(Entry.status == "refreshing", Entry.lease_until < now),
    )


# Claimed in order of when they were due; a refresh is not an ingestion attempt.
DUE_ENTRIES = LeaseTable(
    Entry,
    "uuid",
    _due,
    "next_refresh_at",
    "refreshing",
    released_status="ready",
    counts_attempts=False,
)


class RefreshJob(Periodic):
    """Refreshes due URL entries every ``refresh_poll_seconds``, ``refresh_batch`` at a
    time; ``on_changed`` is called when some went back to the ingestion queue."""

    def __init__(self, store: DatasourceStore, on_changed: Callable[[], None] | None = None):
        settings = store.settings.datasources
        super().__init__("refresh", settings.refresh_poll_seconds)
        self.store = store
        self.settings = settings
        self.on_changed = on_changed
        self.queue = LeaseQueue(store.db, DUE_ENTRIES, settings.lease_seconds)

    def run(self, now: datetime | None = None) -> bool:
        """Remove the vectors of deletions the vector store missed, then refresh the
        entries due at ``now`` (one batch); whether either batch was full (more may wait:
        the next round comes at once)."""
        swept = 0
        try:
            swept = self.store.sweep_deletions(SWEEP_BATCH)
        except Exception as exc:  # the refresh goes on; the next round sweeps again
            log.warning(
                "removing vectors of earlier deletions failed: %s", failure_reason(exc) or exc
            )
        outcomes = self.refresh_due(now)
        return swept == SWEEP_BATCH or len(outcomes) == self.settings.refresh_batch

    def refresh_due(self, now: datetime | None = None) -> dict[str, Outcome]:
        """Claim and refresh up to a batch of entries due at ``now``; each one's outcome."""
        now = now or utcnow()
        entries = self.queue.claim(self.settings.refresh_batch, now=now)
        outcomes: dict[str, Outcome] = {}
        # The batch's fetches, one after another, may take longer than one lease.
        with self.queue.renewing(entries):
            for entry in entries:
                if self.stopping.is_set():
                    break
                outcomes[entry.uuid] = self._refresh(entry, now)
        self.queue.release_all()  # any left when stopping: back to ready at once
        if "changed" in outcomes.values() and self.on_changed is not None:
            self.on_changed()
        if outcomes:
            log.info("refreshed %d URL entries: %s", len(outcomes), sorted(outcomes.values()))
        return outcomes

    def _refresh(self, entry: Entry, now: datetime) -> Outcome:
        """Fetch one claimed entry and write what became of it."""
        assert entry.url is not None
        outcome: Outcome
        values: dict[str, Any]
        due = next_refresh(entry.refresh, now)
        body_file = self.store.entry_file(entry.datasource_uuid, entry.uuid)
        try:
            fetched = fetch(entry.url, self.settings)
        except Exception as exc:  # the old chunks stay; the error is shown on the entry
            message = str(exc) if isinstance(exc, DatasourceError) else f"FETCH_FAILED: {exc!r}"
            log.info("refresh of entry %s failed: %s", entry.uuid, message)
            outcome = "failed"
            values = {"status": "ready", "error": message[:2000], "next_refresh_at": due}
        else:
            if hashlib.sha256(fetched.body).hexdigest() == entry.body_hash:
                outcome = "unchanged"
                values = {"status": "ready", "error": None, "last_refreshed_at": now}
                values["next_refresh_at"] = due
            else:
                outcome = "changed"
                values = {"status": "pending", "reingest": True, "attempts": 0, "stage": None}
                values["file_path"] = self._keep(body_file, fetched)
        if self.queue.write({entry.uuid: Claimed(entry.claim_token, values)}):
            log.info("entry %s changed or went while it was refreshed", entry.uuid)
            self._forget(entry, body_file)
        elif outcome != "changed":  # one kept by a refresh that died before its write
            bodies.discard(body_file)
        return outcome

    def _keep(self, body_file: Path, fetched: Fetched) -> str | None:
        """Store a changed page's body for its ingestion; where, relative to the home
        (None: it could not be stored, and the ingestion fetches the page itself)."""
        try:
            bodies.keep(body_file, fetched)
        except OSError:
            log.exception("could not keep the body fetched for %s", body_file.name)
            bodies.discard(body_file)
            return None
        return str(body_file.relative_to(self.store.settings.home))

    def _forget(self, entry: Entry, body_file: Path) -> None:
        """Our claim was lost (the entry or its datasource deleted meanwhile, or another
        process took it over): a body we stored goes, unless the entry now names one
        (the other process's), and so does the datasource's folder if we made it anew."""
        bodies.discard_unless_named(self.store.db, entry.uuid, body_file)
        with self.store.db() as db:
            source_there = db.get(Datasource, entry.datasource_uuid) is not None
        if not source_there:
            with contextlib.suppress(OSError):  # not empty: not ours to remove
                body_file.parent.rmdir()
