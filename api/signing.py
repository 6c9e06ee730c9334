"""Request signing (HMAC-SHA256 with a timestamp), for tokens that require it.

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
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.errors import AuthError
from api.models import UsedSignature
from appforge.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WINDOW", "verify"]

WINDOW = timedelta(minutes=5)


def _fail(code: str, text: str) -> AuthError:
    return AuthError(text, code=code, headers={"WWW-Authenticate": "Token"})


def verify(
    factory: sessionmaker[Session],
    *,
    secret: str,
    token: str,
    timestamp: str | None,
    signature: str | None,
    method: str,
    path: str,
    body: bytes,
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
    expected = sign(secret, token, timestamp, method, path, body)
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise _fail("SIGNATURE_INVALID", "the request signature does not match")
    try:
        with factory() as db, db.begin():
            db.execute(delete(UsedSignature).where(UsedSignature.expires_at < now))
            db.add(UsedSignature(signature=expected, expires_at=when + WINDOW))
    except IntegrityError:
        raise _fail("SIGNATURE_REPLAYED", "this signature was already used") from None
