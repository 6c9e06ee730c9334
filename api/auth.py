"""API tokens, and the signatures of requests made with tokens that require them.

Tokens are created once, shown once, stored as a keyed hash: HMAC-SHA256 with
a key derived from the server key (``appforge.core.keys``), so a copy of the
database (or a backup) does not let anyone test guesses of an operator-chosen
``APPFORGE_ADMIN_TOKEN`` offline. Generated tokens are 256-bit random strings,
so a fast hash is enough: there is nothing a slow KDF would protect.

Tokens made before migration 0008 are stored with a plain SHA-256
(``hash_scheme = "sha256"``). They keep working: authentication also looks up
the legacy hash of the presented token, and on the first success stores its
keyed hash instead (only possible then, since that needs the token itself).
Hashes keyed with a previous server key (after a rotation) are looked up and
upgraded to the current key's the same way.
Signing secrets are stored encrypted with the server key.

Signed requests (HMAC-SHA256 with a timestamp), for tokens that require them:

A client holding a token and its signing secret sends, besides the token::

    X-Appforge-Timestamp: 2026-11-24T12:00:00Z
    X-Appforge-Signature: hex(HMAC-SHA256(secret, message))

    message = "<token>:<timestamp>:<METHOD>:<path[?query]>:<hex sha256 of the body>"

The server refuses (401) a missing signature (``SIGNATURE_REQUIRED``), a
timestamp more than five minutes from its clock (``SIGNATURE_EXPIRED``), a
signature that does not match (``SIGNATURE_INVALID``), and one it has already
accepted (``SIGNATURE_REPLAYED``). Accepted signatures are kept in the database
until their timestamp leaves the window, so every API process sees them.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.errors import AuthError
from api.tables import BuilderSession, Token, UsedSignature
from appforge.core.builder_cookie import SESSION_PREFIX
from appforge.core.db import transaction, utcnow
from appforge.core.keys import HMAC_SCHEME, LEGACY_SCHEME, ServerKey
from appforge.core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_hashed

PREFIX = "af_"
_TOUCH_EVERY = timedelta(minutes=1)


ROLES = ("admin", "editor", "viewer", "runner")


@dataclass(frozen=True)
class TokenSpec:
    """What a new token may do: its role, and optionally apps, origins, expiry, rate."""

    name: str
    role: str = "editor"
    apps: list[str] | None = None  # app uuids; None: every app
    origins: list[str] | None = None  # runner keys only; None: any
    expires_at: datetime | None = None
    rate_limit: str | None = None  # "60/minute"
    require_signature: bool = False


@dataclass(frozen=True)
class IssuedToken:
    """A token just made: its row, and the secrets shown once (never stored in clear)."""

    row: Token
    value: str
    signing_secret: str | None


def create_token(db: Session, spec: TokenSpec, key: ServerKey) -> IssuedToken:
    """Store a new token (its keyed hash); returns the row and the secret value.

    With ``require_signature`` the token also gets a signing secret, stored
    encrypted, and every request must be signed with it.
    """
    if spec.role not in ROLES:
        raise ValueError(f"unknown role {spec.role!r}")
    value = PREFIX + secrets.token_urlsafe(32)
    signing_secret = ("afs_" + secrets.token_urlsafe(32)) if spec.require_signature else None
    token = Token(
        id=str(uuid.uuid4()),
        name=spec.name,
        token_hash=key.hash_token(value),
        hash_scheme=HMAC_SCHEME,
        prefix=value[:10],
        role=spec.role,
        apps=spec.apps,
        origins=spec.origins,
        expires_at=spec.expires_at,
        rate_limit=spec.rate_limit,
        require_signature=spec.require_signature,
        signing_secret=key.encrypt(signing_secret) if signing_secret is not None else None,
        created_at=utcnow(),
    )
    db.add(token)
    db.flush()
    return IssuedToken(token, value, signing_secret)


def _matching(key: ServerKey, value: str) -> Any:
    """The WHERE clause finding a token by its keyed hash (with the current or a
    previous server key), or by its legacy hash."""
    return or_(
        Token.token_hash.in_(key.token_hashes(value)),
        and_(Token.token_hash == key.legacy_hash(value), Token.hash_scheme == LEGACY_SCHEME),
    )


def ensure_admin_token(
    factory: sessionmaker[Session], value: str, name: str, key: ServerKey
) -> None:
    """Make sure an admin token with this exact value exists (``APPFORGE_ADMIN_TOKEN``),
    stored with its keyed hash (a legacy SHA-256 row of it is upgraded).

    Several processes starting at once on a new database (``serve --workers N``, API
    and worker containers) may all find no row and insert it: the losers' inserts
    break the unique hash, and they look again, finding the winner's row."""
    try:
        _ensure_admin_token(factory, value, name, key)
    except IntegrityError:
        _ensure_admin_token(factory, value, name, key)


