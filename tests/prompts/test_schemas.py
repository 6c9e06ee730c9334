"""Prompt JSON Schemas: only local references, never fetched; patterns on a linear engine."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prompts import schemas


class _Counting(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).hits += 1
        body = b'{"type": "integer"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def schema_server() -> Iterator[str]:
    """A server that would hand out a schema to whoever fetched it (and counts fetches)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Counting.hits = 0
    yield f"http://127.0.0.1:{server.server_address[1]}/s.json"
    server.shutdown()
    server.server_close()
    thread.join()


def test_schemas_non_local_refs_are_problems(tmp_path: Path):
    secret = tmp_path / "s.json"
    secret.write_text('{"description": "SECRET"}')
    schema = {
        "properties": {
            "a": {"$ref": "http://127.0.0.1:9/x"},
            "b": {"$ref": secret.as_uri()},
            "c": {"$ref": "#/$defs/c"},
            "d": {"items": [{"$dynamicRef": "https://e.com/x"}]},
            "e": {"const": {"$ref": "http://data.not/a-ref"}},
        },
        "$defs": {"c": {"type": "string"}},
    }
    found = schemas.problems(schema)
    assert [p["path"] for p in found] == [
        "variables_schema/properties/a/$ref",
        "variables_schema/properties/b/$ref",
        "variables_schema/properties/d/items/0/$dynamicRef",
    ]
    assert all("SECRET" not in p["message"] for p in found)


def test_schemas_stored_remote_ref_is_never_fetched(schema_server: str):
    # As if stored before the save-time check: validating refuses, without a request.
    schema = {"properties": {"n": {"$ref": schema_server}}}
    with pytest.raises(schemas.SchemaUnusable):
        schemas.validation_errors(schema, {"n": 1})
    # Even the validator itself, given such a schema, resolves through the registry
    # that never fetches.
    validator = schemas._Validator(schema, registry=schemas._REGISTRY)
    with pytest.raises(Exception, match="Unresolvable|resolve"):
        list(validator.iter_errors({"n": "x"}))
    assert _Counting.hits == 0


def test_schemas_patterns_re2_cannot_run_are_problems():
    for pattern in ("(a)\\1", "(?=a)", "(?<=a)b", "a{1000}{1000}"):
        found = schemas.problems({"pattern": pattern})
        assert len(found) == 1 and "pattern" in found[0]["message"], pattern
    found = schemas.problems({"patternProperties": {"(x)\\1": {}}})
    assert found[0]["path"] == "variables_schema/patternProperties"
    both = {"patternProperties": {"^a": {}}, "unevaluatedProperties": False}
    assert "unevaluatedProperties" in schemas.problems(both)[0]["message"]
    assert schemas.problems({"pattern": "^[a-z]+\\d{2,3}$"}) == []


def test_schemas_catastrophic_regex_is_linear():
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(b+)+$": {"type": "integer"}},
        "additionalProperties": False,
    }
    evil = "a" * 26 + "!"
    started = time.monotonic()
    errors = schemas.validation_errors(schema, {"a": evil, "b" * 26 + "!": 1, "bb": "x"})
    # A backtracking engine doubles per character: minutes here. RE2 takes microseconds.
    assert time.monotonic() - started < 10
    messages = sorted(e.message for e in errors)
    assert messages == [
        f"'{evil}' does not match '^(a+)+$'",
        "'x' is not of type 'integer'",
        f"Additional properties are not allowed ('{'b' * 26}!' was unexpected)",
    ]
    assert schemas.validation_errors(schema, {"a": "aaa", "bb": 2}) == []
