"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from api import errors
from api.auth import ensure_token
from api.middleware import RequestContextMiddleware
from api.ratelimit import RateLimitMiddleware, make_limiter
from api.routes import (
    analytics,
    apps,
    datasources,
    llm_models,
    prompt_versions,
    prompts,
    runs,
    sessions,
    tokens,
    use_cases,
    webhooks,
)
from api.webhook_delivery import WebhookDispatcher
from appforge import __version__
from appforge.core.db import make_engine, migrate, session_factory
from appforge.core.settings import Settings
from apps_yaml.flows import Flow
from datasources.embedding import Embedder
from datasources.queue import IngestionQueue
from datasources.store import DatasourceStore
from providers.base import Provider
from providers.registry import ProviderRegistry

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    version: str
    database: str


def create_app(
    settings: Settings,
    *,
    providers: dict[str, Provider] | None = None,
    embedder: Embedder | None = None,
    flows: Mapping[str, Flow] | None = None,
) -> FastAPI:
    """Build the API. ``providers`` and ``embedder`` inject ready models (tests share them).

    ``flows`` are the Python flows this process serves, by name: apps naming one
    (``flow: <name>``) run it. The API never accepts Python code; only the process
    that loaded a flow file (``appforge run flow.py --serve``) can pass it here.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url())
        await run_in_threadpool(migrate, engine)
        factory = session_factory(engine)
        if settings.admin_token is not None:
            await run_in_threadpool(
                ensure_token, factory, settings.admin_token.get_secret_value(), "admin", True
            )
        registry = ProviderRegistry(settings, providers=providers)
        # Opens Chroma (files or server): blocking, so off the event loop. The
        # embedding model loads on first use, in a worker or request thread.
        datasource_store = await run_in_threadpool(
            DatasourceStore.open, settings, factory, embedder
        )
        ingestion = IngestionQueue(datasource_store)
        ingestion.start(settings.datasources.workers)
        app.state.datasources = datasource_store
        app.state.ingestion = ingestion
        executor = ThreadPoolExecutor(max_workers=settings.runs.workers, thread_name_prefix="run")
        app.state.settings = settings
        app.state.engine = engine
        app.state.db = factory
        app.state.models = registry
        app.state.executor = executor
        app.state.admission = threading.Lock()
        dispatcher = WebhookDispatcher(factory, settings)
        dispatcher.start(settings.webhooks.workers)
        app.state.webhooks = dispatcher
        log.info("appforge %s ready (database: %s)", __version__, engine.dialect.name)
        try:
            yield
        finally:
            await run_in_threadpool(ingestion.stop)
            await run_in_threadpool(dispatcher.stop)
            executor.shutdown(wait=True, cancel_futures=True)
            registry.close()
            engine.dispose()
            if getattr(app.state, "limiter", None) is not None:
                await app.state.limiter.close()

    app = FastAPI(
        title="appforge",
        version=__version__,
        description="Low-code LLM apps: YAML apps, streaming runs with sessions.",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
    )
    if settings.rate_limit.enabled:
        # Built here, not in the lifespan: middleware is fixed before start-up.
        # The Redis client connects lazily, on the first request.
        limiter = make_limiter(settings.rate_limit, settings.redis_url)
        app.state.limiter = limiter
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
    # Added last, so outermost: every response, a 429 included, gets a request id.
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.limits.max_body_bytes)
    errors.install(app)
    app.state.flows = dict(flows or {})

    @app.get("/api/health", response_model=Health, tags=["health"])
    def health() -> Health:
        """Liveness: no token needed."""
        return Health(status="ok", version=__version__, database=app.state.engine.dialect.name)

    routers = (
        apps,
        llm_models,
        runs,
        sessions,
        tokens,
        analytics,
        use_cases,
        prompts,
        prompt_versions,
        datasources,
        webhooks,
    )
    for module in routers:
        _summaries_from_docstrings(module.router.routes)
        app.include_router(module.router)
    _summaries_from_docstrings(app.router.routes)
    return app


def _summaries_from_docstrings(routes: Sequence[BaseRoute]) -> None:
    """OpenAPI summaries from each route's docstring (its first sentence), not its name."""
    for route in routes:
        if isinstance(route, APIRoute) and not route.summary and route.description:
            first = route.description.strip().split("\n\n")[0].replace("\n", " ")
            route.summary = first.split(". ")[0].rstrip(".")


def from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from ``APPFORGE_*`` variables."""
    return create_app(Settings())
