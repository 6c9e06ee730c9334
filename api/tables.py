"""Tables owned by the API layer: tokens, used request signatures, webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appforge.core.db import Base, UTCDateTime, utcnow


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # hex HMAC-SHA256 of the token with a key derived from the server key
    # (hash_scheme "hmac-sha256"); tokens made before migration 0008 keep their
    # plain SHA-256 ("sha256") until their first use upgrades them.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash_scheme: Mapped[str] = mapped_column(String(16), default="hmac-sha256")
    prefix: Mapped[str] = mapped_column(String(16))
    # admin | editor | viewer | runner (see api/access.py for what each may do).
    role: Mapped[str] = mapped_column(String(16))
    # Narrowed to these app uuids (None: every app), and for runner keys to these
    # browser origins (None: any, and calls without an Origin header).
    apps: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    origins: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rate_limit: Mapped[str | None] = mapped_column(String(32), nullable=True)  # "60/minute"
    # When set, every request with this token must carry an HMAC signature
    # made with this secret (see appforge/core/signing.py). Stored encrypted with
    # the server key ("fernet:..."; appforge/core/keys.py): the server must
    # compute the same HMAC, so it is encrypted, not hashed.
    require_signature: Mapped[bool] = mapped_column(Boolean, default=False)
    signing_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UsedSignature(Base):
    """Signatures already accepted, kept until their timestamp leaves the window."""

    __tablename__ = "used_signatures"

    signature: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Webhook(Base):
    """A subscriber: events named in ``events`` are POSTed, signed with ``secret``, to ``url``."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    # Write-only through the API; stored encrypted with the server key
    # ("fernet:..."), since the sender must compute the HMAC with it.
    secret: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """The outbox: one event for one webhook, written in the transaction of the change.

    ``pending`` (due at ``next_attempt_at``) -> ``delivering`` (claimed until
    ``lease_until``) -> ``delivered``, or back to ``pending`` with a backoff, or
    ``failed`` after the last attempt. ``log`` keeps every attempt.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEvent(Base):
    """Who created, changed or deleted what, written in the transaction of the change."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    actor_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    actor_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64), index=True)  # "app.created", ...
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class BuilderSession(Base):
    """A browser signed in to the builder: an opaque secret in an http-only cookie,
    standing for the token that signed in (see ``api.builder_sessions``).

    The builder gets a one-time ``claim`` first; the browser trades it for the
    session's secret, which only the cookie ever holds. Both are stored as keyed
    hashes, like tokens.
    """

    __tablename__ = "builder_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    claim_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    session_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
