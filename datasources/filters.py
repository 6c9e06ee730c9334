"""Search filters: a MongoDB-like ``where`` checked and translated to Chroma's.

Accepted (keys are ``md_<key>`` or a default metadata key)::

    {"md_lang": "en"}                                    equality
    {"md_year": {"$gte": 2020, "$lt": 2024}}             several operators: all must hold
    {"md_tag": {"$in": ["a", "b"]}}                      $eq $ne $in $nin $gt $gte $lt $lte
    {"md_lang": "en", "md_draft": false}                 several keys: all must hold
    {"$or": [{"md_lang": "en"}, {"md_lang": "de"}]}      $and / $or of filters

Values are strings, numbers or booleans; ``$gt``/``$gte``/``$lt``/``$lte`` take
numbers; ``$in``/``$nin`` a non-empty list of values. Anything else is a
:class:`FilterInvalidError` (422) naming the path of the problem.

A filter may come from an anonymous caller (a public app's templated ``where``),
and Chroma fails on large expression trees (500 at about a thousand clauses, a
crash of the whole process at ten thousand), so every filter is bounded before
anything reaches the store: its comparisons, the values of one ``$in``/``$nin``,
its nesting depth and its size as JSON (:class:`FilterLimits`, from the
``APPFORGE_DATASOURCES__MAX_FILTER_*`` settings). Past a bound it is
``FILTER_INVALID`` naming the limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from datasources.errors import FilterInvalidError

# Keys every chunk has, and (page, pages, section) those its document gives it.
DEFAULT_KEYS = frozenset(
    {"source", "entry_uuid", "datasource_uuid", "name", "page", "pages", "section"}
)
COMPARE = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = ("$eq", "$ne", "$in", "$nin", *COMPARE)


@dataclass(frozen=True)
class FilterLimits:
    """How large a filter may be."""

    clauses: int = 100  # comparisons in all (an $in counts once)
    values: int = 1000  # values of one $in / $nin
    depth: int = 8  # nested $and / $or
    bytes: int = 65536  # the filter as JSON


@dataclass
class _Budget:
    limits: FilterLimits
    clauses: int = field(default=0)

    def clause(self, path: str) -> None:
        self.clauses += 1
        if self.clauses > self.limits.clauses:
            raise _limit(path, "clauses", self.limits.clauses, "comparisons in one filter")


def translate(
    where: dict[str, Any] | None, limits: FilterLimits | None = None
) -> dict[str, Any] | None:
    """The Chroma ``where`` for ``where``; ``None`` for no filter."""
    if where is None or where == {}:
        return None
    limits = limits or FilterLimits()
    try:
        size = len(json.dumps(where, default=str))
    except (TypeError, ValueError, RecursionError) as exc:
        raise _fail("where", "a filter is JSON data") from exc
    if size > limits.bytes:
        raise _limit("where", "bytes", limits.bytes, "bytes of JSON")
    return _filter(where, "where", _Budget(limits), 0)


def _fail(path: str, message: str) -> FilterInvalidError:
    return FilterInvalidError(f"{path}: {message}", details={"path": path})


def _limit(path: str, name: str, limit: int, what: str) -> FilterInvalidError:
    return FilterInvalidError(
        f"{path}: the filter is too large: at most {limit} {what}",
        details={"path": path, "limit": name, "max": limit},
    )


def _filter(node: Any, path: str, budget: _Budget, depth: int) -> dict[str, Any]:
    if not isinstance(node, dict) or not node:
        raise _fail(path, "a filter is a non-empty object")
    if depth > budget.limits.depth:
        raise _limit(path, "depth", budget.limits.depth, "levels of $and/$or")
    clauses: list[dict[str, Any]] = []
    for key, value in node.items():
        if not isinstance(key, str):
            raise _fail(path, "filter keys are strings")
        where = f"{path}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise _fail(where, f"{key} takes a non-empty list of filters")
            parts = [_filter(v, f"{where}[{i}]", budget, depth + 1) for i, v in enumerate(value)]
            clauses.append(parts[0] if len(parts) == 1 else {key: parts})
        elif key.startswith("$"):
            raise _fail(where, f"unknown operator {key!r} here; use $and or $or")
        else:
            if not (key.startswith("md_") and len(key) > 3) and key not in DEFAULT_KEYS:
                raise _fail(
                    where,
                    f"unknown key {key!r}: use md_<metadata key> or one of {sorted(DEFAULT_KEYS)}",
                )
            clauses.extend(_field(key, value, where, budget))
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _field(key: str, value: Any, path: str, budget: _Budget) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        budget.clause(path)
        return [{key: {"$eq": _scalar(value, path)}}]
    if not value:
        raise _fail(path, "an operator object needs at least one operator")
    out: list[dict[str, Any]] = []
    for op, operand in value.items():
        where = f"{path}.{op}"
        if op not in OPERATORS:
            raise _fail(where, f"unknown operator {op!r}; use one of {list(OPERATORS)}")
        budget.clause(where)
        if op in ("$in", "$nin"):
            if not isinstance(operand, list) or not operand:
                raise _fail(where, f"{op} takes a non-empty list of values")
            if len(operand) > budget.limits.values:
                raise _limit(where, "values", budget.limits.values, f"values in one {op}")
            items = [_scalar(v, f"{where}[{i}]") for i, v in enumerate(operand)]
            if len({_kind(v) for v in items}) > 1:
                raise _fail(where, f"the values of {op} must all be of one type")
            out.append({key: {op: items}})
        elif op in COMPARE:
            if isinstance(operand, bool) or not isinstance(operand, int | float):
                raise _fail(where, f"{op} compares numbers only")
            out.append({key: {op: operand}})
        else:
            out.append({key: {op: _scalar(operand, where)}})
    return out


def _scalar(value: Any, path: str) -> str | int | float | bool:
    if isinstance(value, str | bool | int | float) and value == value:  # not NaN
        return value
    raise _fail(path, f"values are strings, numbers or booleans, not {type(value).__name__}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "str"


def holds(where: dict[str, Any] | None, metadata: dict[str, Any]) -> bool:
    """Whether a chunk's ``metadata`` passes ``where``, a filter as :func:`translate`
    returns it; the same meaning as Chroma's, for results that do not come from Chroma
    (keyword search). A key the chunk lacks passes only ``$ne`` and ``$nin``."""
    if not where:
        return True
    for key, value in where.items():
        if key == "$and":
            ok = all(holds(w, metadata) for w in value)
        elif key == "$or":
            ok = any(holds(w, metadata) for w in value)
        else:
            ok = all(_compare(op, metadata.get(key), operand) for op, operand in value.items())
        if not ok:
            return False
    return True


def _equal(have: Any, want: Any) -> bool:
    if isinstance(have, bool) or isinstance(want, bool):
        return isinstance(have, bool) and isinstance(want, bool) and have == want
    if isinstance(have, int | float) and isinstance(want, int | float):
        return have == want
    return type(have) is type(want) and have == want


def _compare(op: str, have: Any, operand: Any) -> bool:
    if op == "$eq":
        return have is not None and _equal(have, operand)
    if op == "$ne":
        return have is None or not _equal(have, operand)
    if op == "$in":
        return have is not None and any(_equal(have, o) for o in operand)
    if op == "$nin":
        return have is None or not any(_equal(have, o) for o in operand)
    if isinstance(have, bool) or not isinstance(have, int | float):
        return False
    if op == "$gt":
        return bool(have > operand)
    if op == "$gte":
        return bool(have >= operand)
    if op == "$lt":
        return bool(have < operand)
    return bool(have <= operand)
