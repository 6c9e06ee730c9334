"""Dependencies shared by the routers: the database session and the caller's token.

Which callers a route admits is declared with a rule of ``api.access``; this
module only finds out who the caller is (``Who``: as the audit log names it).

Failed authentications are counted per client address (``authfail:<address>``
in ``api.ratelimit``): once an address has used up
``APPFORGE_RATE_LIMIT__AUTH_FAILURES``, its requests with a key are 429 before
the key is looked at, so keys cannot be guessed at speed. A known key is then
counted in its own bucket, at its ``rate_limit`` or the server's rate.

Authentication runs on the event loop when the token was looked up recently
(``APPFORGE_AUTH__CACHE_SECONDS``) and in the thread pool otherwise, so an
authenticated request costs no database round trip and no thread hop in the
common case.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.audit import Actor
from api.auth import Principal, authenticate, verify_signature
from api.errors import AuthError, ForbiddenError
from api.middleware import BODY_SHA256
from api.proxies import client_address, client_key
from api.ratelimit import Rate, RateLimitedError, note
from api.state import ApiState, api_state
from appforge.core import signing
from appforge.core.db import unavailable, utcnow


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
    if not (request.headers.get("authorization") or request.headers.get("x-api-key")):
        return None
    state = api_state(request)
    await _refuse_failing_address(request, state)
    try:
        principal = await _principal(request, state)
    except AuthError:
        await _count_failure(request, state)
        raise
    if principal is None:
        return None
    origin = request.headers.get("origin")
    if principal.origins is not None and origin is not None and origin not in principal.origins:
        raise ForbiddenError(
            f"this key may not be used from the origin {origin}",
            code="ORIGIN_FORBIDDEN",
            details={"origin": origin},
        )
    # What the CORS middleware needs to know of the key (api.cors).
    request.state.key_origins = principal.origins
    request.state.key_apps = principal.apps
    await _count_request(request, state, principal)
    return principal


async def _principal(request: Request, state: ApiState) -> Principal | None:
    """The live token the request presents (None: it presents none); 401 otherwise."""
    value = presented_token(request)
    if value is None:
        return None
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
    return principal


def _failure_bucket(request: Request, state: ApiState) -> tuple[str, Rate]:
    return "authfail:" + client_key(request), Rate.of(state.settings.rate_limit.auth_failures)


async def _refuse_failing_address(request: Request, state: ApiState) -> None:
    """429 if this address has failed to authenticate too often (counts nothing)."""
    if state.limiter is None:
        return
    key, rate = _failure_bucket(request, state)
    decision = await state.limiter.hit(key, rate, cost=0)
    if decision is not None and not decision.allowed:
        raise RateLimitedError(
            decision,
            f"too many failed authentications from this address: retry after "
            f"{decision.retry_after} s",
        )


async def _count_failure(request: Request, state: ApiState) -> None:
    if state.limiter is not None:
        key, rate = _failure_bucket(request, state)
        await state.limiter.hit(key, rate)


async def _count_request(request: Request, state: ApiState, principal: Principal) -> None:
    """Count the request in the key's bucket: its own ``rate_limit``, or the server's."""
    if state.limiter is None:
        return
    rate = Rate.of(principal.rate_limit) if principal.rate_limit else None
    decision = await state.limiter.hit("token:" + principal.id, rate)
    if decision is None:
        return
    note(request.scope.setdefault("state", {}), decision)
    if not decision.allowed:
        raise RateLimitedError(decision)


async def optional_token(
    request: Request, token: Annotated[Principal | None, Depends(_known_token)]
) -> Principal | None:
    """The caller's token, if any; its request signature checked when it requires one.
    Routes do not take this directly but one of the rules of ``api.access``."""
    if token is None or not token.require_signature:
        return token
    # The body is hashed as it arrives (api.middleware); a route whose parameters
    # have not read it yet (no body parameters) has it read here.
    if BODY_SHA256 not in request.scope.get("state", {}):
        await request.body()
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
        body_sha256=request.scope["state"][BODY_SHA256],
    )
    return token


async def token_unless_database_away(request: Request) -> Principal | None:
    """The caller's token as :func:`optional_token` finds it, or None when looking it up
    needs the database and the database is away (readiness: its own answer names the
    database then, rather than the lookup's 503)."""
    try:
        return await optional_token(request, await _known_token(request))
    except DBAPIError as exc:
        if unavailable(exc) is None:
            raise
        return None


async def _current_actor(
    request: Request, token: Annotated[Principal | None, Depends(optional_token)]
) -> Actor:
    # The same ``optional_token`` as the route's access rule: FastAPI resolves it
    # once per request, so this is no second lookup (nor a second signature check).
    return Actor.of(token, client_address(request))


# Who calls a route, for ``api.audit.record``; the route's access rule decides who may.
Who = Annotated[Actor, Depends(_current_actor)]
