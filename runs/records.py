"""What the run service reads and writes, as Core statements on one connection.

A run is written twice: before the model is called (the new run row inserted
only if admission lets it in, and a new session) and after (the finished run,
its managed-prompt uses, the session's new turn), each atomically. No ORM
objects are built on this path. Parsed app documents are cached by app and
version, so a run reads the stored JSON only when the app changed.

On PostgreSQL every statement of a run is autocommitted: the reads before it
(the app, the session and its history); its admission, one statement, the
function ``appforge_admit_run`` (migration 0021), which takes the app's
advisory lock (and a caller's without a token), counts and inserts, so the
locks are held only while the server works, never across a round trip; and its
end, one statement with CTEs (the finished run, the session's turn and its
``updated_at``). A run without managed prompts or history makes 3 round trips.
A run with managed prompts, or whose caller stores more with it (an
evaluation's result), ends in a transaction instead. SQLite (in process)
admits in a transaction under its write lock, with a few more statements for
the same work.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    BindParameter,
    Boolean,
    ColumnElement,
    Connection,
    Insert,
    Integer,
    Select,
    String,
    bindparam,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)

from appforge.core.db import UTCDateTime, utcnow
from apps_yaml.events import Outcome
from apps_yaml.runner import HistoryTurn
from apps_yaml.schema import AppDocument
from runs.errors import (
    AppAmbiguousError,
    AppNotFoundError,
    RunServiceError,
    SessionBusyError,
    SessionIdInvalidError,
    TooManyRunsError,
)
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


# Statements built once (their compiled form is cached): a run executes them with
# parameters only, so building and hashing SQL does not cost on every run.
_APP = select(App.name, App.version, App.public).where(App.uuid == bindparam("b_app"))
_DOCUMENT = select(App.document).where(App.uuid == bindparam("b_app"))
_SESSION_ROW = select(ChatSession.app_uuid, ChatSession.owner).where(
    ChatSession.id == bindparam("b_session")
)
_HISTORY = (
    select(Turn.transcript, Turn.input, Turn.output)
    .where(Turn.session_id == bindparam("b_session"))
    .order_by(Turn.n.desc())
    .limit(bindparam("b_depth"))
)


def _going(owner: ColumnElement[bool], since: BindParameter[Any]) -> Select[int]:
    """How many runs ``owner`` selects are going, counting those started after ``since``."""
    where = (owner, Run.status == "running", Run.created_at > since)
    return select(func.count()).select_from(Run).where(*where)


_ACTIVE = _going(Run.app_uuid == bindparam("b_app"), bindparam("b_since"))
_CLIENT_ACTIVE = _going(Run.client == bindparam("b_client"), bindparam("b_since"))
_SESSION_RUN = (
    select(Run.id)
    .where(
        Run.session_id == bindparam("b_session"),
        Run.status == "running",
        Run.created_at > bindparam("b_since"),
    )
    .limit(1)
)
_NEW_SESSION = insert(ChatSession)


@functools.cache
def _admitted_run(*, known_session: bool, client: bool) -> Insert:
    """SQLite: the new ``running`` run, inserted only if the app has room for one more
    run (and a ``known_session`` has none going, and a ``client`` fewer runs going than
    its limit): checks and insert in one statement. Run under the database's write lock
    (``lock_app``). Built once per combination (their compiled forms are cached).
    """
    app, since = bindparam("b_app", type_=String(36)), bindparam("b_since", type_=UTCDateTime)
    session = bindparam("b_session", type_=String(128))
    now = bindparam("b_now", type_=UTCDateTime)
    going = (Run.status == "running", Run.created_at > since)
    active = _going(Run.app_uuid == app, since)
    room = [active.scalar_subquery() < bindparam("b_most", type_=Integer)]
    if known_session:
        room.append(~exists().where(Run.session_id == session, *going))
    if client:
        client_since = bindparam("b_client_since", type_=UTCDateTime)
        own = _going(Run.client == bindparam("b_client", type_=String(64)), client_since)
        room.append(own.scalar_subquery() < bindparam("b_client_most", type_=Integer))
    row = select(
        bindparam("b_run", type_=String(36)),
        app,
        bindparam("b_version", type_=Integer),
        session,
        bindparam("b_token", type_=String(36)),
        bindparam("b_process", type_=String(36)),
        bindparam("b_client", type_=String(64)),
        literal("running", String(16)),
        bindparam("b_stream", type_=Boolean),
        bindparam("b_input", type_=JSON),
        bindparam("b_empty_object", type_=JSON),
        bindparam("b_empty_list", type_=JSON),
        bindparam("b_empty_object", type_=JSON),
        now,
    ).where(*room)
    columns = ["id", "app_uuid", "app_version", "session_id", "token_id", "process_id", "client"]
    columns += ["status", "stream", "input", "output", "steps", "usage", "created_at"]
    statement = insert(Run).from_select(columns, row)
    # The row count of an INSERT is kept only when asked for (SQLAlchemy 2).
    return statement.execution_options(preserve_rowcount=True)


_FINISH = (
    update(Run)
    .where(Run.id == bindparam("b_run"))
    .values(
        status=bindparam("b_status"),
        output=bindparam("b_output"),
        steps=bindparam("b_steps"),
        usage=bindparam("b_usage"),
        error=bindparam("b_error"),
        latency_ms=bindparam("b_latency"),
        ttft_ms=bindparam("b_ttft"),
        finished_at=bindparam("b_now"),
    )
)
_PROMPT_USES = insert(RunPrompt)
_LOCK_APP = update(App).where(App.uuid == bindparam("b_app")).values(version=App.version)
_SESSION = bindparam("b_session", type_=String(128))
_NOW = bindparam("b_now", type_=UTCDateTime)
_TURN_COLUMNS = ["session_id", "n", "run_id", "input", "output", "transcript", "created_at"]
# The session's next turn, numbered in the same statement.
_TURN_ROW = select(
    _SESSION,
    func.coalesce(func.max(Turn.n), 0) + 1,
    bindparam("b_run", type_=String(36)),
    bindparam("b_input", type_=JSON),
    bindparam("b_output", type_=JSON),
    bindparam("b_transcript", type_=JSON),
    _NOW,
).where(Turn.session_id == _SESSION)
_NEXT_TURN = insert(Turn).from_select(_TURN_COLUMNS, _TURN_ROW)
_TOUCH_SESSION = update(ChatSession).where(ChatSession.id == _SESSION).values(updated_at=_NOW)
# PostgreSQL: the turn and the session's new ``updated_at`` in one statement.
_NEXT_TURN_TOUCHING = _NEXT_TURN.add_cte(_TOUCH_SESSION.cte("touched"))
# PostgreSQL: the finished run, its session's turn and the session's ``updated_at`` in
# one statement; the turn only if the run's row is still there (its app may have been
# deleted while it ran). The aggregate's one row goes with HAVING when there is none.
_FINISHED = _FINISH.returning(Run.id).cte("finished")
_FINISH_WITH_TURN = (
    insert(Turn)
    .from_select(_TURN_COLUMNS, _TURN_ROW.having(exists(select(_FINISHED.c.id))))
    .add_cte(_FINISHED)
    .add_cte(_TOUCH_SESSION.cte("touched"))
)


def stored_document(doc: AppDocument) -> dict[str, Any]:
    """The JSON an app document is stored as (``apps.document``)."""
    # A flow app has no steps or output of its own (its Python code is them).
    absent = {"steps", "output"} if doc.flow is not None else None
    return doc.model_dump(mode="json", exclude_none=True, exclude=absent)


def load_app(conn: Connection, app_uuid: str, cache: DocumentCache) -> AppRecord:
    """The app's current version; raises ``APP_NOT_FOUND``."""
    row = conn.execute(_APP, {"b_app": app_uuid}).first()
    if row is None:
        raise AppNotFoundError(f"no app '{app_uuid}'")
    doc = cache.get((app_uuid, row.version))
    if doc is None:
        stored = conn.scalar(_DOCUMENT, {"b_app": app_uuid})
        doc = AppDocument.model_validate(stored)
        cache.put((app_uuid, row.version), doc)
    return AppRecord(app_uuid, row.name, row.version, row.public, doc)


