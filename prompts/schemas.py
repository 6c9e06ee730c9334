"""JSON Schemas of prompt versions (``variables_schema``): checked at save, safe to run.

A schema may only refer to itself: every ``$ref`` (and ``$dynamicRef``) is a
local ``#...`` reference, refused at save time otherwise (remote ``http(s):``,
``file:`` or relative documents), and references are resolved with a
``referencing`` registry that never fetches anything, so even a schema stored
before these checks cannot make the server fetch a URL or read a file.

``pattern`` and ``patternProperties`` (also where ``additionalProperties``
consults them) run on RE2, a linear-time engine: ``^(a+)+$`` cannot backtrack.
A pattern RE2 cannot compile (backreferences, lookaround) is refused at save.
``unevaluatedProperties`` next to ``patternProperties`` is refused too, since
jsonschema would evaluate those patterns with Python's backtracking ``re``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import re2
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

# Keywords whose values are data, not schemas: a "$ref" string in them is no reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "description", "title"})
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


class SchemaUnusable(Exception):
    """A stored schema that cannot be used (a reference it may not follow)."""


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def pattern_problem(pattern: str) -> str | None:
    """Why RE2 cannot run ``pattern`` (None: it can)."""
    try:
        _regex(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return (
            f"the pattern {pattern!r} is not supported ({reason}): use a pattern "
            "without backreferences or lookaround"
        )
    return None


def problems(schema: Any, path: str = "variables_schema") -> list[dict[str, Any]]:
    """Every reference and pattern in ``schema`` that may not be used, with its path."""
    found: list[dict[str, Any]] = []
    _walk(schema, path, found)
    if _has(schema, "unevaluatedProperties") and _has(schema, "patternProperties"):
        found.append(
            {
                "path": path,
                "message": "unevaluatedProperties cannot be used together with patternProperties",
            }
        )
    return found


def _walk(node: Any, path: str, found: list[dict[str, Any]]) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, f"{path}/{i}", found)
        return
    if not isinstance(node, dict):
        return
    for key in _REF_KEYWORDS:
        ref = node.get(key)
        if isinstance(ref, str) and not ref.startswith("#"):
            found.append(
                {
                    "path": f"{path}/{key}",
                    "message": f"the reference {ref!r} is not local: a schema may only refer "
                    "to its own parts ('#/$defs/...'); remote and file references are refused",
                }
            )
    if isinstance(node.get("pattern"), str):
        _pattern(node["pattern"], f"{path}/pattern", found)
    if isinstance(node.get("patternProperties"), dict):
        for pattern in node["patternProperties"]:
            _pattern(pattern, f"{path}/patternProperties", found)
    for key, value in node.items():
        if key not in _DATA_KEYWORDS:
            _walk(value, f"{path}/{key}", found)


def _pattern(pattern: str, path: str, found: list[dict[str, Any]]) -> None:
    problem = pattern_problem(pattern)
    if problem is not None:
        found.append({"path": path, "message": problem})


def _has(node: Any, keyword: str) -> bool:
    if isinstance(node, dict):
        return keyword in node or any(_has(v, keyword) for v in node.values())
    if isinstance(node, list):
        return any(_has(v, keyword) for v in node)
    return False


# --- validation ------------------------------------------------------------------------


def _pattern_keyword(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Validator, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = _regex(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Validator, allowed: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = [_regex(p) for p in schema.get("patternProperties", {})]
    extras = [
        key
        for key in instance
        if key not in known and not any(regex.search(key) for regex in patterns)
    ]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        names = ", ".join(repr(e) for e in sorted(extras))
        verb = "was" if len(extras) == 1 else "were"
        yield ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")


_Validator = validators.extend(
    Draft202012Validator,
    {
        "pattern": _pattern_keyword,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)


def _never_fetch(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


_REGISTRY: Registry[Any] = Registry(retrieve=_never_fetch)  # type: ignore[call-arg]


def validation_errors(schema: Mapping[str, Any], instance: Any) -> list[ValidationError]:
    """The errors of ``instance`` against ``schema``; nothing is fetched, patterns are RE2.

    Raises :class:`SchemaUnusable` for a schema this module would refuse at save
    (one stored before these checks), naming the problem but no file or URL content.
    """
    found = problems(schema)
    if found:
        raise SchemaUnusable(f"{found[0]['path']}: {found[0]['message']}")
    validator = _Validator(schema, registry=_REGISTRY)
    try:
        return list(validator.iter_errors(instance))
    except Unresolvable:
        raise SchemaUnusable("a reference of the schema cannot be resolved") from None
