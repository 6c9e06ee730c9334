"""Free loopback ports for the servers tests start, waiting until one answers, and
``appforge run --serve`` as a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ok(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    """Wait until ``url`` answers 200; fail with the process's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer:\n{log.read_text()}")


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
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any(line.startswith("run it: POST ") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        yield port, lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
