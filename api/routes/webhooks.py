"""Webhooks (``/api/webhooks``): subscriptions, the event outbox, the delivery log.

A change that emits an event calls :func:`emit` before it commits: one
``webhook_deliveries`` row per active webhook subscribed to the event is added
to the same transaction, so a rolled-back change emits nothing and a committed
one is delivered even if the process dies right after (``api/webhook_delivery.py``
sends the rows). Payloads follow the managed-prompts API:
``{"event", "timestamp", "data": {...}}``.

A paused webhook (``active: false``) is like a disabled Stripe endpoint: sending
stops at once. No event is queued for it while paused, and its deliveries still
queued when it is paused end as ``skipped`` (never sent, kept in the log);
resuming sends the events that happen from then on.

Every route needs an admin token: webhooks are server-wide and their URLs and
delivery logs may say where internal systems live. The secret is write-only.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.access import Admin
from api.audit import record
from api.deps import DbSession, Who
from api.errors import ApiError, NotFoundError
from api.state import api_state
from api.tables import Webhook, WebhookDelivery
from appforge.core.db import utcnow
from appforge.core.settings import Settings
from datasources.errors import FetchError
from datasources.fetch import Allowlist, check_url

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

EventName = Literal[
    "prompt.created",
    "prompt.updated",
    "prompt.deployed",
    "prompt.deleted",
    "prompt.rolled_back",
    "prompt.undeployed",
    "use_case.deleted",
    "app.updated",
]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)
    events: list[EventName] = Field(min_length=1, max_length=20)
    secret: str = Field(min_length=8, max_length=200, description="HMAC key; never returned")


class WebhookUpdate(BaseModel):
    """The fields to change; absent (or null) ones stay as they are."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    events: list[EventName] | None = Field(default=None, min_length=1, max_length=20)
    secret: str | None = Field(
        default=None, min_length=8, max_length=200, description="A new HMAC key; never returned"
    )
    active: bool | None = Field(
        default=None, description="false pauses the webhook (queued deliveries are skipped)"
    )


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    active: bool
    created_by: str | None
    created_at: datetime


class AttemptPublic(BaseModel):
    at: datetime
    status_code: int | None
    error: str | None
    ms: float


class DeliveryPublic(BaseModel):
    id: str
    webhook_id: str
    event: str
    status: str = Field(
        description="pending, delivering, delivered, failed, or skipped (webhook paused)"
    )
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]
    log: list[AttemptPublic]


def check_webhook_url(url: str, settings: Settings) -> None:
    """The SSRF rules of URL entries (``datasources.fetch``), allow-list included."""
    try:
        deadline = time.monotonic() + settings.webhooks.timeout  # a hanging DNS server
        check_url(url, Allowlist(settings.datasources.url_allowlist), deadline=deadline)
    except FetchError as exc:  # cannot resolve: the URL is unusable as given
        raise ApiError(exc.message, code="URL_REFUSED", status_code=422) from exc


def emit(db: Session, event: EventName, data: dict[str, Any]) -> int:
    """Queue ``event`` for every active webhook subscribed to it, in ``db``'s transaction.

    The caller commits (or rolls back) as usual; the number of deliveries queued.
    """
    hooks = [h for h in db.scalars(select(Webhook).where(Webhook.active)) if event in h.events]
    if not hooks:
        return 0
    now = utcnow()
    payload = {
        "event": event,
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "data": data,
    }
    body = json.dumps(payload, separators=(",", ":"), default=str)
    for hook in hooks:
        db.add(
            WebhookDelivery(
                id=str(uuid.uuid4()),
                webhook_id=hook.id,
                event=event,
                body=body,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                log=[],
                created_at=now,
                updated_at=now,
            )
        )
    return len(hooks)


