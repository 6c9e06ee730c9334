"""OpenAPI quality: schemathesis against the real server's /openapi.json.

Bounded examples per operation; no 5xx, and every answer fits the documented
status codes, content types and schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from server_process import ServerProcess

TOKEN = "af_openapi_admin_token_0123456789"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home: Path = tmp_path_factory.mktemp("openapi-home")
    server = ServerProcess(
        {
            "APPFORGE_HOME": str(home),
            "APPFORGE_ADMIN_TOKEN": TOKEN,
            "APPFORGE_RATE_LIMIT__ENABLED": "false",
        }
    )
    yield schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    server.stop()


def test_openapi_every_route_is_documented(api_schema: Any):
    raw = api_schema.raw_schema
    for path, ops in raw["paths"].items():
        for method, op in ops.items():
            # from the route's docstring, not FastAPI's "Get App Route" made from its name
            assert op.get("summary") and not op["summary"].endswith("Route"), (method, path)
            assert "401" in op["responses"] or path == "/api/health", (method, path)
            # The OpenAI-compatible routes answer errors in OpenAI's shape.
            body = "OpenAIErrorBody" if path.startswith("/v1/") else "ErrorBody"
            assert op["responses"]["422"]["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{body}"
            }


def test_openapi_schemathesis(api_schema: Any):
    # Each operation gets its own bounded, derandomized hypothesis run; failures
    # are collected so one report names every operation that broke its schema.
    failures: list[str] = []
    calls: list[int] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operations += 1
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            calls.append(1)
            case.call_and_validate(
                headers={"Authorization": f"Token {TOKEN}"},
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
                timeout=60,
            )

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - report every operation's failure
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 25
    assert len(calls) >= 2 * operations  # several examples each, not skipped
    assert failures == []
