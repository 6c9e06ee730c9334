"""Running apps (one JSON body, NDJSON or SSE) and reading stored runs.

The route keeps only HTTP: it hands the request to the run service (prepare,
execute, store: ``runs.service``) on a worker thread, turns its failures into
status codes, encodes its events as a stream, and cancels the run when the
client goes away. The run is stored by the worker when it ends, so a run
whose client left is still recorded (``cancelled``, with what it produced).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.access import AppRunCaller, OwnReader
from api.auth import Principal
from api.deps import DbSession
from api.errors import ApiError, NotFoundError, error_body, request_id_of
from api.openapi import streamed_responses
from api.proxies import client_key
from api.ratelimit import Rate, RateLimitedError, note
from api.state import ApiState, State
from api.streaming import (
    Encoder,
    is_end,
    run_unless_gone,
    start_streaming,
    unstored,
    wants_sse,
)
from appforge.core.metrics import ACTIVE_STREAMS
from apps_yaml.events import Chunk, Output
from providers.base import Cancel
from runs.errors import told
from runs.service import Caller, FinishedRun, PreparedRun, RunRequest
from runs.tables import Run

log = logging.getLogger(__name__)

router = APIRouter(tags=["runs"])


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict, description="Values of the app's inputs")
    stream: bool = Field(default=False, description="Stream output chunks (NDJSON or SSE)")
    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Run in this session, as .../run/<session_id> does (Promptly's body form).",
    )


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


def _caller(token: Principal | None) -> Caller | None:
    return None if token is None else Caller(token.id, token.name, token.role)


def _failure_error(finished: FinishedRun, role: str | None) -> ApiError:
    failure = finished.failure
    assert failure is not None
    run = finished.run
    return ApiError(
        told(failure.code, failure.message, role),
        code=failure.code,
        details={"run_id": run.run_id, "step": failure.step, "session_id": run.session_id},
        status_code=failure.status_code if 400 <= failure.status_code < 600 else 500,
    )


def _summary(finished: FinishedRun) -> dict[str, Any]:
    return {
        "id": finished.run.run_id,
        "status": finished.status,
        "usage": finished.usage,
        "latency_ms": round(finished.latency_ms, 3),
    }


@router.post(
    "/api/apps/{app_uuid}/run",
    response_model=RunResponse,
    responses=streamed_responses(RunResponse),
)
async def run_app_route(
    request: Request, app_uuid: str, body: RunBody, token: AppRunCaller, state: State
) -> Response:
    """Run an app in a new session (its id comes back in the answer), or in the body's
    ``session_id`` as ``.../run/<session_id>`` would.

    With ``"stream": true`` the answer is NDJSON (or SSE with
    ``Accept: text/event-stream``): chunks ``{"session", "output": {key: piece}}``
    whose string pieces concatenate per key to the non-streamed output, then
    ``{"session", "run", "done": true}``, or an error body if the run fails.
    """
    run_request = RunRequest(
        app_uuid, body.input, body.session_id, body.stream, _caller(token),
        client=anonymous_client(request, token),
    )  # fmt: skip
    return await _run(request, state, run_request)


@router.post(
    "/api/apps/{app_uuid}/run/{session_id}",
    response_model=RunResponse,
    responses=streamed_responses(RunResponse),
)
async def run_app_in_session_route(
    request: Request,
    app_uuid: str,
    session_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: RunBody,
    token: AppRunCaller,
    state: State,
) -> Response:
    """Run an app in a session: continue it, or start it with this id (tokens only).

    Streams like ``runApp``. Anonymous callers continue only sessions the server
    gave them; another caller's session is 404 ``SESSION_NOT_FOUND``.
    """
    if body.session_id is not None and body.session_id != session_id:
        raise ApiError(
            "the body's session_id differs from the one in the path",
            code="VALIDATION_ERROR",
            details={"path": session_id, "body": body.session_id},
            status_code=422,
        )
    run_request = RunRequest(
        app_uuid, body.input, session_id, body.stream, _caller(token),
        client=anonymous_client(request, token),
    )  # fmt: skip
    return await _run(request, state, run_request)


async def _run(request: Request, state: ApiState, run_request: RunRequest) -> Response:
    if run_request.caller is None:
        await count_public_run(request, state, run_request.app_uuid)
    cancel = Cancel()
    if run_request.stream:
        return await _stream(request, state, run_request, cancel)
    finished = await run_unless_gone(
        state.executor, state.runs, run_request, cancel, request.is_disconnected
    )
    if finished is None:  # the client went away
        return Response(status_code=499)
    if finished.failure is not None:
        raise _failure_error(finished, run_request.role)
    # Built here rather than validated again against the response model: it is one.
    content = {
        "session": {"id": finished.run.session_id},
        "output": finished.outcome.output,
        "run": _summary(finished),
    }
    return JSONResponse(content)


def anonymous_client(request: Request, token: Principal | None) -> str | None:
    """Who a caller without a token is, by its address (:func:`client_key`): its runs
    at once are limited."""
    return None if token is not None else client_key(request)


async def count_public_run(request: Request, state: ApiState, app_uuid: str) -> None:
    """Count a run without a token in its address's bucket for this app: the app's
    ``limits.public_rate``, or the server's. 429 (nothing stored) when it is empty."""
    if state.limiter is None:
        return
    policy = await run_in_threadpool(state.origins.app, app_uuid)
    if policy is None or not policy.public:
        return  # the run service answers: no such app (404), or not public (401)
    rate = Rate.of(policy.public_rate or state.settings.rate_limit.public_rate)
    decision = await state.limiter.hit(f"public:{app_uuid}:{client_key(request)}", rate)
    if decision is None:
        return
    note(request.scope.setdefault("state", {}), decision)
    if not decision.allowed:
        raise RateLimitedError(
            decision,
            f"too many runs of this app from this address: retry after {decision.retry_after} s",
        )


