"""Which provider serves a model name.

App documents name models either directly as ``"<provider>:<model>"``
(``"local:smollm2"``) or through an alias from ``Settings.models``
(``{"default": "local:smollm2"}``); an alias may point at another alias.
Providers are built lazily, the first time a model of theirs is resolved;
building one never loads a model (that happens on the first generation).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from appforge.core.settings import Settings
from providers.base import Provider
from providers.errors import ModelNotFoundError


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
# Settings.providers (APPFORGE_PROVIDERS) are OpenAI-compatible providers too.
_FACTORIES: dict[str, Callable[[Settings], Provider]] = {
    "local": _build_local,
    "openai": _build_openai,
}


class ProviderRegistry:
    """Resolves model names to providers; owns the providers it builds."""

    def __init__(self, settings: Settings, providers: dict[str, Provider] | None = None) -> None:
        """``providers`` are used as given (and not closed here); others are built on demand."""
        self._settings = settings
        self._injected: dict[str, Provider] = dict(providers or {})
        self._built: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def provider_names(self) -> list[str]:
        """The provider prefixes this registry knows, sorted."""
        return sorted(set(self._injected) | set(_FACTORIES) | set(self._settings.providers))

    def _factory(self, name: str) -> Callable[[Settings], Provider] | None:
        if name in _FACTORIES:
            return _FACTORIES[name]
        server = self._settings.providers.get(name)
        if server is None:
            return None

        def build(_: Settings) -> Provider:
            from providers.openai_compat import OpenAICompatProvider

            return OpenAICompatProvider(name, server)

        return build

    def provider(self, name: str) -> Provider:
        """The provider called ``name``, built on first use."""
        if name in self._injected:
            return self._injected[name]
        factory = self._factory(name)
        if factory is None:
            raise ModelNotFoundError(
                f"Unknown model provider {name!r}; configured providers: "
                f"{', '.join(self.provider_names())}.",
                details={"provider": name, "providers": self.provider_names()},
            )
        with self._lock:
            if name not in self._built:
                self._built[name] = factory(self._settings)
            return self._built[name]

    def split(self, model: str) -> tuple[str, str]:
        """Follow aliases and split into ``(provider name, model name)``; builds nothing."""
        aliases = self._settings.models
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
        if provider_name not in self._injected and self._factory(provider_name) is None:
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
        for provider in built.values():
            if isinstance(provider, Closeable):
                provider.close()
