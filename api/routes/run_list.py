"""Stored runs, listed: across the apps a caller may read (``GET /api/runs``) and one
app's (``GET /api/apps/{app_uuid}/runs``), with one set of filters for both.

The cross-app list answers one summary per run: when, which app and version,
which session, the first words of its main input, status, latency, time to
first token and tokens. The main input is the first input holding a non-empty
string, in the order the app declares its inputs (the order runs store them
in). Only the first ``PREVIEW_SOURCE_CHARS`` of the stored input JSON are read
for it, so a page of runs costs the same however large their inputs were.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Row, Select, String, cast, func, select
from sqlalchemy.orm import Session

from api.access import AppRunsReader, RunsLister, check_app_scope
from api.auth import Principal
from api.deps import DbSession
from api.routes.apps import get_app_row
from api.routes.runs import RunPublic
from api.time_range import TimeRange, Window
from runs.records import find_app_uuid
from runs.tables import App, Run

router = APIRouter(tags=["runs"])

PREVIEW_CHARS = 80
PREVIEW_SOURCE_CHARS = 2000

Status = Annotated[
    str | None,
    Query(
        pattern="^(running|succeeded|failed|cancelled|timeout)$",
        description="Only runs with this status",
    ),
]
SessionFilter = Annotated[
    str | None, Query(max_length=128, description="Only runs of this session")
]
Offset = Annotated[int, Query(ge=0, description="Runs to skip (newest first)")]


class RunRow(BaseModel):
    """One run in the cross-app list."""

    id: str
    created_at: datetime
    app_uuid: str
    app_name: str
    app_version: int
    session_id: str
    input_preview: str
    status: str
    error_code: str | None
    latency_ms: float | None
    ttft_ms: float | None
    tokens_in: int
    tokens_out: int


def run_filters(
    token: Principal,
    window: TimeRange,
    *,
    app_uuid: str | None = None,
    status: str | None = None,
    session_id: str | None = None,
) -> list[ColumnElement[bool]]:
    """What both lists select by: the caller's reach (its apps) and the request's
    filters. (Runner keys list nothing: see ``api.access.RUNS_LIST``.)"""
    where: list[ColumnElement[bool]] = []
    if app_uuid is not None:
        where.append(Run.app_uuid == app_uuid)
    elif token.apps is not None:
        where.append(Run.app_uuid.in_(sorted(token.apps)))
    if status:
        where.append(Run.status == status)
    if session_id:
        where.append(Run.session_id == session_id)
    if window.since is not None:
        where.append(Run.created_at >= window.since)
    if window.until is not None:
        where.append(Run.created_at < window.until)
    return where


def _page(
    db: Session, query: Select[Any], response: Response, limit: int, offset: int
) -> Select[Any]:
    """``query`` newest first, one page of it; ``X-Total-Count`` is the number before paging."""
    total = db.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    response.headers["X-Total-Count"] = str(total)
    return query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit).offset(offset)


@router.get("/api/runs", response_model=list[RunRow])
def list_all_runs_route(
    db: DbSession,
    token: RunsLister,
    response: Response,
    window: Window,
    app: Annotated[
        str | None, Query(min_length=1, max_length=200, description="An app's uuid or name")
    ] = None,
    status: Status = None,
    session_id: SessionFilter = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Runs per page")] = 50,
    offset: Offset = 0,
) -> list[RunRow]:
    """Runs of every app the caller may read, newest first, as summaries (time, app and
    version, session, the first words of the main input, status, latency, time to first
    token, tokens); ``X-Total-Count`` gives the number before paging. ``app`` is a uuid
    or a name (409 ``APP_AMBIGUOUS`` if several apps have it). A token narrowed to apps
    sees only theirs. Open one with ``getRun``."""
    app_uuid = None
    if app is not None:
        app_uuid = find_app_uuid(db.connection(), app)
        check_app_scope(token, app_uuid)
    where = run_filters(token, window, app_uuid=app_uuid, status=status, session_id=session_id)
    rows = db.execute(_page(db, _summaries(where), response, limit, offset)).all()
    return [_row(r) for r in rows]


def _summaries(where: list[ColumnElement[bool]]) -> Select[Any]:
    """The runs' summary columns: the input's JSON text only as far as the preview needs."""
    return (
        select(
            Run.id,
            Run.created_at,
            Run.app_uuid,
            App.name.label("app_name"),
            Run.app_version,
            Run.session_id,
            func.substr(cast(Run.input, String), 1, PREVIEW_SOURCE_CHARS).label("input_text"),
            Run.status,
            Run.error["code"].as_string().label("error_code"),
            Run.latency_ms,
            Run.ttft_ms,
            Run.usage["prompt_tokens"].as_integer().label("tokens_in"),
            Run.usage["completion_tokens"].as_integer().label("tokens_out"),
        )
        .join(App, App.uuid == Run.app_uuid)
        .where(*where)
    )


def _row(r: Row[Any]) -> RunRow:
    return RunRow(
        id=r.id,
        created_at=r.created_at,
        app_uuid=r.app_uuid,
        app_name=r.app_name,
        app_version=r.app_version,
        session_id=r.session_id,
        input_preview=input_preview(r.input_text),
        status=r.status,
        error_code=r.error_code,
        latency_ms=r.latency_ms,
        ttft_ms=r.ttft_ms,
        tokens_in=r.tokens_in or 0,
        tokens_out=r.tokens_out or 0,
    )


@router.get("/api/apps/{app_uuid}/runs", response_model=list[RunPublic])
def list_runs_route(
    app_uuid: str,
    db: DbSession,
    token: AppRunsReader,
    response: Response,
    window: Window,
    status: Status = None,
    session_id: SessionFilter = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Runs per page")] = 50,
    offset: Offset = 0,
) -> list[Run]:
    """An app's runs in full (input, output, steps), newest first; ``X-Total-Count``
    gives the number before paging."""
    get_app_row(db, app_uuid)
    where = run_filters(token, window, app_uuid=app_uuid, status=status, session_id=session_id)
    return list(db.scalars(_page(db, select(Run).where(*where), response, limit, offset)))


# --- the preview of a run's main input --------------------------------------------------

_DECODER = json.JSONDecoder()
# A backslash escape cut off at the end of a truncated string.
_CUT_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{0,3})?$")


def input_preview(text: str | None, size: int = PREVIEW_CHARS) -> str:
    """The first non-empty string value of a (possibly cut off) JSON object, shortened
    to ``size`` characters; the JSON text itself when no string value is readable."""
    if not text:
        return ""
    try:
        found = _first_string(text)
    except ValueError:
        found = None
    return _clip(found if found is not None else text, size)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _first_string(text: str) -> str | None:
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        return None
    pos += 1
    while True:
        pos = _skip(text, pos)
        if text[pos : pos + 1] != '"':
            return None  # the end of the object, or of what was read
        _, pos = _DECODER.raw_decode(text, pos)  # the key
        pos = _skip(text, pos)
        if text[pos : pos + 1] != ":":
            return None
        pos = _skip(text, pos + 1)
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            # Cut off inside this value: a string's beginning is still its beginning.
            return _cut_string(text[pos + 1 :]) if text[pos : pos + 1] == '"' else None
        if isinstance(value, str) and value.strip():
            return value
        pos = _skip(text, pos)
        if text[pos : pos + 1] != ",":
            return None
        pos += 1


def _cut_string(body: str) -> str | None:
    """The text of a JSON string whose end was cut off (``body``: after its quote)."""
    for attempt in (body, _CUT_ESCAPE.sub("", body)):
        try:
            value = json.loads(f'"{attempt}"')
        except ValueError:
            continue
        return value if isinstance(value, str) and value.strip() else None
    return None


def _clip(value: str, size: int) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= size else flat[: size - 1].rstrip() + "…"
