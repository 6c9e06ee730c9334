"""The published JSON Schema of the app format matches the models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from apps_yaml import schema_export
from apps_yaml.schema_export import SCHEMA_PATH, app_json_schema


def test_app_schema_json_is_up_to_date() -> None:
    # Fails when the models change without `python -m apps_yaml.schema_export`.
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == app_json_schema()


def test_app_schema_json_has_stable_formatting() -> None:
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    assert text == json.dumps(app_json_schema(), indent=2, sort_keys=True) + "\n"


def test_app_json_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = app_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("app.schema.json")
    assert schema["title"] == "appforge app"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_app_json_schema_rejects_unknown_kind_and_keys() -> None:
    validator = jsonschema.Draft202012Validator(app_json_schema())
    good = {
        "name": "x",
        "steps": [{"id": "a", "kind": "llm", "prompt": {"user": "hi"}}],
        "output": {"a": "{{ a.text }}"},
    }
    assert list(validator.iter_errors(good)) == []
    bad_kind = {**good, "steps": [{"id": "a", "kind": "chain", "prompt": {"user": "hi"}}]}
    assert list(validator.iter_errors(bad_kind))
    assert list(validator.iter_errors({**good, "colour": "blue"}))


def test_schema_export_main_writes_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "app.schema.json"
    assert schema_export.main(["--output", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert schema_export.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == SCHEMA_PATH.read_text(encoding="utf-8")
    assert schema_export.main(["--output", str(out), "--check"]) == 0
