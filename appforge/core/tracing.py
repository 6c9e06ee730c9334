"""OpenTelemetry traces: off by default, and then free.

With ``APPFORGE_OTEL__ENDPOINT`` set, a process builds its own tracer provider
(not the global one: every ``Services`` has its own) exporting spans in
batches with OTLP over HTTP to ``<endpoint>/v1/traces``. Without it nothing of
the SDK is imported and :attr:`Tracing.enabled` is False, so callers skip all
span work with one attribute check.

Spans carry no prompt text, answers or queries unless
``APPFORGE_OTEL__CAPTURE_CONTENT=true``. The run's request id is an attribute
(``appforge.request_id``): the same id as in the log lines of that request.
"""

from __future__ import annotations

import logging
from typing import Any

from appforge.core.settings import OtelSettings

log = logging.getLogger(__name__)


class Tracing:
    """This process's tracer, or nothing (``enabled`` False)."""

    def __init__(self, settings: OtelSettings) -> None:
        self.enabled = settings.endpoint is not None
        self.capture_content = settings.capture_content
        self._provider: Any = None
        self._tracer: Any = None
        if settings.endpoint is not None:
            self._open(settings.endpoint, settings.service_name)

    def _open(self, endpoint: str, service_name: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=10)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        self._provider = provider
        self._tracer = provider.get_tracer("appforge")
        log.info("tracing to %s", endpoint)

    def start(self, name: str, parent: Any = None, attributes: dict[str, Any] | None = None) -> Any:
        """A started span (end it with ``.end()``), child of ``parent`` if given."""
        from opentelemetry import trace

        context = trace.set_span_in_context(parent) if parent is not None else None
        return self._tracer.start_span(name, context=context, attributes=attributes)

    def flush(self) -> None:
        """Export the spans ended so far now."""
        if self._provider is not None:
            self._provider.force_flush()

    def close(self) -> None:
        """Export what is left and stop."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
