"""What one call to an OpenAI-compatible server has said so far: its text, model,
usage and finish reason, read chunk by chunk (``chat.completion.chunk``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    """What the server said so far in one call."""

    model: str
    parts: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str = "stop"
    first_at: float | None = None

    def take(self, chunk: dict[str, Any]) -> str | None:
        """Note one ``chat.completion.chunk``; its text, if it has some."""
        self.model = chunk.get("model") or self.model
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        text = delta.get("content") if delta else None
        if not text or not isinstance(text, str):
            return None
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.parts.append(text)
        return text


def count_tokens(value: Any) -> int:
    """A token count as the server reported it; 0 when it sent none (or not a number)."""
    return int(value) if isinstance(value, int | float) else 0
