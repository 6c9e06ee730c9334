"""Helpers of the evaluation tests: the API state, and whether an evaluation has ended."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def state(client: TestClient) -> Any:
    app: Any = client.app
    return app.state.api


def ended(client: TestClient, evaluation_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = client.get(f"/api/evaluations/{evaluation_id}").json()
    return body if body["status"] in ("done", "failed", "cancelled") else None
