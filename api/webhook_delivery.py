"""Deliver the webhook outbox: claim due rows, POST them signed, retry with backoff.

Workers in any number of processes share the ``webhook_deliveries`` table, run
by the one lease queue (``appforge.core.queue``): a claim marks due rows
``delivering`` with a lease, so two workers never send the same attempt; a row
whose worker died comes back when its lease ends.
Each attempt re-checks the URL with the SSRF guard (DNS may have changed since
the webhook was created) and connects to the checked address.

Each request carries::

    X-Appforge-Event: prompt.deployed
    X-Appforge-Delivery: <delivery id>      (the same on every retry)
    X-Appforge-Timestamp: <unix seconds>
    X-Appforge-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

The secret is stored encrypted with the server key and decrypted per attempt.
One attempt ends within ``webhooks.timeout`` seconds in all (connecting, sending,
the answer's headers), however slowly the receiver trickles; of the answer's
body at most ``_MAX_ANSWER_BYTES`` are read. Each worker thread claims one
delivery at a time, so a slow receiver holds one thread and no other delivery.

A row claimed for a paused webhook is not sent: it ends as ``skipped``. The
first worker thread of each process also deletes finished deliveries older than
``webhooks.retention_days`` (:meth:`WebhookDispatcher.purge`), in batches.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from api.tables import Webhook, WebhookDelivery
from appforge.core.db import transaction, utcnow
from appforge.core.keys import SecretKeyError, ServerKey
from appforge.core.queue import Claimed, LeaseQueue, LeaseTable
from appforge.core.settings import Settings
from appforge.core.workers import Workers
from datasources.deadline import deadline_client
from datasources.errors import DatasourceError
from datasources.fetch import Allowlist, check_url

log = logging.getLogger(__name__)

_BATCH = 1  # per claim: a delivery waiting behind a slow one would wait for nothing
_MAX_ANSWER_BYTES = 4096
_PURGE_BATCH = 500
_PURGE_EVERY = 600.0  # seconds between two purges by one process

# A delivery in one of these states is never attempted again.
FINISHED = ("delivered", "failed", "skipped")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Appforge-Signature`` value for a body sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Due pending deliveries, and deliveries whose worker died mid-attempt."""
    return or_(
        and_(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now),
        and_(WebhookDelivery.status == "delivering", WebhookDelivery.lease_until < now),
    )


# The outbox as a lease queue: due deliveries first, "delivering" while claimed.
DELIVERIES = LeaseTable(WebhookDelivery, "id", _claimable, "next_attempt_at", "delivering")


