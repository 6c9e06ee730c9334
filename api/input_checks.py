"""One check on every request's values before any route sees them: nothing unstorable.

A NUL character or a lone surrogate in any JSON string (a run's input, a
prompt's text, a name), in a query value, in a path segment or in a form field
(a multipart upload's ``name``, its file's name and media type; JSON inside a
field is checked by its route with :func:`refuse_unstorable`), an integer past
64 bits (``offset``, ``skip``, a version number, a number in a JSON body), a
non-finite number, and lists and objects nested deeper than 64 levels are
answered 422 ``VALIDATION_ERROR`` naming the field, the same body FastAPI's own
validation gives, so nothing is stored half-way and no database error (nor a
recursion's) becomes a 500. YAML bodies are checked by the app loader,
which names the YAML line. See :mod:`appforge.core.values` for why.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from fastapi import Request, params
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile

from appforge.core.values import Path, find_unstorable, int_problem, text_problem

_JSON_TYPES = ("application/json", "")


async def check_request_values(request: Request) -> None:
    """Refuse (422) a request carrying a value no store can keep; see the module docstring."""
    for where, values in (("path", request.path_params), ("query", request.query_params)):
        for name, value in values.items():
            if isinstance(value, str):
                _refuse_text((where, name), value)
    route = request.scope.get("route")
    if isinstance(route, APIRoute):
        for where, name in _int_params(route):
            raw = (request.path_params if where == "path" else request.query_params).get(name)
            _refuse_int((where, name), raw)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return
    if isinstance(route, APIRoute) and _takes_form(route):
        # FastAPI parsed the form before any dependency ran: this is that same form.
        for name, value in (await request.form()).multi_items():
            _refuse_form_value(name, value)
        return
    if media not in _JSON_TYPES and not media.endswith("+json"):
        return
    raw_body = await request.body()
    if not raw_body:
        return
    try:
        data = json.loads(raw_body)
    except RecursionError:  # the parser's own bound: far deeper than ours
        _refuse(("body",), f"is nested deeper than {MAX_JSON_DEPTH} levels")
    except ValueError:
        return  # not JSON: the route's own parsing answers that
    found = find_unstorable(data, ("body",), MAX_JSON_DEPTH)
    if found is not None:
        _refuse(found.path, found.reason)


# Lists and objects in a JSON body nest at most this deep (an app document's YAML, 50).
# Deeper, a body met the limits of recursion of what reads or writes it later (a
# thousand levels fit in a few kilobytes): a 500 with a traceback, for anyone.
MAX_JSON_DEPTH = 64


def refuse_unstorable(data: Any, path: Path) -> None:
    """422 naming the field if ``data`` (parsed JSON at ``path``) holds a value no store
    can keep: for JSON carried inside a form field, which the check above cannot see."""
    found = find_unstorable(data, path, MAX_JSON_DEPTH)
    if found is not None:
        _refuse(found.path, found.reason)


def _refuse_form_value(name: str, value: str | UploadFile) -> None:
    _refuse_text(("body", name), name)
    if isinstance(value, str):
        _refuse_text(("body", name), value)
        return
    for part, text in (("filename", value.filename), ("content_type", value.content_type)):
        if text:
            _refuse_text(("body", name, part), text)


def _refuse_text(path: Path, value: str) -> None:
    reason = text_problem(value)
    if reason is not None:
        _refuse(path, reason)


def _refuse_int(path: Path, raw: Any) -> None:
    if not isinstance(raw, str):
        return
    try:
        number = int(raw.strip())
    except ValueError:
        return  # not a number: FastAPI's validation names it
    reason = int_problem(number)
    if reason is not None:
        _refuse(path, reason)


def _refuse(path: Path, reason: str) -> None:
    error = {"loc": path, "msg": f"the value {reason}", "type": "value_error.unstorable"}
    raise RequestValidationError([error])


# By route id, with the route itself, so a recycled id never gives another's params.
_INT_PARAMS: dict[int, tuple[APIRoute, list[tuple[str, str]]]] = {}


def _takes_form(route: APIRoute) -> bool:
    """Whether the route's body is a form (``Form`` or ``File`` parameters)."""
    field = route.body_field
    return field is not None and isinstance(field.field_info, params.Form)


def _int_params(route: APIRoute) -> list[tuple[str, str]]:
    """The route's integer path and query parameters, as (where, name); cached per route."""
    known = _INT_PARAMS.get(id(route))
    if known is not None and known[0] is route:
        return known[1]
    found: list[tuple[str, str]] = []
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        for where, fields in (("path", dependant.path_params), ("query", dependant.query_params)):
            found.extend((where, f.alias) for f in fields if _is_int(f.field_info.annotation))
        pending.extend(dependant.dependencies)
    _INT_PARAMS[id(route)] = (route, found)
    return found


def _is_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(arg is int for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _is_int(typing.get_args(annotation)[0])
    return False
