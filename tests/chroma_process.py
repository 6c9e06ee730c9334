"""A real ``chroma run`` server on 127.0.0.1 (telemetry off), for the tests that need
the Chroma server rather than the embedded store: started, stopped and started again
on the same port and data folder (a server that goes away and comes back)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from waiting import poll_until


class ChromaProcess:
    """One ``chroma run`` on ``port`` keeping its data in ``folder / "data"`` (log:
    ``folder / "server.log"``)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers its heartbeat."""
        exe = Path(sys.executable).parent / "chroma"
        log_path = self.folder / "server.log"
        argv = [str(exe), "run", "--path", str(self.folder / "data")]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
                env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = self.process

        def answers() -> bool:
            try:
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                pytest.fail(f"chroma exited: {log_path.read_text()[-2000:]}")
            return False

        try:
            poll_until(answers, interval=0.2)
        except AssertionError:
            self.stop()
            pytest.fail(f"chroma did not start: {log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL), if it runs."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)