def find_app_uuid(conn: Connection, ref: str) -> str:
    """The uuid of the app ``ref`` names (its uuid, else its name); raises ``APP_NOT_FOUND``
    when none does and ``APP_AMBIGUOUS`` (409) when several apps share the name."""
    if conn.scalar(select(App.uuid).where(App.uuid == ref)) is not None:
        return ref
    found = conn.scalars(select(App.uuid).where(App.name == ref).limit(2)).all()
    if not found:
        raise AppNotFoundError(f"no app '{ref}'", details={"app": ref[:200]})
    if len(found) > 1:
        raise AppAmbiguousError(
            f"several apps are named '{ref}': use the app's uuid", details={"app": ref}
        )
    return found[0]


def check_session_id(session_id: str) -> None:
    if not SESSION_ID.match(session_id):
        raise SessionIdInvalidError(
            "a session id is 1-128 letters, digits, '_', '.', ':' or '-'",
            details={"session_id": session_id[:200]},
        )


def load_session(conn: Connection, session_id: str) -> tuple[str, str | None] | None:
    """The session's app and owner, or None if there is no such session."""
    row = conn.execute(_SESSION_ROW, {"b_session": session_id}).first()
    return None if row is None else (row.app_uuid, row.owner)


def load_history(conn: Connection, session_id: str, depth: int) -> list[HistoryTurn]:
    """The last ``depth`` turns of the session, oldest first."""
    rows = conn.execute(_HISTORY, {"b_session": session_id, "b_depth": depth}).all()
    return [HistoryTurn(r.transcript, r.input, r.output) for r in reversed(rows)]


