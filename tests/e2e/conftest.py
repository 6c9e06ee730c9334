"""Fixtures for end-to-end tests against real server processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from server_process import ServerProcess


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with the given environment; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str], args: tuple[str, ...] = ()) -> ServerProcess:
        server = ServerProcess(env, args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
