"""Rate limits in process: headers on every response, 429 with Retry-After, refill.

The app's in-process limiter reads a fake clock here, so a bucket refills when
the test moves the clock, not after a sleep, and reset times are exact.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from api.ratelimit import MemoryLimiter
from appforge.core.settings import Settings


class FakeClock:
    """Time that moves only when the test says: a monotonic clock and a Unix one."""

    def __init__(self, unix_start: float = 1_700_000_000.0) -> None:
        self.unix_start = unix_start
        self.elapsed = 0.0

    def monotonic(self) -> float:
        return self.elapsed

    def time(self) -> float:
        return self.unix_start + self.elapsed

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


def _client(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    **limits: float,
) -> TestClient:
    client = make_client(make_settings(rate_limit=limits))
    # create_app builds the limiter the middleware uses; its clocks are attributes.
    limiter = client.app.state.api.limiter  # type: ignore[attr-defined]
    assert isinstance(limiter, MemoryLimiter)
    limiter.clock, limiter.wall_clock = clock.monotonic, clock.time
    return client


def test_ratelimit_headers_count_down(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    clock = FakeClock()
    client = _client(make_client, make_settings, clock, requests=1, window_seconds=3600, burst=5)
    seen = []
    for _ in range(3):
        r = client.get("/api/apps")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit"] == "5"
        seen.append((int(r.headers["x-ratelimit-remaining"]), int(r.headers["x-ratelimit-reset"])))
    # The reset is a Unix time (per the seed): full again one hour per request taken.
    now = int(clock.time())
    assert seen == [(4, now + 3600), (3, now + 2 * 3600), (2, now + 3 * 3600)]
    assert "x-ratelimit-limit" not in client.get("/api/health").headers


def test_ratelimit_empty_bucket_is_429_with_retry_after(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    clock = FakeClock()
    client = _client(make_client, make_settings, clock, requests=1, window_seconds=3600, burst=2)
    assert client.get("/api/apps").status_code == 200
    assert client.get("/api/apps").status_code == 200
    r = client.get("/api/apps")
    assert r.status_code == 429
    body = r.json()
    assert body["error"]["code"] == "RATE_LIMITED"
    assert body["request_id"] == r.headers["x-request-id"]
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert r.headers["retry-after"] == "3600"
    # another token has its own bucket; so has an anonymous caller (by IP)
    other = client.post("/api/tokens", json={"name": "other"})
    assert other.status_code == 429  # the admin's bucket is still empty
    anon = client.get("/api/apps", headers={"Authorization": ""})
    assert anon.status_code == 401
    assert anon.headers["x-ratelimit-remaining"] == "1"


def test_ratelimit_bucket_refills(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    clock = FakeClock()
    client = _client(make_client, make_settings, clock, requests=1, window_seconds=2, burst=1)
    assert client.get("/api/apps").status_code == 200
    r = client.get("/api/apps")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    assert int(r.headers["x-ratelimit-reset"]) == clock.time() + 2
    clock.advance(1.5)  # three quarters of a request back: still empty
    assert client.get("/api/apps").status_code == 429
    clock.advance(0.5)
    assert client.get("/api/apps").status_code == 200


def test_ratelimit_can_be_disabled(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(rate_limit={"enabled": False}))
    r = client.get("/api/apps")
    assert r.status_code == 200
    assert "x-ratelimit-limit" not in r.headers
