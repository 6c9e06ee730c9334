"""OpenAI's wire shapes for ``/v1``: the chat completion request, its answers (one
``chat.completion`` or ``chat.completion.chunk`` SSE frames), models, and errors.

Only the shapes live here; the route (``api.routes.openai``) runs the app through
the run service and ``runs.chat`` turns the messages into a run.

Request fields appforge reads: ``model`` (an app uuid or name), ``messages``,
``stream``, ``stream_options.include_usage`` and ``n`` (only 1). Sampling
fields (``temperature``, ``top_p``, ``max_tokens``, ``max_completion_tokens``,
``stop``, ``seed``, penalties, ``user`` ...) and any other field are accepted
and ignored: the app's YAML sets its model's parameters.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runs.chat import Said


class ContentPart(BaseModel):
    """One part of a message's content; only ``text`` parts are read."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(max_length=32)
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionCreate(BaseModel):
    """The body of ``POST /v1/chat/completions`` (unlisted OpenAI fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200, description="An app's uuid or name")
    messages: list[MessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice is made")
    temperature: float | None = Field(default=None, description="Ignored: the app sets it")
    max_tokens: int | None = Field(default=None, description="Ignored: the app sets it")

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ContentPartError(ValueError):
    """A content part that is not text: ``(index, part index, type)``."""

    def __init__(self, index: int, part: int, kind: str) -> None:
        super().__init__(f"messages[{index}].content[{part}]: type '{kind}' is not supported")
        self.index, self.part, self.kind = index, part, kind


def said(messages: list[MessageIn]) -> list[Said]:
    """The messages as plain text; text parts are joined, other parts raise
    :class:`ContentPartError`."""
    out: list[Said] = []
    for n, message in enumerate(messages):
        content = message.content
        if content is None or isinstance(content, str):
            out.append(Said(message.role, content or ""))
            continue
        texts: list[str] = []
        for p, part in enumerate(content):
            if part.type != "text" or part.text is None:
                raise ContentPartError(n, p, part.type)
            texts.append(part.text)
        out.append(Said(message.role, "".join(texts)))
    return out


# --- answers ----------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A whole answer (``"stream": false``)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ModelPublic(BaseModel):
    """An app, as OpenAI lists a model (``id`` is the app's uuid)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "appforge"
    name: str = Field(description="The app's name (also accepted as the model)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


def usage_of(usage: dict[str, int]) -> dict[str, int]:
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {key: int(usage.get(key, 0)) for key in keys}


def answer_text(value: Any) -> str:
    """An output value as the answer's text (non-strings as JSON)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def finish_reason(steps: list[dict[str, Any]]) -> str:
    """``length`` when the run's last model call stopped at its token limit, else ``stop``."""
    for step in reversed(steps):
        if "finish_reason" in step:
            return "length" if step["finish_reason"] == "length" else "stop"
    return "stop"


class ChunkWriter:
    """The SSE frames of one streamed answer, all with the same id, time and model."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }

    def _frame(self, obj: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()

    def _choice(self, delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._frame({**self.base, "choices": [choice]})

    def role(self) -> bytes:
        """The first frame: the assistant's role, no text yet."""
        return self._choice({"role": "assistant", "content": ""}, None)

    def content(self, text: str) -> bytes:
        return self._choice({"content": text}, None)

    def finish(self, reason: str = "stop") -> bytes:
        return self._choice({}, reason)

    def usage(self, usage: dict[str, int]) -> bytes:
        """The usage frame (``stream_options.include_usage``): no choices."""
        return self._frame({**self.base, "choices": [], "usage": usage_of(usage)})

    def error(self, body: dict[str, Any]) -> bytes:
        return self._frame(body)

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"


# --- errors -----------------------------------------------------------------------

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status in _TYPES:
        return _TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, ...")
    code: str = Field(description="The API's UPPER_SNAKE error code (see the README)")
    param: str | None = None


class OpenAIErrorBody(BaseModel):
    """The body of every 4xx/5xx answer on ``/v1``."""

    error: OpenAIErrorDetail


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "code", "param"}}``."""
    return {"error": {"message": message, "type": error_type(status), "code": code, "param": param}}
