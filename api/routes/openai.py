"""The OpenAI-compatible endpoint: apps as models, runs as chat completions.

- ``POST /v1/chat/completions``: ``model`` is an app's uuid or name; the
  messages become a run (``runs.chat``) that goes through the run service like
  every other run (stored, with its session); the answer is one output key,
  whole or as ``chat.completion.chunk`` SSE frames ending in ``data: [DONE]``.
  ``X-Session-ID`` continues a session (its turns are then the history) and
  every answer names its session in ``X-Session-ID``.
- ``GET /v1/models`` and ``GET /v1/models/{model}``: the apps the caller may run.

Errors take OpenAI's shape on these paths (``api.errors.body_for``) with the
API's usual status codes; a run that fails after its first frame ends its
stream with a ``data: {"error": ...}`` frame.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select

from api import openai_format as wire
from api.access import ModelLister, ModelRunCaller, check_app_scope
from api.auth import Principal
from api.cors import about_app
from api.deps import DbSession
from api.errors import OPENAI_ERROR_RESPONSES, ApiError, AuthError
from api.routes.runs import anonymous_client, count_public_run
from api.state import ApiState, State
from api.streaming import RunBridge, is_end, run_unless_gone, start_streaming, unstored
from appforge.core.metrics import ACTIVE_STREAMS
from apps_yaml.events import Chunk, Output
from providers.base import Cancel
from runs import chat
from runs.errors import told
from runs.records import AppRecord, find_app_uuid
from runs.service import Caller, FinishedRun
from runs.tables import App

router = APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERROR_RESPONSES)

SessionHeader = Annotated[
    str | None,
    Header(alias="X-Session-ID", description="A session to continue (its turns are the history)"),
]


def _caller(token: Principal | None) -> Caller | None:
    return None if token is None else Caller(token.id, token.name, token.role)


def _admit(token: Principal | None, app_uuid: str, public: bool) -> None:
    """Anonymous callers run public apps only; narrowed tokens only their apps."""
    if token is None and not public:
        raise AuthError(
            "this app is not public: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    check_app_scope(token, app_uuid)


def _failed(finished: FinishedRun, role: str | None) -> ApiError:
    failure = finished.failure
    assert failure is not None
    return ApiError(
        told(failure.code, failure.message, role),
        code=failure.code,
        details={"run_id": finished.run.run_id, "step": failure.step},
        status_code=failure.status_code if 400 <= failure.status_code < 600 else 500,
    )


@router.get("/models", response_model=wire.ModelList)
def list_openai_models_route(db: DbSession, token: ModelLister) -> dict[str, Any]:
    """The apps the caller may run, as OpenAI models (``id`` is the app's uuid).

    Anonymous callers see the public apps; a token narrowed to apps, those apps."""
    query = select(App.uuid, App.name, App.created_at).order_by(App.created_at, App.uuid)
    if token is None:
        query = query.where(App.public.is_(True))
    elif token.apps is not None:
        query = query.where(App.uuid.in_(token.apps))
    rows = db.execute(query).all()
    data = [_model(r.uuid, r.name, r.created_at.timestamp()) for r in rows]
    return {"object": "list", "data": data}


def _model(uuid: str, name: str, created: float) -> dict[str, Any]:
    return {"id": uuid, "object": "model", "created": int(created), "owned_by": "appforge",
            "name": name}  # fmt: skip


@router.get("/models/{model}", response_model=wire.ModelPublic)
def get_openai_model_route(model: str, db: DbSession, token: ModelRunCaller) -> dict[str, Any]:
    """One app as an OpenAI model, by uuid or name (404 ``APP_NOT_FOUND``)."""
    app = db.get(App, find_app_uuid(db.connection(), model))
    assert app is not None
    _admit(token, app.uuid, app.public)
    return _model(app.uuid, app.name, app.created_at.timestamp())


@router.post(
    "/chat/completions",
    response_model=wire.ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def create_chat_completion_route(
    request: Request,
    body: wire.ChatCompletionCreate,
    token: ModelRunCaller,
    state: State,
    session_id: SessionHeader = None,
) -> Response:
    """Run the app ``model`` names on the last user message (OpenAI's chat completions).

    With ``"stream": true`` the answer is Server-Sent Events: ``chat.completion.chunk``
    frames (the role, then the text as the model writes it, then the finish
    reason; the usage too with ``stream_options.include_usage``) and
    ``data: [DONE]``."""
    loop = asyncio.get_running_loop()
    client = anonymous_client(request, token)
    planned = await loop.run_in_executor(
        state.executor, _plan, state, body, token, session_id, client
    )
    about_app(request, planned.request.app_uuid)  # CORS: the app's origins apply
    if token is None:
        await count_public_run(request, state, planned.request.app_uuid)
    cancel = Cancel()
    if body.stream:
        return await _stream(request, state, body, planned, cancel)
    finished = await run_unless_gone(
        state.executor, state.runs, planned.request, cancel, request.is_disconnected
    )
    if finished is None:  # the client went away
        return Response(status_code=499)
    if finished.failure is not None:
        raise _failed(finished, planned.request.role)
    answer = wire.answer_text(finished.outcome.output.get(planned.output_key))
    content = wire.ChatCompletion(
        id=f"chatcmpl-{finished.run.run_id}",
        created=int(time.time()),
        model=body.model,
        choices=[
            wire.Choice(
                message=wire.AssistantMessage(content=answer),
                finish_reason=wire.finish_reason(finished.outcome.steps),
            )
        ],
        usage=wire.Usage(**wire.usage_of(finished.usage)),
    )
    return JSONResponse(content.model_dump(), headers=_headers(finished.run.session_id,
                                                               finished.run.run_id))  # fmt: skip


def _plan(
    state: ApiState,
    body: wire.ChatCompletionCreate,
    token: Principal | None,
    session: str | None,
    client: str | None,
) -> chat.ChatRun:
    """Find the app, admit the caller, read the messages: the run to make (blocking)."""
    app: AppRecord = state.runs.find_app(body.model)
    _admit(token, app.uuid, app.public)
    try:
        messages = wire.said(body.messages)
    except wire.ContentPartError as exc:
        raise ApiError(
            f"{exc}: only text parts are read",
            code="CONTENT_PART_UNSUPPORTED",
            status_code=422,
            details={"index": exc.index, "part": exc.part, "type": exc.kind},
        ) from None
    return chat.plan(
        app,
        messages,
        state.settings.limits,
        session_id=session,
        caller=_caller(token),
        stream=body.stream,
        client=client,
    )


def _headers(session_id: str, run_id: str) -> dict[str, str]:
    return {"X-Session-ID": session_id, "X-Run-ID": run_id}


def _piece(item: object, key: str) -> str:
    """The answer's text in one event of the run (empty for other keys and events)."""
    if isinstance(item, Chunk) and item.key == key:
        return item.text
    if isinstance(item, Output) and item.key == key:
        return wire.answer_text(item.value)
    return ""


async def _stream(
    request: Request,
    state: ApiState,
    body: wire.ChatCompletionCreate,
    planned: chat.ChatRun,
    cancel: Cancel,
) -> Response:
    """Hold the answer until the run's first output (so a run failing before it gets a
    real error status), then send the frames as the model writes."""
    role = planned.request.role
    failed = partial(_failed, role=role)
    started = await start_streaming(
        state.executor, state.runs, planned.request, cancel, request.is_disconnected, failed
    )
    if started is None:  # the client went away before the first byte
        return Response(status_code=499)
    first, bridge, prepared = started.first, started.bridge, started.prepared
    writer = wire.ChunkWriter(f"chatcmpl-{prepared.run_id}", int(time.time()), body.model)
    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        **_headers(prepared.session_id, prepared.run_id),
    }
    frames = _frames(writer, first, bridge, planned.output_key, body.include_usage, cancel, role)
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


async def _frames(
    writer: wire.ChunkWriter,
    first: object,
    bridge: RunBridge,
    output_key: str,
    include_usage: bool,
    cancel: Cancel,
    role: str | None,
) -> AsyncIterator[bytes]:
    """The SSE frames of a run whose first output is ``first``: role, text deltas of
    ``output_key``, finish reason, usage (if asked) and ``[DONE]``; or an error frame
    (worded for the caller's ``role``)."""
    ACTIVE_STREAMS.inc()
    try:
        yield writer.role()
        item: Any = first
        items = bridge.rest()
        while not is_end(item):
            text = _piece(item, output_key)
            if text:
                yield writer.content(text)
            item = await anext(items)
        finished: FinishedRun | None = item.finished
        if finished is None or finished.failure is not None:
            yield writer.error(_error_frame(finished, item.error, role))
            return
        yield writer.finish(wire.finish_reason(finished.outcome.steps))
        if include_usage:
            yield writer.usage(finished.usage)
        yield writer.done()
    finally:
        # Normal end, or the client went away (generator closed): stop the run.
        cancel.set()
        ACTIVE_STREAMS.dec()


def _error_frame(
    finished: FinishedRun | None, error: BaseException | None, role: str | None
) -> dict[str, Any]:
    """The ``{"error": ...}`` frame of a run that failed after its first frame."""
    if finished is None or finished.failure is None:  # storing the run failed
        return wire.error_body(*unstored(error))
    failure = finished.failure
    status = failure.status_code if 400 <= failure.status_code < 600 else 500
    return wire.error_body(status, failure.code, told(failure.code, failure.message, role))
