"""Sessions: the turns of a conversation with an app, kept in the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import BaseModel
from sqlalchemy import select

from api.access import OwnWriter, SessionReader
from api.auth import Principal
from api.cors import about_app
from api.deps import DbSession
from api.errors import NotFoundError
from runs.service import ANONYMOUS
from runs.tables import ChatSession, Turn

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


class TurnPublic(BaseModel):
    n: int
    run_id: str
    input: dict[str, Any]
    output: dict[str, Any]
    created_at: datetime


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


@router.get("/{session_id}", response_model=SessionPublic)
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


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_session_route(session_id: str, db: DbSession, token: OwnWriter) -> None:
    """Forget a session and its turns; the next run with this id starts afresh."""
    db.delete(_get(db, session_id, token))
    db.commit()
