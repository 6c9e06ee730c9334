"""Connections a client, and a process, may hold (the real `appforge serve`).

Each connection holds a file and a process may open only so many: one anonymous
client that opened connections faster than any deadline closed them held them
all, and then nobody else could connect, nor the process open its own files.
Over one client address's limit a connection is answered 429
``TOO_MANY_CONNECTIONS``; over the process's, 503 ``SERVER_BUSY``; either at
once, with Retry-After, and closed. A trusted proxy carries many clients and
has no per-client limit. Connections that close give their places back.

Clients are told apart by their loopback source address (the whole of 127/8 is
this machine's)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess

from api.connections import connections_allowed

SCRAPE = "af_e2e_connection_limits_scrape_token"
PER_CLIENT = 3
MOST = 7  # the process's: 3 of one client and 4 of a trusted proxy
PROXY = "127.0.0.4"


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120, source_address=(source, 0))
    return sock


def _ask(sock: socket.socket, *, close: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Send one request for /api/health; its answer's status, headers and body."""
    connection = "close" if close else "keep-alive"
    sock.sendall(
        f"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n".encode()
    )
    got = b""
    while b"\r\n\r\n" not in got:
        piece = sock.recv(65536)
        assert piece, f"closed without a whole answer: {got!r}"
        got += piece
    head, _, body = got.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def _ask_anew(port: int, source: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection from ``source``, closed after."""
    with _connect(port, source) as sock:
        return _ask(sock, close=True)


def _closed_by_server(sock: socket.socket) -> bool:
    with sock:
        return sock.recv(1) == b""


def test_a_client_and_the_process_hold_only_so_many_connections(
    start_server: Callable[..., ServerProcess], tmp_path: Path
):
    server = start_server(
        {
            "APPFORGE_HOME": str(tmp_path / "home"),
            "APPFORGE_LIMITS__MAX_CONNECTIONS": str(MOST),
            "APPFORGE_LIMITS__MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT),
            "APPFORGE_TRUSTED_PROXIES": json.dumps([f"{PROXY}/32"]),
            "APPFORGE_METRICS__ENABLED": "true",
            "APPFORGE_METRICS__TOKEN": SCRAPE,
            "APPFORGE_LIMITS__HEADER_TIMEOUT_SECONDS": "600",  # the idle ones stay
        }
    )
    # One client holds as many as it may, idle; its next is refused at once.
    idle = [_connect(server.port, "127.0.0.1") for _ in range(PER_CLIENT)]
    status, headers, body = _ask_anew(server.port, "127.0.0.1")
    assert status == 429 and headers["retry-after"] == "1"
    error = json.loads(body)["error"]
    assert error["code"] == "TOO_MANY_CONNECTIONS" and "PER_CLIENT" in error["message"]

    # A trusted proxy may hold more than a client (up to the process's limit), and is served.
    proxied = [_connect(server.port, PROXY) for _ in range(MOST - PER_CLIENT)]
    for sock in proxied:
        assert _ask(sock)[0] == 200

    # The process holds as many as it may: anyone else is refused, and the connection closed.
    other = _connect(server.port, "127.0.0.2")
    status, headers, body = _ask(other)
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "SERVER_BUSY"
    assert _closed_by_server(other)

    # Connections that close give their places back (the server closes these after
    # their answers, so it has counted them out before the client sees them closed).
    for sock in idle:
        assert _ask(sock, close=True)[0] == 200 and _closed_by_server(sock)
    assert _ask_anew(server.port, "127.0.0.2")[0] == 200
    assert _ask_anew(server.port, "127.0.0.1")[0] == 200

    scraped = httpx.get(f"{server.base}/metrics", headers={"Authorization": f"Bearer {SCRAPE}"})
    assert scraped.status_code == 200
    counts = dict(re.findall(r'appforge_connection_refusals_total\{limit="(\w+)"\} (\S+)',
                             scraped.text))  # fmt: skip
    assert counts == {"client": "1.0", "server": "1.0"}
    held = re.search(r"^appforge_connections (\S+)$", scraped.text, re.M)
    assert held and float(held[1]) == len(proxied) + 1  # the proxy's and the scrape's own
    for sock in proxied:
        sock.close()
    assert "refusing connections over the per-client limit" in server.output()


@pytest.mark.parametrize(
    ("setting", "open_files", "allowed"),
    [
        (0, 1024, 768),  # a reserve of 256 for the process's own files
        (0, 20_000, 17_500),  # an eighth
        (100, 20_000, 100),
        (50_000, 20_000, 17_500),  # a setting never eats into the reserve
        (0, 100, 1),
    ],
)
def test_the_process_keeps_files_for_itself(setting: int, open_files: int, allowed: int):
    assert connections_allowed(setting, open_files) == allowed
