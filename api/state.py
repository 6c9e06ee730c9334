"""The API's state: one typed object built by the lifespan, not an untyped bag.

``create_app`` puts an :class:`ApiState` on ``app.state.api`` when it starts;
routes reach it through the ``State`` dependency (or :func:`api_state`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from api.audit import AuditRetention
from api.auth import TokenCache
from api.cors import OriginPolicies
from api.ratelimit import Limiter
from api.readiness import Readiness
from api.shutdown import Drain
from api.webhook_delivery import WebhookDispatcher
from appforge.core.invalidation import Invalidation
from appforge.core.keys import ServerKey
from appforge.core.settings import Settings
from datasources.queue import IngestionQueue
from datasources.refresh import RefreshJob
from datasources.store import DatasourceStore
from evals.queue import EvaluationQueue
from providers.registry import ProviderRegistry
from runs.recovery import ProcessLease
from runs.retention import Retention
from runs.service import RunService
from runs.services import Services


@dataclass
class ApiState:
    """Everything the routes share, opened by the lifespan and closed with it."""

    services: Services
    runs: RunService
    ingestion: IngestionQueue
    refresh: RefreshJob  # fetches URL entries again on their schedule
    evaluations: EvaluationQueue  # runs evaluations' cases
    webhooks: WebhookDispatcher
    audit: AuditRetention  # deletes old audit events
    expiry: Retention  # deletes expired sessions and runs
    executor: ThreadPoolExecutor  # runs execute here, off the event loop
    tokens: TokenCache
    # Drops ``tokens`` and the model catalog here and in the other processes (PostgreSQL).
    invalidation: Invalidation
    limiter: Limiter | None
    origins: OriginPolicies  # apps' origins and public rates, runner keys' origins
    lease: ProcessLease  # this process's heartbeat; fails runs of dead processes
    readiness: Readiness  # GET /api/health/ready
    drain: Drain  # SIGTERM: stop taking work, cancel runs after the grace

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def key(self) -> ServerKey:
        return self.services.key

    @property
    def db(self) -> sessionmaker[Session]:
        return self.services.db

    @property
    def models(self) -> ProviderRegistry:
        return self.services.models

    @property
    def datasources(self) -> DatasourceStore:
        return self.services.datasources


def api_state(request: Request) -> ApiState:
    """The state of the application serving ``request``."""
    return cast(ApiState, request.app.state.api)


async def _state(request: Request) -> ApiState:
    # async: FastAPI runs a plain function dependency in the thread pool (a hop).
    return api_state(request)


State = Annotated[ApiState, Depends(_state)]
