"""The request-signing scheme, shared by the server (``api.auth``) and the client.

    message   = "<token>:<timestamp>:<METHOD>:<path[?query]>:<hex sha256 of the body>"
    signature = hex(HMAC-SHA256(signing secret, message))

sent as ``X-Appforge-Timestamp`` (ISO 8601, UTC) and ``X-Appforge-Signature``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

TIMESTAMP_HEADER = "X-Appforge-Timestamp"
SIGNATURE_HEADER = "X-Appforge-Signature"


def message(token: str, timestamp: str, method: str, path: str, body_sha256: str) -> bytes:
    return f"{token}:{timestamp}:{method.upper()}:{path}:{body_sha256}".encode()


def sign(secret: str, token: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The signature of one request."""
    return sign_hashed(secret, token, timestamp, method, path, hashlib.sha256(body).hexdigest())


def sign_hashed(
    secret: str, token: str, timestamp: str, method: str, path: str, body_sha256: str
) -> str:
    """The signature of one request whose body's hex SHA-256 is ``body_sha256`` (a
    body sent in pieces is hashed as it is read, never held whole)."""
    return hmac.new(
        secret.encode(), message(token, timestamp, method, path, body_sha256), hashlib.sha256
    ).hexdigest()


def timestamp_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
