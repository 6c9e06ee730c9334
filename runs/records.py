"""What the run service reads and writes, as Core statements on one connection.

A run costs two short transactions: one before the model is called (the app,
the session and its history, the admission count, the new run row) and one
after (the finished run, its managed-prompt uses, the session's new turn). No
ORM objects are built on this path. Parsed app documents are cached by app
and version, so a run reads the stored JSON only when the app changed.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from appforge.core.db import utcnow
from apps_yaml.events import Outcome
from apps_yaml.runner import HistoryTurn
from apps_yaml.schema import AppDocument
from runs.errors import AppNotFoundError, RunConflictError, SessionIdInvalidError
from runs.tables import App, ChatSession, Run, RunPrompt, Turn

SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True)
class AppRecord:
    """The stored app a run starts from."""

    uuid: str
    name: str
    version: int
    public: bool
    document: AppDocument


class DocumentCache:
    """Validated app documents by ``(app uuid, version)``; versions never change."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._docs: OrderedDict[tuple[str, int], AppDocument] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> AppDocument | None:
        with self._lock:
            doc = self._docs.get(key)
            if doc is not None:
                self._docs.move_to_end(key)
            return doc

    def put(self, key: tuple[str, int], doc: AppDocument) -> None:
        with self._lock:
            self._docs[key] = doc
            while len(self._docs) > self._size:
                self._docs.popitem(last=False)


def stored_document(doc: AppDocument) -> dict[str, Any]:
    """The JSON an app document is stored as (``apps.document``)."""
    # A flow app has no steps or output of its own (its Python code is them).
    absent = {"steps", "output"} if doc.flow is not None else None
    return doc.model_dump(mode="json", exclude_none=True, exclude=absent)


def load_app(conn: Connection, app_uuid: str, cache: DocumentCache) -> AppRecord:
    """The app's current version; raises ``APP_NOT_FOUND``."""
    row = conn.execute(
        select(App.name, App.version, App.public).where(App.uuid == app_uuid)
    ).first()
    if row is None:
        raise AppNotFoundError(f"no app '{app_uuid}'")
    doc = cache.get((app_uuid, row.version))
    if doc is None:
        stored = conn.scalar(select(App.document).where(App.uuid == app_uuid))
        doc = AppDocument.model_validate(stored)
        cache.put((app_uuid, row.version), doc)
    return AppRecord(app_uuid, row.name, row.version, row.public, doc)


def check_session_id(session_id: str) -> None:
    if not SESSION_ID.match(session_id):
        raise SessionIdInvalidError(
            "a session id is 1-128 letters, digits, '_', '.', ':' or '-'",
            details={"session_id": session_id[:200]},
        )


def session_exists(conn: Connection, session_id: str, app_uuid: str) -> bool:
    """Whether the session exists (for this app); another app's session is a conflict."""
    owner = conn.scalar(select(ChatSession.app_uuid).where(ChatSession.id == session_id))
    if owner is None:
        return False
    if owner != app_uuid:
        raise RunConflictError(
            f"session '{session_id}' belongs to another app", code="SESSION_APP_MISMATCH"
        )
    return True


def load_history(conn: Connection, session_id: str, depth: int) -> list[HistoryTurn]:
    """The last ``depth`` turns of the session, oldest first."""
    rows = conn.execute(
        select(Turn.transcript, Turn.input, Turn.output)
        .where(Turn.session_id == session_id)
        .order_by(Turn.n.desc())
        .limit(depth)
    ).all()
    return [HistoryTurn(r.transcript, r.input, r.output) for r in reversed(rows)]


def lock_app(conn: Connection, app_uuid: str) -> None:
    """On PostgreSQL, serialise run admissions of one app across processes (until commit)."""
    if conn.dialect.name == "postgresql":
        key = int(hashlib.sha256(app_uuid.encode()).hexdigest()[:15], 16)
        conn.execute(select(func.pg_advisory_xact_lock(key)))


def count_active(conn: Connection, app_uuid: str, since: datetime) -> int:
    """Runs of the app still going that started after ``since`` (older ones are dead)."""
    active = conn.scalar(
        select(func.count())
        .select_from(Run)
        .where(Run.app_uuid == app_uuid, Run.status == "running", Run.created_at > since)
    )
    return int(active or 0)


def insert_session(conn: Connection, session_id: str, app_uuid: str) -> None:
    now = utcnow()
    conn.execute(
        insert(ChatSession).values(id=session_id, app_uuid=app_uuid, created_at=now, updated_at=now)
    )


def insert_run(
    conn: Connection, run_id: str, app: AppRecord, session_id: str, stream: bool, inputs: Any
) -> None:
    conn.execute(
        insert(Run).values(
            id=run_id,
            app_uuid=app.uuid,
            app_version=app.version,
            session_id=session_id,
            status="running",
            stream=stream,
            input=inputs,
            output={},
            steps=[],
            usage={},
            created_at=utcnow(),
        )
    )


@dataclass(frozen=True)
class Finish:
    """What is stored when a run ends."""

    run_id: str
    session_id: str
    inputs: dict[str, Any]
    outcome: Outcome
    latency_ms: float
    ttft_ms: float | None


def store_finished(conn: Connection, done: Finish) -> None:
    """The finished run, the prompts it used and, if it succeeded, the session's turn."""
    now = utcnow()
    outcome, failure = done.outcome, done.outcome.failure
    error = None
    if failure is not None:
        error = {"code": failure.code, "message": failure.message, "step": failure.step}
    updated = conn.execute(
        update(Run)
        .where(Run.id == done.run_id)
        .values(
            status=outcome.status,
            output=outcome.output,
            steps=outcome.steps,
            usage=outcome.usage,
            error=error,
            latency_ms=round(done.latency_ms, 3),
            ttft_ms=round(done.ttft_ms, 3) if done.ttft_ms is not None else None,
            finished_at=now,
        )
    )
    if updated.rowcount == 0:
        return  # the app was deleted while it ran
    if outcome.prompts:
        conn.execute(
            insert(RunPrompt),
            [
                {
                    "run_id": done.run_id,
                    "step_id": step,
                    "prompt_id": source.id,
                    "prompt_version": source.version,
                    "label": source.label,
                }
                for step, source in outcome.prompts
            ],
        )
    if outcome.status == "succeeded":
        _add_turn(conn, done, now)


def _add_turn(conn: Connection, done: Finish, now: datetime) -> None:
    last = conn.scalar(select(func.max(Turn.n)).where(Turn.session_id == done.session_id))
    conn.execute(
        insert(Turn).values(
            session_id=done.session_id,
            n=(last or 0) + 1,
            run_id=done.run_id,
            input=done.inputs,
            output=done.outcome.output,
            transcript=done.outcome.transcript,
            created_at=now,
        )
    )
    conn.execute(
        update(ChatSession).where(ChatSession.id == done.session_id).values(updated_at=now)
    )
