"""Waiting in tests for something another thread or process does: one polling loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 120.0,
    interval: float = 0.1,
    detail: Callable[[], object] | None = None,
) -> T:
    """Call ``predicate`` until it returns a true value, and return that value.

    ``timeout`` only keeps a broken test from hanging forever; it is generous and
    says nothing about speed. Past it, fail with ``detail()`` (say, a server's
    log). A predicate may raise, e.g. ``assert`` that a process still runs, to
    fail at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            name = getattr(predicate, "__qualname__", repr(predicate))
            extra = f":\n{detail()}" if detail is not None else ""
            raise AssertionError(f"{name} still false after {timeout:g} s{extra}")
        if interval > 0:
            time.sleep(interval)
