"""What a run produces: its events, the typed result of each step, and their fold.

A runner (a YAML app's steps, or a Python flow) yields :data:`Event` values in
order. Each finished step carries a typed result that says what later
templates see (:meth:`LlmResult.context`) and what the stored run keeps of it
(``record()``); :class:`Outcome` folds the events into what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from providers.base import ChatMessage, Usage

# --- step results ---------------------------------------------------------------


@dataclass(frozen=True)
class PromptSource:
    """Which stored managed-prompt version a step ran, and the label that found it."""

    id: str
    name: str
    version: int
    label: str | None

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "version": self.version, "label": self.label}


@dataclass(frozen=True)
class LlmResult:
    """One model call: the answer and everything measured about it."""

    text: str
    usage: Usage
    model: str
    messages: list[ChatMessage]
    ttft_ms: float | None  # measured once, by the provider; None when nothing was written
    finish_reason: str
    usage_reported: bool
    prompt: PromptSource | None = None
    # The run's documents the answer cites by their [n] (see apps_yaml.citations).
    citations: list[dict[str, Any]] = field(default_factory=list)

    def context(self) -> dict[str, Any]:
        """What later templates see under the step id."""
        return {
            "text": self.text,
            "usage": self.usage.as_dict(),
            "model": self.model,
            "citations": self.citations,
        }

    @property
    def token_usage(self) -> dict[str, int]:
        return self.usage.as_dict()

    def record(self) -> dict[str, Any]:
        """What the stored run keeps of the step (besides id, kind, latency and usage)."""
        detail: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "text": self.text,
            "ttft_ms": self.ttft_ms,
            "finish_reason": self.finish_reason,
            "usage_reported": self.usage_reported,
        }
        if self.prompt is not None:
            detail["prompt"] = self.prompt.record()
        return detail


@dataclass(frozen=True)
class RetrieveResult:
    """The documents a retrieve step found (best first) and their distinct sources."""

    documents: list[dict[str, Any]]
    sources: list[str]
    query: str

    def context(self) -> dict[str, Any]:
        return {"documents": self.documents, "sources": self.sources}

    @property
    def token_usage(self) -> dict[str, int]:
        return {}

    @property
    def prompt(self) -> PromptSource | None:
        return None

    def record(self) -> dict[str, Any]:
        """The query as rendered and each document found, its text cut to
        ``RECORDED_TEXT_CHARS`` (a playground shows them as the answer's sources)."""
        found = [recorded_document(d) for d in self.documents]
        return {"query": self.query, "count": len(self.documents), "documents": found}


# How much of each document's text a stored run keeps.
RECORDED_TEXT_CHARS = 1000


def recorded_document(doc: dict[str, Any]) -> dict[str, Any]:
    """What a stored run keeps of one document a retrieve step found."""
    metadata = doc.get("metadata") or {}
    return {
        "id": doc.get("id"),
        "source": metadata.get("source") or metadata.get("name"),
        "score": doc.get("score"),
        "metadata": metadata,
        "text": str(doc.get("text", ""))[:RECORDED_TEXT_CHARS],
    }


@dataclass(frozen=True)
class FlowStepResult:
    """One run of a Python flow step: its input and output, and its model calls."""

    input: Any
    output: Any
    status: str
    calls: list[LlmResult]
    error: str | None = None
    prompt: PromptSource | None = None

    @property
    def token_usage(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for call in self.calls:
            for key, value in call.usage.as_dict().items():
                total[key] = total.get(key, 0) + value
        return total

    def record(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "calls": [{"model": c.model, "messages": c.messages} for c in self.calls],
        }
        if self.error:
            detail["error"] = self.error
        if self.prompt is not None:
            detail["prompt"] = self.prompt.record()
        return detail


class StepRecord(Protocol):
    """What every step result offers the run's fold."""

    @property
    def token_usage(self) -> dict[str, int]: ...

    @property
    def prompt(self) -> PromptSource | None: ...

    def record(self) -> dict[str, Any]: ...


# --- events -----------------------------------------------------------------------


@dataclass(frozen=True)
class StepStarted:
    step: str
    kind: str


@dataclass(frozen=True)
class Chunk:
    """A piece of a streamed (string) output key."""

    key: str
    text: str


@dataclass(frozen=True)
class Output:
    """A whole output value (anything JSON-serialisable)."""

    key: str
    value: Any


@dataclass(frozen=True)
class StepFinished:
    step: str
    kind: str
    latency_ms: float
    result: StepRecord


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    step: str | None = None
    status_code: int = 500


Event = StepStarted | Chunk | Output | StepFinished | Failed


# --- the fold ------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything a run produced, folded from its events (what gets stored)."""

    output: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    )
    failure: Failed | None = None
    transcript: dict[str, dict[str, str]] = field(default_factory=dict)
    prompts: list[tuple[str, PromptSource]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.failure is None:
            return "succeeded"
        return {"CANCELLED": "cancelled", "RUN_TIMEOUT": "timeout"}.get(self.failure.code, "failed")

    def add(self, event: Event) -> None:
        if isinstance(event, Chunk):
            self.output[event.key] = self.output.get(event.key, "") + event.text
        elif isinstance(event, Output):
            self.output[event.key] = event.value
        elif isinstance(event, StepFinished):
            self._finished(event)
        elif isinstance(event, Failed):
            self.failure = event

    def _finished(self, event: StepFinished) -> None:
        result = event.result
        usage = result.token_usage
        for key, value in usage.items():
            self.usage[key] = self.usage.get(key, 0) + value
        self.steps.append(
            {
                "id": event.step,
                "kind": event.kind,
                "latency_ms": round(event.latency_ms, 3),
                "usage": usage,
                **result.record(),
            }
        )
        if result.prompt is not None:
            self.prompts.append((event.step, result.prompt))
        if isinstance(result, LlmResult) and result.messages:
            users = [m["content"] for m in result.messages if m["role"] == "user"]
            self.transcript[event.step] = {
                "user": users[-1] if users else "",
                "assistant": result.text,
            }
