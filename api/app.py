"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api import apps, errors, runs, sessions, tokens
from api.auth import ensure_token
from api.middleware import RequestContextMiddleware
from api.ratelimit import RateLimitMiddleware, make_limiter
from appforge import __version__
from appforge.db import make_engine, migrate, session_factory
from appforge.settings import Settings
from providers.base import Provider
from providers.registry import ProviderRegistry

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    version: str
    database: str


def create_app(settings: Settings, *, providers: dict[str, Provider] | None = None) -> FastAPI:
    """Build the API. ``providers`` injects ready providers (tests share one loaded model)."""

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
        executor = ThreadPoolExecutor(max_workers=settings.run_workers, thread_name_prefix="run")
        app.state.settings = settings
        app.state.engine = engine
        app.state.db = factory
        app.state.models = registry
        app.state.executor = executor
        log.info("appforge %s ready (database: %s)", __version__, engine.dialect.name)
        try:
            yield
        finally:
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

    @app.get("/api/health", response_model=Health, tags=["health"])
    def health() -> Health:
        """Liveness: no token needed."""
        return Health(status="ok", version=__version__, database=app.state.engine.dialect.name)

    for module in (apps, runs, sessions, tokens):
        app.include_router(module.router)
    return app


def from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from ``APPFORGE_*`` variables."""
    return create_app(Settings())
