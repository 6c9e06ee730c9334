"""The engine: runs a YAML app's steps in order and yields events.

One engine serves every surface (HTTP API, CLI, playground) through the run
service; it never imports FastAPI. :class:`AppRunner` is the
:class:`~apps_yaml.runner.Runner` of a YAML app: its ``run`` is a blocking
generator meant to be driven from a worker thread. Each step's result is
exposed to later templates under the step id:

- ``llm``: ``{"text", "usage", "model", "citations"}``
- ``retrieve``: ``{"documents": [{"n", "id", "text", "score", "metadata"}], "sources": [...]}``

Documents are numbered ``n`` = 1, 2, ... through the whole run (a second
retrieve step goes on from where the first stopped), so a prompt can show them
as ``[{{ d.n }}]``; an llm step's ``citations`` are the documents whose ``[n]``
its answer wrote (see :mod:`apps_yaml.citations`).

Templates also see ``session``: its ``id`` and, in a chat app, its ``history``:
the earlier turns as ``{"input", "output"}``, oldest first, newest last, as
many as the step's own ``history`` (output templates: the deepest of them).

An output whose template is exactly ``{{ <llm step>.text }}`` is streamed as
``Chunk`` events while the model generates; every other output key arrives
whole, once, as an ``Output`` event after the last step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from appforge.core.budget import Budget, RenderInterrupted
from appforge.core.errors import AppforgeError
from apps_yaml import templates
from apps_yaml.citations import Numbering
from apps_yaml.errors import AppsYamlError
from apps_yaml.events import (
    Chunk,
    Event,
    Failed,
    LlmResult,
    Output,
    PromptSource,
    RetrieveResult,
    StepFinished,
    StepStarted,
)
from apps_yaml.llm import ModelCall, render_messages
from apps_yaml.runner import Dependencies, HistoryTurn
from apps_yaml.schema import AppDocument, LlmStep, PromptRef, RetrieveStep

log = logging.getLogger(__name__)


class _Cancelled(Exception):
    pass


def streamed_keys(app: AppDocument) -> dict[str, list[str]]:
    """For each llm step id, the output keys streamed from its text."""
    llm_ids = {s.id for s in app.steps if isinstance(s, LlmStep)}
    keys: dict[str, list[str]] = {}
    for key, template in app.output.items():
        step_id = templates.streamed_step(template)
        if step_id in llm_ids:
            keys.setdefault(step_id, []).append(key)
    return keys


class AppRunner:
    """The runner of a YAML app document."""

    def __init__(self, app: AppDocument) -> None:
        self.app = app
        self._streams = streamed_keys(app)

    @property
    def history(self) -> int:
        """Turns of the session the steps read: a chat app's deepest ``history``."""
        if self.app.type != "chat":
            return 0
        return max((s.history for s in self.app.steps), default=0)

    def run(
        self,
        inputs: Mapping[str, Any],
        deps: Dependencies,
        *,
        session_id: str | None = None,
        history: Sequence[HistoryTurn] = (),
        cancel: threading.Event | None = None,
    ) -> Generator[Event, None, None]:
        """Run on already-validated ``inputs``; yield events until done or failed."""
        turns = [{"input": dict(t.input), "output": dict(t.output)} for t in history]
        context: dict[str, Any] = {"input": dict(inputs)}
        numbered = Numbering()
        # Every template of the run renders within the limits, and stops at its cancel
        # event (set by the run's timeout) even in the middle of a long loop.
        budget = Budget(deps.template_limits, cancel)
        current: str | None = None
        try:
            for step in self.app.steps:
                if cancel is not None and cancel.is_set():
                    raise _Cancelled
                current = step.id
                yield StepStarted(step.id, step.kind)
                started = time.perf_counter()
                context["session"] = _session(session_id, turns, step.history)
                result: LlmResult | RetrieveResult
                if isinstance(step, LlmStep):
                    keys = self._streams.get(step.id, [])
                    result = yield from _run_llm(step, context, deps, history, keys, cancel, budget)
                    result = replace(result, citations=numbered.cited(result.text))
                else:
                    result = _run_retrieve(step, context, deps, budget, numbered, cancel)
                context[step.id] = result.context()
                latency = (time.perf_counter() - started) * 1000
                yield StepFinished(step.id, step.kind, latency, result)
                if isinstance(result, LlmResult) and result.finish_reason == "cancelled":
                    raise _Cancelled
            current = None
            context["session"] = _session(session_id, turns, self.history)
            streamed = {k for keys in self._streams.values() for k in keys}
            for key, template in self.app.output.items():
                if key not in streamed:
                    yield Output(key, templates.evaluate(template, context, budget))
        except (_Cancelled, RenderInterrupted):
            yield Failed("CANCELLED", "the run was cancelled", current, 499)
        except AppforgeError as exc:  # our own components fail with a code
            yield Failed(exc.code, exc.message, current, exc.status_code)
        except Exception as exc:  # a bug: logged with its traceback
            log.exception("step %s failed", current)
            yield Failed("RUN_FAILED", str(exc) or type(exc).__name__, current, 500)