def admission_lock_key(app_uuid: str) -> int:
    """The PostgreSQL advisory lock that serialises the run admissions of one app."""
    return int(hashlib.sha256(app_uuid.encode()).hexdigest()[:15], 16)


def lock_app(conn: Connection, app: AppRecord) -> None:
    """SQLite: serialise run admissions, until commit, with a no-op write, which takes
    the database's write lock now, so the counts read next are current and no other
    process admits a run between them and this transaction's inserts (PostgreSQL's
    admission takes its own locks: :func:`admit_at_once`)."""
    conn.execute(_LOCK_APP, {"b_app": app.uuid})


def count_active(conn: Connection, app_uuid: str, since: datetime) -> int:
    """Runs of the app still going that started after ``since`` (older ones are dead)."""
    active = conn.scalar(_ACTIVE, {"b_app": app_uuid, "b_since": since})
    return int(active or 0)


def count_client_runs(conn: Connection, client: ClientLimit) -> int:
    """Runs of any app that the client has going (started after ``client.since``)."""
    going = conn.scalar(_CLIENT_ACTIVE, {"b_client": client.key, "b_since": client.since})
    return int(going or 0)


def session_busy(conn: Connection, session_id: str, since: datetime) -> bool:
    """Whether the session has a run going that started after ``since``."""
    return (
        conn.execute(_SESSION_RUN, {"b_session": session_id, "b_since": since}).first() is not None
    )


def insert_session(
    conn: Connection, session_id: str, app_uuid: str, owner: str, now: datetime
) -> None:
    values = {
        "id": session_id,
        "app_uuid": app_uuid,
        "owner": owner,
        "created_at": now,
        "updated_at": now,
    }
    conn.execute(_NEW_SESSION, values)


@dataclass(frozen=True)
class ClientLimit:
    """At most ``most`` runs going at once, counting those started after ``since``, for
    the caller without a token known by ``key`` (a keyed hash of its address)."""

    key: str
    most: int
    since: datetime


@dataclass(frozen=True)
class Admission:
    """What a run is admitted under: at most ``most`` runs of the app going (and none of
    its session, if the session is ``known``), counting those started after ``since``,
    and within its caller's ``client`` limit, if it has one. A session not ``known`` is
    made for the run, owned by ``owner``."""

    most: int
    since: datetime
    known: bool
    owner: str
    client: ClientLimit | None = None


