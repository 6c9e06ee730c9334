"""A backend that may go away (the database, the Chroma server, Redis), as the code
that meets it keeps track: when it last failed, and a log that says once that it is
away and once that it is back, however many threads or calls meet the outage."""

from __future__ import annotations

import logging
import threading
import time


class Outage:
    """One backend's outage. ``gone`` is logged (a warning) at the first failure, with
    the failure's ``reason`` in place of ``{reason}``; ``back`` (info) when a call
    succeeds again."""

    def __init__(self, log: logging.Logger, gone: str, back: str) -> None:
        self._log, self._gone, self._back = log, gone, back
        self._last: float | None = None
        self._lock = threading.Lock()

    @property
    def last_failure(self) -> float | None:
        """When a call last failed (``time.monotonic()``), None while the backend is up."""
        return self._last

    def failed(self, reason: str) -> None:
        with self._lock:
            first, self._last = self._last is None, time.monotonic()
        if first:
            self._log.warning(self._gone.format(reason=reason))

    def answered(self) -> None:
        if self._last is None:
            return  # the common case: no lock taken
        with self._lock:
            was, self._last = self._last, None
        if was is not None:
            self._log.info(self._back)
