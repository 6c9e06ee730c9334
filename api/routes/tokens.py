"""Routes for API tokens (admin only, but ``/me``)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from api.auth import create_token, list_tokens, revoke_token
from api.deps import AdminToken, CurrentToken, DbSession
from api.errors import NotFoundError
from api.state import State
from api.tables import Token

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    is_admin: bool = False
    require_signature: bool = Field(
        default=False, description="Every request with this token must carry an HMAC signature."
    )


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    prefix: str
    is_admin: bool
    require_signature: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret; shown only in this answer.")
    signing_secret: str | None = Field(
        default=None, description="The HMAC key for signed tokens; shown only in this answer."
    )


@router.get("", response_model=list[TokenPublic])
def list_route(db: DbSession, _: AdminToken) -> list[Token]:
    """List every token (admin only); secrets are never shown."""
    return list_tokens(db)


@router.get("/me", response_model=TokenPublic)
def me_route(token: CurrentToken, db: DbSession) -> Token:
    """The token making this request."""
    row = db.get(Token, token.id)
    if row is None:  # deleted since it was looked up
        raise NotFoundError(f"no token '{token.id}'", code="TOKEN_NOT_FOUND")
    return row


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_route(body: TokenCreate, db: DbSession, _: AdminToken) -> TokenCreated:
    """Create a token (admin only); the secret is in this answer and nowhere else."""
    token, value = create_token(
        db, body.name, is_admin=body.is_admin, require_signature=body.require_signature
    )
    db.commit()
    public = TokenPublic.model_validate(token).model_dump()
    return TokenCreated.model_validate(
        {**public, "token": value, "signing_secret": token.signing_secret}
    )


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_route(token_id: str, db: DbSession, state: State, _: AdminToken) -> None:
    """Revoke a token (admin only); it stops working at once in this process, and
    within ``APPFORGE_AUTH__CACHE_SECONDS`` in the others."""
    if revoke_token(db, token_id) is None:
        raise NotFoundError(f"no token '{token_id}'", code="TOKEN_NOT_FOUND")
    db.commit()
    state.tokens.clear()
