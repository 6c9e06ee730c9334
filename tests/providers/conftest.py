"""Fixtures of the OpenAI-compatible provider's tests: the edge server and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai_edge import EdgeServer, FakeTime, serve_edge


@pytest.fixture
def edge() -> Iterator[EdgeServer]:
    """An OpenAI look-alike on 127.0.0.1 answering scripted replies (the last one repeats)."""
    with serve_edge() as server:
        yield server


@pytest.fixture
def timing() -> FakeTime:
    """Time for the provider's retries: waits are recorded, none is slept."""
    return FakeTime()
