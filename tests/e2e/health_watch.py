"""While an attack runs, the server must stay alive and quick: `/api/health` is
polled from a thread, and every answer must be 200 within 1 s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


@contextmanager
def health_within_one_second(base: str) -> Iterator[None]:
    """Poll `/api/health` while the block runs; every answer must be 200 within 1 s."""
    answers: list[tuple[int, float]] = []
    failures: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    status = c.get(f"{base}/api/health").status_code
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                else:
                    answers.append((status, time.perf_counter() - started))
                stop.wait(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
    assert failures == [], failures
    assert answers, "the health poller never got an answer"
    assert {status for status, _ in answers} == {200}
    slowest = max(seconds for _, seconds in answers)
    assert slowest < 1.0, f"/api/health took {slowest:.2f} s"
