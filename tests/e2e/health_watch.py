"""While an attack runs, the server must stay alive: `/api/health` is polled from a
thread, and every poll must be answered 200.

No answer time is asserted: on a loaded 2-core machine any bound on wall-clock
time can be missed by a healthy server. How quick health stays under an attack's
load is a figure for a benchmark, not a test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

# A poll that gets no byte for this long counts as a hung server: a bound on a
# stall, far beyond any slowness of a loaded machine, not on an answer's time.
HUNG = 120.0


@contextmanager
def health_throughout(base: str) -> Iterator[None]:
    """Poll `/api/health` while the block runs; every poll must be answered 200."""
    answers: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=HUNG) as c:
            while not stop.is_set():
                try:
                    answers.append(c.get(f"{base}/api/health").status_code)
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                stop.wait(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert failures == [], failures
    assert answers, "the health poller never got an answer"
    assert set(answers) == {200}, answers
