"""Builder sign-ins: start and end them (API), and the browser's cookie (see
``api.builder_sessions`` for the whole exchange).

- ``POST /api/builder/sessions``: the builder, with the token typed in, starts a
  session and gets a one-time claim;
- ``DELETE /api/builder/sessions/{id}`` (``current``: the one the request is
  made with): sign-out;
- ``POST /builder/session`` (form field ``claim``): the browser trades the claim
  for the http-only cookie; ``POST /builder/session/end`` clears the cookie.
  These two are the browser's, not the API's: no token, not in the OpenAPI
  document, and refused when another site's page sends them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request, Response, status
from pydantic import BaseModel, Field

from api import builder_sessions
from api.access import AnyToken
from api.deps import DbSession
from api.errors import ForbiddenError, NotFoundError
from api.state import State
from appforge.core.db import utcnow
from appforge.core.invalidation import TOKENS

router = APIRouter(tags=["builder"])

CURRENT = "current"


class BuilderSessionCreated(BaseModel):
    id: str
    claim: str = Field(
        description="One-time: the browser posts it to `POST /builder/session` within "
        f"{builder_sessions.CLAIM_SECONDS} seconds to get the session's http-only cookie."
    )
    expires_at: datetime
    cookie: str = Field(description="The name of the cookie the session will be in.")


def _cookie(request: Request) -> str:
    return builder_sessions.cookie_name(request.url.port)


@router.post(
    "/api/builder/sessions",
    response_model=BuilderSessionCreated,
    status_code=status.HTTP_201_CREATED,
)
def create_builder_session_route(
    request: Request, token: AnyToken, db: DbSession, state: State
) -> BuilderSessionCreated:
    """Start a builder sign-in of the calling token: a one-time claim the browser trades
    for an http-only cookie. Not with a builder session itself, nor with a token that
    requires signed requests (a browser cannot sign them): 403."""
    if token.session_id is not None or token.require_signature:
        raise ForbiddenError(
            "a builder session is started with a token that does not require signatures",
            code="BUILDER_SESSION_FORBIDDEN",
        )
    started = builder_sessions.start(db, token.id, token.expires_at, state.key, state.settings.auth)
    db.commit()
    return BuilderSessionCreated(
        id=started.row.id,
        claim=started.claim,
        expires_at=started.row.expires_at,
        cookie=_cookie(request),
    )


@router.delete("/api/builder/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
def end_builder_session_route(
    session_id: str, token: AnyToken, db: DbSession, state: State
) -> None:
    """End a builder sign-in of the calling token (sign-out); ``current`` is the one this
    request is made with. 404 for any other id."""
    if session_id == CURRENT:
        if token.session_id is None:
            raise NotFoundError(
                "this request is not made with a builder session",
                code="BUILDER_SESSION_NOT_FOUND",
            )
        session_id = token.session_id
    if not builder_sessions.end(db, session_id, token.id):
        raise NotFoundError(
            f"no builder session '{session_id}' of this token", code="BUILDER_SESSION_NOT_FOUND"
        )
    db.commit()
    state.invalidation.publish(TOKENS)  # its secret may be cached as a principal


def _same_site(request: Request) -> None:
    """Refuse a form another site's page posts (login CSRF): its ``Origin`` host must
    be this server's (any port: the builder is on another one)."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    if urlsplit(origin).hostname != request.url.hostname:
        raise ForbiddenError(
            f"the origin {origin} may not sign in to this server's builder",
            code="ORIGIN_FORBIDDEN",
            details={"origin": origin},
        )


@router.post("/builder/session", include_in_schema=False, status_code=204)
def claim_builder_session_route(
    request: Request,
    db: DbSession,
    state: State,
    claim: Annotated[str, Form(max_length=200)],
) -> Response:
    """The browser trades a claim for the session cookie; 404 for a used, expired or
    unknown claim."""
    _same_site(request)
    redeemed = builder_sessions.redeem(db, claim, state.key)
    if redeemed is None:
        raise NotFoundError(
            "the sign-in claim is unknown, used or expired: sign in again",
            code="BUILDER_SESSION_NOT_FOUND",
        )
    db.commit()
    secret, expires_at = redeemed
    response = Response(status_code=204)
    response.set_cookie(
        _cookie(request),
        secret,
        max_age=max(1, int((expires_at - utcnow()).total_seconds())),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/builder/session/end", include_in_schema=False, status_code=204)
def clear_builder_session_route(request: Request, db: DbSession, state: State) -> Response:
    """Sign-out in the browser: the cookie's session ends and the cookie is cleared."""
    _same_site(request)
    name = _cookie(request)
    secret = request.cookies.get(name)
    if secret:
        builder_sessions.end_by_secret(db, secret, state.key)
        db.commit()
        state.invalidation.publish(TOKENS)
    response = Response(status_code=204)
    response.delete_cookie(
        name, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    response.headers["Cache-Control"] = "no-store"
    return response
