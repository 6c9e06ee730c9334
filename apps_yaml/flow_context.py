"""What a Python flow step gets: :class:`StepContext`, and the thread it runs in.

A step is plain synchronous code: :func:`call_in_thread` runs it in a worker
thread, so that the flow's run generator can yield the chunks the step streams
(``ctx.llm(..., stream="key")``) while the model writes them.
"""

from __future__ import annotations

import contextvars
import queue
import re
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appforge.core.budget import Budget
from apps_yaml.errors import RunFailedError
from apps_yaml.events import Chunk, Event, LlmResult, PromptSource
from apps_yaml.llm import ModelCall, render_messages
from apps_yaml.runner import Dependencies, HistoryTurn
from apps_yaml.schema import IDENT, InlinePrompt, LlmParams
from providers.base import ChatMessage

_STEP_DONE = object()  # the last item a step's worker thread queues


@dataclass
class StepContext:
    """Handed to each step: its managed prompt (if any) and a way to call the model."""

    step: str
    deps: Dependencies
    model: str
    prompt: InlinePrompt | None = None
    prompt_source: PromptSource | None = None
    cancel: threading.Event | None = None
    session_id: str | None = None
    history: Sequence[HistoryTurn] = ()
    calls: list[LlmResult] = field(default_factory=list)
    # Why this step may not stream (None: it may), and where its chunks go.
    stream_refused: str | None = "it is not run by a flow"
    emit: Callable[[str, str], None] | None = field(default=None, repr=False)
    streamed: dict[str, str] = field(default_factory=dict)

    def llm(
        self,
        user: str | None = None,
        *,
        system: str | None = None,
        variables: Mapping[str, Any] | None = None,
        model: str | None = None,
        stream: str | None = None,
        **params: Any,
    ) -> str:
        """The model's answer: to the step's managed prompt rendered with ``variables``,
        or to ``user`` (and ``system``) text.

        With ``stream="<output key>"`` the text goes to the run's client as chunks
        of that output key while the model writes it, and the answer returned is
        exactly the text streamed. Only the step that ends the flow may stream (see
        the module docstring); elsewhere this raises ``FLOW_INVALID``.
        """
        if stream is not None:
            self._check_stream(stream)
        messages = self._messages(user, system, variables)
        pieces: list[str] = []
        checked = LlmParams.model_validate(params)
        with ModelCall(self.deps, model or self.model, messages, checked, self.cancel) as call:
            for text in call:
                if stream is not None:
                    assert self.emit is not None
                    self.emit(stream, text)
                    pieces.append(text)
            result = call.result
        self.calls.append(result)
        if stream is None:
            return result.text
        text = "".join(pieces)
        if stream not in self.streamed and not text:
            assert self.emit is not None
            self.emit(stream, "")  # the key is in the output even when the answer is empty
        self.streamed[stream] = self.streamed.get(stream, "") + text
        return text

    def _check_stream(self, stream: str) -> None:
        if not isinstance(stream, str) or not re.match(IDENT, stream):
            raise RunFailedError(
                f"step '{self.step}': stream= names an output key, got {stream!r}",
                code="FLOW_INVALID",
            )
        if self.stream_refused is not None or self.emit is None:
            raise RunFailedError(
                f"step '{self.step}' cannot stream output '{stream}': {self.stream_refused};"
                " only the step that ends the flow can stream",
                code="FLOW_INVALID",
            )

    def _messages(
        self, user: str | None, system: str | None, variables: Mapping[str, Any] | None
    ) -> list[ChatMessage]:
        if self.prompt is not None and user is None:
            budget = Budget(self.deps.template_limits, self.cancel)
            return render_messages(self.prompt, dict(variables or {}), budget=budget)
        if user is None:
            raise ValueError(f"step '{self.step}' has no prompt: give the user text")
        messages = [ChatMessage(role="user", content=user)]
        if system:
            messages.insert(0, ChatMessage(role="system", content=system))
        return messages


def call_in_thread(
    func: Callable[..., Any], name: str, kwargs: dict[str, Any], ctx: StepContext
) -> Generator[Event, None, Any]:
    """``func(ctx, **kwargs)``, yielding the chunks it streams as they come.

    The step is plain synchronous code; it runs in a worker thread so that this
    generator can yield while the model writes. The step's exception is raised
    here, as if it had run in this thread. If this generator is closed early (its
    consumer went away) the step is cancelled, and its thread is always joined.
    """
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    box: dict[str, Any] = {}
    context = contextvars.copy_context()  # the step sees this thread's context variables

    def work() -> None:
        try:
            box["result"] = context.run(func, ctx, **kwargs)
        except BaseException as exc:  # re-raised in the generator's thread
            box["error"] = exc
        finally:
            items.put(_STEP_DONE)

    if ctx.stream_refused is None:
        ctx.emit = lambda key, text: items.put(Chunk(key, text))
    thread = threading.Thread(target=work, name=f"appforge-flow-step-{name}", daemon=True)
    thread.start()
    finished = False
    try:
        while (item := items.get()) is not _STEP_DONE:
            yield item
        finished = True
    finally:
        if not finished and ctx.cancel is not None:
            ctx.cancel.set()  # stops the model at its next token, so the join is short
        thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