def _session(session_id: str | None, turns: list[dict[str, Any]], depth: int) -> dict[str, Any]:
    """What templates see as ``session``: the last ``depth`` turns as its history."""
    return {"id": session_id, "history": turns[-depth:] if depth > 0 else []}


def _run_llm(
    step: LlmStep,
    context: Mapping[str, Any],
    deps: Dependencies,
    history: Sequence[HistoryTurn],
    keys: list[str],
    cancel: threading.Event | None,
    budget: Budget,
) -> Generator[Event, None, LlmResult]:
    prompt = step.prompt
    source: PromptSource | None = None
    scope: Mapping[str, Any] = context
    if isinstance(prompt, PromptRef):
        if deps.prompts is None:
            raise AppsYamlError(
                f"prompt '{prompt.ref}' cannot be resolved here", code="PROMPT_NOT_FOUND"
            )
        scope = {
            name: templates.evaluate(t, context, budget) for name, t in prompt.variables.items()
        }
        resolved = deps.prompts.resolve(prompt.ref, prompt.label, prompt.version)
        prompt, source = resolved.prompt, resolved.source
    messages = render_messages(
        prompt, scope, history, step_id=step.id, turns=step.history, budget=budget
    )
    # Leaving the block frees the model, also when the consumer goes away mid-answer.
    with ModelCall(deps, step.model, messages, step.params, cancel, source) as call:
        for text in call:
            for key in keys:
                yield Chunk(key, text)
        result = call.result
    if not result.text and result.finish_reason != "cancelled":
        # The key is there, empty. (A call cut before it answered is no output: the run
        # then fails before its first byte, with a status of its own.)
        for key in keys:
            yield Chunk(key, "")
    return result


def _render_where(value: Any, context: Mapping[str, Any], budget: Budget) -> Any:
    if isinstance(value, str):
        return templates.evaluate(value, context, budget)
    if isinstance(value, list):
        return [_render_where(v, context, budget) for v in value]
    if isinstance(value, dict):
        return {k: _render_where(v, context, budget) for k, v in value.items()}
    return value


def _run_retrieve(
    step: RetrieveStep,
    context: Mapping[str, Any],
    deps: Dependencies,
    budget: Budget,
    numbered: Numbering,
    cancel: threading.Event | None,
) -> RetrieveResult:
    if deps.retriever is None:
        raise AppsYamlError(
            "retrieval is not available: no datasource store is configured",
            code="DATASOURCE_NOT_FOUND",
        )
    query = templates.render(step.query, context, budget)
    where = _render_where(step.where, context, budget) if step.where else None
    documents = deps.retriever.search(
        step.datasources, query, step.top_k, where, step.mode, step.keyword_weight, cancel
    )
    if step.min_score is not None:
        documents = [d for d in documents if d.get("score", 0.0) >= step.min_score]
    documents = numbered.number(documents)
    sources: list[str] = []
    for doc in documents:
        source = doc.get("metadata", {}).get("source")
        if source and source not in sources:
            sources.append(source)
    return RetrieveResult(documents=documents, sources=sources, query=query)