def _public(row: Webhook) -> WebhookPublic:
    return WebhookPublic(
        id=row.id,
        url=row.url,
        events=list(row.events),
        active=row.active,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _audit_details(row: Webhook, **extra: Any) -> dict[str, Any]:
    # The host only: a webhook URL's path or query may itself be a secret (Slack's are).
    return {"host": urlsplit(row.url).hostname, "events": list(row.events), **extra}


def _get(db: Session, webhook_id: str) -> Webhook:
    row = db.get(Webhook, webhook_id)
    if row is None:
        raise NotFoundError(f"no webhook '{webhook_id}'", code="WEBHOOK_NOT_FOUND")
    return row


@router.post("", response_model=WebhookPublic, status_code=status.HTTP_201_CREATED)
async def create_webhook_route(
    request: Request, body: WebhookCreate, token: Admin, who: Who
) -> WebhookPublic:
    """Subscribe a URL to events; the URL must reach a public address (422 ``URL_REFUSED``)."""
    # Resolving the host blocks: off the event loop.
    await run_in_threadpool(check_webhook_url, body.url, api_state(request).settings)

    def save() -> WebhookPublic:
        with api_state(request).db() as db:
            row = Webhook(
                id=str(uuid.uuid4()),
                url=body.url,
                events=sorted(set(body.events)),
                secret=api_state(request).key.encrypt(body.secret),
                active=True,
                created_by=token.name,
                created_at=utcnow(),
            )
            db.add(row)
            record(db, who, "webhook.created", row.id, _audit_details(row))
            db.commit()
            return _public(row)

    return await run_in_threadpool(save)


@router.patch("/{webhook_id}", response_model=WebhookPublic)
async def update_webhook_route(
    webhook_id: str, request: Request, body: WebhookUpdate, _: Admin, who: Who
) -> WebhookPublic:
    """Change a webhook's URL, events or secret, or pause (``"active": false``) and resume it.

    A new URL is checked like on create (422 ``URL_REFUSED``); on any error
    nothing changes. Deliveries already queued go to the new URL and are signed
    with the new secret. Pausing stops sending at once: deliveries still queued
    are marked ``skipped``, and no event is queued while paused; after resuming,
    new events are delivered again.
    """
    factory = api_state(request).db

    def exists() -> None:
        with factory() as db:
            _get(db, webhook_id)

    if body.url is not None:
        # 404 before 422; the host is resolved off the event loop.
        await run_in_threadpool(exists)
        await run_in_threadpool(check_webhook_url, body.url, api_state(request).settings)

    def save() -> WebhookPublic:
        with factory() as db:
            row = _get(db, webhook_id)
            if body.url is not None:
                row.url = body.url
            if body.events is not None:
                row.events = sorted(set(body.events))
            if body.secret is not None:
                row.secret = api_state(request).key.encrypt(body.secret)
            if body.active is False and row.active:
                now = utcnow()
                db.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.webhook_id == row.id,
                        WebhookDelivery.status == "pending",
                    )
                    .values(status="skipped", last_error="webhook paused", updated_at=now)
                )
            if body.active is not None:
                row.active = body.active
            changed = sorted(body.model_dump(exclude_none=True))  # names; never the secret
            if changed:
                details = _audit_details(row, changed=changed, active=row.active)
                record(db, who, "webhook.updated", row.id, details)
            db.commit()
            return _public(row)

    return await run_in_threadpool(save)


@router.get("", response_model=list[WebhookPublic])
def list_webhooks_route(db: DbSession, _: Admin) -> list[WebhookPublic]:
    """Every webhook, oldest first (secrets are never returned)."""
    rows = db.scalars(select(Webhook).order_by(Webhook.created_at, Webhook.id))
    return [_public(r) for r in rows]


@router.get("/{webhook_id}", response_model=WebhookPublic)
def get_webhook_route(webhook_id: str, db: DbSession, _: Admin) -> WebhookPublic:
    """One webhook."""
    return _public(_get(db, webhook_id))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook_route(webhook_id: str, db: DbSession, _: Admin, who: Who) -> Response:
    """Delete a webhook with its delivery log; pending deliveries are dropped."""
    row = _get(db, webhook_id)
    record(db, who, "webhook.deleted", row.id, _audit_details(row))
    db.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == row.id))
    db.delete(row)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryPublic])
def list_deliveries_route(
    webhook_id: str,
    db: DbSession,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryPublic]:
    """The delivery log, newest first: each event's status, attempts and their results."""
    _get(db, webhook_id)
    rows = db.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        .limit(limit)
    )
    return [
        DeliveryPublic(
            id=r.id,
            webhook_id=r.webhook_id,
            event=r.event,
            status=r.status,
            attempts=r.attempts,
            last_status_code=r.last_status_code,
            last_error=r.last_error,
            next_attempt_at=r.next_attempt_at if r.status == "pending" else None,
            created_at=r.created_at,
            updated_at=r.updated_at,
            delivered_at=r.delivered_at,
            payload=json.loads(r.body),
            log=[AttemptPublic(**a) for a in r.log or []],
        )
        for r in rows
    ]
