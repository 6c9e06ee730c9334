"""Pydantic validation errors as ``Problem``s: readable paths, messages and YAML lines.

A pydantic ``loc`` carries discriminator tags and union member names
(``('steps', 0, 'llm', 'prompt', 'InlinePrompt', 'user')``); these are dropped
to give ``steps[0].prompt.user``, and for a union (a prompt) only the member
the user meant is reported.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from apps_yaml import schema
from apps_yaml.errors import Problem
from apps_yaml.schema import AppDocument
from apps_yaml.validate import DocPath, format_path

if TYPE_CHECKING:
    from apps_yaml.loader import LineMap

_MODELS: dict[str, type[BaseModel]] = {
    name: obj
    for name, obj in vars(schema).items()
    if isinstance(obj, type) and issubclass(obj, BaseModel)
}
# pydantic names a union member by its class, or by its validator wrapping it:
# "PromptRef", "function-after[_one_form(), InlinePrompt]".
_MEMBER = re.compile(r"^(?:function-\w+\[.*, )?(?P<name>[A-Z]\w*)\]?$")
_IDENT_PATTERN = schema.IDENT
# Errors of a model validator about one of the model's keys, named in ctx["key"].
_KEYED = frozenset({"flow_exclusive", "flow_missing"})


@dataclass
class _Error:
    path: DocPath
    members: list[tuple[DocPath, str]]  # (path of the union value, member chosen by pydantic)
    is_key: bool
    raw: dict[str, Any]


def _clean(
    loc: tuple[int | str, ...], data: Any
) -> tuple[DocPath, list[tuple[DocPath, str]], bool]:
    """Drop union tags from a pydantic loc, following the raw data alongside."""
    path: list[str | int] = []
    members: list[tuple[DocPath, str]] = []
    is_key = False
    cur: Any = data
    for comp in loc:
        if comp == "[key]":
            is_key = True
            continue
        if isinstance(cur, dict) and comp in cur:
            path.append(comp)
            cur = cur[comp]
            continue
        if isinstance(cur, list) and isinstance(comp, int) and 0 <= comp < len(cur):
            path.append(comp)
            cur = cur[comp]
            continue
        if isinstance(comp, str) and isinstance(cur, dict) and cur.get("kind") == comp:
            continue  # discriminator tag, e.g. 'llm'
        match = _MEMBER.match(comp) if isinstance(comp, str) else None
        if match and match["name"] in _MODELS:
            members.append((tuple(path), match["name"]))
            continue
        path.append(comp)
        cur = None
    return tuple(path), members, is_key


def _value_at(data: Any, path: DocPath) -> Any:
    cur = data
    for comp in path:
        if isinstance(cur, dict) and comp in cur:
            cur = cur[comp]
        elif isinstance(cur, list) and isinstance(comp, int) and 0 <= comp < len(cur):
            cur = cur[comp]
        else:
            return None
    return cur


def _fit(model: type[BaseModel], raw: Any) -> tuple[bool, bool, int]:
    """How well raw data fits a model: its kind, then all its required keys, then overlap."""
    if not isinstance(raw, dict):
        return (False, False, 0)
    fields = model.model_fields
    kind = fields.get("kind")
    kind_matches = kind is not None and raw.get("kind") in get_args(kind.annotation)
    required = [name for name, f in fields.items() if f.is_required()]
    has_required = bool(required) and all(name in raw for name in required)
    return (kind_matches, has_required, sum(1 for k in raw if k in fields))


def _choose(members: list[str], raw: Any) -> str:
    """The union member the user most plausibly meant (ties: pydantic's order)."""
    return max(members, key=lambda name: _fit(_MODELS[name], raw))


def _resolve(tp: Any, raw: Any) -> Any:
    origin = get_origin(tp)
    if origin is Annotated:
        return _resolve(get_args(tp)[0], raw)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        models = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return max(models, key=lambda m: _fit(m, raw))
        return options[0] if options else tp
    return tp


def _model_at(data: Any, path: DocPath) -> type[BaseModel] | None:
    """The model that validates the mapping at ``path`` (None if not a model)."""
    tp: Any = AppDocument
    cur: Any = data
    for comp in path:
        tp = _resolve(tp, cur)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(comp))
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
        cur = _value_at(cur, (comp,))
    tp = _resolve(tp, cur)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _member_keys(name: str) -> str:
    return "{" + ", ".join(_MODELS[name].model_fields) + "}"


