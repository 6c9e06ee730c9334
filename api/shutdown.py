"""Graceful shutdown: on SIGTERM, runs in flight get a grace period, then are cancelled.

uvicorn, on SIGTERM, stops accepting connections and waits for the requests in
flight (streams included) before the lifespan closes the API's state. This
module adds what uvicorn cannot know about: :class:`Drain` hooks SIGTERM (it
calls uvicorn's handler too), marks the process as draining (readiness turns
503, so load balancers stop sending), and when ``APPFORGE_SHUTDOWN_GRACE_SECONDS``
have passed cancels every run still executing. A cancelled run ends like any
cancelled run: its stream gets an error line (``CANCELLED``) and ends, and the
run is stored ``cancelled`` with the output it produced. uvicorn can then finish.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class Drain:
    """The shutdown of one API process: draining, then cancelling after the grace."""

    def __init__(self, grace_seconds: float, cancel_all: Callable[[], int]) -> None:
        self.grace_seconds = grace_seconds
        self._cancel_all = cancel_all
        self.draining = threading.Event()
        self._timer: threading.Timer | None = None
        self._previous: Any = None
        self._installed = False

    def begin(self) -> None:
        """Start draining (once): cancel the runs still going after the grace period."""
        if self.draining.is_set():
            return
        self.draining.set()
        log.info("shutting down: runs in flight have %g s to finish", self.grace_seconds)
        self._timer = threading.Timer(self.grace_seconds, self.cancel_runs)
        self._timer.daemon = True
        self._timer.start()

    def cancel_runs(self) -> None:
        """Cancel every run this process still executes (the grace is over)."""
        count = self._cancel_all()
        if count:
            log.warning("shutdown grace over: cancelled %d runs in flight", count)

    def install(self) -> None:
        """Hook SIGTERM (main thread only: an API served from another thread, as in
        tests, is stopped by its owner)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_signal)
        self._installed = True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.begin()
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # nobody else handles it: end as the default does
            raise SystemExit(128 + signum)

    def close(self) -> None:
        """Stop the timer and give SIGTERM back to whoever had it."""
        if self._timer is not None:
            self._timer.cancel()
        if self._installed and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
