"""Slow clients against the real `appforge serve`: a header that never comes whole is
answered 408 and its connection closed (uvicorn alone waited for ever: a few hundred
such connections held every file the process may open), a body that trickles is 408
``REQUEST_TIMEOUT``, a client that stops reading its answer is dropped, and serve
raises its open-files limit to the hard one.

Each slow connection is read until the server closes it, however long that takes
(``READ_LIMIT`` only keeps a broken server from hanging the test): the old server
never closed them, and the tests failed then rather than waited."""

from __future__ import annotations

import contextlib
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
SEND_TIMEOUT = 2.0
READ_LIMIT = 120.0
APP = "version: 1\nname: Slow\nsteps: []\noutput: {}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "APPFORGE_HOME": str(tmp_path_factory.mktemp("home")),
        "APPFORGE_ADMIN_TOKEN": TOKEN,
        "APPFORGE_LIMITS__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "APPFORGE_LIMITS__BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "APPFORGE_LIMITS__SEND_TIMEOUT_SECONDS": str(SEND_TIMEOUT),
        "APPFORGE_LIMITS__MAX_OUTPUT_BYTES": str(16 * 1024 * 1024),
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
        error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]  # the one error body
        assert error["code"] == "REQUEST_TIMEOUT" and "header" in error["message"]
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


def _sent_until_closed(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` (the server may stop reading and close first); all it answered."""
    with contextlib.suppress(ConnectionError):
        sock.sendall(data)
    try:
        return _read_to_close(sock)
    except ConnectionResetError:  # after its answer: what was sent beyond it went unread
        return b"reset"


@pytest.mark.parametrize("part", ["line", "header", "headers"])
def test_a_header_larger_than_the_limit_is_431_and_closed(server: ServerProcess, part: str):
    """The parser kept a request line, or one header line, whole however long it grew
    (a gigabyte in the time a header may take), and every header: the request's line
    and header together are at most 64 KiB."""
    big = 2 * 1024 * 1024
    request = {
        "line": b"GET /api/health?q=" + b"a" * big + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        "header": b"GET /api/health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * big + b"\r\n\r\n",
        "headers": b"GET /api/health HTTP/1.1\r\n" + b"X-A: b\r\n" * (big // 8) + b"\r\n",
    }[part]
    answer = _sent_until_closed(_connect(server), request)
    if answer != b"reset":  # the client may lose the answer if it sent on regardless
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431"), answer[:300]
        assert json.loads(body)["error"]["code"] == "REQUEST_HEADER_TOO_LARGE"
    # Just under the limit is served, as is a large body sent with its header at once.
    with _connect(server) as fine:
        fine.sendall(b"GET /api/health HTTP/1.1\r\nHost: t\r\nX-Ok: " + b"a" * 60_000 + b"\r\n\r\n")
        assert _read_answer(fine).startswith(b"HTTP/1.1 200")
    with _connect(server) as fine:
        fine.sendall(_request("/api/apps", b"name: " + b"a" * 500_000 + b"\n"))
        # The body (larger than a header may be) is read, and found too large for an app.
        assert _read_answer(fine).startswith(b"HTTP/1.1 413")


def test_an_answer_before_the_whole_body_reaches_a_client_still_sending(server: ServerProcess):
    """A body declared larger than the server takes is answered 413 at its start, while
    the client is still sending it. The server closed at once, on unread data: that
    resets the connection, and the client lost the answer (a broken pipe, then a
    reset, instead of the 413). The server now sends its answer and the end of it,
    reads and drops what still comes, and closes when the client does."""
    body = b"name: " + b"a" * (8 * 1024 * 1024) + b"\n"
    with _connect(server) as sock:
        sock.sendall(_request("/api/apps", body))  # all of it, as a simple client does
        answer = _read_to_close(sock)
    head, _, _ = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert _error_body(answer)["code"] == "PAYLOAD_TOO_LARGE"


def _error_body(answer: bytes) -> dict[str, object]:
    error: dict[str, object] = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    return error


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


# An app whose answer is about 8 MB: more than the kernel's buffers for a socket hold
# (Linux lets a loopback socket's send buffer grow to 4 MB: tcp_wmem), so the server
# itself holds the rest. (The bundled model says one token first: an app has at least
# one step.) The server allows outputs of up to 16 MiB.
BIG_KEYS = 8
BIG_APP = """\
version: 1
name: Big
steps:
  - id: a
    kind: llm
    prompt: {user: "Hi"}
    params: {max_tokens: 1}
output:
""" + "".join(f"  big{n}: \"{{{{ 'x' * 1000000 }}}}\"\n" for n in range(BIG_KEYS))
_TCP_ESTABLISHED = 1


def _big_app(server: ServerProcess) -> str:
    with _connect(server) as sock:
        sock.sendall(_request("/api/apps", BIG_APP.encode()))
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 201"), answer
    uuid: str = json.loads(answer.partition(b"\r\n\r\n")[2])["uuid"]
    return uuid


def _run_request(app_uuid: str) -> bytes:
    body = json.dumps({"input": {}, "stream": True}).encode()
    head = (
        f"POST /api/apps/{app_uuid}/run HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Token {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_a_client_that_stops_reading_its_answer_is_dropped(server: ServerProcess):
    """The client asks for an 8 MB streamed answer and reads none of it, with a small
    receive buffer. The server drops the connection once its write buffer has not
    drained for the send timeout (the client's side sees the reset); uvicorn alone
    kept it, and the answer queued for it, for as long as the client liked (the
    stream never ended, so neither did the connection). A client that reads gets the
    whole answer."""
    app_uuid = _big_app(server)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    with stalled:
        stalled.sendall(_run_request(app_uuid))
        given_up = time.monotonic() + READ_LIMIT
        while time.monotonic() < given_up:  # state: the first byte of struct tcp_info
            if stalled.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != _TCP_ESTABLISHED:
                break
            time.sleep(0.2)
        state = stalled.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        assert state != _TCP_ESTABLISHED, "the server kept a connection that read nothing"
    with _connect(server) as reader:
        reader.sendall(_run_request(app_uuid))
        answer = _read_to_close_or_done(reader)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    lines = [json.loads(line) for line in answer.partition(b"\r\n\r\n")[2].splitlines()]
    assert lines[-1]["done"] is True
    got = {key: value for line in lines[:-1] for key, value in line["output"].items()}
    assert got == {f"big{n}": "x" * 1_000_000 for n in range(BIG_KEYS)}


def _read_to_close_or_done(sock: socket.socket) -> bytes:
    """A streamed (chunked) answer, read until its last chunk."""
    got = b""
    while not got.endswith(b"\r\n0\r\n\r\n"):
        piece = sock.recv(65536)
        if not piece:
            break
        got += piece
    head, _, chunked = got.partition(b"\r\n\r\n")
    body = b""
    while chunked:
        size_text, _, rest = chunked.partition(b"\r\n")
        size = int(size_text, 16)
        body, chunked = body + rest[:size], rest[size + 2 :]
    return head + b"\r\n\r\n" + body


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
