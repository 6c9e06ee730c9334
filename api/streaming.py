"""Streamed runs: the bridge from the run's thread, and the NDJSON and SSE encoders.

Both carry the same JSON objects: chunks shaped like the non-streamed body
(``{"session": {...}, "output": {key: chunk}}``), then a final
``{"session", "run", "done": true}`` or an error body.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from apps_yaml.events import Chunk, Event, Output
from runs.service import FinishedRun, PreparedRun, RunRequest, RunService

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class Encoder:
    """Turns chunk/done/error objects into the bytes of one stream format."""

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.media_type = SSE if sse else NDJSON
        self._n = 0

    def encode(self, event: str, obj: dict[str, Any]) -> bytes:
        """``event`` is ``chunk``, ``done`` or ``error`` (used by SSE only)."""
        if not self.sse:
            return (_dumps(obj) + "\n").encode()
        self._n += 1
        return f"id: {self._n}\nevent: {event}\ndata: {_dumps(obj)}\n\n".encode()


def wants_sse(accept: str) -> bool:
    return SSE in accept.lower()


# --- from the run's worker thread to the response -----------------------------------


@dataclass(frozen=True)
class _End:
    """The last item of a run: what it returned, or what it raised."""

    finished: FinishedRun | None = None
    error: BaseException | None = None


class RunBridge:
    """Carries a run's events from its worker thread to the event loop, in order.

    :meth:`emit` is called on the worker thread; :meth:`first` waits (on the
    loop) for the first output or the end, so a run that fails before its first
    byte still gets a normal error status; :meth:`rest` yields what follows.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Event | PreparedRun | _End] = asyncio.Queue()
        self.prepared: PreparedRun | None = None

    def emit(self, item: Event | PreparedRun | _End) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass

    def job(
        self, service: RunService, request: RunRequest, cancel: threading.Event
    ) -> Callable[[], None]:
        """The worker-thread function: prepare the run (sent first), execute it
        (each event sent as it comes), then its result or error."""

        def work() -> None:
            try:
                prepared = service.prepare(request)
                self.emit(prepared)
                finished = service.execute(prepared, cancel, self.emit)
            except BaseException as exc:  # handed to the loop, raised there
                self.emit(_End(error=exc))
            else:
                self.emit(_End(finished=finished))

        return work

    async def first(self, disconnected: Callable[[], Awaitable[bool]]) -> Event | _End | None:
        """The first output event or the end; None if the client went away meanwhile."""
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout=0.5)
            except TimeoutError:
                if await disconnected():
                    return None
                continue
            if isinstance(item, PreparedRun):
                self.prepared = item
            elif isinstance(item, Chunk | Output | _End):
                return item

    async def rest(self) -> AsyncIterator[Event | PreparedRun | _End]:
        """Every item after the first, the end included."""
        while True:
            item = await self._queue.get()
            yield item
            if isinstance(item, _End):
                return


def is_end(item: object) -> TypeGuard[_End]:
    return isinstance(item, _End)


@dataclass
class Started:
    """A streamed run past its first output: ``first`` (an output, or its end)."""

    first: object
    bridge: RunBridge
    prepared: PreparedRun


async def start_streaming(
    executor: Any,
    runs: RunService,
    run_request: RunRequest,
    cancel: threading.Event,
    disconnected: Callable[[], Awaitable[bool]],
    failed: Callable[[FinishedRun], Exception],
) -> Started | None:
    """Start a run on ``executor`` and hold the answer until its first output, so a run
    that fails before its first byte gets a real error status (``failed`` makes the
    error of a failed run). None: the client went away first (the run is stopped)."""
    loop = asyncio.get_running_loop()
    bridge = RunBridge(loop)
    # The run's thread gets this request's context: its log lines name the request.
    job = bridge.job(runs, run_request, cancel)
    future = loop.run_in_executor(executor, contextvars.copy_context().run, job)
    try:
        first = await bridge.first(disconnected)
    except asyncio.CancelledError:
        cancel.set()
        raise
    if first is None:
        cancel.set()
        await future
        return None
    if is_end(first):
        await future
        if first.error is not None:
            raise first.error
        assert first.finished is not None
        if first.finished.failure is not None:
            raise failed(first.finished)
    assert bridge.prepared is not None
    return Started(first, bridge, bridge.prepared)
