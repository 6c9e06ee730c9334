"""Dependencies shared by the routers: the database session and the caller's token.

Which callers a route admits is declared with a rule of ``api.access``; this
module only finds out who the caller is (``Who``: as the audit log names it).

Authentication runs on the event loop when the token was looked up recently
(``APPFORGE_AUTH__CACHE_SECONDS``) and in the thread pool otherwise, so an
authenticated request costs no database round trip and no thread hop in the
common case.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.audit import Actor, client_address
from api.auth import Principal, authenticate, verify_signature
from api.errors import AuthError, ForbiddenError
from api.state import api_state
from appforge.core import signing
from appforge.core.db import utcnow


def get_db(request: Request) -> Iterator[Session]:
    with api_state(request).db() as session:
        yield session


DbSession = Annotated[Session, Depends(get_db)]

_SCHEMES = ("token", "bearer")


def presented_token(request: Request) -> str | None:
    """The token the client sent: ``Authorization: Token|Bearer <t>`` or ``X-API-Key``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() not in _SCHEMES or not value.strip():
            raise AuthError(
                "Authorization must be 'Token <token>' or 'Bearer <token>'",
                code="AUTH_INVALID",
                headers={"WWW-Authenticate": "Token"},
            )
        return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


async def _known_token(request: Request) -> Principal | None:
    value = presented_token(request)
    if value is None:
        return None
    state = api_state(request)
    digest = state.key.hash_token(value)
    principal = state.tokens.get(digest)
    if principal is None:
        principal = await run_in_threadpool(authenticate, state.db, value, state.key)
        if principal is None:
            raise AuthError(
                "the token is unknown or revoked",
                code="TOKEN_INVALID",
                headers={"WWW-Authenticate": "Token"},
            )
        state.tokens.put(digest, principal)
    if principal.expired(utcnow()):
        raise AuthError(
            "the token has expired",
            code="TOKEN_EXPIRED",
            headers={"WWW-Authenticate": "Token"},
        )
    origin = request.headers.get("origin")
    if principal.origins is not None and origin is not None and origin not in principal.origins:
        raise ForbiddenError(
            f"this key may not be used from the origin {origin}",
            code="ORIGIN_FORBIDDEN",
            details={"origin": origin},
        )
    return principal


async def optional_token(
    request: Request, token: Annotated[Principal | None, Depends(_known_token)]
) -> Principal | None:
    """The caller's token, if any; its request signature checked when it requires one.
    Routes do not take this directly but one of the rules of ``api.access``."""
    if token is None or not token.require_signature:
        return token
    body = await request.body()
    query = request.url.query
    await run_in_threadpool(
        verify_signature,
        api_state(request).db,
        secret=token.signing_secret or "",
        token=presented_token(request) or "",
        timestamp=request.headers.get(signing.TIMESTAMP_HEADER),
        signature=request.headers.get(signing.SIGNATURE_HEADER),
        method=request.method,
        path=request.url.path + (f"?{query}" if query else ""),
        body=body,
    )
    return token


async def _current_actor(
    request: Request, token: Annotated[Principal | None, Depends(optional_token)]
) -> Actor:
    # The same ``optional_token`` as the route's access rule: FastAPI resolves it
    # once per request, so this is no second lookup (nor a second signature check).
    return Actor.of(token, client_address(request))


# Who calls a route, for ``api.audit.record``; the route's access rule decides who may.
Who = Annotated[Actor, Depends(_current_actor)]
