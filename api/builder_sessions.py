"""Builder sign-ins that survive reloads and new tabs: an http-only cookie.

The builder (Streamlit, on its own port) talks to the API from its server
process and cannot set cookies in the browser; the API can. Cookies belong to
a host, not to a port, so a cookie the API at ``127.0.0.1:8000`` sets is sent
to the builder at ``127.0.0.1:8501`` too, which reads it with
``st.context.cookies``. The sign-in:

1. The builder checks the token typed in (``GET /api/tokens/me``), then asks
   for a session with it: ``POST /api/builder/sessions`` answers its ``id``, a
   one-time ``claim`` (valid for :data:`CLAIM_SECONDS`) and when it expires.
2. The builder's page posts the claim to ``POST /builder/session`` (a script
   in a frame of the builder's origin, ``fetch`` with credentials). The API
   trades the claim, once, for a new session secret that only the cookie ever
   holds: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
   site's request carries it), ``Path=/``, ``Max-Age`` of the session, and
   ``Secure`` when the API is reached over https.
3. Every page load (a reload, a new tab) sends the cookie to the builder,
   which calls the API with the secret as its credential
   (``Authorization: Token afb_...``); the API authenticates it as the token
   that signed in (``api.auth``) until the session expires, is ended, or the
   token is revoked or expires. The API never accepts the cookie itself as a
   credential, so no other page can make a browser act with it.
4. Sign-out: ``DELETE /api/builder/sessions/{id}`` (or ``current``) ends it;
   the page posts to ``POST /builder/session/end``, which clears the cookie.

The token never appears in a URL, the browser never holds it after sign-in,
and the claim and the secret are stored as keyed hashes, like tokens.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.tables import BuilderSession
from appforge.core.builder_cookie import SESSION_PREFIX, cookie_name
from appforge.core.db import utcnow
from appforge.core.keys import ServerKey
from appforge.core.settings import AuthSettings

__all__ = ["CLAIM_SECONDS", "cookie_name", "end", "end_by_secret", "redeem", "start"]

CLAIM_PREFIX = "afc_"
CLAIM_SECONDS = 120


@dataclass(frozen=True)
class Started:
    """A session just made: its row and the one-time claim (shown once)."""

    row: BuilderSession
    claim: str


def start(
    db: Session,
    token_id: str,
    token_expires_at: datetime | None,
    key: ServerKey,
    settings: AuthSettings,
) -> Started:
    """A new session of this token, waiting for its claim; expired sessions are
    dropped, and the token's oldest ones beyond ``builder_sessions_per_token``."""
    now = utcnow()
    db.execute(delete(BuilderSession).where(BuilderSession.expires_at <= now))
    live = db.scalars(
        select(BuilderSession.id)
        .where(BuilderSession.token_id == token_id)
        .order_by(BuilderSession.created_at.desc(), BuilderSession.id)
    ).all()
    surplus = live[settings.builder_sessions_per_token - 1 :]
    if surplus:
        db.execute(delete(BuilderSession).where(BuilderSession.id.in_(surplus)))
    expires_at = now + timedelta(seconds=settings.builder_session_seconds)
    if token_expires_at is not None:
        expires_at = min(expires_at, token_expires_at)
    claim = CLAIM_PREFIX + secrets.token_urlsafe(32)
    row = BuilderSession(
        id=str(uuid.uuid4()),
        token_id=token_id,
        claim_hash=key.hash_token(claim),
        claim_expires_at=now + timedelta(seconds=CLAIM_SECONDS),
        created_at=now,
        expires_at=expires_at,
    )
    db.add(row)
    db.flush()
    return Started(row, claim)


def redeem(db: Session, claim: str, key: ServerKey) -> tuple[str, datetime] | None:
    """Trade a fresh, unused claim for the session's secret (and its expiry); None
    for any other claim. The secret is made here and stored only as a hash."""
    now = utcnow()
    row = db.scalar(
        select(BuilderSession)
        .where(BuilderSession.claim_hash.in_(key.token_hashes(claim)))
        .with_for_update()
    )
    if row is None or row.claim_expires_at is None or row.claim_expires_at <= now:
        return None
    if row.expires_at <= now:
        return None
    secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    row.session_hash = key.hash_token(secret)
    row.claim_hash = None
    row.claim_expires_at = None
    db.flush()
    return secret, row.expires_at


def end(db: Session, session_id: str, token_id: str) -> bool:
    """End a session of this token; False if it has none by that id."""
    result = db.execute(
        delete(BuilderSession).where(
            BuilderSession.id == session_id, BuilderSession.token_id == token_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def end_by_secret(db: Session, secret: str, key: ServerKey) -> None:
    """End the session whose cookie this is, if it is one."""
    if secret.startswith(SESSION_PREFIX):
        db.execute(
            delete(BuilderSession).where(BuilderSession.session_hash.in_(key.token_hashes(secret)))
        )
