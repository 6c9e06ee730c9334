"""Liveness and readiness: ``GET /api/health`` and ``GET /api/health/ready``, no token."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.access import ReadinessCaller, Unread
from api.errors import NotReadyError
from api.state import State
from appforge import __version__

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    version: str
    database: str


class CheckPublic(BaseModel):
    ok: bool
    ms: float = Field(description="How long the check took")
    error: str | None = Field(default=None, description="Why it failed (callers with a token)")


class Ready(BaseModel):
    status: str = Field(description="`ready`")
    checks: dict[str, CheckPublic] = Field(
        description="database, vector_store, redis (when configured), model:<provider> for "
        "each configured model provider, shutdown"
    )


@router.get("/api/health", response_model=Health)
async def health(state: State, _: Unread) -> Health:
    """Liveness: no token needed, and one sent is not read (a probe's token, revoked or
    unreadable while the database is away, does not fail it)."""
    # async: answered on the event loop, never queued behind busy worker threads.
    return Health(status="ok", version=__version__, database=state.services.engine.dialect.name)


@router.get("/api/health/ready", response_model=Ready)
async def ready(state: State, token: ReadinessCaller) -> Ready:
    """Readiness: the database, the vector store, Redis and each model backend answer, the
    embedding model is not loading (in a process running ingestion), and the process is
    not shutting down; otherwise 503 ``NOT_READY`` naming what is not.

    No token needed; an admin, editor or viewer also sees why each failed check failed
    (not a runner key, which a widget's page shows anyone: the reasons name the servers
    behind the API). Answers are cached for ``APPFORGE_HEALTH__CACHE_SECONDS``.
    """
    checks = await state.readiness.report()
    why = token is not None and token.role != "runner"
    shown = {
        c.name: CheckPublic(ok=c.ok, ms=round(c.ms, 1), error=c.error if why else None)
        for c in checks
    }
    failing = [c for c in checks if not c.ok]
    if failing:
        log.warning("not ready: %s", "; ".join(f"{c.name}: {c.error}" for c in failing))
        raise NotReadyError(
            f"not ready: {', '.join(c.name for c in failing)}",
            details={"checks": {name: check.model_dump() for name, check in shown.items()}},
            headers={"Retry-After": "5"},
        )
    return Ready(status="ready", checks=shown)
