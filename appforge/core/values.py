"""Values every store can keep: what input is refused before it reaches the database.

PostgreSQL refuses NUL characters in text and in JSON, and a lone UTF-16
surrogate (``"\\ud800"`` in JSON, or a YAML escape) cannot be encoded as UTF-8:
SQLite stores it, and every later reader (a backup, an export) fails on it.
Integers past 64 bits overflow both databases' integer columns, and JSON's
``1e400`` becomes an infinity no JSON column accepts. :func:`find_unstorable`
walks parsed JSON/YAML data and names the first such value by its path, so the
API can answer 422 naming the field before anything is stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Unstorable:
    """A value that cannot be stored: where it is and why."""

    path: Path
    reason: str


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored (a NUL or a lone surrogate), or None."""
    found = _BAD_CHARACTER.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\u0000), which cannot be stored"
    code = f"\\u{ord(found.group()):04x}"
    return f"contains a lone surrogate ({code}), which is not valid Unicode text"


def storable_text(text: str) -> str:
    """``text`` without the characters :func:`text_problem` names: for text that comes
    from outside and is kept, not refused (a document's text, a model's answer)."""
    return _BAD_CHARACTER.sub("", text) if _BAD_CHARACTER.search(text) else text


def storable_value(value: Any) -> Any:
    """``value`` as it can be stored and sent as JSON: :func:`storable_text` on every
    string (keys too), and a non-finite float as None (as ``JSON.stringify`` does); for
    values made by a run (a template's), where refusing is not the caller's to fix."""
    if find_unstorable(value) is None:
        return value
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {
            storable_text(k) if isinstance(k, str) else k: storable_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [storable_value(item) for item in value]
    return value


def int_problem(number: int) -> str | None:
    """Why ``number`` cannot be stored (outside signed 64 bits), or None."""
    if INT64_MIN <= number <= INT64_MAX:
        return None
    return f"is out of range: integers must lie between {INT64_MIN} and {INT64_MAX}"


def find_unstorable(
    data: Any, path: Sequence[str | int] = (), max_depth: int | None = None
) -> Unstorable | None:
    """The first string, key, integer or float in ``data`` that cannot be stored; or,
    with ``max_depth``, the first list or object nested deeper than that."""
    stack: list[tuple[Path, Any]] = [(tuple(path), data)]
    while stack:
        where, value = stack.pop()
        reason: str | None = None
        if (
            max_depth is not None
            and isinstance(value, dict | list | tuple)
            and len(where) - len(path) >= max_depth
        ):
            return Unstorable(where, f"is nested deeper than {max_depth} levels")
        if isinstance(value, str):
            reason = text_problem(value)
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            reason = int_problem(value)
        elif isinstance(value, float) and not math.isfinite(value):
            reason = "is not a finite number"
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                key_reason = text_problem(key) if isinstance(key, str) else None
                if key_reason is not None:
                    return Unstorable((*where, key), f"has a key that {key_reason}")
                stack.append(((*where, key), item))
        elif isinstance(value, list | tuple):
            stack.extend(((*where, i), item) for i, item in reversed(list(enumerate(value))))
        if reason is not None:
            return Unstorable(where, reason)
    return None
