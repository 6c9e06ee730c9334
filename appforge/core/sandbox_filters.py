"""Filters and string methods of the sandbox, checked against the render's budget.

Every filter checks the deadline when called and the size of what it returns;
the filters and ``str`` methods whose arguments decide how big the result is
(``center``, ``indent``, ``wordwrap``, ``replace``, ``join``, ``format``,
``slice``, ``batch``, ``tojson``; ``str.center``/``ljust``/``rjust``/``zfill``,
``expandtabs``, ``replace``, ``join``) are refused *before* they run when the
result would be above the limits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from jinja2.utils import _PassArg

from appforge.core import budget as budgets
from appforge.core.budget import Budget, check_percent

# A check gets the budget, the filter's own arguments (value first) and keyword
# arguments; it raises when the result would be too large, and returns the
# arguments to call with (an iterator it had to read is passed on as a list).
Check = Callable[[Budget, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], n: int, name: str, default: Any) -> Any:
    return args[n] if len(args) > n else kwargs.get(name, default)


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _center(budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    budget.check_text(_number(_arg(args, kwargs, 1, "width", 80)), "the width")
    return args


def _indent(budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    width = _arg(args, kwargs, 1, "width", 4)
    each = len(width) if isinstance(width, str) else _number(width)
    text = str(args[0]) if args else ""
    budget.check_text(len(text) + (text.count("\n") + 1) * each, "'indent'")
    return args


def _wordwrap(budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text = str(args[0]) if args else ""
    width = max(_number(_arg(args, kwargs, 1, "width", 79)), 1)
    wrap = _arg(args, kwargs, 3, "wrapstring", None) or "\n"
    budget.check_text(len(text) + (len(text) // width + 1) * len(str(wrap)), "'wordwrap'")
    return args


def _replaced(budget: Budget, text: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    times = len(text) + 1 if old == "" else text.count(old)
    if _number(count) > 0:
        times = min(times, count)
    budget.check_text(len(text) + times * max(len(new) - len(old), 0), "'replace'")


def _replace(budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if len(args) >= 3:
        _replaced(budget, str(args[0]), args[1], args[2], _arg(args, kwargs, 3, "count", None))
    return args


def _joined(budget: Budget, items: list[Any], sep: Any) -> None:
    budget.check_items(len(items), "'join'")
    size = sum(len(i) for i in items if isinstance(i, str))
    budget.check_text(size + max(len(items) - 1, 0) * len(str(sep)), "'join'")


def _join(budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if not args:
        return args
    items = list(budget.iterate(args[0]))
    _joined(budget, items, _arg(args, kwargs, 1, "d", ""))
    return (items, *args[1:])


def _format(budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if args:
        check_percent(str(args[0]), kwargs or tuple(args[1:]), budget)
    return args


def _count_arg(name: str, n: int) -> Check:
    def check(budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        budget.check_items(_number(_arg(args, kwargs, n, name, 0)), f"'{name}'")
        return args

    return check


def _tojson(budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    indent = _arg(args, kwargs, 1, "indent", None)
    if (len(indent) if isinstance(indent, str) else _number(indent)) > 32:
        budget.check_text(budget.limits.max_bytes + 1, "a 'tojson' indent above 32")
    return args


_FILTER_CHECKS: dict[str, Check] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "join": _join,
    "format": _format,
    "slice": _count_arg("slices", 1),
    "batch": _count_arg("linecount", 1),
    "tojson": _tojson,
}


def _guard(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    check = _FILTER_CHECKS.get(name)
    passes = 1 if _PassArg.from_obj(func) is not None else 0
    what = f"the filter '{name}'"

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = budgets.current()
        budget.check()
        if check is not None:
            args = (*args[:passes], *check(budget, args[passes:], kwargs))
        return budget.check_value(func(*args, **kwargs), what)

    return guarded


def guard_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """``filters``, each checked against the current budget."""
    return {name: _guard(name, func) for name, func in filters.items()}


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def guard_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any], budget: Budget) -> Any:
    """The arguments to call ``obj`` with, once a ``str`` method's result is known to fit."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return args
    name = getattr(obj, "__name__", "")
    if name in _WIDTH_METHODS:
        budget.check_text(_number(_arg(args, kwargs, 0, "width", 0)), f"'{name}'")
    elif name == "expandtabs":
        size = _number(_arg(args, kwargs, 0, "tabsize", 8))
        budget.check_text(len(owner) + owner.count("\t") * size, "'expandtabs'")
    elif name == "replace" and len(args) >= 2:
        _replaced(budget, owner, args[0], args[1], _arg(args, kwargs, 2, "count", -1))
    elif name == "join" and args:
        items = list(budget.iterate(args[0]))
        _joined(budget, items, owner)
        return (items, *args[1:])
    return args
