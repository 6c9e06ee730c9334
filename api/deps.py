"""Dependencies shared by the routers: the database session and the caller's token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import authenticate, verify_signature
from api.errors import AuthError, ForbiddenError
from api.tables import Token
from appforge.core import signing


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.db() as session:
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


def _known_token(request: Request, db: DbSession) -> Token | None:
    value = presented_token(request)
    if value is None:
        return None
    token = authenticate(db, value)
    # End the read transaction now: a streamed run must not hold a connection.
    db.commit()
    if token is None:
        raise AuthError(
            "the token is unknown or revoked",
            code="TOKEN_INVALID",
            headers={"WWW-Authenticate": "Token"},
        )
    return token


async def optional_token(
    request: Request, token: Annotated[Token | None, Depends(_known_token)]
) -> Token | None:
    """The caller's token, if any; its request signature checked when it requires one."""
    if token is None or not token.require_signature:
        return token
    body = await request.body()
    query = request.url.query
    await run_in_threadpool(
        verify_signature,
        request.app.state.db,
        secret=token.signing_secret or "",
        token=presented_token(request) or "",
        timestamp=request.headers.get(signing.TIMESTAMP_HEADER),
        signature=request.headers.get(signing.SIGNATURE_HEADER),
        method=request.method,
        path=request.url.path + (f"?{query}" if query else ""),
        body=body,
    )
    return token


def current_token(token: Annotated[Token | None, Depends(optional_token)]) -> Token:
    if token is None:
        raise AuthError(
            "this endpoint needs a token: send 'Authorization: Token <token>'",
            headers={"WWW-Authenticate": "Token"},
        )
    return token


def admin_token(token: Annotated[Token, Depends(current_token)]) -> Token:
    if not token.is_admin:
        raise ForbiddenError("this needs an admin token")
    return token


OptionalToken = Annotated[Token | None, Depends(optional_token)]
CurrentToken = Annotated[Token, Depends(current_token)]
AdminToken = Annotated[Token, Depends(admin_token)]
