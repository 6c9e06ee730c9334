"""The server itself: its health, its model backends, and API tokens.

Each operation is written once (a generator, see ``calls``); ``ServerMethods`` is
its face on ``Client`` and ``AsyncServerMethods`` on ``AsyncClient``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from appforge.client.calls import AsyncDriven, Call, Op, SyncDriven, given, many, one
from appforge.client.models import (
    BuilderSession,
    Health,
    ModelsInfo,
    NewToken,
    Readiness,
    TokenInfo,
)

TokenRole = Literal["admin", "editor", "viewer", "runner"]

# --- operations -------------------------------------------------------------------------


def _health() -> Op[Health]:
    r = yield Call("GET", "/api/health")
    return one(Health, r)


def _ready() -> Op[Readiness]:
    r = yield Call("GET", "/api/health/ready")
    return one(Readiness, r)


def _list_models(timeout: float | None) -> Op[ModelsInfo]:
    params = {"timeout": timeout} if timeout is not None else None
    r = yield Call("GET", "/api/models", params=params)
    return one(ModelsInfo, r)


def _me() -> Op[TokenInfo]:
    r = yield Call("GET", "/api/tokens/me")
    return one(TokenInfo, r)


@dataclass(frozen=True)
class _TokenRequest:
    """What ``create_token`` asks for."""

    name: str
    role: TokenRole | None
    apps: Sequence[str] | None
    origins: Sequence[str] | None
    expires_at: datetime | None
    rate_limit: str | None
    signed: bool
    is_admin: bool | None

    def body(self) -> dict[str, Any]:
        role = self.role
        if self.is_admin is not None:  # the older flag: admin, or else editor
            legacy: TokenRole = "admin" if self.is_admin else "editor"
            if role is not None and role != legacy:
                raise ValueError("give a role or is_admin, not both")
            role = legacy
        body = given(
            role=role,
            apps=None if self.apps is None else list(self.apps),
            origins=None if self.origins is None else list(self.origins),
            expires_at=None if self.expires_at is None else self.expires_at.isoformat(),
            rate_limit=self.rate_limit,
        )
        return {"name": self.name, **body, "require_signature": self.signed}


def _create_token(request: _TokenRequest) -> Op[NewToken]:
    body = request.body()
    r = yield Call("POST", "/api/tokens", json=body)
    return one(NewToken, r)


def _list_tokens() -> Op[list[TokenInfo]]:
    r = yield Call("GET", "/api/tokens")
    return many(TokenInfo, r)


def _revoke_token(token_id: str) -> Op[None]:
    yield Call("DELETE", f"/api/tokens/{token_id}")


def _create_builder_session() -> Op[BuilderSession]:
    r = yield Call("POST", "/api/builder/sessions")
    return one(BuilderSession, r)


def _end_builder_session(session_id: str) -> Op[None]:
    yield Call("DELETE", f"/api/builder/sessions/{session_id}")


# --- Client -----------------------------------------------------------------------------


class ServerMethods(SyncDriven):
    """Health, models and tokens on ``Client``."""

    def health(self) -> Health:
        """Whether the server is up: its status, version and database."""
        return self._drive(_health())

    def ready(self) -> Readiness:
        """Whether the server can serve now: every check passed. A server that is not
        ready raises :class:`ApiError` 503 ``NOT_READY`` (``details["checks"]``)."""
        return self._drive(_ready())

    def list_models(self, timeout: float | None = None) -> ModelsInfo:
        """The model aliases and providers, each with whether it answers now."""
        return self._drive(_list_models(timeout))

    def me(self) -> TokenInfo:
        """The token this client authenticates with."""
        return self._drive(_me())

    def create_token(
        self,
        name: str,
        *,
        role: TokenRole | None = None,
        apps: Sequence[str] | None = None,
        origins: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        rate_limit: str | None = None,
        signed: bool = False,
        is_admin: bool | None = None,
    ) -> NewToken:
        """A new token (admin only): its ``role`` (admin, editor (the server's default),
        viewer or runner), the ``apps`` (uuids or names) it is narrowed to, the browser
        ``origins`` a runner key may be used from, when it ``expires_at``, its own
        ``rate_limit`` ("60/minute"); ``signed``: its requests must carry a signature.
        ``is_admin`` is the older way to say role admin (True) or editor (False).

        The answer is the only one that carries the token's secret (and signing key).
        """
        asked = _TokenRequest(name, role, apps, origins, expires_at, rate_limit, signed, is_admin)
        return self._drive(_create_token(asked))

    def list_tokens(self) -> list[TokenInfo]:
        """Every token (admin only); secrets are never shown."""
        return self._drive(_list_tokens())

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token (admin only); it stops working at once."""
        return self._drive(_revoke_token(token_id))

    def create_builder_session(self) -> BuilderSession:
        """Start a builder sign-in of this client's token: a one-time claim a browser
        trades for an http-only session cookie (``POST /builder/session``)."""
        return self._drive(_create_builder_session())

    def end_builder_session(self, session_id: str = "current") -> None:
        """End a builder sign-in of this token (``current``: the one this client
        authenticates with)."""
        return self._drive(_end_builder_session(session_id))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncServerMethods(AsyncDriven):
    """Health, models and tokens on ``AsyncClient``."""

    async def health(self) -> Health:
        """Whether the server is up: its status, version and database."""
        return await self._drive(_health())

    async def ready(self) -> Readiness:
        """Whether the server can serve now: every check passed. A server that is not
        ready raises :class:`ApiError` 503 ``NOT_READY`` (``details["checks"]``)."""
        return await self._drive(_ready())

    async def list_models(self, timeout: float | None = None) -> ModelsInfo:
        """The model aliases and providers, each with whether it answers now."""
        return await self._drive(_list_models(timeout))

    async def me(self) -> TokenInfo:
        """The token this client authenticates with."""
        return await self._drive(_me())

    async def create_token(
        self,
        name: str,
        *,
        role: TokenRole | None = None,
        apps: Sequence[str] | None = None,
        origins: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        rate_limit: str | None = None,
        signed: bool = False,
        is_admin: bool | None = None,
    ) -> NewToken:
        """A new token (admin only): its ``role`` (admin, editor (the server's default),
        viewer or runner), the ``apps`` (uuids or names) it is narrowed to, the browser
        ``origins`` a runner key may be used from, when it ``expires_at``, its own
        ``rate_limit`` ("60/minute"); ``signed``: its requests must carry a signature.
        ``is_admin`` is the older way to say role admin (True) or editor (False).

        The answer is the only one that carries the token's secret (and signing key).
        """
        asked = _TokenRequest(name, role, apps, origins, expires_at, rate_limit, signed, is_admin)
        return await self._drive(_create_token(asked))

    async def list_tokens(self) -> list[TokenInfo]:
        """Every token (admin only); secrets are never shown."""
        return await self._drive(_list_tokens())

    async def revoke_token(self, token_id: str) -> None:
        """Revoke a token (admin only); it stops working at once."""
        return await self._drive(_revoke_token(token_id))

    async def create_builder_session(self) -> BuilderSession:
        """Start a builder sign-in of this client's token: a one-time claim a browser
        trades for an http-only session cookie (``POST /builder/session``)."""
        return await self._drive(_create_builder_session())

    async def end_builder_session(self, session_id: str = "current") -> None:
        """End a builder sign-in of this token (``current``: the one this client
        authenticates with)."""
        return await self._drive(_end_builder_session(session_id))
