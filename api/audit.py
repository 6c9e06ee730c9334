"""The audit log: who created, changed or deleted what, and when.

A route that changes an app, datasource, entry, use case, prompt, prompt
version, label, token, webhook, model provider or model alias calls
:func:`record` before it commits: the ``audit_events`` row is added to the same
transaction as the change (as ``api.routes.webhooks.emit`` adds its outbox rows),
so a change that fails or is rolled back leaves no event, and a committed change
always has one. Changes made inside ``datasources.store``'s own transactions reach
it through the store's ``before_commit`` callbacks.

An event names its actor (the token's id and name, or none for a caller without
a token, and the client's address as ``api.proxies.client_address`` gives it),
its ``action`` (``<noun>.<past tense>``, one of :data:`ACTIONS`), its target
(type and id) and a few details: names, versions, labels, counts; never
secrets, template text or entry content.

:class:`AuditRetention` deletes events older than ``audit.retention_days`` in
batches, from one background thread per API process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Principal
from api.tables import AuditEvent
from appforge.core.db import utcnow
from appforge.core.workers import Periodic, delete_in_batches

log = logging.getLogger(__name__)

Action = Literal[
    "app.created",
    "app.updated",
    "app.restored",
    "app.deleted",
    "datasource.created",
    "datasource.updated",
    "datasource.deleted",
    "entry.created",
    "entry.retried",
    "entry.updated",
    "entry.deleted",
    "use_case.created",
    "use_case.updated",
    "use_case.deleted",
    "prompt.created",
    "prompt.updated",
    "prompt.deleted",
    "prompt_version.created",
    "label.promoted",
    "label.demoted",
    "label.deployed",
    "label.rolled_back",
    "token.created",
    "token.revoked",
    "webhook.created",
    "webhook.updated",
    "webhook.deleted",
    "provider.created",
    "provider.updated",
    "provider.deleted",
    "model_alias.set",
    "model_alias.deleted",
    "dataset.created",
    "dataset.updated",
    "dataset.deleted",
    "dataset.cases_changed",
    "evaluation.started",
    "evaluation.cancelled",
    "prompt.policy_set",
    "prompt.policy_deleted",
    "app.policy_set",
    "app.policy_deleted",
]
ACTIONS: tuple[str, ...] = get_args(Action)

# The type of an action's target, by the noun before the dot: a prompt's versions
# and labels are events of the prompt, so ``target=<prompt id>`` finds them all.
TARGET_TYPES = {
    "app": "app",
    "datasource": "datasource",
    "entry": "entry",
    "use_case": "use_case",
    "prompt": "prompt",
    "prompt_version": "prompt",
    "label": "prompt",
    "token": "token",
    "webhook": "webhook",
    "provider": "provider",
    "model_alias": "model_alias",
    "dataset": "dataset",
    "evaluation": "evaluation",
}

_MAX_TEXT = 200  # details are small: longer strings are cut,
_MAX_ITEMS = 100  # and longer lists


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a token (id and name) or nobody, and from which address."""

    id: str | None
    name: str | None
    address: str | None

    @classmethod
    def of(cls, principal: Principal | None, address: str | None) -> Actor:
        if principal is None:
            return cls(None, None, address)
        return cls(principal.id, principal.name, address)


# The command line (``appforge token ...``) works on the database directly.
COMMAND_LINE = Actor(None, "cli", None)


def _small(value: Any) -> Any:
    """A detail value as JSON: datetimes as ISO 8601, long strings and lists cut."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[: _MAX_TEXT - 1] + "…"
    if isinstance(value, Mapping):
        return {str(k): _small(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_small(v) for v in list(value)[:_MAX_ITEMS]]
    return value


def record(
    db: Session,
    actor: Actor,
    action: Action,
    target_id: str,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Add the event of ``action`` on ``target_id`` by ``actor`` to ``db``'s transaction.

    The caller commits (or rolls back) as usual, so the event exists exactly when
    the change does. ``details`` must hold no secret, template or content.
    """
    event = AuditEvent(
        at=utcnow(),
        actor_id=actor.id,
        actor_name=actor.name,
        actor_address=actor.address,
        action=action,
        target_type=TARGET_TYPES[action.partition(".")[0]],
        target_id=target_id,
        details=_small(dict(details or {})),
    )
    db.add(event)
    return event


class AuditRetention(Periodic):
    """Deletes audit events older than ``retention_days`` (0: keeps them forever).

    ``start`` runs :meth:`purge` in one background thread now and then every
    ``every`` seconds; any number of API processes may purge the same database.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        retention_days: float,
        *,
        batch: int = 500,
        every: float = 600.0,
    ) -> None:
        super().__init__("audit-retention", every)
        self.db = factory
        self.retention_days = retention_days
        self.batch = batch

    def purge(self, now: datetime | None = None) -> int:
        """Delete events older than ``retention_days`` before ``now``, in batches; how
        many went."""
        if not self.retention_days:
            return 0
        cutoff = (now or utcnow()) - timedelta(days=self.retention_days)
        expired = select(AuditEvent.id).where(AuditEvent.at < cutoff).order_by(AuditEvent.at)
        total = delete_in_batches(self.db, expired, AuditEvent.id, self.batch, self.stopping)
        if total:
            log.info("audit events purged: %d older than %s", total, cutoff.isoformat())
        return total

    def enabled(self) -> bool:
        """Nothing to do while events are kept forever."""
        return bool(self.retention_days)

    def run(self) -> bool:
        self.purge()
        return False  # then wait ``every`` seconds (or until stopped)
