"""Rate limits in Redis: two server processes share one bucket per token."""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from ports import free_port
from server_process import ServerProcess
from waiting import poll_until

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


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    """A redis-server of this test's own (nothing kept on disk), answering on ``port``."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        assert process.poll() is None, "redis-server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    poll_until(answers, interval=0.05)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=15)


def test_redis_down_limits_each_process_and_shares_again_when_back(
    start_server: Callable[[dict[str, str]], ServerProcess], tmp_path: Path
):
    port = free_port()
    redis = _redis_server(port)
    token = "af_" + secrets.token_hex(16)
    server = start_server(
        {
            "APPFORGE_HOME": str(tmp_path),
            "APPFORGE_ADMIN_TOKEN": token,
            "APPFORGE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "APPFORGE_RATE_LIMIT__REQUESTS": "1",
            "APPFORGE_RATE_LIMIT__WINDOW_SECONDS": "3600",
            "APPFORGE_RATE_LIMIT__BURST": "3",
        }
    )
    headers = {"Authorization": f"Token {token}"}

    def get() -> httpx.Response:
        return httpx.get(f"{server.base}/api/apps", headers=headers, timeout=30)

    try:
        assert get().headers["x-ratelimit-remaining"] == "2"  # counted in Redis
        _stop(redis)
        # Redis away: still limited, by the process's own (full) bucket; never unlimited.
        codes = [get().status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        redis = _redis_server(port)  # back, empty
        # Asked again a few seconds after it failed: its bucket (full) counts again.
        poll_until(lambda: get().status_code == 200, interval=0.5)
    finally:
        _stop(redis)
    out = server.output()
    assert out.count("Redis cannot be reached") == 1, out  # once, not per request
    assert out.count("Redis answers again") == 1, out
