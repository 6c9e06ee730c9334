"""Slow clients against the real `appforge serve`: a header that never comes whole is
answered 408 and its connection closed (uvicorn alone waited for ever: a few hundred
such connections held every file the process may open), a body that trickles is 408
``REQUEST_TIMEOUT``, and serve raises its open-files limit to the hard one.

Each slow connection is read until the server closes it, however long that takes
(``READ_LIMIT`` only keeps a broken server from hanging the test): the old server
never closed them, and the tests failed then rather than waited."""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_process import ServerProcess

TOKEN = "af_e2e_slow_admin_token_abcdefghijkl"
HEADER_TIMEOUT = 3.0  # the server's: pieces of a header sent in time come 0.05 s apart
BODY_TIMEOUT = 2.0
READ_LIMIT = 120.0
APP = "version: 1\nname: Slow\nsteps: []\noutput: {}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "APPFORGE_HOME": str(tmp_path_factory.mktemp("home")),
        "APPFORGE_ADMIN_TOKEN": TOKEN,
        "APPFORGE_LIMITS__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "APPFORGE_LIMITS__BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    process = ServerProcess(env)
    yield process
    process.stop()


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(READ_LIMIT)
    return sock


def _read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    got = b""
    with sock:
        while piece := sock.recv(65536):
            got += piece
    return got


def _read_answer(sock: socket.socket) -> bytes:
    """One whole answer (headers, then its Content-Length of body) on a kept-alive
    connection."""
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(65536)
    head, _, body = got.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _request(path: str, body: bytes = b"", *, length: int | None = None) -> bytes:
    method = "POST" if body or length is not None else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Token {TOKEN}\r\n"
    if method == "POST":
        head += f"Content-Type: text/yaml\r\nContent-Length: {length or len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def test_headers_that_never_come_whole_are_408_and_closed(server: ServerProcess):
    """Three at once: a connection that sends nothing, one that stops in its header,
    and one that stops in the header of its second request (kept alive)."""
    silent, halfway, second = _connect(server), _connect(server), _connect(server)
    halfway.sendall(_request("/api/health")[:30])
    second.sendall(_request("/api/health"))
    first_answer = _read_answer(second)
    assert first_answer.startswith(b"HTTP/1.1 200"), first_answer
    second.sendall(_request("/api/health")[:20])
    answers: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda n=n, s=s: answers.__setitem__(n, _read_to_close(s)))
        for n, s in (("silent", silent), ("halfway", halfway), ("second", second))
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    for name, answer in answers.items():
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), (name, answer)
        assert b"connection: close" in answer.lower()
    with _connect(server) as fine:  # the server serves on
        fine.sendall(_request("/api/health"))
        assert _read_answer(fine).startswith(b"HTTP/1.1 200")


def test_a_header_sent_in_pieces_in_time_is_served(server: ServerProcess):
    request = _request("/api/health")
    with _connect(server) as sock:
        for start in range(0, len(request), 16):
            sock.sendall(request[start : start + 16])
            time.sleep(0.05)
        assert _read_answer(sock).startswith(b"HTTP/1.1 200")


def _error(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in head.lower()
    error: dict[str, object] = json.loads(body)["error"]
    return error


def test_a_body_that_stops_is_408_and_nothing_is_stored(server: ServerProcess):
    sock = _connect(server)
    body = APP.encode()
    sock.sendall(_request("/api/apps", body[:10], length=len(body)))  # and then nothing
    error = _error(_read_to_close(sock))
    assert error["code"] == "REQUEST_TIMEOUT"
    assert "too slowly" in str(error["message"])
    assert not _stored_apps(server)


def test_a_body_that_trickles_below_the_rate_is_408(server: ServerProcess):
    """A byte every 0.25 s (well within the 2 s gap): 4 bytes a second, far below the
    500 a second a body must average after its first 2 s."""
    sock = _connect(server)
    body = APP.encode()
    sock.sendall(_request("/api/apps", b"", length=len(body)))
    answered: list[bytes] = []

    def read() -> None:
        answered.append(_read_to_close(sock))

    reader = threading.Thread(target=read)
    reader.start()
    for byte in body:  # the old server read it all (and stored the app)
        if answered or not reader.is_alive():
            break
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # closed by the server
            break
        time.sleep(0.25)
    reader.join()
    assert _error(answered[0])["code"] == "REQUEST_TIMEOUT"
    assert not _stored_apps(server)


def _stored_apps(server: ServerProcess) -> list[object]:
    with _connect(server) as sock:
        sock.sendall(_request("/api/apps"))
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    found: list[object] = json.loads(answer.partition(b"\r\n\r\n")[2])
    return found


def test_serve_raises_its_open_files_limit_to_the_hard_one(
    start_server: Callable[..., ServerProcess], tmp_path: Path
):
    """Each connection holds a file; at a soft limit of 1024 (a common default) a
    thousand idle connections kept everyone else out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"the hard limit of open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the server
    try:
        server = start_server({"APPFORGE_HOME": str(tmp_path / "home")})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    served_soft, served_hard = line.split()[3:5]
    assert served_soft == served_hard and int(served_soft) > 256
