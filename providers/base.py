"""The one interface every LLM provider implements.

A provider turns a list of chat messages and sampling parameters into a
stream of text deltas followed by one final :class:`Completion` carrying the
token usage. Calls are blocking: callers run them in a worker thread. A
``cancel`` event lets the caller stop generation early (client disconnected).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class GenerationParams:
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Delta:
    """A piece of generated text."""

    text: str


@dataclass(frozen=True)
class Completion:
    """The end of a generation: the whole text, usage and why it stopped."""

    text: str
    usage: Usage
    model: str
    finish_reason: str = "stop"
    timings: dict[str, float] = field(default_factory=dict)
    # False when the backend sent no token counts (some servers' streams): usage is 0 then.
    usage_reported: bool = True


class Provider(Protocol):
    """A model backend. ``model`` is the provider-specific model name."""

    name: str

    def stream(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[Delta | Completion]:
        """Yield text deltas, then exactly one Completion (also when cancelled)."""
        ...

    def complete(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> Completion:
        """The whole answer at once."""
        ...
