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
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from appforge.core.db import transaction, utcnow
from appforge.core.queue import Workers
from runs.tables import ChatSession, Run

log = logging.getLogger(__name__)


class Retention:
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
        self.db = factory
        self.session_ttl_days = session_ttl_days
        self.run_retention_days = run_retention_days
        self.batch = batch
        self.workers = Workers("retention", self._work, every)

    def purge(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what expired before ``now``; how many sessions and runs went."""
        now = now or utcnow()
        gone = {"sessions": 0, "runs": 0}
        if self.session_ttl_days:
            cutoff = now - timedelta(days=self.session_ttl_days)
            gone["sessions"] = self._batches(
                select(ChatSession.id).where(ChatSession.updated_at < cutoff),
                ChatSession.id,
            )
        if self.run_retention_days:
            cutoff = now - timedelta(days=self.run_retention_days)
            gone["runs"] = self._batches(
                select(Run.id).where(Run.created_at < cutoff, Run.status != "running"),
                Run.id,
            )
        if any(gone.values()):
            log.info("expired: %d sessions, %d runs", gone["sessions"], gone["runs"])
        return gone

    def _batches(self, expired: Any, key: Any) -> int:
        total = 0
        while True:
            with transaction(self.db) as db:
                ids = list(db.scalars(expired.limit(self.batch)))
                if ids:
                    db.execute(
                        delete(key.class_)
                        .where(key.in_(ids))
                        .execution_options(synchronize_session=False)
                    )
            total += len(ids)
            if len(ids) < self.batch or self.workers.stopping.is_set():
                return total

    def start(self) -> None:
        """Purge now and periodically, unless nothing ever expires."""
        if self.session_ttl_days or self.run_retention_days:
            self.workers.start(1)

    def stop(self) -> None:
        self.workers.stop()

    def _work(self, index: int) -> bool:
        self.purge()
        return False  # then wait ``every`` seconds (or until stopped)
