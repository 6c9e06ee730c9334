"""The audit log (admin tokens only): who created, changed or deleted what, and when.

Each operation is written once (a generator, see ``calls``); ``AuditMethods`` is
its face on ``Client`` and ``AsyncAuditMethods`` on ``AsyncClient``.
"""

from __future__ import annotations

from datetime import datetime

from appforge.client.calls import AsyncDriven, Call, Op, SyncDriven, given, many
from appforge.client.models import AuditEvent, AuditLog

# --- operations -------------------------------------------------------------------------


def _audit(
    actor: str | None,
    action: str | None,
    target: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    offset: int,
) -> Op[AuditLog]:
    params = given(actor=actor, action=action, target=target, limit=limit, offset=offset)
    if start is not None:
        params["from"] = start.isoformat()
    if end is not None:
        params["to"] = end.isoformat()
    r = yield Call("GET", "/api/audit", params=params)
    events = many(AuditEvent, r)
    return AuditLog(events=events, total=int(r.headers.get("x-total-count", len(events))))


# --- Client -----------------------------------------------------------------------------


class AuditMethods(SyncDriven):
    """The audit log on ``Client``."""

    def audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> AuditLog:
        """Audit events, newest first (admin only), with the number that match in all.

        ``actor``: a token's id or name, or ``"anonymous"``; ``action``: exact
        (``"app.created"``) or a prefix ending in a dot (``"app."``); ``target``: an
        object's id; ``start``/``end``: the time window (``end`` excluded).
        """
        return self._drive(_audit(actor, action, target, start, end, limit, offset))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncAuditMethods(AsyncDriven):
    """The audit log on ``AsyncClient``."""

    async def audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> AuditLog:
        """Audit events, newest first (admin only), with the number that match in all.

        ``actor``: a token's id or name, or ``"anonymous"``; ``action``: exact
        (``"app.created"``) or a prefix ending in a dot (``"app."``); ``target``: an
        object's id; ``start``/``end``: the time window (``end`` excluded).
        """
        return await self._drive(_audit(actor, action, target, start, end, limit, offset))
