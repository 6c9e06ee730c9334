"""``appforge serve``: the API and, beside it, the builder."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from appforge import __version__
from appforge.cli.root import load_settings, main, open_home


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port of the API.")
@click.option("--workers", default=1, show_default=True, type=int, help="API processes.")
@click.option("--ui-port", default=8501, show_default=True, type=int, help="Port of the builder.")
@click.option("--no-ui", is_flag=True, help="Start the API alone, without the builder.")
def serve(host: str, port: int, workers: int, ui_port: int, no_ui: bool) -> None:
    """Start the API server and the builder (Streamlit) beside it."""
    import uvicorn

    config = load_settings()
    # The API (built from the environment, in each worker) and the builder share the home.
    os.environ["APPFORGE_HOME"] = str(config.home)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # HTTP clients log every request at INFO; our own INFO line per run/call is enough.
    for noisy in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Before any worker starts: make the key file, migrate, and end with a clear
    # `error [SECRET_KEY_MISMATCH]` (not a traceback per worker) on a wrong key.
    open_home(config)[0].dispose()
    click.echo(f"appforge {__version__}: API on http://{host}:{port}/api (docs at /docs)")
    upload_mb = -(-config.datasources.max_file_bytes // (1024 * 1024))
    ui = None if no_ui else _start_builder(host, port, ui_port, upload_mb)
    if ui is not None:
        click.echo(f"appforge builder on http://{host}:{ui_port}")
        # uvicorn re-raises SIGTERM after its shutdown; exiting through Python (not the
        # default action) lets the finally below stop the builder too.
        signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    try:
        uvicorn.run(
            "api.app:from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=config.log_level.lower(),
            # uvicorn would believe X-Forwarded-For from 127.0.0.1 on its own; the
            # API decides whom to believe (APPFORGE_TRUSTED_PROXIES, api.proxies).
            proxy_headers=False,
        )
    finally:
        if ui is not None:
            _stop(ui)


def _start_builder(host: str, port: int, ui_port: int, upload_mb: int) -> subprocess.Popen[bytes]:
    """``streamlit run builder/app.py`` as a child process, told where the API is; its
    uploader takes files up to ``upload_mb`` MiB (the API's file limit)."""
    spec = importlib.util.find_spec("builder")
    if spec is None or spec.origin is None:
        raise click.ClickException("the builder package is not installed")
    app = Path(spec.origin).parent / "app.py"
    api_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    # The builder never gets the admin token: whoever opens it signs in with their own.
    env = {k: v for k, v in os.environ.items() if k != "APPFORGE_ADMIN_TOKEN"}
    env["APPFORGE_URL"] = f"http://{api_host}:{port}"
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(ui_port), "--server.address", host,
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal", "--server.maxUploadSize", str(upload_mb),
    ]  # fmt: skip
    return subprocess.Popen(command, env=env)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
