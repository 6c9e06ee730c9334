"""The FastAPI application factory."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from api import errors, openapi, prometheus
from api.access import publish_rules
from api.audit import AuditRetention
from api.auth import TokenCache, ensure_admin_token
from api.cors import CorsMiddleware, OriginPolicies
from api.input_checks import check_request_values
from api.middleware import RequestContextMiddleware
from api.proxies import TrustedProxies
from api.ratelimit import Limiter, RateLimitMiddleware, make_limiter
from api.readiness import Readiness
from api.routes import (
    analytics,
    apps,
    audit,
    builder_sessions,
    datasets,
    datasources,
    evaluations,
    health,
    llm_models,
    model_aliases,
    model_providers,
    openai,
    policies,
    prompt_versions,
    prompts,
    run_list,
    runs,
    sessions,
    tokens,
    use_cases,
    web,
    webhooks,
)
from api.shutdown import Drain
from api.state import ApiState
from api.webhook_delivery import WebhookDispatcher
from appforge import __version__
from appforge.core.invalidation import MODELS, TOKENS, Invalidation
from appforge.core.metrics import process_stopped
from appforge.core.settings import Settings
from apps_yaml.flows import Flow
from datasources.embedding import Embedder
from datasources.queue import IngestionQueue
from datasources.refresh import RefreshJob
from evals.queue import EvaluationQueue
from providers.base import Provider
from runs.recovery import ProcessLease
from runs.retention import Retention
from runs.service import RunService
from runs.services import Services

log = logging.getLogger(__name__)


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

    limiter: Limiter | None = None
    if settings.rate_limit.enabled:
        limiter = make_limiter(settings.rate_limit, settings.redis_url)

    app = FastAPI(
        docs_url=None,  # served by api.openapi from local files: /docs works offline
        redoc_url=None,
        generate_unique_id_function=openapi.operation_id,
        title="appforge",
        version=__version__,
        description="Low-code LLM apps: YAML apps, streaming runs with sessions.",
        lifespan=_lifespan(settings, providers, embedder, flows, limiter),
        responses=errors.ERROR_RESPONSES,
        # Every value a request carries can be stored: 422 naming the field otherwise.
        dependencies=[Depends(check_request_values)],
    )
    if limiter is not None:
        # Built before the lifespan: middleware is fixed before start-up.
        # The Redis client connects lazily, on the first request.
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
    # Outside the limiter, so that a browser can read a 429 and its Retry-After.
    app.add_middleware(CorsMiddleware, settings=settings.cors)
    # Added last, so outermost: every response, a 429 included, gets a request id,
    # and every request its client's address.
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.limits.max_body_bytes,
        proxies=TrustedProxies(settings.trusted_proxies, settings.client_ipv6_prefix),
        max_file_bytes=settings.datasources.max_file_bytes,
        body_pace=(settings.limits.body_timeout_seconds, settings.limits.body_min_rate),
    )
    errors.install(app)
    for module in _ROUTES:
        _summaries_from_docstrings(module.router.routes)
        publish_rules(module.router.routes)
        app.include_router(module.router)
    prometheus.install(app, settings.metrics)
    openapi.install(app)
    return app


# Every route module, in the order of the OpenAPI document.
_ROUTES = (
    health,
    apps,
    llm_models,
    model_aliases,
    model_providers,
    runs,
    run_list,
    sessions,
    tokens,
    builder_sessions,
    analytics,
    use_cases,
    prompts,
    prompt_versions,
    datasources,
    datasets,
    evaluations,
    policies,
    webhooks,
    audit,
    web,
    openai,
)


def _lifespan(
    settings: Settings,
    providers: dict[str, Provider] | None,
    embedder: Embedder | None,
    flows: Mapping[str, Flow] | None,
    limiter: Limiter | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Open the API's state when the server starts; close it when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await run_in_threadpool(_open, settings, providers, embedder, flows, limiter)
        app.state.api = state
        state.drain.install()
        log.info(
            "appforge %s ready (database: %s)", __version__, state.services.engine.dialect.name
        )
        try:
            yield
        finally:
            state.drain.close()
            await run_in_threadpool(_close, state)
            if limiter is not None:
                await limiter.close()
            process_stopped(os.getpid())

    return lifespan


def _open(
    settings: Settings,
    providers: dict[str, Provider] | None,
    embedder: Embedder | None,
    flows: Mapping[str, Flow] | None,
    limiter: Limiter | None,
) -> ApiState:
    """Open everything the routes share (blocking: run off the event loop)."""
    services = Services.open(settings, providers=providers, embedder=embedder, flows=flows)
    # Registers this process and fails the runs of dead ones (a restart after a crash).
    lease = ProcessLease(
        services.engine,
        settings.runs.heartbeat_seconds,
        settings.runs.process_timeout_seconds,
        settings.runs.timeout_seconds,
    )
    lease.start()
    if settings.admin_token is not None:
        ensure_admin_token(
            services.db, settings.admin_token.get_secret_value(), "admin", services.key
        )
    # Opens Chroma (files or server); the embedding model loads on first use.
    ingestion = IngestionQueue(services.datasources, services.tracing)
    ingestion.start(settings.datasources.workers)
    refresh = RefreshJob(services.datasources, ingestion.wake)
    if settings.datasources.workers > 0:  # else `appforge worker` refreshes
        refresh.start()
    webhooks = WebhookDispatcher(services.db, settings, services.key)
    webhooks.start(settings.webhooks.workers)
    retention = AuditRetention(services.db, settings.audit.retention_days)
    retention.start()
    runs = RunService(services, lease.id)
    evaluations = EvaluationQueue(runs, lease.id)
    evaluations.start(settings.evals.workers)
    expiry = Retention(services.db, settings.sessions.ttl_days, settings.runs.retention_days)
    expiry.start()
    drain = Drain(settings.shutdown_grace_seconds, runs.cancel_all)
    tokens = TokenCache(settings.auth.cache_seconds)
    return ApiState(
        services=services,
        runs=runs,
        evaluations=evaluations,
        lease=lease,
        ingestion=ingestion,
        refresh=refresh,
        webhooks=webhooks,
        audit=retention,
        expiry=expiry,
        executor=ThreadPoolExecutor(max_workers=settings.runs.workers, thread_name_prefix="run"),
        tokens=tokens,
        invalidation=_invalidation(services, tokens),
        limiter=limiter,
        origins=OriginPolicies(services.db),
        readiness=Readiness(services, drain.draining.is_set),
        drain=drain,
    )


def _invalidation(services: Services, tokens: TokenCache) -> Invalidation:
    """What this process caches, dropped here and (PostgreSQL) in every other process
    when one of them revokes a token or changes the stored models."""
    invalidation = Invalidation(services.engine)
    invalidation.on(TOKENS, tokens.clear)
    catalog = services.models.catalog
    if catalog is not None:
        invalidation.on(MODELS, catalog.invalidate)
    invalidation.start()
    return invalidation


def _close(state: ApiState) -> None:
    state.invalidation.stop()
    state.evaluations.stop()  # its runs end (cancelled) before the lease fails leftovers
    # uvicorn has waited for the requests in flight; runs still going (their client
    # left, or past the grace) end now, stored ``cancelled``, before their threads stop.
    state.runs.cancel_all()
    state.refresh.stop()
    state.ingestion.stop()
    state.webhooks.stop()
    state.audit.stop()
    state.expiry.stop()
    state.executor.shutdown(wait=True, cancel_futures=True)
    state.lease.stop()
    state.services.close()


def _summaries_from_docstrings(routes: Sequence[BaseRoute]) -> None:
    """OpenAPI summaries from each route's docstring (its first sentence), not its name."""
    for route in routes:
        if isinstance(route, APIRoute) and not route.summary and route.description:
            first = route.description.strip().split("\n\n")[0].replace("\n", " ")
            route.summary = first.split(". ")[0].rstrip(".")


def from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from ``APPFORGE_*`` variables."""
    return create_app(Settings())