def _message(err: dict[str, Any], path: DocPath, data: Any, is_key: bool) -> tuple[DocPath, str]:
    """(path, message) for one pydantic error; the path may gain the key it is about."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    given = err.get("input")
    msg: str = err["msg"]
    if kind == "extra_forbidden":
        return path, _unknown_key_message(path, data)
    if kind == "missing":
        return path, f"missing required key '{path[-1]}'" if path else "missing"
    if kind in _KEYED:
        return (*path, ctx["key"]), msg
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "kind")).strip("'\"")
        tags = str(ctx.get("expected_tags", "")).replace("'", "") or "llm, retrieve"
        if kind == "union_tag_not_found":
            return (*path, field), f"missing '{field}'; allowed {field}s: {tags}"
        return (*path, field), f"unknown {field} '{ctx.get('tag')}'; allowed {field}s: {tags}"
    if is_key:
        return path, _key_message(kind, ctx, given, msg)
    if msg == "Keys should be strings":
        return path, "a key should be a string; quote it"
    return path, _value_message(kind, ctx, given, msg)


def _unknown_key_message(path: DocPath, data: Any) -> str:
    key = path[-1] if path else "?"
    model = _model_at(data, path[:-1])
    hint = ""
    if model is not None:
        allowed = list(model.model_fields)
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; allowed keys: {', '.join(allowed)}"
    return f"unknown key '{key}'{hint}"


def _key_message(kind: str, ctx: dict[str, Any], given: Any, msg: str) -> str:
    """The message about a mapping key (a name under ``input:`` or ``output:``)."""
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == _IDENT_PATTERN:
        return (
            f"'{given}' is not a valid name: use letters, digits and _,"
            " starting with a letter or _ (at most 64 characters)"
        )
    if kind == "string_type" or msg == "Keys should be strings":
        return "a key should be a string; quote it"
    return f"the key {given!r} is not valid: {msg[0].lower()}{msg[1:]}"


def _value_message(kind: str, ctx: dict[str, Any], given: Any, msg: str) -> str:
    """The message about a value: what it should be, and what it is."""
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == _IDENT_PATTERN:
            return (
                f"{given!r} is not a valid id: use letters, digits and _,"
                " starting with a letter or _ (at most 64 characters)"
            )
        return f"{given!r} should match the pattern {ctx.get('pattern')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a mapping, got {kind_of(given)}"
    if kind == "list_type":
        return f"should be a list, got {kind_of(given)}"
    if kind == "too_short" and "min_length" in ctx:
        n = ctx["min_length"]
        if isinstance(given, dict):
            what = "entry" if n == 1 else "entries"
        else:
            what = "item" if n == 1 else "items"
        return f"needs at least {n} {what}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if msg.startswith("Input should"):
        msg = "should" + msg[len("Input should") :]
        if not isinstance(given, dict | list):
            msg += f", got {kind_of(given)}"
    return msg


def schema_problems(
    exc: ValidationError, data: dict[str, Any], lines: LineMap | None
) -> list[Problem]:
    errors = []
    for raw in exc.errors(include_url=False):
        path, members, is_key = _clean(raw["loc"], data)
        errors.append(_Error(path, members, is_key, dict(raw)))
    # A union (a prompt) fails once per member; keep the member the user meant.
    seen_members: dict[DocPath, list[str]] = {}
    for e in errors:
        for at, name in e.members:
            names = seen_members.setdefault(at, [])
            if name not in names:
                names.append(name)
    problems: list[Problem] = []
    for e in errors:
        skip = False
        for at, name in e.members:
            raw_value = _value_at(data, at)
            if not isinstance(raw_value, dict):
                forms = " or ".join(_member_keys(n) for n in seen_members[at])
                problems.append(
                    Problem(
                        format_path(at),
                        f"should be a mapping with the keys {forms}, got {kind_of(raw_value)}",
                        lines.line(at) if lines else None,
                    )
                )
                skip = True
                break
            if name != _choose(seen_members[at], raw_value):
                skip = True
                break
        if skip:
            continue
        path, message = _message(e.raw, e.path, data, e.is_key)
        if lines is None:
            line = None
        elif e.is_key or e.raw["type"] == "extra_forbidden" or e.raw["type"] in _KEYED:
            line = lines.key_line(path)
        else:
            line = lines.line(path)
        problems.append(Problem(format_path(path), message, line))
    return problems
