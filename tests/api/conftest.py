"""Helpers for the API tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from app_docs import TEXT_APP, YAML
from fastapi.testclient import TestClient
from openai_v1 import edge, make_v1, v1  # noqa: F401  (fixtures of the /v1 tests)


@pytest.fixture
def create() -> Callable[..., dict[str, Any]]:
    """POST a YAML app and return the created app (asserting 201)."""

    def make(client: TestClient, text: str = TEXT_APP) -> dict[str, Any]:
        r = client.post("/api/apps", content=text, headers=YAML)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    return make
