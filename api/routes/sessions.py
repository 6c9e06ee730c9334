"""Sessions: the turns of a conversation with an app, kept in the database."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.access import AppRunsReader, OwnWriter, SessionReader
from api.auth import Principal
from api.cors import about_app
from api.deps import DbSession
from api.errors import NotFoundError
from api.routes.apps import get_app_row
from apps_yaml.inputs import message_input
from apps_yaml.schema import AppDocument
from runs.service import ANONYMOUS
from runs.tables import ChatSession, Turn

router = APIRouter(tags=["sessions"])

# How much of a session's first message a list shows.
PREVIEW_CHARS = 200


class TurnPublic(BaseModel):
    n: int
    run_id: str
    input: dict[str, Any]
    output: dict[str, Any]
    created_at: datetime


class SessionSummary(BaseModel):
    id: str
    created_at: datetime
    updated_at: datetime
    turns: int = Field(description="Finished turns")
    first_input: str | None = Field(
        description=f"The first turn's message (the app's chat input, else its whole input "
        f"as JSON), at most {PREVIEW_CHARS} characters; null before a turn finished"
    )


class SessionPublic(BaseModel):
    id: str
    app_uuid: str
    created_at: datetime
    updated_at: datetime
    turns: list[TurnPublic]


def _get(db: DbSession, session_id: str, token: Principal | None) -> ChatSession:
    """The session if this caller may see it; else 404, as if it did not exist.

    A runner key sees only the sessions it made; a key narrowed to apps, only
    the sessions of those apps; a caller without a token, only a session made
    without one (its id is the key to it).
    """
    session = db.get(ChatSession, session_id)
    if token is None:
        hidden = session is None or session.owner != ANONYMOUS
    else:
        hidden = session is None or not token.may_use_app(session.app_uuid)
        if not hidden and token.role == "runner":
            hidden = session is None or session.owner != f"token:{token.id}"
    if hidden or session is None:
        raise NotFoundError(f"no session '{session_id}'", code="SESSION_NOT_FOUND")
    return session


@router.get("/api/sessions/{session_id}", response_model=SessionPublic)
def get_session_route(
    request: Request, session_id: str, db: DbSession, token: SessionReader
) -> SessionPublic:
    """A session with its finished turns, oldest first."""
    session = _get(db, session_id, token)
    about_app(request, session.app_uuid)
    turns = db.scalars(select(Turn).where(Turn.session_id == session_id).order_by(Turn.n))
    return SessionPublic(
        id=session.id,
        app_uuid=session.app_uuid,
        created_at=session.created_at,
        updated_at=session.updated_at,
        turns=[
            TurnPublic(
                n=t.n, run_id=t.run_id, input=t.input, output=t.output, created_at=t.created_at
            )
            for t in turns
        ],
    )


@router.delete("/api/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_session_route(session_id: str, db: DbSession, token: OwnWriter) -> None:
    """Forget a session and its turns; the next run with this id starts afresh."""
    db.delete(_get(db, session_id, token))
    db.commit()


@router.get("/api/apps/{app_uuid}/sessions", response_model=list[SessionSummary])
def list_app_sessions_route(
    app_uuid: str,
    db: DbSession,
    token: AppRunsReader,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[SessionSummary]:
    """An app's sessions, newest first, each with its number of turns and the start of
    its first message; ``X-Total-Count`` gives the number before paging."""
    app = get_app_row(db, app_uuid)
    query = select(ChatSession).where(ChatSession.app_uuid == app_uuid)
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    response.headers["X-Total-Count"] = str(total)
    page = db.scalars(
        query.order_by(ChatSession.created_at.desc(), ChatSession.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    counts, firsts = _turns_of(db, [s.id for s in page])
    key = message_input(AppDocument.model_validate(app.document))
    return [
        SessionSummary(
            id=s.id,
            created_at=s.created_at,
            updated_at=s.updated_at,
            turns=counts.get(s.id, 0),
            first_input=_preview(firsts[s.id], key) if s.id in firsts else None,
        )
        for s in page
    ]


def _turns_of(db: Session, ids: list[str]) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """For these sessions: their number of turns, and their first turn's input."""
    if not ids:
        return {}, {}
    counts = db.execute(
        select(Turn.session_id, func.count())
        .where(Turn.session_id.in_(ids))
        .group_by(Turn.session_id)
    )
    firsts = db.execute(
        select(Turn.session_id, Turn.input).where(Turn.session_id.in_(ids), Turn.n == 1)
    )
    return dict(counts.all()), dict(firsts.all())


def _preview(given: dict[str, Any], key: str | None) -> str:
    """The message of a turn's input, cut to ``PREVIEW_CHARS``."""
    value = given.get(key) if key is not None else None
    text = value if isinstance(value, str) else json.dumps(given, ensure_ascii=False)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