def _ensure_admin_token(
    factory: sessionmaker[Session], value: str, name: str, key: ServerKey
) -> None:
    with transaction(factory) as db:
        existing = db.scalar(select(Token).where(_matching(key, value)))
        if existing is not None:
            existing.token_hash, existing.hash_scheme = key.hash_token(value), HMAC_SCHEME
            existing.revoked_at = None
            existing.role = "admin"
            existing.apps = existing.origins = existing.expires_at = None
            return
        db.add(
            Token(
                id=str(uuid.uuid4()),
                name=name,
                token_hash=key.hash_token(value),
                hash_scheme=HMAC_SCHEME,
                prefix=value[:10],
                role="admin",
                created_at=utcnow(),
            )
        )


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a live token, as authentication found it."""

    id: str
    name: str
    role: str
    apps: frozenset[str] | None  # None: every app
    origins: frozenset[str] | None  # None: any
    rate_limit: str | None
    expires_at: datetime | None
    require_signature: bool
    signing_secret: str | None
    # Set when the request presents a builder session (``api.builder_sessions``)
    # standing for this token, rather than the token itself.
    session_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def may_use_app(self, app_uuid: str) -> bool:
        """Whether the token's app scope includes this app."""
        return self.apps is None or app_uuid in self.apps


class TokenCache:
    """Recently authenticated tokens by hash, for ``seconds`` (0: no cache).

    A revocation takes effect at once (:meth:`clear`), in this process and, on
    PostgreSQL, in every other one (``appforge.core.invalidation`` calls it there);
    ``seconds`` only bounds how long a process that missed that notification may
    still answer from here.
    """

    def __init__(
        self, seconds: float, *, size: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.size = size
        self.clock = clock
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        """The principal, if it was looked up less than ``seconds`` ago."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if self.clock() - entry[0] >= self.seconds:
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()  # simple and bounded; the next requests refill it
            self._entries[digest] = (self.clock(), principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def authenticate(factory: sessionmaker[Session], value: str, key: ServerKey) -> Principal | None:
    """The token with this value unless revoked, or None: one indexed query (and, at
    most once a minute per token, an update of its ``last_used_at``; once, the
    upgrade of a legacy hash). Whether it has expired is the caller's check
    (``Principal.expired``), also for cached ones. A builder session's secret
    (``afb_...``) authenticates as the token that signed in, until it ends."""
    if value.startswith(SESSION_PREFIX):
        return _session_principal(factory, value, key)
    with factory() as db:
        row = db.execute(select(*_PRINCIPAL_COLUMNS).where(_matching(key, value))).first()
        if row is None or row.revoked_at is not None:
            return None
        now = utcnow()
        changes: dict[str, Any] = {}
        digest = key.hash_token(value)
        if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
            changes["last_used_at"] = now
        if row.hash_scheme != HMAC_SCHEME or row.token_hash != digest:
            # A legacy hash, or one keyed with a previous server key: store the current.
            changes.update(token_hash=digest, hash_scheme=HMAC_SCHEME, last_used_at=now)
        if changes:
            db.execute(update(Token).where(Token.id == row.id).values(**changes))
            db.commit()
    return _principal(row, key, row.expires_at)


def _session_principal(
    factory: sessionmaker[Session], value: str, key: ServerKey
) -> Principal | None:
    """The token a live builder session stands for; it expires with the session."""
    now = utcnow()
    with factory() as db:
        row = db.execute(
            select(*_PRINCIPAL_COLUMNS, BuilderSession.id.label("session_id"),
                   BuilderSession.expires_at.label("session_expires_at"))
            .join(BuilderSession, BuilderSession.token_id == Token.id)
            .where(BuilderSession.session_hash.in_(key.token_hashes(value)))
            .where(BuilderSession.expires_at > now)
        ).first()  # fmt: skip
    if row is None or row.revoked_at is not None:
        return None
    ends = [t for t in (row.expires_at, row.session_expires_at) if t is not None]
    return _principal(row, key, min(ends), session_id=row.session_id)


_PRINCIPAL_COLUMNS = (
    Token.id,
    Token.name,
    Token.role,
    Token.apps,
    Token.origins,
    Token.expires_at,
    Token.rate_limit,
    Token.require_signature,
    Token.signing_secret,
    Token.hash_scheme,
    Token.token_hash,
    Token.last_used_at,
    Token.revoked_at,
)


def list_tokens(db: Session) -> list[Token]:
    return list(db.scalars(select(Token).order_by(Token.created_at)))


def revoke_token(
    db: Session, token_id: str, on_revoke: Callable[[Token], None] | None = None
) -> Token | None:
    """Revoke by id (or by the token's shown prefix); None if no such token.

    ``on_revoke`` is called (in ``db``'s transaction) only if the token was live.
    """
    token = db.get(Token, token_id) or db.scalar(select(Token).where(Token.prefix == token_id))
    if token is None:
        return None
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        if on_revoke is not None:
            on_revoke(token)
    db.flush()
    return token


# --- signed requests ----------------------------------------------------------

WINDOW = timedelta(minutes=5)


def _fail(code: str, text: str) -> AuthError:
    return AuthError(text, code=code, headers={"WWW-Authenticate": "Token"})


def verify_signature(
    factory: sessionmaker[Session],
    *,
    secret: str,
    token: str,
    timestamp: str | None,
    signature: str | None,
    method: str,
    path: str,
    body_sha256: str,
    now: datetime | None = None,
) -> None:
    """Raise AuthError unless the signature is good, fresh and not seen before."""
    if not timestamp or not signature:
        raise _fail(
            "SIGNATURE_REQUIRED",
            f"this token requires signed requests: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}",
        )
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError:
        raise _fail("SIGNATURE_INVALID", f"{TIMESTAMP_HEADER} is not ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    if abs(now - when) > WINDOW:
        raise _fail(
            "SIGNATURE_EXPIRED",
            "the request timestamp is more than 5 minutes from the server's clock",
        )
    expected = sign_hashed(secret, token, timestamp, method, path, body_sha256)
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise _fail("SIGNATURE_INVALID", "the request signature does not match")
    try:
        with factory() as db, db.begin():
            db.execute(delete(UsedSignature).where(UsedSignature.expires_at < now))
            db.add(UsedSignature(signature=expected, expires_at=when + WINDOW))
    except IntegrityError:
        raise _fail("SIGNATURE_REPLAYED", "this signature was already used") from None


def _principal(
    row: Any, key: ServerKey, expires_at: datetime | None, session_id: str | None = None
) -> Principal:
    """The caller a token row (or a builder session's token row) stands for."""
    return Principal(
        id=row.id,
        name=row.name,
        role=row.role,
        apps=frozenset(row.apps) if row.apps is not None else None,
        origins=frozenset(row.origins) if row.origins is not None else None,
        rate_limit=row.rate_limit,
        expires_at=expires_at,
        require_signature=row.require_signature,
        signing_secret=key.decrypt(row.signing_secret) if row.signing_secret else None,
        session_id=session_id,
    )
