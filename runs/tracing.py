"""A run's trace: one span for the run, one per step (a model call, a retrieval).

Built from the run's events as they pass (``StepStarted`` opens a step's span,
``StepFinished`` ends it with what the step measured), so the runners know
nothing of tracing. Only made when tracing is on (``appforge.core.tracing``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from appforge.core.logs import REQUEST_ID
from appforge.core.tracing import Tracing
from apps_yaml.events import Event, Failed, LlmResult, RetrieveResult, StepFinished, StepStarted

if TYPE_CHECKING:
    from runs.service import FinishedRun, PreparedRun


class RunTrace:
    """The spans of one run, opened and ended as its events pass."""

    def __init__(self, tracing: Tracing, run: PreparedRun) -> None:
        self.tracing = tracing
        attributes = {"appforge.run_id": run.run_id, "appforge.app_uuid": run.app_uuid}
        request_id = REQUEST_ID.get()
        if request_id:
            attributes["appforge.request_id"] = request_id
        self.root = tracing.start(f"run {run.app_name}", attributes=attributes)
        self._steps: dict[str, Any] = {}

    def event(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            name = "llm" if event.kind == "llm" else event.kind
            self._steps[event.step] = self.tracing.start(
                f"{name} {event.step}",
                parent=self.root,
                attributes={"appforge.step": event.step, "appforge.step.kind": event.kind},
            )
        elif isinstance(event, StepFinished):
            span = self._steps.pop(event.step, None)
            if span is not None:
                span.set_attributes(self._measured(event))
                span.end()
        elif isinstance(event, Failed):
            from opentelemetry.trace import Status, StatusCode

            self.root.set_status(Status(StatusCode.ERROR, event.code))
            self.root.set_attribute("appforge.error.code", event.code)

    def _measured(self, event: StepFinished) -> dict[str, Any]:
        result = event.result
        out: dict[str, Any] = {"appforge.latency_ms": round(event.latency_ms, 3)}
        content = self.tracing.capture_content
        if isinstance(result, LlmResult):
            usage = result.usage
            out |= {
                "gen_ai.request.model": result.model,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "gen_ai.response.finish_reasons": [result.finish_reason],
            }
            if result.ttft_ms is not None:
                out["appforge.ttft_ms"] = round(result.ttft_ms, 3)
            if content:
                out["gen_ai.prompt"] = json.dumps(result.messages, ensure_ascii=False)
                out["gen_ai.completion"] = result.text
        elif isinstance(result, RetrieveResult):
            out["appforge.retrieve.count"] = len(result.documents)
            if content:
                out["appforge.retrieve.query"] = result.query
        return out

    def end(self, finished: FinishedRun | None) -> None:
        """End the run's span (and any step span a failure left open)."""
        for span in self._steps.values():
            span.end()
        self._steps.clear()
        if finished is not None:
            usage = finished.usage
            self.root.set_attributes(
                {
                    "appforge.status": finished.status,
                    "gen_ai.usage.input_tokens": usage.get("prompt_tokens", 0),
                    "gen_ai.usage.output_tokens": usage.get("completion_tokens", 0),
                }
            )
            if finished.ttft_ms is not None:
                self.root.set_attribute("appforge.ttft_ms", round(finished.ttft_ms, 3))
        self.root.end()
