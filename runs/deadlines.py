"""Run deadlines: one watcher thread per process calls back when a run's time is up.

A timer thread per run would cost a thread start on every run; the watcher
keeps the deadlines in a heap and sleeps until the nearest one. The callback
runs on the watcher thread and must be quick (the run service sets the run's
cancel event, which stops its model at the next token).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class _Entry:
    at: float
    n: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Deadline:
    """A watched deadline; :meth:`cancel` it when the run ends first."""

    def __init__(self, watcher: DeadlineWatcher, entry: _Entry) -> None:
        self._watcher = watcher
        self._entry = entry

    def cancel(self) -> None:
        self._watcher._cancel(self._entry)


class DeadlineWatcher:
    """Calls each callback once its deadline (``time.monotonic()`` seconds) passes."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._counter = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._cancelled = 0

    def watch(self, seconds: float, callback: Callable[[], None]) -> Deadline:
        """Call ``callback`` in ``seconds`` unless the returned deadline is cancelled."""
        entry = _Entry(time.monotonic() + seconds, next(self._counter), callback)
        with self._changed:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="run-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0] is entry:  # sooner than what the watcher sleeps towards
                self._changed.notify()
        return Deadline(self, entry)

    def _cancel(self, entry: _Entry) -> None:
        with self._changed:
            if entry.cancelled:
                return
            entry.cancelled = True
            self._cancelled += 1
            # Most runs end before their deadline: drop the dead entries in bulk,
            # so the heap holds about as many entries as there are runs going.
            if self._cancelled > 1000 and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if not e.cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _loop(self) -> None:
        while True:
            with self._changed:
                while self._heap and self._heap[0].cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._changed.wait()
                    continue
                wait = self._heap[0].at - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                due = heapq.heappop(self._heap)
            if not due.cancelled:
                due.callback()
