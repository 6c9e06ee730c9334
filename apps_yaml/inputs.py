"""Checking a run's input against the app's declared inputs."""

from __future__ import annotations

from typing import Any

from apps_yaml.errors import InputInvalidError
from apps_yaml.schema import AppDocument, InputField

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _problem(name: str, field: InputField, value: Any) -> str | None:
    allowed = _PY_TYPES[field.type]
    # bool is an int in Python; JSON true is not a number.
    if not isinstance(value, allowed) or (field.type != "boolean" and isinstance(value, bool)):
        return f"input '{name}' must be of type {field.type}"
    if field.enum is not None and value not in field.enum:
        return f"input '{name}' must be one of {field.enum}"
    if field.max_length is not None and isinstance(value, str) and len(value) > field.max_length:
        return f"input '{name}' is longer than {field.max_length} characters"
    return None


def check_input(app: AppDocument, given: Any) -> dict[str, Any]:
    """Validate ``given`` and return every declared input, defaults filled in.

    Raises InputInvalidError naming each bad field in ``details.errors``.
    """
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InputInvalidError("input must be a JSON object", details={"errors": []})
    errors: list[dict[str, str]] = []
    for name in given:
        if name not in app.input:
            errors.append({"field": name, "message": f"unknown input '{name}'"})
    values: dict[str, Any] = {}
    for name, field in app.input.items():
        if name not in given or given[name] is None:
            if field.required:
                errors.append({"field": name, "message": f"input '{name}' is required"})
            values[name] = field.default
            continue
        problem = _problem(name, field, given[name])
        if problem:
            errors.append({"field": name, "message": problem})
        values[name] = given[name]
    if errors:
        first = errors[0]["message"]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputInvalidError(first + more, details={"errors": errors})
    return values


def message_input(app: AppDocument) -> str | None:
    """The input a chat message fills: the one ``openai.input`` names, else the first
    required string input, else the first string input (None: the app has none).

    Lenient where ``runs.chat.input_key_of`` is strict: a preview or a playground
    can always pick one, an OpenAI-style request needs exactly one.
    """
    if app.openai.input is not None:
        return app.openai.input
    strings = [name for name, field in app.input.items() if field.type == "string"]
    required = [name for name in strings if app.input[name].required]
    return next(iter(required or strings), None)
