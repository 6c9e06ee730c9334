"""``appforge worker``: the background queues (ingestion and URL refresh, webhooks)
without HTTP.

Any number of workers (and ``appforge serve`` processes) share one database:
the queues are tables claimed with leases (``appforge.core.queue``). A worker
builds only what its queues use: ingestion loads the embedding model, webhooks
load no model at all. On SIGTERM (or Ctrl-C) it stops taking work, lets work in
flight finish for up to ``APPFORGE_SHUTDOWN_GRACE_SECONDS``, and gives back
what it still holds, so another worker takes it at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import click

from appforge.cli.root import load_settings, main, open_home, shared_vector_store

QUEUES = ("ingest", "refresh", "webhooks")
log = logging.getLogger("appforge.worker")


def _queues(only: str | None) -> list[str]:
    if only is None:
        return list(QUEUES)
    chosen = [q.strip() for q in only.split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if unknown or not chosen:
        raise click.BadParameter(
            f"queues are {', '.join(QUEUES)}; got {only!r}", param_hint="--only"
        )
    return list(dict.fromkeys(chosen))


@main.command()
@click.option(
    "--only",
    default=None,
    metavar="QUEUES",
    help="Comma-separated queues to run: ingest, refresh, webhooks (default: all).",
)
def worker(only: str | None) -> None:
    """Run the background queues (ingestion, URL refresh, webhook delivery) without HTTP."""
    from appforge.core.logs import configure

    queues = _queues(only)
    config = load_settings()
    if "ingest" in queues:  # an API process searches what this worker adds
        shared_vector_store(config, "appforge worker (ingest)")
    configure(config.log_level, config.log_format)
    open_home(config)[0].dispose()  # migrate, check the key: one clear error, not a trace
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("worker stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    running = _start(config, queues)
    click.echo(f"appforge worker: {', '.join(queues)} (pid {os.getpid()})")
    try:
        stop.wait()
    finally:
        _stop(running, config.shutdown_grace_seconds)


def _start(config: Any, queues: list[str]) -> dict[str, Any]:
    """Open what the queues need and start their threads."""
    from api.webhook_delivery import WebhookDispatcher
    from datasources.queue import IngestionQueue
    from datasources.refresh import RefreshJob
    from runs.services import Services

    services = Services.open(config)
    running: dict[str, Any] = {"services": services}
    if "ingest" in queues:
        ingestion = IngestionQueue(services.datasources, services.tracing)
        ingestion.start(max(1, config.datasources.workers))
        running["ingest"] = ingestion
    if "refresh" in queues:
        wake = running["ingest"].wake if "ingest" in running else None
        refresh = RefreshJob(services.datasources, wake)
        refresh.start()
        running["refresh"] = refresh
    if "webhooks" in queues:
        webhooks = WebhookDispatcher(services.db, config, services.key)
        webhooks.start(max(1, config.webhooks.workers))
        running["webhooks"] = webhooks
    return running


def _stop(running: dict[str, Any], grace: float) -> None:
    """Stop each queue (work in flight gets ``grace`` seconds), giving back its claims."""
    if "refresh" in running:
        running["refresh"].stop(grace)
    if "ingest" in running:
        running["ingest"].stop(grace)
    if "webhooks" in running:
        running["webhooks"].stop(grace)
    running["services"].close()
    log.info("worker stopped")