@dataclass(frozen=True)
class NewRun:
    """A run to admit, to be recorded ``running``, owned by the process ``process_id``
    (see runs.recovery)."""

    run_id: str
    app: AppRecord
    session_id: str
    token_id: str | None
    stream: bool
    inputs: Any
    process_id: str | None = None


def admit_run(conn: Connection, new: NewRun, admission: Admission) -> bool:
    """SQLite: insert the new run and its new session if ``admission`` lets it in;
    whether it did."""
    run_id, app, session_id = new.run_id, new.app, new.session_id
    client = admission.client
    statement = _admitted_run(known_session=admission.known, client=client is not None)
    now = utcnow()
    inserted = conn.execute(
        statement,
        {
            "b_run": run_id,
            "b_app": app.uuid,
            "b_version": app.version,
            "b_session": session_id,
            "b_token": new.token_id,
            "b_process": new.process_id,
            "b_stream": new.stream,
            "b_input": new.inputs,
            "b_empty_object": {},
            "b_empty_list": [],
            "b_now": now,
            "b_since": admission.since,
            "b_most": admission.most,
            "b_client": client.key if client is not None else None,
            "b_client_since": client.since if client is not None else None,
            "b_client_most": client.most if client is not None else None,
        },
    )
    if inserted.rowcount != 1:
        return False
    if not admission.known:  # SQLite has no INSERT inside WITH
        insert_session(conn, session_id, app.uuid, admission.owner, now)
    return True


_ADMIT_AT_ONCE = select(
    func.appforge_admit_run(
        bindparam("p_run", type_=String(36)),
        bindparam("p_app", type_=String(36)),
        bindparam("p_version", type_=Integer),
        bindparam("p_session", type_=String(128)),
        bindparam("p_token", type_=String(36)),
        bindparam("p_process", type_=String(36)),
        bindparam("p_client", type_=String(64)),
        bindparam("p_stream", type_=Boolean),
        bindparam("p_input", type_=JSON),
        bindparam("p_now", type_=UTCDateTime),
        bindparam("p_since", type_=UTCDateTime),
        bindparam("p_most", type_=Integer),
        bindparam("p_known", type_=Boolean),
        bindparam("p_owner", type_=String(64)),
        bindparam("p_client_since", type_=UTCDateTime),
        bindparam("p_client_most", type_=Integer),
        bindparam("p_app_key", type_=BigInteger),
        bindparam("p_client_key", type_=BigInteger),
    )
)


def admit_at_once(conn: Connection, new: NewRun, admission: Admission) -> RunServiceError | None:
    """PostgreSQL: admit the run as :func:`admit_run` does, in one statement (the
    function ``appforge_admit_run``, migration 0021) on a connection in autocommit: it
    takes the app's advisory lock, then the client's (always in this order, so no two
    admissions wait on each other in a cycle), counts with a snapshot taken after
    them, and inserts the new session and the run; the locks go with the statement's
    commit, held only while the server works. None when the run is in, else why not."""
    client = admission.client
    said = conn.scalar(
        _ADMIT_AT_ONCE,
        {
            "p_run": new.run_id,
            "p_app": new.app.uuid,
            "p_version": new.app.version,
            "p_session": new.session_id,
            "p_token": new.token_id,
            "p_process": new.process_id,
            "p_client": client.key if client is not None else None,
            "p_stream": new.stream,
            "p_input": new.inputs,
            "p_now": utcnow(),
            "p_since": admission.since,
            "p_most": admission.most,
            "p_known": admission.known,
            "p_owner": admission.owner,
            "p_client_since": client.since if client is not None else None,
            "p_client_most": client.most if client is not None else None,
            "p_app_key": admission_lock_key(new.app.uuid),
            "p_client_key": (
                admission_lock_key(f"client:{client.key}") if client is not None else None
            ),
        },
    )
    if said is None:
        return None
    reason, _, active = str(said).partition(":")
    if reason == "app":
        return too_many_runs(admission.most, int(active))
    if reason == "client" and client is not None:
        return _client_busy(client)
    return _session_busy(new.session_id)


