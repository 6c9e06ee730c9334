"""The one llm call of a run, shared by YAML llm steps and Python flow steps.

:func:`render_messages` turns a prompt into chat messages (past turns of the
session inserted after the system messages); :func:`call_model` runs them on
the model the name resolves to and yields the text as it is written, returning
the typed :class:`~apps_yaml.events.LlmResult`. The provider's generation is
closed when the call ends, however it ends, so the model is never held by an
abandoned call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Mapping, Sequence

from apps_yaml import templates
from apps_yaml.events import LlmResult, PromptSource
from apps_yaml.runner import Dependencies, HistoryTurn
from apps_yaml.schema import InlinePrompt, LlmParams
from providers.base import ChatMessage, GenerationParams

log = logging.getLogger(__name__)

Call = Generator[str, None, LlmResult]


def render_messages(
    prompt: InlinePrompt,
    context: Mapping[str, object],
    history: Sequence[HistoryTurn] = (),
    *,
    step_id: str = "",
    turns: int = 0,
) -> list[ChatMessage]:
    """The chat messages of ``prompt`` rendered with ``context``; the last ``turns`` of
    ``history`` (what step ``step_id`` said in them) go after the system messages."""
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


def call_model(
    deps: Dependencies,
    model: str,
    messages: list[ChatMessage],
    params: LlmParams,
    cancel: threading.Event | None,
    prompt: PromptSource | None = None,
) -> Call:
    """Yield the model's text as it is written; return the call's :class:`LlmResult`."""
    provider, name = deps.models.resolve(model)
    sampling = GenerationParams(**params.model_dump())
    with provider.stream(name, messages, sampling, cancel) as generation:
        for delta in generation:
            if delta.text:
                yield delta.text
        completion = generation.result()
    log.debug(  # the provider logs the call's INFO line
        "llm model=%s finish=%s tokens=%d",
        completion.model,
        completion.finish_reason,
        completion.usage.total_tokens,
    )
    return LlmResult(
        text=completion.text,
        usage=completion.usage,
        model=completion.model,
        messages=messages,
        ttft_ms=completion.ttft_ms if completion.text else None,
        finish_reason=completion.finish_reason,
        usage_reported=completion.usage_reported,
        prompt=prompt,
    )


def drive(call: Call, on_text: Callable[[str], None]) -> LlmResult:
    """Run ``call`` to its end, handing each piece of text to ``on_text``."""
    try:
        while True:
            try:
                text = next(call)
            except StopIteration as done:
                result: LlmResult = done.value
                return result
            on_text(text)
    finally:
        call.close()  # frees the model at once if ``on_text`` raised