async def _stream(
    request: Request, state: ApiState, run_request: RunRequest, cancel: Cancel
) -> Response:
    """Hold the answer until the first output (a run that fails before its first byte
    gets a normal error status), then stream the rest as it comes."""
    role = run_request.role
    failed = partial(_failure_error, role=role)
    started = await start_streaming(
        state.executor, state.runs, run_request, cancel, request.is_disconnected, failed
    )
    if started is None:  # the client went away before the first byte
        return Response(status_code=499)
    first, bridge, prepared = started.first, started.bridge, started.prepared
    encoder = Encoder(wants_sse(request.headers.get("accept", "")))
    session = {"id": prepared.session_id}

    def line(item: Any) -> bytes:
        if isinstance(item, Chunk):
            return encoder.encode("chunk", {"session": session, "output": {item.key: item.text}})
        if isinstance(item, Output):
            return encoder.encode("chunk", {"session": session, "output": {item.key: item.value}})
        if is_end(item):
            return _last_line(encoder, item, session, prepared, request_id_of(request), role)
        return b""

    async def lines() -> AsyncIterator[bytes]:
        ACTIVE_STREAMS.inc()
        try:
            if is_end(first):
                yield line(first)
                return
            yield line(first)
            # What arrived while the last piece was written goes out as one piece.
            async for items in bridge.batches():
                yield b"".join(line(item) for item in items)
        finally:
            # Reached on normal end and when the client disconnects (generator
            # closed): either way the worker must stop generating.
            cancel.set()
            ACTIVE_STREAMS.dec()

    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Session-ID": prepared.session_id,
        "X-Run-ID": prepared.run_id,
    }
    return StreamingResponse(lines(), media_type=encoder.media_type, headers=headers)


def _last_line(
    encoder: Encoder,
    end: Any,
    session: dict[str, str],
    prepared: PreparedRun,
    request_id: str,
    role: str | None,
) -> bytes:
    """The ``done`` line of a stream, or its error line (worded for the caller's role)."""
    finished: FinishedRun | None = end.finished
    if finished is not None and finished.failure is None:
        done = {"session": session, "run": _summary(finished), "done": True}
        return encoder.encode("done", done)
    if finished is not None and finished.failure is not None:
        failure = finished.failure
        code, message, step = failure.code, told(failure.code, failure.message, role), failure.step
    else:  # the run crashed after its first byte (storing it failed)
        _, code, message = unstored(end.error)
        step = None
    details = {"run_id": prepared.run_id, "step": step}
    return encoder.encode("error", error_body(code, message, details, request_id))


@router.get("/api/runs/{run_id}", response_model=RunPublic)
def get_run_route(run_id: str, db: DbSession, token: OwnReader) -> Run | RunPublic:
    """One run: input, output, steps (rendered prompts, timings, usage), status and error.
    A runner key sees only the runs it made; a key narrowed to apps, only theirs. A
    runner key sees what it sent and got and how the run went, not what is behind the
    app: its steps keep id, kind, timings, usage and finish reason (no rendered prompts,
    retrieved text, models or step errors), and the error is in the words its run got."""
    run = db.get(Run, run_id)
    if run is None or not token.may_use_app(run.app_uuid):
        raise NotFoundError(f"no run '{run_id}'", code="RUN_NOT_FOUND")
    if token.role == "runner" and run.token_id != token.id:
        raise NotFoundError(f"no run '{run_id}'", code="RUN_NOT_FOUND")
    return _as_runner_sees(run) if token.role == "runner" else run


# What a runner key reads of each step of its run.
_RUNNER_STEP_KEYS = frozenset({"id", "kind", "latency_ms", "ttft_ms", "usage", "finish_reason"})


def _as_runner_sees(run: Run) -> RunPublic:
    seen = RunPublic.model_validate(run)
    steps = [{k: v for k, v in step.items() if k in _RUNNER_STEP_KEYS} for step in seen.steps]
    error = seen.error
    if error is not None:
        said = told(str(error.get("code")), str(error.get("message")), "runner")
        error = {**error, "message": said}
    return seen.model_copy(update={"steps": steps, "error": error})
