"""Routes for API tokens (admin only, but ``/me``): roles, app scopes, origins, expiry."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.access import Admin, AnyToken
from api.audit import Actor, record
from api.auth import TokenSpec, create_token, list_tokens, revoke_token
from api.deps import DbSession, Who
from api.errors import ApiError, NotFoundError
from api.state import State
from api.tables import Token
from appforge.core.invalidation import TOKENS
from appforge.core.settings import ORIGIN_PATTERN, RATE_PATTERN
from runs.tables import App

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


Role = Literal["admin", "editor", "viewer", "runner"]
_ORIGIN = re.compile(ORIGIN_PATTERN)
_RATE = re.compile(RATE_PATTERN)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Role | None = Field(
        default=None, description="admin, editor (the default), viewer or runner"
    )
    apps: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None,
        max_length=100,
        description="App uuids or names this token is narrowed to (not for admin tokens)",
    )
    origins: list[Annotated[str, Field(max_length=300)]] | None = Field(
        default=None,
        max_length=100,
        description="Runner keys: the browser origins (https://host[:port]) they may be used from",
    )
    expires_at: datetime | None = Field(default=None, description="When it stops working")
    rate_limit: str | None = Field(
        default=None,
        description='Requests for this token, e.g. "60/minute" (second, minute, '
        "hour, day); default: the server's",
    )
    require_signature: bool = Field(
        default=False, description="Every request with this token must carry an HMAC signature."
    )
    is_admin: bool | None = Field(
        default=None, description="Deprecated: the same as role admin (true) or editor (false)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TokenCreate:
        if self.is_admin is not None:
            legacy: Role = "admin" if self.is_admin else "editor"
            if self.role is not None and self.role != legacy:
                raise ValueError("give a role or is_admin, not both")
            self.role = legacy
        if self.role == "admin" and self.apps is not None:
            raise ValueError("an admin token cannot be narrowed to apps")
        if self.origins is not None:
            if self.role != "runner":
                raise ValueError("only runner keys are limited to origins")
            bad = [o for o in self.origins if not _ORIGIN.match(o)]
            if bad:
                raise ValueError(f"an origin is scheme://host[:port], got {bad[0]!r}")
            self.origins = [o.lower() for o in self.origins]
        if self.rate_limit is not None and not _RATE.match(self.rate_limit):
            raise ValueError('rate_limit is "<n>/<second|minute|hour|day>", e.g. "60/minute"')
        if self.expires_at is not None:
            if self.expires_at.tzinfo is None:
                self.expires_at = self.expires_at.replace(tzinfo=UTC)
            if self.expires_at <= datetime.now(UTC):
                raise ValueError("expires_at is in the past")
        return self


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    prefix: str
    role: Role
    apps: list[str] | None
    origins: list[str] | None
    expires_at: datetime | None
    rate_limit: str | None
    require_signature: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_admin(self) -> bool:
        """Deprecated: whether the role is admin."""
        return self.role == "admin"


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret; shown only in this answer.")
    signing_secret: str | None = Field(
        default=None, description="The HMAC key for signed tokens; shown only in this answer."
    )


@router.get("", response_model=list[TokenPublic])
def list_tokens_route(db: DbSession, _: Admin) -> list[Token]:
    """List every token (admin only); secrets are never shown."""
    return list_tokens(db)


@router.get("/me", response_model=TokenPublic)
def me_route(token: AnyToken, db: DbSession) -> Token:
    """The token making this request."""
    row = db.get(Token, token.id)
    if row is None:  # deleted since it was looked up
        raise NotFoundError(f"no token '{token.id}'", code="TOKEN_NOT_FOUND")
    return row


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token_route(
    body: TokenCreate, db: DbSession, _: Admin, who: Who, state: State
) -> TokenCreated:
    """Create a token (admin only); the secret is in this answer and nowhere else."""
    issued = create_token(db, token_spec(db, body), state.key)
    audit_token_created(db, who, issued.row)
    db.commit()
    public = TokenPublic.model_validate(issued.row).model_dump()
    return TokenCreated.model_validate(
        {**public, "token": issued.value, "signing_secret": issued.signing_secret}
    )


def audit_token_created(db: Session, who: Actor, token: Token) -> None:
    """The audit event of a new token: what it may do, never its secrets."""
    details = {
        "name": token.name,
        "role": token.role,
        "apps": token.apps,
        "origins": token.origins,
        "expires_at": token.expires_at,
        "rate_limit": token.rate_limit,
        "require_signature": token.require_signature,
    }
    record(db, who, "token.created", token.id, details)


def audit_token_revoked(db: Session, who: Actor) -> Callable[[Token], None]:
    """``revoke_token``'s ``on_revoke``: the audit event, only when a live token is revoked."""

    def add(token: Token) -> None:
        record(db, who, "token.revoked", token.id, {"name": token.name})

    return add


def token_spec(db: Session, body: TokenCreate) -> TokenSpec:
    """What ``body`` asks for, its apps resolved to uuids (422 for an unknown one)."""
    return TokenSpec(
        name=body.name,
        role=body.role or "editor",
        apps=_app_uuids(db, body.apps) if body.apps is not None else None,
        origins=body.origins,
        expires_at=body.expires_at,
        rate_limit=body.rate_limit,
        require_signature=body.require_signature,
    )


def _app_uuids(db: Session, refs: list[str]) -> list[str]:
    """The uuids of the apps named (by uuid or name); 422 naming the first unknown one."""
    uuids: list[str] = []
    for ref in refs:
        found = db.scalars(select(App.uuid).where(or_(App.uuid == ref, App.name == ref))).all()
        if len(found) != 1:
            why = "no app" if not found else "several apps"
            raise ApiError(
                f"apps: {why} '{ref}'", code="VALIDATION_ERROR", status_code=422,
                details={"app": ref},
            )  # fmt: skip
        uuids.append(found[0])
    return list(dict.fromkeys(uuids))


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token_route(token_id: str, db: DbSession, state: State, _: Admin, who: Who) -> None:
    """Revoke a token (admin only); it stops working at once, in every API process
    (on PostgreSQL the others are notified; SQLite has one process)."""
    if revoke_token(db, token_id, audit_token_revoked(db, who)) is None:
        raise NotFoundError(f"no token '{token_id}'", code="TOKEN_NOT_FOUND")
    db.commit()
    state.invalidation.publish(TOKENS)
