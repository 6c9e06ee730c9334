"""Which provider serves a model name.

App documents name models either directly as ``"<provider>:<model>"``
(``"local:smollm2"``) or through an alias (``{"default": "local:smollm2"}``);
an alias may point at another alias. Providers are built lazily, the first
time a model of theirs is resolved; building one never loads a model (that
happens on the first generation).

Aliases and OpenAI-compatible servers come from three places, each winning
over the one before for a name they share (:class:`ModelView` says which):

- ``builtin``: the providers ``local`` and ``openai``, and the alias
  ``default`` -> ``local:smollm2`` when ``APPFORGE_MODELS`` is not set;
- ``database``: what admins stored (``providers.catalog``), re-read when it
  changes, without a restart;
- ``env``: ``APPFORGE_MODELS`` and ``APPFORGE_PROVIDERS`` (the settings).

A server whose settings changed is built again on its next use; the old
provider is closed with the registry (a run may still be streaming from it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from appforge.core.settings import OpenAISettings, Settings
from providers.base import Provider
from providers.catalog import EMPTY, Catalog, ModelCatalog
from providers.errors import ModelNotFoundError

Source = Literal["builtin", "database", "env"]


@runtime_checkable
class ModelChecker(Protocol):
    """A provider that can tell whether it serves a model without loading it."""

    def check_model(self, model: str) -> None: ...


@runtime_checkable
class Closeable(Protocol):
    """A provider holding resources (a loaded model, an HTTP pool)."""

    def close(self) -> None: ...


def _build_local(settings: Settings) -> Provider:
    from providers.local import LocalProvider

    return LocalProvider(settings.local)


def _build_openai(settings: Settings) -> Provider:
    from providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider("openai", settings.openai, key_env="OPENAI_API_KEY")


# Provider name -> how to build it from the settings. Servers named in
# Settings.providers (APPFORGE_PROVIDERS) or stored in the database are
# OpenAI-compatible providers too.
_FACTORIES: dict[str, Callable[[Settings], Provider]] = {
    "local": _build_local,
    "openai": _build_openai,
}


def _build(name: str, server: OpenAISettings | None, settings: Settings) -> Provider:
    if server is None:
        return _FACTORIES[name](settings)
    from providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(name, server)


@dataclass(frozen=True)
class ModelView:
    """The aliases and OpenAI-compatible servers in force, and where each comes from."""

    catalog: Catalog
    aliases: Mapping[str, str]
    alias_sources: Mapping[str, Source]
    servers: Mapping[str, OpenAISettings]
    server_sources: Mapping[str, Source]
    # Stored entries hidden by an environment setting of the same name.
    shadowed_aliases: frozenset[str] = field(default_factory=frozenset)
    shadowed_servers: frozenset[str] = field(default_factory=frozenset)


def _view(settings: Settings, catalog: Catalog) -> ModelView:
    env_aliases = settings.models if "models" in settings.model_fields_set else {}
    builtin_aliases = {} if env_aliases else settings.models
    aliases: dict[str, str] = {}
    alias_sources: dict[str, Source] = {}
    layers: tuple[tuple[Source, Mapping[str, str]], ...] = (
        ("builtin", builtin_aliases),
        ("database", catalog.aliases),
        ("env", env_aliases),
    )
    for source, entries in layers:
        for name, target in entries.items():
            aliases[name], alias_sources[name] = target, source
    servers: dict[str, OpenAISettings] = {}
    server_sources: dict[str, Source] = {}
    for name, stored in catalog.servers.items():
        if name not in _FACTORIES:
            servers[name], server_sources[name] = stored.settings, "database"
    for name, server in settings.providers.items():
        servers[name], server_sources[name] = server, "env"
    return ModelView(
        catalog=catalog,
        aliases=aliases,
        alias_sources=alias_sources,
        servers=servers,
        server_sources=server_sources,
        shadowed_aliases=frozenset(catalog.aliases) & frozenset(env_aliases),
        shadowed_servers=frozenset(catalog.servers) & frozenset(settings.providers),
    )


class ProviderRegistry:
    """Resolves model names to providers; owns the providers it builds."""

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider] | None = None,
        catalog: ModelCatalog | None = None,
    ) -> None:
        """``providers`` are used as given (and not closed here); others are built on demand.
        ``catalog``: the providers and aliases stored in the database, if any."""
        self._settings = settings
        self._injected: dict[str, Provider] = dict(providers or {})
        self._catalog = catalog
        self._built: dict[str, tuple[OpenAISettings | None, Provider]] = {}
        self._retired: list[Provider] = []
        self._lock = threading.Lock()
        self._last = _view(settings, EMPTY)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def catalog(self) -> ModelCatalog | None:
        return self._catalog

    def view(self) -> ModelView:
        """The aliases and servers in force now (the stored ones as last read)."""
        stored = self._catalog.current() if self._catalog is not None else EMPTY
        last = self._last
        if last.catalog is not stored:
            last = self._last = _view(self._settings, stored)
        return last

    def provider_names(self) -> list[str]:
        """The provider prefixes this registry knows, sorted."""
        return sorted(set(self._injected) | set(_FACTORIES) | set(self.view().servers))

    def _known(self, name: str) -> bool:
        return name in self._injected or name in _FACTORIES or name in self.view().servers

    def provider(self, name: str) -> Provider:
        """The provider called ``name``, built on first use (again if its server changed)."""
        if name in self._injected:
            return self._injected[name]
        server = None if name in _FACTORIES else self.view().servers.get(name)
        if name not in _FACTORIES and server is None:
            raise ModelNotFoundError(
                f"Unknown model provider {name!r}; configured providers: "
                f"{', '.join(self.provider_names())}.",
                details={"provider": name, "providers": self.provider_names()},
            )
        with self._lock:
            built = self._built.get(name)
            if built is not None and (built[0] is server or built[0] == server):
                return built[1]
            if built is not None:
                self._retired.append(built[1])
            provider = _build(name, server, self._settings)
            self._built[name] = (server, provider)
            return provider

    def split(self, model: str) -> tuple[str, str]:
        """Follow aliases and split into ``(provider name, model name)``; builds nothing."""
        aliases = self.view().aliases
        seen: list[str] = []
        target = model
        while target in aliases:
            if target in seen:
                chain = " -> ".join([*seen, target])
                raise ModelNotFoundError(
                    f"The model alias {model!r} never resolves: alias cycle {chain}.",
                    details={"model": model, "cycle": [*seen, target]},
                )
            seen.append(target)
            target = aliases[target]
        provider_name, sep, model_name = target.partition(":")
        if not sep or not provider_name or not model_name:
            raise ModelNotFoundError(
                f"Unknown model {target!r}: not an alias ({', '.join(sorted(aliases)) or 'none'}"
                f" configured) nor '<provider>:<model>' with a provider among "
                f"{', '.join(self.provider_names())}.",
                details={
                    "model": model,
                    "aliases": sorted(aliases),
                    "providers": self.provider_names(),
                },
            )
        if not self._known(provider_name):
            raise ModelNotFoundError(
                f"Unknown model provider {provider_name!r} in {target!r}; configured "
                f"providers: {', '.join(self.provider_names())}.",
                details={
                    "model": model,
                    "provider": provider_name,
                    "providers": self.provider_names(),
                },
            )
        return provider_name, model_name

    def resolve(self, model: str) -> tuple[Provider, str]:
        """The provider serving ``model`` (an alias or ``provider:model``) and its model name.

        Raises :class:`ModelNotFoundError` naming what is configured when the
        alias, the provider prefix or the model is unknown.
        """
        provider_name, model_name = self.split(model)
        provider = self.provider(provider_name)
        if isinstance(provider, ModelChecker):
            provider.check_model(model_name)
        return provider, model_name

    def check(self, model: str) -> None:
        """Raise like :meth:`resolve` if ``model`` cannot be served; never loads a model."""
        self.resolve(model)

    def close(self) -> None:
        """Close the providers this registry built (injected ones belong to the caller)."""
        with self._lock:
            built, self._built = self._built, {}
            retired, self._retired = self._retired, []
        for provider in [*(p for _, p in built.values()), *retired]:
            if isinstance(provider, Closeable):
                provider.close()
