"""Fixtures of the datasources tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.datasources.support import Pages, serve_pages


@pytest.fixture
def pages() -> Iterator[Pages]:
    """A real HTTP server on 127.0.0.1 serving the pages a test adds."""
    with serve_pages() as served:
        yield served
