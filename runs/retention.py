"""Expiry: sessions idle longer than ``sessions.ttl_days`` and runs older than
``runs.retention_days`` are deleted, in batches.

Both are off by default (kept forever). A session goes with its turns; a run
still ``running`` is never deleted. Each batch is its own short transaction,
so a large backlog never holds locks for long; any number of API processes may
purge the same database.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from appforge.core.db import utcnow
from appforge.core.workers import Periodic, delete_in_batches
from runs.tables import ChatSession, Run

log = logging.getLogger(__name__)


class Retention(Periodic):
    """Deletes expired sessions and runs; ``start`` does so now and every ``every`` s."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        session_ttl_days: float | None,
        run_retention_days: float | None,
        *,
        batch: int = 500,
        every: float = 600.0,
    ) -> None:
        super().__init__("retention", every)
        self.db = factory
        self.session_ttl_days = session_ttl_days
        self.run_retention_days = run_retention_days
        self.batch = batch

    def purge(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what expired before ``now``; how many sessions and runs went."""
        now = now or utcnow()
        gone = {"sessions": 0, "runs": 0}
        if self.session_ttl_days:
            cutoff = now - timedelta(days=self.session_ttl_days)
            expired = select(ChatSession.id).where(ChatSession.updated_at < cutoff)
            gone["sessions"] = delete_in_batches(
                self.db, expired, ChatSession.id, self.batch, self.stopping
            )
        if self.run_retention_days:
            cutoff = now - timedelta(days=self.run_retention_days)
            expired = select(Run.id).where(Run.created_at < cutoff, Run.status != "running")
            gone["runs"] = delete_in_batches(self.db, expired, Run.id, self.batch, self.stopping)
        if any(gone.values()):
            log.info("expired: %d sessions, %d runs", gone["sessions"], gone["runs"])
        return gone

    def enabled(self) -> bool:
        """Nothing to do unless something expires."""
        return bool(self.session_ttl_days or self.run_retention_days)

    def run(self) -> bool:
        self.purge()
        return False  # then wait ``every`` seconds (or until stopped)
