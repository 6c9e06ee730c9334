"""Liveness: ``GET /api/health``, the one route that needs no token."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.access import Anyone
from api.state import State
from appforge import __version__

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str
    database: str


@router.get("/api/health", response_model=Health)
async def health(state: State, _: Anyone) -> Health:
    """Liveness: no token needed."""
    # async: answered on the event loop, never queued behind busy worker threads.
    return Health(status="ok", version=__version__, database=state.services.engine.dialect.name)
