"""Free loopback ports for the servers tests start, waiting until one answers, and
``appforge run --serve`` as a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from log_watch import check_output
from waiting import poll_until


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ok(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    """Wait until ``url`` answers 200; fail with the process's log if it exits or never does."""

    def answers() -> bool:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        return False

    poll_until(answers, timeout=timeout, interval=0.3, detail=lambda: f"{url}\n{log.read_text()}")


@contextmanager
def run_serve(app_file: Path, home: Path, token: str) -> Iterator[tuple[int, list[str]]]:
    """``appforge run <app_file> --serve`` on a free port, with its own home and admin
    token; yields the port and the lines it printed up to its ``run it: POST`` line."""
    port = free_port()
    env = {
        **os.environ,
        "APPFORGE_HOME": str(home),
        "APPFORGE_ADMIN_TOKEN": token,
        "PYTHONUNBUFFERED": "1",
    }
    exe = Path(sys.executable).parent / "appforge"
    proc = subprocess.Popen(
        [str(exe), "run", str(app_file), "--serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        stdout = proc.stdout
        assert stdout is not None

        def printed_run_line() -> bool:
            assert proc.poll() is None, lines
            lines.append(stdout.readline())  # blocks until a line: no sleep needed
            return lines[-1].startswith("run it: POST ")

        poll_until(printed_run_line, interval=0, detail=lambda: lines)
        yield port, lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout:
            check_output("appforge run --serve", "".join(lines) + proc.stdout.read())
            proc.stdout.close()


@contextmanager
def silent_port(backlog: int = 64) -> Iterator[int]:
    """A port on 127.0.0.1 that takes connections (the kernel completes them, up to
    ``backlog``) and never says a word: a hung server, a proxy whose backend is gone."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(backlog)
        yield listener.getsockname()[1]
