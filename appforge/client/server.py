"""The server itself: its health, its model backends, and API tokens.

Each operation is written once (a generator, see ``calls``); ``ServerMethods`` is
its face on ``Client`` and ``AsyncServerMethods`` on ``AsyncClient``.
"""

from __future__ import annotations

from appforge.client.calls import AsyncDriven, Call, Op, SyncDriven, many, one
from appforge.client.models import Health, ModelsInfo, NewToken, TokenInfo

# --- operations -------------------------------------------------------------------------


def _health() -> Op[Health]:
    r = yield Call("GET", "/api/health")
    return one(Health, r)


def _list_models(timeout: float | None) -> Op[ModelsInfo]:
    params = {"timeout": timeout} if timeout is not None else None
    r = yield Call("GET", "/api/models", params=params)
    return one(ModelsInfo, r)


def _me() -> Op[TokenInfo]:
    r = yield Call("GET", "/api/tokens/me")
    return one(TokenInfo, r)


def _create_token(name: str, is_admin: bool, signed: bool) -> Op[NewToken]:
    body = {"name": name, "is_admin": is_admin, "require_signature": signed}
    r = yield Call("POST", "/api/tokens", json=body)
    return one(NewToken, r)


def _list_tokens() -> Op[list[TokenInfo]]:
    r = yield Call("GET", "/api/tokens")
    return many(TokenInfo, r)


def _revoke_token(token_id: str) -> Op[None]:
    yield Call("DELETE", f"/api/tokens/{token_id}")


# --- Client -----------------------------------------------------------------------------


class ServerMethods(SyncDriven):
    """Health, models and tokens on ``Client``."""

    def health(self) -> Health:
        """Whether the server is up: its status, version and database."""
        return self._drive(_health())

    def list_models(self, timeout: float | None = None) -> ModelsInfo:
        """The model aliases and providers, each with whether it answers now."""
        return self._drive(_list_models(timeout))

    def me(self) -> TokenInfo:
        """The token this client authenticates with."""
        return self._drive(_me())

    def create_token(self, name: str, *, is_admin: bool = False, signed: bool = False) -> NewToken:
        """A new token (admin only); ``signed``: its requests must carry a signature.

        The answer is the only one that carries the token's secret (and signing key).
        """
        return self._drive(_create_token(name, is_admin, signed))

    def list_tokens(self) -> list[TokenInfo]:
        """Every token (admin only); secrets are never shown."""
        return self._drive(_list_tokens())

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token (admin only); it stops working at once."""
        return self._drive(_revoke_token(token_id))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncServerMethods(AsyncDriven):
    """Health, models and tokens on ``AsyncClient``."""

    async def health(self) -> Health:
        """Whether the server is up: its status, version and database."""
        return await self._drive(_health())

    async def list_models(self, timeout: float | None = None) -> ModelsInfo:
        """The model aliases and providers, each with whether it answers now."""
        return await self._drive(_list_models(timeout))

    async def me(self) -> TokenInfo:
        """The token this client authenticates with."""
        return await self._drive(_me())

    async def create_token(
        self, name: str, *, is_admin: bool = False, signed: bool = False
    ) -> NewToken:
        """A new token (admin only); ``signed``: its requests must carry a signature.

        The answer is the only one that carries the token's secret (and signing key).
        """
        return await self._drive(_create_token(name, is_admin, signed))

    async def list_tokens(self) -> list[TokenInfo]:
        """Every token (admin only); secrets are never shown."""
        return await self._drive(_list_tokens())

    async def revoke_token(self, token_id: str) -> None:
        """Revoke a token (admin only); it stops working at once."""
        return await self._drive(_revoke_token(token_id))
