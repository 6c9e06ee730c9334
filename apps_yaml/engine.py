"""The engine: runs an app's steps in order and yields events.

One engine serves every surface (HTTP API, CLI, playground); it never imports
FastAPI. ``run`` is a blocking generator meant to be driven from a worker
thread. Each step's result is exposed to later templates under the step id:

- ``llm``: ``{"text", "usage", "model"}``
- ``retrieve``: ``{"documents": [{"text", "score", "metadata"}], "sources": [...]}``

An output whose template is exactly ``{{ <llm step>.text }}`` is streamed as
``Chunk`` events while the model generates; every other output key arrives
whole, once, as an ``Output`` event after the last step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from apps_yaml import templates
from apps_yaml.errors import AppsYamlError
from apps_yaml.schema import AppDocument, InlinePrompt, LlmStep, PromptRef, RetrieveStep
from providers.base import ChatMessage, GenerationParams, Provider

log = logging.getLogger(__name__)


# --- events -----------------------------------------------------------------


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
    usage: dict[str, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    step: str | None = None
    status_code: int = 500


Event = StepStarted | Chunk | Output | StepFinished | Failed


# --- what the engine needs from the layers below ----------------------------


class ModelResolver(Protocol):
    def resolve(self, model: str) -> tuple[Provider, str]: ...


class Retriever(Protocol):
    def search(
        self, datasources: Sequence[str], query: str, top_k: int, where: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """Chunks as ``{"text", "score", "metadata"}``, best first."""
        ...


@dataclass(frozen=True)
class ResolvedPrompt:
    """A managed prompt as an inline prompt, and which stored version it is (``source``)."""

    prompt: InlinePrompt
    source: dict[str, Any]


class PromptResolver(Protocol):
    def resolve(self, ref: str, label: str, version: int | None = None) -> ResolvedPrompt:
        """The managed prompt's templates at ``version`` (if given) or ``label``.

        Its templates read the prompt's variables (the ``PromptRef.variables``
        rendered from the app's context), not the app's context itself.
        """
        ...


@dataclass
class Dependencies:
    models: ModelResolver
    retriever: Retriever | None = None
    prompts: PromptResolver | None = None


@dataclass(frozen=True)
class HistoryTurn:
    """An earlier turn of the session: per llm step, the user and assistant text; and the
    turn's input and output (what a Python flow sees as ``ctx.history``)."""

    transcript: Mapping[str, Mapping[str, str]]
    input: Mapping[str, Any] = field(default_factory=dict)
    output: Mapping[str, Any] = field(default_factory=dict)


class _Cancelled(Exception):
    pass


# --- running ------------------------------------------------------------------


def streamed_keys(app: AppDocument) -> dict[str, list[str]]:
    """For each llm step id, the output keys streamed from its text."""
    llm_ids = {s.id for s in app.steps if isinstance(s, LlmStep)}
    keys: dict[str, list[str]] = {}
    for key, template in app.output.items():
        step_id = templates.streamed_step(template)
        if step_id in llm_ids:
            keys.setdefault(step_id, []).append(key)
    return keys


def run(
    app: AppDocument,
    inputs: Mapping[str, Any],
    deps: Dependencies,
    *,
    session_id: str | None = None,
    history: Sequence[HistoryTurn] = (),
    cancel: threading.Event | None = None,
) -> Iterator[Event]:
    """Run ``app`` on already-validated ``inputs``; yield events until done or failed."""
    context: dict[str, Any] = {"input": dict(inputs), "session": {"id": session_id}}
    streams = streamed_keys(app)
    current: str | None = None
    try:
        for step in app.steps:
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            current = step.id
            yield StepStarted(step.id, step.kind)
            started = time.perf_counter()
            if isinstance(step, LlmStep):
                result = yield from _run_llm(
                    step, context, deps, history, streams.get(step.id, []), cancel
                )
                usage = result["usage"]
                detail = {
                    "model": result["model"],
                    "messages": result.pop("_messages"),
                    "text": result["text"],
                    "ttft_ms": result.pop("_ttft_ms"),
                    "finish_reason": result.pop("_finish_reason"),
                    "usage_reported": result.pop("_usage_reported"),
                }
                source = result.pop("_prompt")
                if source is not None:
                    detail["prompt"] = source
            else:
                result = _run_retrieve(step, context, deps)
                usage = {}
                detail = {"query": result.pop("_query"), "count": len(result["documents"])}
            context[step.id] = result
            latency = (time.perf_counter() - started) * 1000
            yield StepFinished(step.id, step.kind, latency, usage, detail)
            if detail.get("finish_reason") == "cancelled":
                raise _Cancelled
        current = None
        streamed = {k for keys in streams.values() for k in keys}
        for key, template in app.output.items():
            if key not in streamed:
                yield Output(key, templates.evaluate(template, context))
    except _Cancelled:
        yield Failed("CANCELLED", "the run was cancelled", current, 499)
    except AppsYamlError as exc:
        yield Failed(exc.code, exc.message, current, exc.status_code)
    except Exception as exc:  # providers and retrievers raise their own coded errors
        code = getattr(exc, "code", "RUN_FAILED")
        status = getattr(exc, "status_code", 500)
        if code == "RUN_FAILED":
            log.exception("step %s failed", current)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        yield Failed(code, message, current, status)


