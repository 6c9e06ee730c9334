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


def message(token: str, timestamp: str, method: str, path: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{token}:{timestamp}:{method.upper()}:{path}:{digest}".encode()


def sign(secret: str, token: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The signature of one request."""
    return hmac.new(
        secret.encode(), message(token, timestamp, method, path, body), hashlib.sha256
    ).hexdigest()


def timestamp_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
