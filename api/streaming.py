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
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeGuard

from appforge.core.db import read_only, storage_full, unavailable
from apps_yaml.events import Chunk, Event, Output
from providers.base import Cancel
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
    """Carries a run's outputs from its worker thread to the event loop, in order.

    :meth:`emit` is called on the worker thread; :meth:`first` waits (on the
    loop) for the first output or the end, so a run that fails before its first
    byte still gets a normal error status; :meth:`rest` yields what follows.

    Only what a stream shows crosses over (outputs, the prepared run, the end):
    step events stay on the worker. Waking the event loop costs a system call
    and a turn of the loop, so items that arrive while a wake-up is pending ride
    on it instead of asking for another one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[Chunk | Output | PreparedRun | _End] = deque()
        self._arrived = asyncio.Event()  # set on the loop when items may be waiting
        self._lock = threading.Lock()
        self._wake_pending = False
        self.prepared: PreparedRun | None = None

    def emit(self, item: Event | PreparedRun | _End) -> None:
        if not isinstance(item, Chunk | Output | PreparedRun | _End):
            return  # step events: nothing a stream shows
        with self._lock:
            self._items.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._arrived.set()

    def _take(self) -> Chunk | Output | PreparedRun | _End | None:
        """The next item if one has arrived; else None, with ``_arrived`` cleared."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._arrived.clear()
            return None

    def job(self, service: RunService, request: RunRequest, cancel: Cancel) -> Callable[[], None]:
        """The worker-thread function: prepare the run (sent first), execute it
        (each output sent as it comes), then its result or error."""

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
            item = self._take()
            if item is None:
                try:
                    async with asyncio.timeout(0.5):  # a timer, not a task per wait
                        await self._arrived.wait()
                except TimeoutError:
                    if await disconnected():
                        return None
                continue
            if isinstance(item, PreparedRun):
                self.prepared = item
            else:
                return item

    async def rest(self) -> AsyncIterator[Event | PreparedRun | _End]:
        """Every item after the first, the end included."""
        while True:
            item = self._take()
            if item is None:
                await self._arrived.wait()
                continue
            yield item
            if isinstance(item, _End):
                return

    async def batches(self) -> AsyncIterator[list[Chunk | Output | PreparedRun | _End]]:
        """Every item after the first, the end included, in lists of what had arrived by
        the time the loop came for them: a stream writes them in one piece."""
        while True:
            with self._lock:
                items = list(self._items)
                self._items.clear()
                if not items:
                    self._arrived.clear()
            if not items:
                await self._arrived.wait()
                continue
            yield items
            if isinstance(items[-1], _End):
                return

    async def end(self) -> _End:
        """Wait for the end of the run (dropping any output still coming)."""
        while True:
            item = self._take()
            if item is None:
                await self._arrived.wait()
            elif isinstance(item, _End):
                return item


def is_end(item: object) -> TypeGuard[_End]:
    return isinstance(item, _End)


def unstored(error: BaseException | None) -> tuple[int, str, str]:
    """Status, code and message of a streamed run that ended in ``error`` after its first
    byte: storing it failed. A full disk, storage gone read-only or a database gone is
    said as such (as a run that was not streamed would be answered); anything else is
    a bug."""
    if error is not None and storage_full(error):
        message = "the server's storage is full: this run was not stored; retry once space is freed"
        return 507, "STORAGE_FULL", message
    if error is not None and read_only(error):
        message = "the server's storage is read-only: this run was not stored"
        return 503, "STORAGE_READ_ONLY", message
    if error is not None and unavailable(error) is not None:
        message = "the database cannot be reached: this run was not stored; try again shortly"
        return 503, "DATABASE_UNAVAILABLE", message
    return 500, "INTERNAL_ERROR", "internal error while running the app"


async def run_unless_gone(
    executor: Executor,
    runs: RunService,
    run_request: RunRequest,
    cancel: Cancel,
    disconnected: Callable[[], Awaitable[bool]],
) -> FinishedRun | None:
    """A run that is not streamed, on ``executor``; None if its client went away first.
    Then the run is cancelled (its model call cut, even before its first byte) and
    stored ``cancelled``: a caller who leaves does not leave the model writing (and
    billing) an answer nobody reads. The client is looked for twice a second."""
    loop = asyncio.get_running_loop()
    in_context = contextvars.copy_context().run  # log lines of the run name this request
    done = loop.run_in_executor(executor, in_context, runs.run, run_request, cancel, None)
    try:
        while True:
            finished, _ = await asyncio.wait({done}, timeout=0.5)
            if finished:
                return done.result()
            if await disconnected():
                cancel.set()
                await done  # the run stops at once, and is stored ``cancelled``
                return None
    except asyncio.CancelledError:
        cancel.set()
        raise


@dataclass
class Started:
    """A streamed run past its first output: ``first`` (an output, or its end)."""

    first: object
    bridge: RunBridge
    prepared: PreparedRun


async def start_streaming(
    executor: Executor,
    runs: RunService,
    run_request: RunRequest,
    cancel: Cancel,
    disconnected: Callable[[], Awaitable[bool]],
    failed: Callable[[FinishedRun], Exception],
) -> Started | None:
    """Start a run on ``executor`` and hold the answer until its first output, so a run
    that fails before its first byte gets a real error status (``failed`` makes the
    error of a failed run). None: the client went away first (the run is stopped)."""
    bridge = RunBridge(asyncio.get_running_loop())
    # The run's thread gets this request's context: its log lines name the request.
    # Its end comes through the bridge (``_End``), so the thread's own future is not
    # wrapped for the loop: that would wake the loop once more per run.
    job = bridge.job(runs, run_request, cancel)
    executor.submit(contextvars.copy_context().run, job)
    try:
        first = await bridge.first(disconnected)
    except asyncio.CancelledError:
        cancel.set()
        raise
    if first is None:
        cancel.set()
        await bridge.end()  # the run stops at once, and is stored ``cancelled``
        return None
    if is_end(first):
        if first.error is not None:
            raise first.error
        assert first.finished is not None
        if first.finished.failure is not None:
            raise failed(first.finished)
    assert bridge.prepared is not None
    return Started(first, bridge, bridge.prepared)
