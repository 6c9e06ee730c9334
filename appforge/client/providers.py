"""Model providers and aliases (changes: admin tokens only): OpenAI-compatible servers
stored on the server, a connection test, and the aliases apps name their models by.

Each operation is written once (a generator, see ``calls``); ``ProviderMethods`` is
its face on ``Client`` and ``AsyncProviderMethods`` on ``AsyncClient``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote

from appforge.client.calls import AsyncDriven, Call, Op, SyncDriven, given, many, one
from appforge.client.models import AliasConfig, ProviderConfig, ProviderTest

# --- operations -------------------------------------------------------------------------


def _path(name: str) -> str:
    return f"/api/providers/{quote(name, safe='')}"


def _create_provider(
    name: str,
    base_url: str,
    api_key: str | None,
    models: Sequence[str] | None,
    headers: Mapping[str, str] | None,
) -> Op[ProviderConfig]:
    body = {"name": name, "base_url": base_url}
    body |= given(
        api_key=api_key,
        models=None if models is None else list(models),
        headers=None if headers is None else dict(headers),
    )
    r = yield Call("POST", "/api/providers", json=body)
    return one(ProviderConfig, r)


def _list_providers() -> Op[list[ProviderConfig]]:
    r = yield Call("GET", "/api/providers")
    return many(ProviderConfig, r)


def _get_provider(name: str) -> Op[ProviderConfig]:
    r = yield Call("GET", _path(name))
    return one(ProviderConfig, r)


def _update_provider(
    name: str,
    base_url: str | None,
    api_key: str | None,
    models: Sequence[str] | None,
    headers: Mapping[str, str] | None,
) -> Op[ProviderConfig]:
    body = given(
        base_url=base_url,
        api_key=api_key,
        models=None if models is None else list(models),
        headers=None if headers is None else dict(headers),
    )
    r = yield Call("PATCH", _path(name), json=body)
    return one(ProviderConfig, r)


def _delete_provider(name: str) -> Op[None]:
    yield Call("DELETE", _path(name))


def _test_provider(name: str, timeout: float | None) -> Op[ProviderTest]:
    params = {"timeout": timeout} if timeout is not None else None
    r = yield Call("POST", _path(name) + "/test", params=params)
    return one(ProviderTest, r)


def _list_model_aliases() -> Op[list[AliasConfig]]:
    r = yield Call("GET", "/api/models/aliases")
    return many(AliasConfig, r)


def _set_model_alias(alias: str, target: str) -> Op[AliasConfig]:
    path = f"/api/models/aliases/{quote(alias, safe='')}"
    r = yield Call("PUT", path, json={"target": target})
    return one(AliasConfig, r)


def _delete_model_alias(alias: str) -> Op[None]:
    yield Call("DELETE", f"/api/models/aliases/{quote(alias, safe='')}")


# --- Client -----------------------------------------------------------------------------


class ProviderMethods(SyncDriven):
    """Model providers and aliases on ``Client``."""

    def create_provider(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ProviderConfig:
        """Store an OpenAI-compatible server (its ``/v1`` URL) as provider ``name``; its models
        are then ``<name>:<model>``. The key and header values are never shown again."""
        return self._drive(_create_provider(name, base_url, api_key, models, headers))

    def list_providers(self) -> list[ProviderConfig]:
        """Every provider: built in, from the environment (read-only), and stored."""
        return self._drive(_list_providers())

    def get_provider(self, name: str) -> ProviderConfig:
        """One provider (the stored one of that name, else the settings')."""
        return self._drive(_get_provider(name))

    def update_provider(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ProviderConfig:
        """Change a stored provider; None is unchanged, ``api_key=""`` removes the key and
        ``headers={}`` the headers."""
        return self._drive(_update_provider(name, base_url, api_key, models, headers))

    def delete_provider(self, name: str) -> None:
        """Delete a stored provider (refused while a stored alias points at it)."""
        return self._drive(_delete_provider(name))

    def test_provider(self, name: str, timeout: float | None = None) -> ProviderTest:
        """Ask the provider's server for its models (``ApiError`` 502
        ``PROVIDER_TEST_FAILED`` saying what failed)."""
        return self._drive(_test_provider(name, timeout))

    def list_model_aliases(self) -> list[AliasConfig]:
        """Every model alias with its target and source (no server is contacted)."""
        return self._drive(_list_model_aliases())

    def set_model_alias(self, alias: str, target: str) -> AliasConfig:
        """Point ``alias`` (e.g. ``default``) at ``<provider>:<model>``."""
        return self._drive(_set_model_alias(alias, target))

    def delete_model_alias(self, alias: str) -> None:
        """Delete a stored alias (a built-in or environment one of its name applies again)."""
        return self._drive(_delete_model_alias(alias))


# --- AsyncClient ------------------------------------------------------------------------


class AsyncProviderMethods(AsyncDriven):
    """Model providers and aliases on ``AsyncClient``."""

    async def create_provider(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ProviderConfig:
        """Store an OpenAI-compatible server (its ``/v1`` URL) as provider ``name``; its models
        are then ``<name>:<model>``. The key and header values are never shown again."""
        return await self._drive(_create_provider(name, base_url, api_key, models, headers))

    async def list_providers(self) -> list[ProviderConfig]:
        """Every provider: built in, from the environment (read-only), and stored."""
        return await self._drive(_list_providers())

    async def get_provider(self, name: str) -> ProviderConfig:
        """One provider (the stored one of that name, else the settings')."""
        return await self._drive(_get_provider(name))

    async def update_provider(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ProviderConfig:
        """Change a stored provider; None is unchanged, ``api_key=""`` removes the key and
        ``headers={}`` the headers."""
        return await self._drive(_update_provider(name, base_url, api_key, models, headers))

    async def delete_provider(self, name: str) -> None:
        """Delete a stored provider (refused while a stored alias points at it)."""
        return await self._drive(_delete_provider(name))

    async def test_provider(self, name: str, timeout: float | None = None) -> ProviderTest:
        """Ask the provider's server for its models (``ApiError`` 502
        ``PROVIDER_TEST_FAILED`` saying what failed)."""
        return await self._drive(_test_provider(name, timeout))

    async def list_model_aliases(self) -> list[AliasConfig]:
        """Every model alias with its target and source (no server is contacted)."""
        return await self._drive(_list_model_aliases())

    async def set_model_alias(self, alias: str, target: str) -> AliasConfig:
        """Point ``alias`` (e.g. ``default``) at ``<provider>:<model>``."""
        return await self._drive(_set_model_alias(alias, target))

    async def delete_model_alias(self, alias: str) -> None:
        """Delete a stored alias (a built-in or environment one of its name applies again)."""
        return await self._drive(_delete_model_alias(alias))
