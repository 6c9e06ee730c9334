"""Helpers for the tests of ``/v1``: an API whose model is a scripted OpenAI look-alike
(so answers and usage are exact), and readers of its SSE frames."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai_edge import EdgeServer, Reply, serve_edge, sse_chunk

from appforge.core.settings import OpenAISettings, Settings

USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}

QA_APP = """\
version: 1
name: QA
type: chat
input:
  question: {type: string, required: true}
steps:
  - id: reply
    kind: llm
    prompt:
      system: Be brief.
      user: "{{ input.question }}"
    history: 3
output:
  answer: "{{ reply.text }}"
"""


@dataclass
class V1:
    """The API (admin token preset) and the model behind it."""

    client: TestClient
    edge: EdgeServer

    def answer(self, *pieces: str, usage: dict[str, int] | None = None) -> None:
        """Script the model: stream ``pieces``, then stop, then the usage."""
        frames = [sse_chunk(p, None) for p in pieces]
        frames += [sse_chunk(None, "stop"), sse_chunk(None, None, usage or USAGE)]
        self.edge.replies = [Reply(200, None, sse=frames)]

    def model_messages(self) -> list[dict[str, Any]]:
        """The messages the app sent the model in its last call."""
        messages: list[dict[str, Any]] = self.edge.requests[-1]["messages"]
        return messages


@pytest.fixture
def edge() -> Iterator[EdgeServer]:
    with serve_edge() as server:
        yield server


@pytest.fixture
def make_v1(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    edge: EdgeServer,
) -> Callable[..., V1]:
    def make(**overrides: Any) -> V1:
        values: dict[str, Any] = {
            "openai": OpenAISettings(base_url=edge.url),
            "models": {"default": "openai:gpt-test"},
            "rate_limit": {"enabled": False},
        }
        settings = make_settings(**{**values, **overrides})
        v1 = V1(make_client(settings), edge)
        v1.answer("Hello", " world")
        return v1

    return make


@pytest.fixture
def v1(make_v1: Callable[..., V1]) -> V1:
    return make_v1()


def sse_frames(client: TestClient, body: dict[str, Any], **headers: str) -> tuple[list[Any], Any]:
    """POST a streamed chat completion; its ``data:`` frames (JSON, or the text
    ``[DONE]``) in order, and the response."""
    frames: list[Any] = []
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                frames.append(data if data == "[DONE]" else json.loads(data))
            else:
                assert line == "", line
    return frames, r


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}