def render_messages(
    prompt: InlinePrompt,
    context: Mapping[str, Any],
    history: Sequence[HistoryTurn],
    step: LlmStep,
) -> list[ChatMessage]:
    """The chat messages of a prompt rendered with ``context``, past turns inserted."""
    rendered: list[ChatMessage] = []
    if prompt.messages is not None:
        for m in prompt.messages:
            rendered.append({"role": m.role, "content": templates.render(m.content, context)})
    else:
        if prompt.system is not None:
            system = templates.render(prompt.system, context)
            if system.strip():
                rendered.append({"role": "system", "content": system})
        assert prompt.user is not None
        rendered.append({"role": "user", "content": templates.render(prompt.user, context)})
    if step.history <= 0 or not history:
        return rendered
    past: list[ChatMessage] = []
    for turn in list(history)[-step.history :]:
        said = turn.transcript.get(step.id)
        if said:
            past.append({"role": "user", "content": said["user"]})
            past.append({"role": "assistant", "content": said["assistant"]})
    lead = 0
    while lead < len(rendered) and rendered[lead]["role"] == "system":
        lead += 1
    return rendered[:lead] + past + rendered[lead:]


def _run_llm(
    step: LlmStep,
    context: Mapping[str, Any],
    deps: Dependencies,
    history: Sequence[HistoryTurn],
    keys: list[str],
    cancel: threading.Event | None,
) -> Generator[Event, None, dict[str, Any]]:
    prompt = step.prompt
    source: dict[str, Any] | None = None
    scope: Mapping[str, Any] = context
    if isinstance(prompt, PromptRef):
        if deps.prompts is None:
            raise AppsYamlError(
                f"prompt '{prompt.ref}' cannot be resolved here", code="PROMPT_NOT_FOUND"
            )
        scope = {name: templates.evaluate(t, context) for name, t in prompt.variables.items()}
        resolved = deps.prompts.resolve(prompt.ref, prompt.label, prompt.version)
        prompt, source = resolved.prompt, resolved.source
    messages = render_messages(prompt, scope, history, step)
    provider, model = deps.models.resolve(step.model)
    params = GenerationParams(**step.params.model_dump())
    started = time.perf_counter()
    ttft: float | None = None
    with provider.stream(model, messages, params, cancel) as generation:
        for piece in generation:
            if not piece.text:
                continue
            if ttft is None:
                ttft = (time.perf_counter() - started) * 1000
            for key in keys:
                yield Chunk(key, piece.text)
        completion = generation.result()
    if not completion.text:
        for key in keys:
            yield Chunk(key, "")
    total = (time.perf_counter() - started) * 1000
    log.info(
        "llm step=%s model=%s ms=%.0f tokens=%d",
        step.id,
        completion.model,
        total,
        completion.usage.total_tokens,
    )
    return {
        "text": completion.text,
        "usage": completion.usage.as_dict(),
        "model": completion.model,
        "_messages": messages,
        "_ttft_ms": ttft,
        "_finish_reason": completion.finish_reason,
        "_usage_reported": completion.usage_reported,
        "_prompt": source,
    }


def _render_where(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return templates.evaluate(value, context)
    if isinstance(value, list):
        return [_render_where(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _render_where(v, context) for k, v in value.items()}
    return value


def _run_retrieve(
    step: RetrieveStep, context: Mapping[str, Any], deps: Dependencies
) -> dict[str, Any]:
    if deps.retriever is None:
        raise AppsYamlError(
            "retrieval is not available: no datasource store is configured",
            code="DATASOURCE_NOT_FOUND",
        )
    query = templates.render(step.query, context)
    where = _render_where(step.where, context) if step.where else None
    documents = deps.retriever.search(step.datasources, query, step.top_k, where)
    if step.min_score is not None:
        documents = [d for d in documents if d.get("score", 0.0) >= step.min_score]
    sources: list[str] = []
    for doc in documents:
        source = doc.get("metadata", {}).get("source")
        if source and source not in sources:
            sources.append(source)
    return {"documents": documents, "sources": sources, "_query": query}


# --- collecting -----------------------------------------------------------------


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
            for k, v in event.usage.items():
                self.usage[k] = self.usage.get(k, 0) + v
            self.steps.append(
                {
                    "id": event.step,
                    "kind": event.kind,
                    "latency_ms": round(event.latency_ms, 3),
                    "usage": event.usage,
                    **event.detail,
                }
            )
            messages = event.detail.get("messages")
            if event.kind == "llm" and messages:
                users = [m["content"] for m in messages if m["role"] == "user"]
                self.transcript[event.step] = {
                    "user": users[-1] if users else "",
                    "assistant": event.detail.get("text", ""),
                }
        elif isinstance(event, Failed):
            self.failure = event
