"""``appforge serve`` starts the builder beside the API and stops it with the API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from ports import free_port, wait_ok

from tests.conftest import ADMIN_TOKEN


def test_serve_starts_builder_and_stops_it(tmp_path: Path):
    api_port, ui_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    exe = Path(sys.executable).parent / "appforge"
    env = {
        **os.environ,
        "APPFORGE_HOME": str(tmp_path / "home"),
        "APPFORGE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(exe), "serve", "--host", "127.0.0.1", "--port", str(api_port),
             "--ui-port", str(ui_port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_ok(f"http://127.0.0.1:{api_port}/api/health", process, log)
            wait_ok(f"http://127.0.0.1:{ui_port}/_stcore/health", process, log)
            assert httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=5).status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=30)
    text = log.read_text()
    assert f"API on http://127.0.0.1:{api_port}/api" in text
    assert f"builder on http://127.0.0.1:{ui_port}" in text
    try:
        httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=1)
    except httpx.TransportError:
        pass
    else:
        raise AssertionError("the builder still answers after the API stopped")
