"""What a finished run adds to the Prometheus metrics (``appforge.core.metrics``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from appforge.core.metrics import MODEL_ERRORS, RUN_SECONDS, RUN_TTFT_SECONDS, RUNS, TOKENS
from providers.errors import ProviderError

if TYPE_CHECKING:
    from runs.service import FinishedRun


def _codes(root: type[ProviderError]) -> set[str]:
    found = {root.code}
    for sub in root.__subclasses__():
        found |= _codes(sub)
    return found


# The codes of the model backends' errors: a run ending on one counts as a model error.
MODEL_ERROR_CODES = frozenset(_codes(ProviderError))


def observe(finished: FinishedRun) -> None:
    """Count the run: its status, latency, time to first output, tokens, model error."""
    app = finished.run.app_uuid
    RUNS.labels(app, finished.status).inc()
    RUN_SECONDS.labels(app).observe(finished.latency_ms / 1000)
    if finished.ttft_ms is not None:
        RUN_TTFT_SECONDS.labels(app).observe(finished.ttft_ms / 1000)
    usage = finished.usage
    if usage.get("prompt_tokens"):
        TOKENS.labels(app, "in").inc(usage["prompt_tokens"])
    if usage.get("completion_tokens"):
        TOKENS.labels(app, "out").inc(usage["completion_tokens"])
    failure = finished.failure
    if failure is not None and failure.code in MODEL_ERROR_CODES:
        MODEL_ERRORS.labels(failure.code).inc()
