"""Prometheus metrics: the counters every layer adds to, and how a scrape reads them.

The metrics are module-level objects of ``prometheus_client`` (its registry is
process-global by design); each layer imports the few it updates. Updating one
is a dictionary look-up and an add (a few microseconds), so the run path keeps
its budget.

Several API processes (``appforge serve --workers N``) aggregate through
``prometheus_client``'s multi-process mode: when ``PROMETHEUS_MULTIPROC_DIR``
names a folder *before this module is imported*, every process writes its
values to files there and a scrape in any process sums them
(:func:`registry`). ``appforge serve`` sets it up for ``--workers`` above 1;
gauges of live things (active runs and streams) count only living processes.

Gauges of shared state (queue depths and ages, entries by status) are not kept
in any process: they are read from the database at scrape time by a collector
the API adds (``api.prometheus``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: from a few ms (a cached answer) to the longest runs.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "appforge_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
RUNS = Counter("appforge_runs", "Runs finished, by app and status.", ["app", "status"])
RUN_SECONDS = Histogram(
    "appforge_run_seconds", "Run latency, by app.", ["app"], buckets=_LATENCY_BUCKETS
)
RUN_TTFT_SECONDS = Histogram(
    "appforge_run_ttft_seconds",
    "Time from a run's start to its first output, by app.",
    ["app"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter(
    "appforge_tokens", "Model tokens, by app and direction (in, out).", ["app", "direction"]
)
ACTIVE_RUNS = Gauge("appforge_active_runs", "Runs executing now.", multiprocess_mode="livesum")
ACTIVE_STREAMS = Gauge(
    "appforge_active_streams", "Streamed answers being sent now.", multiprocess_mode="livesum"
)
RATE_LIMIT_REFUSALS = Counter(
    "appforge_rate_limit_refusals", "Requests refused with 429 RATE_LIMITED."
)
RUN_REFUSALS = Counter(
    "appforge_run_refusals",
    "Runs refused when asked for: too many of the app going (app), of one caller without a "
    "token (client), or one of the session going (session).",
    ["reason"],
)
CONNECTIONS = Gauge(
    "appforge_connections", "Client connections held now.", multiprocess_mode="livesum"
)
CONNECTION_REFUSALS = Counter(
    "appforge_connection_refusals",
    "Connections refused at once: over one client's limit (client), or the process's (server).",
    ["limit"],
)
MODEL_ERRORS = Counter(
    "appforge_model_errors", "Runs ended by a model backend's error, by code.", ["code"]
)


def multiprocess_dir() -> str | None:
    """The multi-process folder, when this process writes its metrics to files."""
    return os.environ.get(MULTIPROC_ENV) or None


def registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """What a scrape reads: this process's metrics, or every process's (multi-process
    mode), and the ``extra`` collectors."""
    folder = multiprocess_dir()
    if folder is None:
        collected = CollectorRegistry(auto_describe=False)
        collected.register(_Process(REGISTRY))
    else:
        from prometheus_client import multiprocess

        collected = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(collected, path=folder)
    for collector in extra:
        collected.register(collector)
    return collected


def process_stopped(pid: int) -> None:
    """A process ends: its live gauges stop counting (multi-process mode)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class _Process(Collector):
    """This process's default registry, seen through another registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return self.source.collect()
