"""A real `appforge serve` child process on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from log_watch import check_output
from ports import free_port
from waiting import poll_until


class ServerProcess:
    """One `appforge serve` child process with its own APPFORGE_* environment."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.args = args
        self.base = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "appforge"
        # The server's output goes to a file, never a pipe: nobody reads a pipe while
        # tests run, and a full one (64 KiB of access log) would block the server.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _close
        self.proc = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui", *args],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            poll_until(self._healthy, interval=0.05)
        except AssertionError as exc:  # it exited, or never answered
            self.proc.kill()
            self.proc.wait(timeout=15)
            out = self.output()
            self._close()
            raise RuntimeError(f"server did not start ({exc}):\n{out}") from None

    def output(self) -> str:
        """Everything the server has written so far (stdout and stderr)."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def _healthy(self) -> bool:
        try:
            if httpx.get(f"{self.base}/api/health", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        assert self.proc.poll() is None, "the server exited"
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)
        self._close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._close()

    def _close(self) -> None:
        if not self.log.closed:
            check_output(f"appforge serve {' '.join(self.args)}".strip(), self.output())
            self.log.close()
