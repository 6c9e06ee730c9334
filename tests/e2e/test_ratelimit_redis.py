"""Rate limits in Redis: two server processes share one bucket per token."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import httpx
from ports import free_port
from server_process import ServerProcess

REDIS = "redis://127.0.0.1:6379/0"


def test_redis_limit_is_shared_by_two_processes(
    start_server: Callable[[dict[str, str]], ServerProcess], tmp_path: Path
):
    token = "af_" + secrets.token_hex(16)  # a fresh bucket key on every run
    env = {
        "APPFORGE_HOME": str(tmp_path),
        "APPFORGE_ADMIN_TOKEN": token,
        "APPFORGE_REDIS_URL": REDIS,
        "APPFORGE_RATE_LIMIT__REQUESTS": "1",
        "APPFORGE_RATE_LIMIT__WINDOW_SECONDS": "3600",
        "APPFORGE_RATE_LIMIT__BURST": "4",
    }
    a = start_server(env)
    b = start_server(env)
    headers = {"Authorization": f"Token {token}"}
    codes = []
    for i in range(8):
        base = a.base if i % 2 == 0 else b.base
        codes.append(httpx.get(f"{base}/api/apps", headers=headers, timeout=10).status_code)
    assert codes == [200, 200, 200, 200, 429, 429, 429, 429]


def test_redis_down_does_not_block_requests(
    start_server: Callable[[dict[str, str]], ServerProcess], tmp_path: Path
):

    token = "af_" + secrets.token_hex(16)
    server = start_server(
        {
            "APPFORGE_HOME": str(tmp_path),
            "APPFORGE_ADMIN_TOKEN": token,
            "APPFORGE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        }
    )
    r = httpx.get(f"{server.base}/api/apps", headers={"Authorization": f"Token {token}"})
    assert r.status_code == 200
    assert "x-ratelimit-limit" not in r.headers
