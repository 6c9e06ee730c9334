"""A chat message list (OpenAI's ``messages``) as a run of a stored app.

The last message is the user's question: it fills the app's chat input (the
one ``openai: {input: ...}`` names, else the app's only required string
input). The messages before it are the run's history, a user message and the
assistant's answer to it making one turn, given to the app's llm steps the
way a session's turns are (so only a ``type: chat`` app with ``history: N``
reads them, its last N turns). When the caller continues a session
(``session_id``), the session's own turns are the history and the earlier
messages are not read. System and developer messages are not read either:
the app's own prompt is its system prompt.

The answer is one output key: ``openai: {output: ...}``, else the app's only
streamed output key, else its only output key.

Nothing here runs anything: :func:`plan` checks the messages and builds the
:class:`~runs.service.RunRequest` the run service takes, like every other
entry point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from appforge.core.settings import LimitSettings
from apps_yaml.engine import streamed_keys
from apps_yaml.runner import HistoryTurn
from apps_yaml.schema import AppDocument, LlmStep
from runs.errors import ChatRequestError
from runs.records import AppRecord
from runs.service import Caller, RunRequest

READ_ROLES = frozenset({"user", "assistant"})
SKIPPED_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True)
class Said:
    """One message of the list, its content as plain text."""

    role: str
    text: str


@dataclass(frozen=True)
class ChatRun:
    """The run request a message list makes, and which output key is the answer."""

    request: RunRequest
    input_key: str
    output_key: str


def plan(
    app: AppRecord,
    messages: Sequence[Said],
    limits: LimitSettings,
    *,
    session_id: str | None = None,
    caller: Caller | None = None,
    stream: bool = False,
    client: str | None = None,
) -> ChatRun:
    """Check ``messages`` against the limits and the app; the run request they make."""
    check_messages(messages, limits)
    doc = app.document
    input_key, output_key = input_key_of(doc), output_key_of(doc)
    question = messages[-1].text
    history = None if session_id is not None else _turns(doc, messages[:-1], input_key, output_key)
    request = RunRequest(
        app.uuid,
        {input_key: question},
        session_id=session_id,
        stream=stream,
        caller=caller,
        history=history,
        client=client,
    )
    return ChatRun(request, input_key, output_key)


def check_messages(messages: Sequence[Said], limits: LimitSettings) -> None:
    """Bounded in number and size, known roles, and the last one the user's."""
    if len(messages) > limits.max_messages:
        raise ChatRequestError(
            f"{len(messages)} messages is more than the {limits.max_messages} allowed",
            code="TOO_MANY_MESSAGES",
            details={"limit": limits.max_messages},
        )
    for n, message in enumerate(messages):
        if message.role not in READ_ROLES | SKIPPED_ROLES:
            raise ChatRequestError(
                f"messages[{n}]: role '{message.role}' is not supported (only system,"
                " developer, user and assistant)",
                code="MESSAGE_ROLE_UNSUPPORTED",
                details={"index": n, "role": message.role},
            )
        if len(message.text) > limits.max_message_chars:
            raise ChatRequestError(
                f"messages[{n}] is longer than {limits.max_message_chars} characters",
                code="MESSAGE_TOO_LONG",
                details={"index": n, "limit": limits.max_message_chars},
            )
    if not messages or messages[-1].role != "user":
        raise ChatRequestError(
            "the last message must be the user's: it is the question the app answers",
            code="LAST_MESSAGE_NOT_USER",
        )


def input_candidates(doc: AppDocument) -> list[str]:
    """The inputs a chat message may fill: the one ``openai.input`` names, else every
    required string input. One is the chat input; the chat page (``api.routes.web``)
    reads the same list and is lenient where there is not exactly one."""
    if doc.openai.input is not None:
        return [doc.openai.input]
    return [k for k, f in doc.input.items() if f.required and f.type == "string"]


def answer_candidates(doc: AppDocument) -> list[str]:
    """The output keys that may be the answer: the one ``openai.output`` names, else
    every streamed output key, else every output key (the chat page shows the first)."""
    if doc.openai.output is not None:
        return [doc.openai.output]
    streamed = list(dict.fromkeys(k for keys in streamed_keys(doc).values() for k in keys))
    return streamed if streamed else list(doc.output)


def input_key_of(doc: AppDocument) -> str:
    """The input the user's message fills (``OPENAI_INPUT_UNKNOWN`` if none is clear)."""
    candidates = input_candidates(doc)
    if len(candidates) != 1:
        raise ChatRequestError(
            f"app '{doc.name}' has {len(candidates)} required string inputs, so the user's"
            " message has no clear place: name one with openai: {input: <name>} in its YAML",
            code="OPENAI_INPUT_UNKNOWN",
            details={"candidates": candidates},
        )
    return candidates[0]


def output_key_of(doc: AppDocument) -> str:
    """The output key that is the answer (``OPENAI_OUTPUT_UNKNOWN`` if none is clear)."""
    candidates = answer_candidates(doc)
    if len(candidates) != 1:
        raise ChatRequestError(
            f"app '{doc.name}' has {len(candidates)} candidate answer keys: name one with"
            " openai: {output: <key>} in its YAML",
            code="OPENAI_OUTPUT_UNKNOWN",
            details={"candidates": candidates},
        )
    return candidates[0]


def _turns(
    doc: AppDocument, earlier: Sequence[Said], input_key: str, output_key: str
) -> tuple[HistoryTurn, ...]:
    """The earlier messages as turns: each user message with the answer that follows it
    (consecutive messages of one role are joined)."""
    pairs: list[list[str]] = []
    last_role = ""
    for message in earlier:
        if message.role not in READ_ROLES:
            continue
        if message.role == "user" and last_role != "user":
            pairs.append([message.text, ""])
        elif message.role == "assistant" and last_role not in ("user", "assistant"):
            pairs.append(["", message.text])
        else:
            slot = 0 if message.role == "user" else 1
            pairs[-1][slot] = "\n\n".join(p for p in (pairs[-1][slot], message.text) if p)
        last_role = message.role
    steps = [s.id for s in doc.steps if isinstance(s, LlmStep)]
    return tuple(
        HistoryTurn(
            {step: {"user": user, "assistant": answer} for step in steps},
            {input_key: user},
            {output_key: answer},
        )
        for user, answer in pairs
    )