class WebhookDispatcher:
    """Claims due deliveries and sends them; ``start`` runs it in background threads."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, key: ServerKey) -> None:
        self.db = factory
        self.key = key
        self.settings = settings.webhooks
        self.allowlist = Allowlist(settings.datasources.url_allowlist)
        self.queue = LeaseQueue(factory, DELIVERIES, self.settings.lease_seconds)
        self.workers = Workers("webhooks", self._work, self.settings.poll_seconds)
        self._next_purge = 0.0

    def claim(self, limit: int = _BATCH) -> list[WebhookDelivery]:
        """Take up to ``limit`` due deliveries, oldest first, for this worker."""
        return self.queue.claim(limit)

    # --- sending -------------------------------------------------------------

    def run_once(self) -> int:
        """Claim and send one batch; how many deliveries were attempted."""
        rows = self.claim()
        for row in rows:
            if self.workers.stopping.is_set():
                self._release(row)
                continue
            self.deliver(row)
        return len(rows)

    def deliver(self, row: WebhookDelivery) -> None:
        """One attempt of a claimed delivery, recorded in its log."""
        with self.db() as db:
            hook = db.get(Webhook, row.webhook_id)
        if hook is None:
            return  # deleted with its deliveries meanwhile
        if not hook.active:
            self._skip(row)
            return
        started = time.perf_counter()
        code: int | None = None
        error: str | None = None
        try:
            code = self._post(hook, row)
            if not 200 <= code < 300:
                error = f"HTTP {code}"
        except (DatasourceError, SecretKeyError) as exc:  # URL_REFUSED, FETCH_FAILED (DNS)
            error = str(exc)
        except httpx.TimeoutException as exc:
            error = (
                f"{type(exc).__name__}: no answer within {self.settings.timeout:g} s "
                f"(APPFORGE_WEBHOOKS__TIMEOUT): {exc}"
            )[:1000]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        self._record(row, code, error, (time.perf_counter() - started) * 1000)

    def _post(self, hook: Webhook, row: WebhookDelivery) -> int:
        # One deadline for the name lookup and the request (a hanging DNS server included).
        deadline = time.monotonic() + self.settings.timeout
        parsed, address = check_url(hook.url, self.allowlist, deadline=deadline)
        body = row.body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Host": parsed.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": "appforge-webhooks/1",
            "X-Appforge-Event": row.event,
            "X-Appforge-Delivery": row.id,
            "X-Appforge-Timestamp": timestamp,
            "X-Appforge-Signature": sign(self.key.decrypt(hook.secret), timestamp, body),
        }
        # Connect to the checked address (Host and SNI keep the name): DNS cannot
        # answer differently between the check and the connection.
        with (
            deadline_client(self.settings.timeout, until=deadline) as client,
            client.stream(
                "POST",
                parsed.copy_with(host=str(address)),
                content=body,
                headers=headers,
                extensions={"sni_hostname": parsed.host},
            ) as response,
        ):
            read = 0
            for piece in response.iter_raw():  # a little, then hang up: nobody needs more
                read += len(piece)
                if read >= _MAX_ANSWER_BYTES:
                    break
            return response.status_code

    def _record(self, row: WebhookDelivery, code: int | None, error: str | None, ms: float) -> None:
        now = utcnow()
        entry = {"at": now.isoformat(), "status_code": code, "error": error, "ms": round(ms, 1)}
        values: dict[str, Any] = {
            "log": [*(row.log or []), entry],
            "last_status_code": code,
            "last_error": error,
        }
        if error is None:
            values.update(status="delivered", delivered_at=now)
        elif row.attempts >= self.settings.max_attempts:
            values["status"] = "failed"
        else:
            delay = min(
                self.settings.backoff_seconds * 2 ** (row.attempts - 1),
                self.settings.max_backoff_seconds,
            )
            values.update(status="pending", next_attempt_at=now + timedelta(seconds=delay))
        self.queue.write({row.id: Claimed(row.claim_token, values)})
        log.info(
            "webhook %s %s attempt %d: %s",
            row.event,
            row.id,
            row.attempts,
            values.get("status"),
        )

    def _release(self, row: WebhookDelivery) -> None:
        """Give back a claimed row unsent (shutting down): due again at once, attempt undone."""
        self._unclaim(row, status="pending")

    def _skip(self, row: WebhookDelivery) -> None:
        """End a claimed row of a paused webhook unsent: ``skipped``, attempt undone."""
        self._unclaim(row, status="skipped", last_error="webhook paused")
        log.info("webhook %s %s skipped: webhook paused", row.event, row.id)

    def _unclaim(self, row: WebhookDelivery, **values: Any) -> None:
        """Drop our claim on a row we did not send, undoing its attempt."""
        undo = {"attempts": WebhookDelivery.attempts - 1, **values}
        self.queue.write({row.id: Claimed(row.claim_token, undo)})

    # --- retention -----------------------------------------------------------

    def purge(self, now: datetime | None = None, batch: int = _PURGE_BATCH) -> int:
        """Delete finished deliveries created more than ``retention_days`` before ``now``.

        Pending and in-flight rows are never touched. Rows go ``batch`` at a time,
        each batch in its own short transaction, so a large backlog never holds
        locks for long. Returns how many rows were deleted.
        """
        if not self.settings.retention_days:
            return 0
        cutoff = (now or utcnow()) - timedelta(days=self.settings.retention_days)
        old = and_(WebhookDelivery.status.in_(FINISHED), WebhookDelivery.created_at < cutoff)
        total = 0
        while True:
            with transaction(self.db) as db:
                ids = list(
                    db.scalars(
                        select(WebhookDelivery.id)
                        .where(old)
                        .order_by(WebhookDelivery.created_at)
                        .limit(batch)
                    )
                )
                if ids:
                    db.execute(
                        delete(WebhookDelivery)
                        .where(WebhookDelivery.id.in_(ids), old)
                        .execution_options(synchronize_session=False)
                    )
            total += len(ids)
            if len(ids) < batch or self.workers.stopping.is_set():
                break
        if total:
            log.info("webhook deliveries purged: %d older than %s", total, cutoff.isoformat())
        return total

    # --- threads -------------------------------------------------------------

    def start(self, workers: int) -> None:
        self.workers.start(workers)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the threads; an attempt in flight finishes (bounded by the delivery
        timeout, or ``timeout``); claimed deliveries not yet sent are given back."""
        self.workers.stop(timeout=self.settings.timeout + 30 if timeout is None else timeout)
        self.queue.release_all()

    def _work(self, index: int) -> bool:
        # One purging thread per process is enough; any number of processes may purge.
        if index == 0 and time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + _PURGE_EVERY
            self.purge()
        return bool(self.run_once())
