"""API tokens: created once, shown once, stored as a SHA-256 hash.

Tokens are 256-bit random strings, so a fast hash is enough: there is nothing
to brute-force that a slow KDF would protect.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.models import Token
from appforge.db import transaction, utcnow

PREFIX = "af_"
_TOUCH_EVERY = timedelta(minutes=1)


def hash_token(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def create_token(
    db: Session, name: str, *, is_admin: bool = False, require_signature: bool = False
) -> tuple[Token, str]:
    """Store a new token; returns the row and the secret value (never stored).

    With ``require_signature`` the token also gets a signing secret
    (``token.signing_secret``), and every request must be signed with it.
    """
    value = PREFIX + secrets.token_urlsafe(32)
    token = Token(
        id=str(uuid.uuid4()),
        name=name,
        token_hash=hash_token(value),
        prefix=value[:10],
        is_admin=is_admin,
        require_signature=require_signature,
        signing_secret=("afs_" + secrets.token_urlsafe(32)) if require_signature else None,
        created_at=utcnow(),
    )
    db.add(token)
    db.flush()
    return token, value


def ensure_token(factory: sessionmaker[Session], value: str, name: str, is_admin: bool) -> None:
    """Make sure a token with this exact value exists (used for APPFORGE_ADMIN_TOKEN)."""
    digest = hash_token(value)
    with transaction(factory) as db:
        existing = db.scalar(select(Token).where(Token.token_hash == digest))
        if existing is not None:
            existing.revoked_at = None
            existing.is_admin = existing.is_admin or is_admin
            return
        db.add(
            Token(
                id=str(uuid.uuid4()),
                name=name,
                token_hash=digest,
                prefix=value[:10],
                is_admin=is_admin,
                created_at=utcnow(),
            )
        )


def authenticate(db: Session, value: str) -> Token | None:
    """The live token with this value, or None."""
    token = db.scalar(select(Token).where(Token.token_hash == hash_token(value)))
    if token is None or token.revoked_at is not None:
        return None
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > _TOUCH_EVERY:
        token.last_used_at = now
        db.commit()
    return token


def list_tokens(db: Session) -> list[Token]:
    return list(db.scalars(select(Token).order_by(Token.created_at)))


def revoke_token(db: Session, token_id: str) -> Token | None:
    """Revoke by id (or by the token's shown prefix); None if no such token."""
    token = db.get(Token, token_id) or db.scalar(select(Token).where(Token.prefix == token_id))
    if token is None:
        return None
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    db.flush()
    return token
