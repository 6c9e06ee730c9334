"""OpenAPI quality: schemathesis against the real server's /openapi.json.

Bounded examples per operation, in three modes: positive (no 5xx, and every
answer fits the documented status codes, content types and schemas), negative
(input that breaks the schema gets a documented 4xx, never a 5xx) and stateful
(sequences of calls linked through the ids the API hands out).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.control import SkipTest
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
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
    # Building the document takes a while on a loaded machine: requests' 10 s is too short.
    yield schemathesis.openapi.from_url(f"{server.base}/openapi.json", timeout=120)
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


def _every_operation(api_schema: Any, mode: GenerationMode, checks: list[Any]) -> None:
    # Each operation gets its own bounded, derandomized hypothesis run; failures
    # are collected so one report names every operation that broke its schema.
    failures: list[str] = []
    calls: list[int] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operations += 1
        operation = result.ok()
        try:
            try:
                _run(operation, mode, checks, calls)
            except SkipTest:
                # Negative mode only (see the negative test): schemathesis found nothing
                # to break in a draw. With a body, query or cookie to break, search on
                # as hypothesis would (a draw that breaks nothing is rejected).
                if not _has_body_query_or_cookie(operation):
                    continue
                generation = api_schema.config.generation
                generation.update(modes=list(GenerationMode))
                try:
                    _run(operation, mode, checks, calls)
                finally:
                    generation.update(modes=[mode])
        except Unsatisfiable:
            continue  # nothing in this operation can break its schema (no parameters)
        except Exception as exc:  # noqa: BLE001 - report every operation's failure
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 25
    assert len(calls) >= 2 * operations  # several examples each, not skipped
    assert failures == [], "\n\n".join(failures)


def _run(operation: Any, mode: GenerationMode, checks: list[Any], calls: list[int]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
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
            headers={"Authorization": f"Token {TOKEN}"}, checks=checks, timeout=60
        )

    check()


def _has_body_query_or_cookie(operation: Any) -> bool:
    return bool(operation.body) or any(
        operation.get_parameter_set(location).schema["properties"]
        for location in (ParameterLocation.QUERY, ParameterLocation.COOKIE)
    )


def test_openapi_schemathesis(api_schema: Any):
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    _every_operation(api_schema, GenerationMode.POSITIVE, checks)


def test_openapi_schemathesis_negative(api_schema: Any):
    # Bodies, queries and paths that break the schema: a 4xx in the one error
    # body, never a 5xx and never a 2xx that accepted the broken input.
    checks = [not_a_server_error, negative_data_rejection, content_type_conformance]
    # Negative cases only: a draw that breaks nothing then ends an operation at once
    # (schemathesis' own "impossible to generate negative test cases"), where hypothesis
    # would reject some 460 draws before giving up on an operation with nothing to
    # break but free-form path parameters and headers (46 of them: 7 of the test's 8
    # minutes on a loaded machine). The other operations still get their six cases.
    api_schema.config.generation.update(modes=[GenerationMode.NEGATIVE])
    # A body over APPFORGE_LIMITS__MAX_BODY_BYTES (a string far past its maxLength, say) is
    # refused with 413 PAYLOAD_TOO_LARGE before it is parsed: a rejection too.
    rejection = api_schema.config.checks.negative_data_rejection
    statuses = [*rejection.expected_statuses, "413"]
    api_schema.config.checks.negative_data_rejection = type(rejection)(expected_statuses=statuses)
    try:
        _every_operation(api_schema, GenerationMode.NEGATIVE, checks)
    finally:
        api_schema.config.generation.update(modes=list(GenerationMode))
        api_schema.config.checks.negative_data_rejection = rejection


def test_openapi_schemathesis_stateful(api_schema: Any):
    # Calls chained through the ids earlier answers handed out (links inferred
    # from the schema): create an app, read it, patch it, run it, delete it...
    # Check failures are collected rather than raised: a live server's state
    # changes between hypothesis' replays, so shrinking cannot reproduce a
    # scenario, and a replay that draws differently (Flaky) only ends the search.
    machine = api_schema.as_state_machine()
    chained: list[str] = []
    failures: list[str] = []

    class Authorized(machine):  # type: ignore[misc, valid-type]
        def step(self, input: Any) -> Any:
            if input.transition is not None and input.is_applied:
                chained.append(input.transition.id)
            return super().step(input)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Token {TOKEN}"}, "timeout": 60}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            try:
                case.validate_response(
                    response,
                    checks=[not_a_server_error, content_type_conformance],
                    transport_kwargs=kwargs,
                )
            except Exception as exc:  # noqa: BLE001 - report every failing step
                failures.append(f"{case.operation.label}: {exc}")

    # Fresh seeded searches (like schemathesis' own engine after a Flaky) until
    # enough steps have followed a link.
    for attempt in range(12):
        try:
            seed(attempt)(Authorized).run(
                settings=settings(
                    max_examples=15,
                    stateful_step_count=6,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
            )
        except FlakyStrategyDefinition:
            pass  # the server's state changed what a replay drew; what ran was checked
        if len(chained) >= 10:
            break
    assert failures == [], "\n\n".join(failures)
    assert len(chained) >= 10, chained  # calls really used ids from earlier answers
