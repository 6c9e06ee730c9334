"""``GET /api/models``: the configured model aliases and providers, and which are reachable.

Reachability is checked now, never cached: the local provider by its GGUF
file (nothing is loaded), an OpenAI-compatible server by one ``GET /models``
without retries, bounded by a short timeout. Checks run in worker threads,
all at once, so a slow server delays the answer by at most that timeout.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.access import Reader
from api.routes.model_aliases import describe
from api.state import api_state
from providers.errors import ProviderError
from providers.local import DEMO_LABEL, MODEL_NAME, REAL_SERVER_HINT, LocalProvider
from providers.openai_compat import OpenAICompatProvider
from providers.registry import ProviderRegistry, Source

router = APIRouter(prefix="/api/models", tags=["models"])


class ProblemPublic(BaseModel):
    code: str
    message: str


class ProviderPublic(BaseModel):
    name: str = Field(description="The prefix of model names: `<name>:<model>`")
    kind: Literal["local", "openai-compatible", "other"]
    source: Source = Field(
        default="builtin", description="builtin, env (APPFORGE_PROVIDERS) or database"
    )
    description: str | None = Field(default=None, description="What it is, when worth saying")
    target: str | None = Field(
        description="local: the GGUF file name; openai-compatible: the server (scheme://host:port)"
    )
    configured: bool = Field(description="Whether calls can be made at all (a key, a model file)")
    reachable: bool | None = Field(description="Whether it answered now; null if not checkable")
    loaded: bool | None = Field(default=None, description="local: the model is in memory")
    models: list[str] | None = Field(description="Model names it serves, when it can tell")
    error: ProblemPublic | None = None


class AliasPublic(BaseModel):
    name: str
    target: str = Field(description="What the alias resolves to, `<provider>:<model>`")
    source: Source = Field(
        default="builtin", description="builtin, database or env (APPFORGE_MODELS)"
    )
    description: str | None = Field(default=None, description="What it resolves to, if known")
    provider: str | None
    model: str | None
    reachable: bool = Field(description="Its provider is reachable and serves this model name")
    listed: bool | None = Field(
        description="Whether the provider's model list names it; null when it gave no list"
    )
    error: ProblemPublic | None = None


class ModelsPublic(BaseModel):
    aliases: list[AliasPublic]
    providers: list[ProviderPublic]
    hint: str = Field(description="How to point `default` at a real server")


def _provider_status(registry: ProviderRegistry, name: str, timeout: float) -> ProviderPublic:
    try:
        provider = registry.provider(name)
    except ProviderError as exc:
        return ProviderPublic(
            name=name,
            kind="other",
            target=None,
            configured=False,
            reachable=False,
            models=None,
            error=ProblemPublic(code=exc.code, message=exc.message),
        )
    if isinstance(provider, LocalProvider):
        path = provider.model_path()
        available = provider.is_available()
        return ProviderPublic(
            name=name,
            kind="local",
            target=path.name if path is not None else None,
            configured=path is not None,
            reachable=available,
            loaded=provider.is_loaded,
            models=[MODEL_NAME],
            description=DEMO_LABEL,
            error=None
            if available
            else ProblemPublic(code="MODEL_NOT_FOUND", message="the GGUF model file is missing"),
        )
    if isinstance(provider, OpenAICompatProvider):
        found = provider.ping(timeout)
        return ProviderPublic(
            name=name,
            kind="openai-compatible",
            source=registry.view().server_sources.get(name, "builtin"),
            target=provider.server,
            configured=provider.configured,
            reachable=found.reachable,
            models=found.models,
            error=ProblemPublic(**found.error) if found.error else None,
        )
    return ProviderPublic(
        name=name, kind="other", target=None, configured=True, reachable=None, models=None
    )


def _alias_status(
    registry: ProviderRegistry, alias: str, target: str, providers: dict[str, ProviderPublic]
) -> AliasPublic:
    try:
        provider_name, model = registry.split(alias)
        registry.check(alias)  # configuration only: no network, no model load
    except ProviderError as exc:
        return AliasPublic(
            name=alias,
            target=target,
            provider=None,
            model=None,
            reachable=False,
            listed=None,
            error=ProblemPublic(code=exc.code, message=exc.message),
        )
    status = providers.get(provider_name)
    listed = None if status is None or status.models is None else model in status.models
    view = registry.view()
    return AliasPublic(
        name=alias,
        target=f"{provider_name}:{model}",
        source=view.alias_sources.get(alias, "builtin"),
        description=describe(alias, view),
        provider=provider_name,
        model=model,
        reachable=bool(status is not None and status.reachable),
        listed=listed,
        error=status.error if status is not None else None,
    )


@router.get("", response_model=ModelsPublic)
async def list_models(
    request: Request,
    _: Reader,
    timeout: Annotated[
        float, Query(ge=0.1, le=10, description="Seconds each server may take to answer")
    ] = 2.0,
) -> ModelsPublic:
    """The configured model aliases and providers, each with whether it is reachable now.

    Aliases and providers come from the settings and from the database
    (``/api/providers``, ``/api/models/aliases``); ``source`` says which.

    An alias is reachable when its provider is and the provider serves the
    model name; ``listed`` tells whether the server's own model list has it.
    """
    registry: ProviderRegistry = api_state(request).models
    names = await run_in_threadpool(registry.provider_names)  # may read the catalog
    statuses = await asyncio.gather(
        *(run_in_threadpool(_provider_status, registry, name, timeout) for name in names)
    )
    by_name = dict(zip(names, statuses, strict=True))
    alias_statuses = await run_in_threadpool(
        lambda: [
            _alias_status(registry, alias, target, by_name)
            for alias, target in sorted(registry.view().aliases.items())
        ]
    )
    return ModelsPublic(aliases=alias_statuses, providers=list(statuses), hint=REAL_SERVER_HINT)