def refusal(
    conn: Connection, app_uuid: str, admission: Admission, session_id: str
) -> RunServiceError | None:
    """Why ``admission`` refused a run: too many runs of the app going, or of its
    client, or one of its session. None when none holds any more (a run ended since)."""
    active = count_active(conn, app_uuid, admission.since)
    if active >= admission.most:
        return too_many_runs(admission.most, active)
    client = admission.client
    if client is not None and count_client_runs(conn, client) >= client.most:
        return _client_busy(client)
    if admission.known and session_busy(conn, session_id, admission.since):
        return _session_busy(session_id)
    return None


def _client_busy(client: ClientLimit) -> TooManyRunsError:
    """429: the caller without a token has ``client.most`` runs going."""
    return TooManyRunsError(
        f"this address already has {client.most} runs going; wait for one to end",
        details={"limit": client.most, "per": "client"},
        headers={"Retry-After": "1"},
    )


def _session_busy(session_id: str) -> SessionBusyError:
    """409: the session has a run going."""
    return SessionBusyError(
        f"session '{session_id}' has a run going: send the next one when it ends",
        details={"session_id": session_id},
        headers={"Retry-After": "1"},
    )


def too_many_runs(most: int, active: int | None = None) -> TooManyRunsError:
    """429: the app has ``active`` runs going (unknown: at least ``most``)."""
    going = f"already has {active}" if active is not None else "has too many"
    return TooManyRunsError(
        f"this app {going} runs going (limit {most})",
        details={"limit": most},
        headers={"Retry-After": "1"},
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


def store_finished(conn: Connection, done: Finish, *, turn: bool = True) -> None:
    """The finished run, the prompts it used and, if it succeeded (and ``turn``), the
    session's turn."""
    now = utcnow()
    outcome = done.outcome
    updated = conn.execute(_FINISH, _finish_params(done, now))
    if updated.rowcount == 0:
        return  # the app was deleted while it ran
    if outcome.prompts:
        conn.execute(
            _PROMPT_USES,
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
    if turn and outcome.status == "succeeded":
        _add_turn(conn, done, now)


def store_at_once(conn: Connection, done: Finish, *, turn: bool = True) -> None:
    """PostgreSQL, on a connection in autocommit: what :func:`store_finished` stores for
    a run without managed prompts, in one statement (no BEGIN or COMMIT round trips)."""
    assert not done.outcome.prompts
    params = _finish_params(done, utcnow())
    if turn and done.outcome.status == "succeeded":
        turn_params = {
            "b_session": done.session_id,
            "b_input": done.inputs,
            "b_transcript": done.outcome.transcript,
        }
        conn.execute(_FINISH_WITH_TURN, {**params, **turn_params})
    else:
        conn.execute(_FINISH, params)


def _finish_params(done: Finish, now: datetime) -> dict[str, Any]:
    outcome, failure = done.outcome, done.outcome.failure
    error = None
    if failure is not None:
        error = {"code": failure.code, "message": failure.message, "step": failure.step}
    return {
        "b_run": done.run_id,
        "b_status": outcome.status,
        "b_output": outcome.output,
        "b_steps": outcome.steps,
        "b_usage": outcome.usage,
        "b_error": error,
        "b_latency": round(done.latency_ms, 3),
        "b_ttft": round(done.ttft_ms, 3) if done.ttft_ms is not None else None,
        "b_now": now,
    }


def fail_run(conn: Connection, run_id: str, code: str, message: str) -> None:
    """End a ``running`` run as ``failed`` with ``code`` (a run already ended is left)."""
    conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running")
        .values(
            status="failed",
            error={"code": code, "message": message, "step": None},
            finished_at=utcnow(),
        )
    )


def _add_turn(conn: Connection, done: Finish, now: datetime) -> None:
    params = {
        "b_session": done.session_id,
        "b_run": done.run_id,
        "b_input": done.inputs,
        "b_output": done.outcome.output,
        "b_transcript": done.outcome.transcript,
        "b_now": now,
    }
    if conn.dialect.name == "postgresql":
        conn.execute(_NEXT_TURN_TOUCHING, params)
    else:  # SQLite has no UPDATE inside WITH
        conn.execute(_NEXT_TURN, params)
        conn.execute(_TOUCH_SESSION, {"b_session": done.session_id, "b_now": now})
