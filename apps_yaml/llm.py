"""The one llm call of a run, shared by YAML llm steps and Python flow steps.

:func:`render_messages` turns a prompt into chat messages (past turns of the
session inserted after the system messages); a :class:`ModelCall` runs them on
the model the name resolves to, yielding the text as it is written, then the
typed :class:`~apps_yaml.events.LlmResult`. The provider's
generation is closed when the call's block ends, however it ends, so the model
is never held by an abandoned call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence

from appforge.core.budget import Budget
from apps_yaml import templates
from apps_yaml.events import LlmResult, PromptSource
from apps_yaml.runner import Dependencies, HistoryTurn
from apps_yaml.schema import InlinePrompt, LlmParams
from providers.base import ChatMessage, GenerationParams


def render_messages(
    prompt: InlinePrompt,
    context: Mapping[str, object],
    history: Sequence[HistoryTurn] = (),
    *,
    step_id: str = "",
    turns: int = 0,
    budget: Budget | None = None,
) -> list[ChatMessage]:
    """The chat messages of ``prompt`` rendered with ``context``; the last ``turns`` of
    ``history`` (what step ``step_id`` said in them) go after the system messages."""
    rendered: list[ChatMessage] = []
    if prompt.messages is not None:
        for m in prompt.messages:
            content = templates.render(m.content, context, budget)
            rendered.append({"role": m.role, "content": content})
    else:
        if prompt.system is not None:
            system = templates.render(prompt.system, context, budget)
            if system.strip():
                rendered.append({"role": "system", "content": system})
        assert prompt.user is not None
        rendered.append({"role": "user", "content": templates.render(prompt.user, context, budget)})
    if turns <= 0 or not history:
        return rendered
    past: list[ChatMessage] = []
    for turn in list(history)[-turns:]:
        said = turn.transcript.get(step_id)
        if said:
            past.append({"role": "user", "content": said["user"]})
            past.append({"role": "assistant", "content": said["assistant"]})
    lead = 0
    while lead < len(rendered) and rendered[lead]["role"] == "system":
        lead += 1
    return rendered[:lead] + past + rendered[lead:]


class ModelCall:
    """One llm call of a run: iterate for the text as it is written, then ``result``.

    A context manager: leaving the block ends the call and frees the model at
    once, whether the text was all read or not.
    """

    def __init__(
        self,
        deps: Dependencies,
        model: str,
        messages: list[ChatMessage],
        params: LlmParams,
        cancel: threading.Event | None,
        prompt: PromptSource | None = None,
    ) -> None:
        provider, name = deps.models.resolve(model)
        sampling = GenerationParams(**params.model_dump())
        self._generation = provider.stream(name, messages, sampling, cancel)
        self._messages = messages
        self._prompt = prompt
        self._result: LlmResult | None = None

    def __iter__(self) -> Iterator[str]:
        for delta in self._generation:
            if delta.text:
                yield delta.text

    @property
    def result(self) -> LlmResult:
        """The call's result (reading, and dropping, any text not read yet)."""
        if self._result is None:
            completion = self._generation.result()
            self._result = LlmResult(
                text=completion.text,
                usage=completion.usage,
                model=completion.model,
                messages=self._messages,
                ttft_ms=completion.ttft_ms if completion.text else None,
                finish_reason=completion.finish_reason,
                usage_reported=completion.usage_reported,
                prompt=self._prompt,
            )
        return self._result

    def __enter__(self) -> ModelCall:
        return self

    def __exit__(self, *exc: object) -> None:
        self._generation.close()
