"""``GET /metrics``: Prometheus metrics, when ``APPFORGE_METRICS__ENABLED`` is set.

A scraper authenticates with ``Authorization: Bearer <APPFORGE_METRICS__TOKEN>``,
or, without that setting, with an admin API token. Off, the path is 404.

Besides the counters of ``appforge.core.metrics`` (summed over every process in
multi-process mode), a scrape reads the shared state from the database: the
depth and oldest wait of each queue (ingestion, webhooks), entries and webhook
deliveries by status; and the free space of the home's disk.
"""

from __future__ import annotations

import hmac
import shutil
from collections.abc import Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from api.access import Admin
from api.errors import AuthError
from api.state import ApiState, api_state
from api.tables import WebhookDelivery
from appforge.core import metrics
from appforge.core.settings import MetricsSettings
from datasources.tables import Entry


class SharedState(Collector):
    """Gauges read from the database at scrape time: the same in every process."""

    def __init__(self, state: ApiState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "appforge_queue_depth", "Rows waiting to be worked on, by queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "appforge_queue_oldest_age_seconds",
            "How long the oldest waiting row has waited, by queue.",
            labels=["queue"],
        )
        for name, queue in (
            ("ingestion", self.state.ingestion.queue),
            ("webhooks", self.state.webhooks.queue),
        ):
            count, oldest = queue.depth()
            depth.add_metric([name], count)
            age.add_metric([name], oldest)
        yield depth
        yield age
        free = GaugeMetricFamily(
            "appforge_home_free_bytes",
            "Free bytes on the disk of APPFORGE_HOME (SQLite, an embedded Chroma, files): "
            "writes answer 507 STORAGE_FULL when it is full.",
        )
        free.add_metric([], shutil.disk_usage(self.state.settings.home).free)
        yield free
        yield self._by_status("appforge_entries", "Datasource entries, by status.", Entry)
        yield self._by_status(
            "appforge_webhook_deliveries", "Webhook deliveries, by status.", WebhookDelivery
        )

    def _by_status(self, name: str, text: str, model: type[Entry | WebhookDelivery]) -> Metric:
        family = GaugeMetricFamily(name, text, labels=["status"])
        with self.state.db() as db:
            rows = db.execute(select(model.status, func.count()).group_by(model.status)).all()
        for status, count in sorted(rows):
            family.add_metric([status], count)
        return family


def _render(state: ApiState) -> bytes:
    return generate_latest(metrics.registry([SharedState(state)]))


async def _metrics(request: Request) -> Response:
    body = await run_in_threadpool(_render, api_state(request))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def metrics_with_admin_token(request: Request, _: Admin) -> Response:
    """Prometheus metrics (text format), for an admin token."""
    return await _metrics(request)


def install(app: FastAPI, settings: MetricsSettings) -> None:
    """Serve ``GET /metrics`` when metrics are on: for the metrics token if one is set
    (checked here, not as an API token), else for an admin token."""
    if not settings.enabled:
        return
    if settings.token is None:
        app.add_api_route(
            "/metrics", metrics_with_admin_token, methods=["GET"], include_in_schema=False
        )
        return
    expected = ("Bearer " + settings.token.get_secret_value()).encode()

    async def metrics_with_metrics_token(request: Request) -> Response:
        """Prometheus metrics (text format), for the metrics token."""
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise AuthError(
                "send 'Authorization: Bearer <APPFORGE_METRICS__TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await _metrics(request)

    app.add_api_route(
        "/metrics", metrics_with_metrics_token, methods=["GET"], include_in_schema=False
    )
