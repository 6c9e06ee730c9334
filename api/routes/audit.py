"""The audit log (``GET /api/audit``, admin only): who changed what, newest first.

Events are written by the routes that make changes (``api.audit.record``), in the
transaction of the change, and deleted after ``APPFORGE_AUDIT__RETENTION_DAYS``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, func, or_, select

from api.access import Admin
from api.deps import DbSession
from api.errors import ApiError
from api.tables import AuditEvent

router = APIRouter(prefix="/api/audit", tags=["audit"])

ANONYMOUS = "anonymous"


class AuditEventPublic(BaseModel):
    id: int
    at: datetime
    actor_id: str | None = Field(
        description="The token's id; null for a caller without a token, or the command line"
    )
    actor_name: str | None = Field(
        description="The token's name; null for a caller without a token (anonymous); "
        "'cli' for the command line"
    )
    actor_address: str | None = Field(description="The client's address, when known")
    action: str = Field(description="<noun>.<what happened>, e.g. app.created (see the README)")
    target_type: str = Field(
        description="app, datasource, entry, use_case, prompt, token or webhook"
    )
    target_id: str
    details: dict[str, Any] = Field(description="Names, versions, labels; never secrets")


def _aware(value: datetime | None) -> datetime | None:
    """An ISO 8601 time without an offset is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _conditions(
    actor: str | None,
    action: str | None,
    target: str | None,
    start: datetime | None,
    end: datetime | None,
) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if actor is not None:
        who = [AuditEvent.actor_id == actor, AuditEvent.actor_name == actor]
        if actor == ANONYMOUS:
            who.append(and_(AuditEvent.actor_id.is_(None), AuditEvent.actor_name.is_(None)))
        found.append(or_(*who))
    if action is not None:
        if action.endswith((".", "*")):
            # autoescape: '_' in use_case. and prompt_version. is no wildcard
            found.append(AuditEvent.action.startswith(action.rstrip("*"), autoescape=True))
        else:
            found.append(AuditEvent.action == action)
    if target is not None:
        found.append(AuditEvent.target_id == target)
    if start is not None:
        found.append(AuditEvent.at >= start)
    if end is not None:
        found.append(AuditEvent.at < end)
    return found


ActorFilter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        description="A token's id or name, or 'anonymous' (callers without a token)",
    ),
]
ActionFilter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="An action (app.created), or a prefix ending in '.' (app.)",
    ),
]
TargetFilter = Annotated[
    str | None, Query(min_length=1, max_length=64, description="The target's id")
]
From = Annotated[datetime | None, Query(alias="from", description="ISO 8601; from this time on")]
To = Annotated[datetime | None, Query(description="ISO 8601; before this time")]


def _public(row: AuditEvent) -> AuditEventPublic:
    return AuditEventPublic(
        id=row.id,
        at=row.at,
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        actor_address=row.actor_address,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        details=row.details or {},
    )


@router.get("", response_model=list[AuditEventPublic])
def list_audit_route(
    db: DbSession,
    _: Admin,
    response: Response,
    actor: ActorFilter = None,
    action: ActionFilter = None,
    target: TargetFilter = None,
    from_: From = None,
    to: To = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AuditEventPublic]:
    """Who created, changed or deleted what, newest first (admin only).

    Filter by ``actor``, ``action`` (exact, or a prefix such as ``app.``), ``target``
    and a time window ``from``..``to`` (ISO 8601, UTC unless an offset is given;
    ``to`` excluded); ``X-Total-Count`` gives the number of matching events before
    paging.
    """
    start, end = _aware(from_), _aware(to)
    if start is not None and end is not None and start > end:
        raise ApiError(
            "'from' is after 'to'",
            code="VALIDATION_ERROR",
            status_code=422,
            details={"from": start.isoformat(), "to": end.isoformat()},
        )
    where = _conditions(actor, action, target, start, end)
    total = db.scalar(select(func.count()).select_from(AuditEvent).where(*where)) or 0
    rows = db.scalars(
        select(AuditEvent)
        .where(*where)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    response.headers["X-Total-Count"] = str(total)
    return [_public(r) for r in rows]
