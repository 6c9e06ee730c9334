"""Running apps (one JSON body, NDJSON or SSE) and reading stored runs.

A run is prepared in the request (app, input, session, history), executed by
the engine in a worker thread, and stored by that same thread when it ends, so
a run whose client went away is still recorded (as ``cancelled``, with the
output produced so far). An app that names a Python flow (``flow: <name>``)
runs the flow this process serves (``create_app(..., flows=...)``) instead of
the engine; everything else (storage, streaming, limits, sessions) is shared.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentToken, DbSession, OptionalToken
from api.errors import ApiError, AuthError, ConflictError, NotFoundError, error_body
from api.routes.apps import get_app_row
from api.streaming import Encoder, wants_sse
from appforge.core.db import transaction, utcnow
from apps_yaml import engine
from apps_yaml.engine import Chunk, Dependencies, Event, Failed, HistoryTurn, Outcome, Output
from apps_yaml.flows import Flow
from apps_yaml.inputs import check_input
from apps_yaml.schema import AppDocument, LlmStep
from datasources.store import StoreRetriever
from runs.prompt_refs import StorePrompts
from runs.tables import ChatSession, Run, RunPrompt, Turn

log = logging.getLogger(__name__)

router = APIRouter(tags=["runs"])

RUN_STATUSES = "^(running|succeeded|failed|cancelled|timeout)$"
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_END = object()


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict, description="Values of the app's inputs")
    stream: bool = Field(default=False, description="Stream output chunks (NDJSON or SSE)")


class RunSummary(BaseModel):
    id: str
    status: str
    usage: dict[str, int]
    latency_ms: float | None


class SessionRef(BaseModel):
    id: str


class RunResponse(BaseModel):
    session: SessionRef
    output: dict[str, Any]
    run: RunSummary


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    app_uuid: str
    app_version: int
    session_id: str
    status: str
    stream: bool
    input: dict[str, Any]
    output: dict[str, Any]
    steps: list[dict[str, Any]]
    usage: dict[str, Any]
    error: dict[str, Any] | None
    latency_ms: float | None
    ttft_ms: float | None
    created_at: datetime
    finished_at: datetime | None


@dataclass
class Prepared:
    run_id: str
    app_uuid: str
    app_name: str
    doc: AppDocument
    inputs: dict[str, Any]
    session_id: str
    history: list[HistoryTurn]
    timeout: float
    flow: Flow | None = None


@dataclass
class Finished:
    outcome: Outcome
    summary: RunSummary


def _prepare(
    state: Any,
    app_uuid: str,
    authorized: bool,
    body: RunRequest,
    session_id: str | None,
    stream: bool,
    retried: bool = False,
) -> Prepared:
    with state.db() as db:
        app = get_app_row(db, app_uuid)
        if not app.public and not authorized:
            raise AuthError(
                "this app is not public: send 'Authorization: Token <token>'",
                headers={"WWW-Authenticate": "Token"},
            )
        doc = AppDocument.model_validate(app.document)
        flow: Flow | None = None
        if doc.flow is not None:
            flow = state.flows.get(doc.flow)
            if flow is None:  # saved by a process that served it, since stopped
                raise ConflictError(
                    f"app '{app.name}' runs the Python flow '{doc.flow}', which this server"
                    " does not serve: serve it with `appforge run <flow file> --serve`",
                    code="FLOW_NOT_SERVED",
                    details={"flow": doc.flow},
                )
        inputs = check_input(doc, body.input)
        if session_id is None:
            session_id = uuid.uuid4().hex
        elif not SESSION_ID.match(session_id):
            raise ApiError(
                "a session id is 1-128 letters, digits, '_', '.', ':' or '-'",
                code="SESSION_ID_INVALID",
                status_code=422,
                details={"session_id": session_id[:200]},
            )
        session = db.get(ChatSession, session_id)
        if session is None:
            # Created in the same commit as the run; a concurrent first run of
            # the same session makes that commit fail, and the retry finds it.
            now = utcnow()
            db.add(ChatSession(id=session_id, app_uuid=app_uuid, created_at=now, updated_at=now))
        elif session.app_uuid != app_uuid:
            raise ConflictError(
                f"session '{session_id}' belongs to another app", code="SESSION_APP_MISMATCH"
            )
        if flow is not None:
            depth = flow.history
        else:
            depth = max((s.history for s in doc.steps if isinstance(s, LlmStep)), default=0)
        history: list[HistoryTurn] = []
        if depth and doc.type == "chat":
            turns = db.scalars(
                select(Turn)
                .where(Turn.session_id == session_id)
                .order_by(Turn.n.desc())
                .limit(depth)
            )
            history = [HistoryTurn(t.transcript, t.input, t.output) for t in reversed(list(turns))]
        run = Run(
            id=str(uuid.uuid4()),
            app_uuid=app_uuid,
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
        limits = state.settings.runs
        max_active = min(limits.max_active_per_app, doc.limits.max_active_runs or math.inf)
        timeout = min(limits.timeout_seconds, doc.limits.timeout_seconds or math.inf)
        # Count and insert under a lock, so concurrent starts cannot both take
        # the last place: a process lock, and on PostgreSQL one per app shared
        # by every process (held until the commit).
        with state.admission:
            if db.get_bind().dialect.name == "postgresql":
                db.execute(select(func.pg_advisory_xact_lock(_lock_key(app_uuid))))
            # Runs older than the timeout are dead (their process was killed).
            since = utcnow() - timedelta(seconds=timeout + 30)
            active = db.scalar(
                select(func.count())
                .select_from(Run)
                .where(Run.app_uuid == app_uuid, Run.status == "running", Run.created_at > since)
            )
            if (active or 0) >= max_active:
                db.rollback()
                raise ApiError(
                    f"this app already has {active} runs going (limit {int(max_active)})",
                    code="TOO_MANY_ACTIVE_RUNS",
                    status_code=429,
                    details={"limit": int(max_active)},
                    headers={"Retry-After": "1"},
                )
            db.add(run)
            try:
                db.commit()
            except IntegrityError:
                if retried:
                    raise
                db.rollback()
                retry = True
            else:
                retry = False
        if retry:
            return _prepare(state, app_uuid, authorized, body, session_id, stream, retried=True)
        return Prepared(run.id, app_uuid, app.name, doc, inputs, session_id, history, timeout, flow)


def _lock_key(app_uuid: str) -> int:
    return int(hashlib.sha256(app_uuid.encode()).hexdigest()[:15], 16)


def _store(
    state: Any, p: Prepared, outcome: Outcome, latency_ms: float, ttft_ms: float | None
) -> None:
    failure = outcome.failure
    for attempt in range(3):
        try:
            with transaction(state.db) as db:
                now = utcnow()
                error = None
                if failure is not None:
                    error = {"code": failure.code, "message": failure.message, "step": failure.step}
                # Plain UPDATEs: loading the row (and its JSON) first costs more.
                updated = db.execute(
                    update(Run)
                    .where(Run.id == p.run_id)
                    .values(
                        status=outcome.status,
                        output=outcome.output,
                        steps=outcome.steps,
                        usage=outcome.usage,
                        error=error,
                        latency_ms=round(latency_ms, 3),
                        ttft_ms=round(ttft_ms, 3) if ttft_ms is not None else None,
                        finished_at=now,
                    )
                )
                if updated.rowcount == 0:  # type: ignore[attr-defined]
                    return  # the app was deleted while it ran
                for step in outcome.steps:
                    source = step.get("prompt")
                    if source:
                        db.add(
                            RunPrompt(
                                run_id=p.run_id,
                                step_id=step["id"],
                                prompt_id=source["id"],
                                prompt_version=source["version"],
                                label=source.get("label"),
                            )
                        )
                if outcome.status == "succeeded":
                    last = db.scalar(
                        select(func.max(Turn.n)).where(Turn.session_id == p.session_id)
                    )
                    db.add(
                        Turn(
                            session_id=p.session_id,
                            n=(last or 0) + 1,
                            run_id=p.run_id,
                            input=p.inputs,
                            output=outcome.output,
                            transcript=outcome.transcript,
                            created_at=now,
                        )
                    )
                    db.execute(
                        update(ChatSession)
                        .where(ChatSession.id == p.session_id)
                        .values(updated_at=now)
                    )
            return
        except IntegrityError:
            if attempt == 2:
                raise  # a turn number raced three times: give up loudly


def _execute(
    state: Any, p: Prepared, cancel: threading.Event, emit: Callable[[Any], None] | None
) -> Finished:
    """Drive the engine (in a worker thread), store the run, report each event."""
    outcome = Outcome()
    started = time.perf_counter()
    ttft: float | None = None
    deps = Dependencies(
        models=state.models,
        prompts=StorePrompts(state.db),
        retriever=StoreRetriever(state.datasources),
    )
    timed_out = threading.Event()

    def time_up() -> None:
        timed_out.set()
        cancel.set()

    timer = threading.Timer(p.timeout, time_up)
    timer.daemon = True
    timer.start()
    try:
        if p.flow is not None:
            events = p.flow.run(
                p.inputs, deps, session_id=p.session_id, history=p.history, cancel=cancel
            )
        else:
            events = engine.run(
                p.doc, p.inputs, deps, session_id=p.session_id, history=p.history, cancel=cancel
            )
        for event in events:
            if ttft is None and isinstance(event, Chunk | Output):
                ttft = (time.perf_counter() - started) * 1000
            if isinstance(event, Failed) and event.code == "CANCELLED" and timed_out.is_set():
                event = Failed(
                    "RUN_TIMEOUT", f"the run took longer than {p.timeout:g} s", event.step, 504
                )
            outcome.add(event)
            if emit is not None:
                emit(event)
    except Exception:  # the engine reports step errors itself; this is a bug
        log.exception("run %s crashed", p.run_id)
        outcome.add(Failed("INTERNAL_ERROR", "internal error while running the app"))
    finally:
        timer.cancel()
    latency = (time.perf_counter() - started) * 1000
    try:
        _store(state, p, outcome, latency, ttft)
    finally:
        log.info(
            "run app=%s run=%s status=%s ms=%.0f tokens=%d",
            p.app_uuid,
            p.run_id,
            outcome.status,
            latency,
            outcome.usage.get("total_tokens", 0),
        )
        if emit is not None:
            emit(_END)
    summary = RunSummary(
        id=p.run_id, status=outcome.status, usage=outcome.usage, latency_ms=round(latency, 3)
    )
    return Finished(outcome, summary)


def _failure_error(f: Failed, p: Prepared) -> ApiError:
    return ApiError(
        f.message,
        code=f.code,
        details={"run_id": p.run_id, "step": f.step, "session_id": p.session_id},
        status_code=f.status_code if 400 <= f.status_code < 600 else 500,
    )


@router.post(
    "/api/apps/{app_uuid}/run",
    response_model=RunResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/event-stream": {}}}},
)
@router.post(
    "/api/apps/{app_uuid}/run/{session_id}",
    response_model=RunResponse,
    responses={200: {"content": {"application/x-ndjson": {}, "text/event-stream": {}}}},
)
async def run_app_route(
    request: Request,
    app_uuid: str,
    body: RunRequest,
    token: OptionalToken,
    session_id: str | None = None,
) -> Any:
    """Run an app; pass a session id in the path to continue a session.

    With ``"stream": true`` the answer is NDJSON (or SSE with
    ``Accept: text/event-stream``): chunks ``{"session", "output": {key: piece}}``
    whose string pieces concatenate per key to the non-streamed output, then
    ``{"session", "run", "done": true}``, or an error body if the run fails.
    """
    state = request.app.state
    p = await run_in_threadpool(
        _prepare, state, app_uuid, token is not None, body, session_id, body.stream
    )
    cancel = threading.Event()
    loop = asyncio.get_running_loop()
    if not body.stream:
        finished = await loop.run_in_executor(state.executor, _execute, state, p, cancel, None)
        if finished.outcome.failure is not None:
            raise _failure_error(finished.outcome.failure, p)
        return RunResponse(
            session=SessionRef(id=p.session_id),
            output=finished.outcome.output,
            run=finished.summary,
        )

    queue: asyncio.Queue[Any] = asyncio.Queue()

    def emit(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass

    future = loop.run_in_executor(state.executor, _execute, state, p, cancel, emit)
    encoder = Encoder(wants_sse(request.headers.get("accept", "")))
    session = {"id": p.session_id}

    # Hold the response until the first output (or the end): a run that fails
    # before its first byte gets a normal error status instead of a 200 stream.
    first: Any = None
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    cancel.set()
                    await future
                    return Response(status_code=499)
                continue
            if item is _END or isinstance(item, Chunk | Output):
                first = item
                break
    except asyncio.CancelledError:
        cancel.set()
        raise
    if first is _END:
        finished = await future
        if finished.outcome.failure is not None:
            raise _failure_error(finished.outcome.failure, p)

    def line(event: Event) -> bytes | None:
        if isinstance(event, Chunk):
            return encoder.encode("chunk", {"session": session, "output": {event.key: event.text}})
        if isinstance(event, Output):
            return encoder.encode("chunk", {"session": session, "output": {event.key: event.value}})
        return None

    async def body_iter() -> AsyncIterator[bytes]:
        try:
            item = first
            while item is not _END:
                data = line(item)
                if data is not None:
                    yield data
                item = await queue.get()
            finished = await future
            failure = finished.outcome.failure
            if failure is None:
                done = {"session": session, "run": finished.summary.model_dump(), "done": True}
                yield encoder.encode("done", done)
            else:
                err = error_body(
                    failure.code,
                    failure.message,
                    {"run_id": p.run_id, "step": failure.step},
                    str(request.state.request_id),
                )
                yield encoder.encode("error", err)
        finally:
            # Reached on normal end and when the client disconnects (generator
            # cancelled): either way the worker must stop generating.
            cancel.set()

    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Session-ID": p.session_id,
        "X-Run-ID": p.run_id,
    }
    return StreamingResponse(body_iter(), media_type=encoder.media_type, headers=headers)


@router.get("/api/apps/{app_uuid}/runs", response_model=list[RunPublic])
def list_runs_route(
    app_uuid: str,
    db: DbSession,
    _: CurrentToken,
    response: Response,
    status: Annotated[
        str | None, Query(pattern="^(running|succeeded|failed|cancelled|timeout)$")
    ] = None,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[Run]:
    """An app's runs, newest first; ``X-Total-Count`` gives the number before paging."""
    get_app_row(db, app_uuid)
    query = select(Run).where(Run.app_uuid == app_uuid)
    if status:
        query = query.where(Run.status == status)
    if session_id:
        query = query.where(Run.session_id == session_id)
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    response.headers["X-Total-Count"] = str(total)
    return list(db.scalars(query.order_by(Run.created_at.desc()).limit(limit).offset(offset)))


@router.get("/api/runs/{run_id}", response_model=RunPublic)
def get_run_route(run_id: str, db: DbSession, _: CurrentToken) -> Run:
    """One run: input, output, steps (rendered prompts, timings, usage), status and error."""
    run = db.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run '{run_id}'", code="RUN_NOT_FOUND")
    return run
