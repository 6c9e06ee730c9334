"""Rate limits in process: headers on every response, 429 with Retry-After, refill."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi.testclient import TestClient

from appforge.core.settings import Settings


def _client(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], **limits: float
) -> TestClient:
    return make_client(make_settings(rate_limit=limits))


def test_ratelimit_headers_count_down(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = _client(make_client, make_settings, requests=1, window_seconds=3600, burst=5)
    remaining = []
    for _ in range(3):
        r = client.get("/api/apps")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit"] == "5"
        remaining.append(int(r.headers["x-ratelimit-remaining"]))
        reset = int(r.headers["x-ratelimit-reset"])  # a Unix time, per the seed
        assert time.time() < reset <= time.time() + 3600 * 5 + 1
    assert remaining == [4, 3, 2]
    assert "x-ratelimit-limit" not in client.get("/api/health").headers


def test_ratelimit_empty_bucket_is_429_with_retry_after(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = _client(make_client, make_settings, requests=1, window_seconds=3600, burst=2)
    assert client.get("/api/apps").status_code == 200
    assert client.get("/api/apps").status_code == 200
    r = client.get("/api/apps")
    assert r.status_code == 429
    body = r.json()
    assert body["error"]["code"] == "RATE_LIMITED"
    assert body["request_id"] == r.headers["x-request-id"]
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert 3000 < int(r.headers["retry-after"]) <= 3600
    # another token has its own bucket; so has an anonymous caller (by IP)
    other = client.post("/api/tokens", json={"name": "other"})
    assert other.status_code == 429  # the admin's bucket is still empty
    anon = client.get("/api/apps", headers={"Authorization": ""})
    assert anon.status_code == 401
    assert anon.headers["x-ratelimit-remaining"] == "1"


def test_ratelimit_bucket_refills(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = _client(make_client, make_settings, requests=1, window_seconds=2, burst=1)
    assert client.get("/api/apps").status_code == 200
    r = client.get("/api/apps")
    assert r.status_code == 429
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= 2
    time.sleep(wait)
    assert client.get("/api/apps").status_code == 200


def test_ratelimit_can_be_disabled(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
):
    client = make_client(make_settings(rate_limit={"enabled": False}))
    r = client.get("/api/apps")
    assert r.status_code == 200
    assert "x-ratelimit-limit" not in r.headers
