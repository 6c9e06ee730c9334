"""Dependencies shared by the routers: the database session and the caller's token.

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

from api.auth import Principal, authenticate, hash_token, verify_signature
from api.errors import AuthError, ForbiddenError
from api.state import api_state
from appforge.core import signing


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
    digest = hash_token(value)
    principal = state.tokens.get(digest)
    if principal is None:
        principal = await run_in_threadpool(authenticate, state.db, value)
        if principal is None:
            raise AuthError(
                "the token is unknown or revoked",
                code="TOKEN_INVALID",
                headers={"WWW-Authenticate": "Token"},
            )
        state.tokens.put(digest, principal)
    return principal


async def optional_token(
    request: Request, token: Annotated[Principal | None, Depends(_known_token)]
) -> Principal | None:
    """The caller's token, if any; its request signature checked when it requires one."""
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


async def current_token(
    token: Annotated[Principal | None, Depends(optional_token)],
) -> Principal:
    if token is None:
        raise AuthError(
            "this endpoint needs a token: send 'Authorization: Token <token>'",
            headers={"WWW-Authenticate": "Token"},
        )
    return token


async def admin_token(token: Annotated[Principal, Depends(current_token)]) -> Principal:
    if not token.is_admin:
        raise ForbiddenError("this needs an admin token")
    return token


OptionalToken = Annotated[Principal | None, Depends(optional_token)]
CurrentToken = Annotated[Principal, Depends(current_token)]
AdminToken = Annotated[Principal, Depends(admin_token)]
