"""``appforge serve``: the API (one or more processes) and, beside it, the builder.

``--workers N`` runs N API processes sharing the port (uvicorn workers); with
metrics on, they write to one ``PROMETHEUS_MULTIPROC_DIR`` so a scrape of any of
them sums all. ``--no-worker`` leaves the background queues (ingestion,
webhooks) to ``appforge worker`` processes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from appforge import __version__
from appforge.cli.root import load_settings, main, open_home, shared_vector_store


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port of the API.")
@click.option("--workers", default=1, show_default=True, type=int, help="API processes.")
@click.option("--ui-port", default=8501, show_default=True, type=int, help="Port of the builder.")
@click.option("--no-ui", is_flag=True, help="Start the API alone, without the builder.")
@click.option(
    "--no-worker",
    is_flag=True,
    help="Serve HTTP only: ingestion and webhooks are left to `appforge worker`.",
)
def serve(host: str, port: int, workers: int, ui_port: int, no_ui: bool, no_worker: bool) -> None:
    """Start the API server and the builder (Streamlit) beside it."""
    import uvicorn

    from appforge.core.logs import configure, uvicorn_log_config

    if workers < 1:
        raise click.BadParameter("at least 1", param_hint="--workers")
    config = load_settings()
    # The API (built from the environment, in each worker) and the builder share the home.
    os.environ["APPFORGE_HOME"] = str(config.home)
    if no_worker:
        os.environ["APPFORGE_DATASOURCES__WORKERS"] = "0"
        os.environ["APPFORGE_WEBHOOKS__WORKERS"] = "0"
    configure(config.log_level, config.log_format)
    _raise_open_files_limit()
    metrics_dir = _metrics_dir(workers, config.metrics.enabled)
    # Before any worker starts: make the key file, migrate, and end with a clear
    # `error [SECRET_KEY_MISMATCH]` (not a traceback per worker) on a wrong key.
    if workers > 1:
        shared_vector_store(config, "serve --workers N")
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
            log_config=uvicorn_log_config(config.log_level, config.log_format),
            # JSON logs carry our own line per request (request id, route, status, latency).
            access_log=config.log_format != "json",
            # A backstop: the API cancels runs at the grace (api.shutdown) and they end.
            timeout_graceful_shutdown=int(config.shutdown_grace_seconds) + 10,
            # uvicorn would believe X-Forwarded-For from 127.0.0.1 on its own; the
            # API decides whom to believe (APPFORGE_TRUSTED_PROXIES, api.proxies).
            proxy_headers=False,
            # A header that does not come whole in time is 408 and its connection closed.
            http="api.connections:GuardedHttpProtocol",
        )
    finally:
        if ui is not None:
            _stop(ui)
        if metrics_dir is not None:
            metrics_dir.cleanup()


def _raise_open_files_limit() -> None:
    """Up to the hard limit of open files (often 1024 soft of 524288 hard): each client
    connection holds one, and at the soft limit nobody else can connect. The API's
    processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, _MOST_OPEN_FILES) if hard != resource.RLIM_INFINITY else _MOST_OPEN_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


_MOST_OPEN_FILES = 1 << 20


def _metrics_dir(workers: int, enabled: bool) -> tempfile.TemporaryDirectory[str] | None:
    """Multi-process metrics for several API processes: a fresh ``PROMETHEUS_MULTIPROC_DIR``
    (made here unless given; a given one is emptied of an earlier server's files)."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        return None
    if workers == 1 or not enabled:
        return None
    made = tempfile.TemporaryDirectory(prefix="appforge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made.name
    return made


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
