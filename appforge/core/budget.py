"""What one template render may spend: its size limits and its deadline.

The sandbox (``appforge.core.sandbox``) consults the :class:`Budget` of the
render going on in this thread at every place where a template can make
something big or spend a long time: the operators ``*``, ``**``, ``+`` and
``%``, string concatenation (``~``), ``str.format``, method calls and filters,
every loop iteration, and each piece of rendered output. An operation whose
result would exceed the limits is refused *before* it runs
(:class:`TemplateLimitError`, ``TEMPLATE_TOO_LARGE``); a render whose run was
cancelled or whose deadline passed stops at the next of those points
(:class:`RenderInterrupted`).

Sizes of strings are counted in characters (a cheap upper bound for the
operations; the rendered output itself is counted in UTF-8 bytes).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from appforge.core.errors import AppforgeError

# Integers a template computes stay below this many bits (2**65536 has ~19,700
# digits and costs microseconds; 9**(9**7) would cost seconds).
MAX_INT_BITS = 65_536


class TemplateLimitError(AppforgeError):
    """A template tried to make a string, list or number above the limits."""

    code = "TEMPLATE_TOO_LARGE"
    status_code = 422


class RenderInterrupted(AppforgeError):
    """The render's run was cancelled or its deadline passed while rendering."""

    code = "RENDER_TIMEOUT"
    status_code = 422


@dataclass(frozen=True)
class Limits:
    """Size limits of one render: characters/bytes of any string, items of any list."""

    max_bytes: int = 1024 * 1024
    max_items: int = 100_000


@dataclass
class Budget:
    """One render's limits, and when it must stop (a cancel event and/or a deadline)."""

    limits: Limits = field(default_factory=Limits)
    cancel: threading.Event | None = None
    deadline: float | None = None  # time.monotonic() seconds

    @classmethod
    def timed(cls, limits: Limits, seconds: float | None) -> Budget:
        """A budget that runs out ``seconds`` from now (None: never)."""
        return cls(limits, deadline=None if seconds is None else time.monotonic() + seconds)

    def check(self) -> None:
        """Raise :class:`RenderInterrupted` if the render must stop now."""
        if self.cancel is not None and self.cancel.is_set():
            raise RenderInterrupted("the template was stopped: its run was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RenderInterrupted("the template took longer than its time limit")

    # --- sizes -----------------------------------------------------------------------

    def check_text(self, size: int, what: str) -> None:
        if size > self.limits.max_bytes:
            raise TemplateLimitError(
                f"{what} would make a string of {size} characters; the limit is "
                f"{self.limits.max_bytes} (APPFORGE_LIMITS__MAX_TEMPLATE_BYTES)",
                details={"limit": self.limits.max_bytes},
            )

    def check_items(self, count: int, what: str) -> None:
        if count > self.limits.max_items:
            raise TemplateLimitError(
                f"{what} would make {count} items; the limit is {self.limits.max_items} "
                "(APPFORGE_LIMITS__MAX_TEMPLATE_ITEMS)",
                details={"limit": self.limits.max_items},
            )

    def check_value(self, value: Any, what: str) -> Any:
        """``value`` if it fits the limits (strings and sequences are measured)."""
        if isinstance(value, str):
            self.check_text(len(value), what)
        elif isinstance(value, list | tuple):
            self.check_items(len(value), what)
        return value

    def iterate(self, iterable: Any) -> Iterator[Any]:
        """``iterable``, checking the deadline at every item (loops of templates)."""
        check = self.check
        for item in iterable:
            check()
            yield item


_current: ContextVar[Budget | None] = ContextVar("appforge_render_budget", default=None)
_DEFAULT = Budget()


def current() -> Budget:
    """The budget of the render going on in this thread (the default limits if none)."""
    return _current.get() or _DEFAULT


def activate(budget: Budget) -> Any:
    """Make ``budget`` the current one; give the result to :func:`deactivate`."""
    return _current.set(budget)


def deactivate(token: Any) -> None:
    _current.reset(token)


# --- operators --------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _repeat(seq: Any, times: Any, budget: Budget) -> None:
    if not _is_int(times) or times <= 0:
        return
    if isinstance(seq, str):
        budget.check_text(len(seq) * times, "'*'")
    elif isinstance(seq, list | tuple):
        budget.check_items(len(seq) * times, "'*'")
        budget.check_text(sum(len(s) for s in seq if isinstance(s, str)) * times, "'*'")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``left <operator> right`` if its result would be above the limits."""
    budget = current()
    budget.check()
    if operator == "*":
        _repeat(left, right, budget)
        _repeat(right, left, budget)
        if _is_int(left) and _is_int(right):
            _check_bits(left.bit_length() + right.bit_length(), "'*'")
    elif operator == "**":
        if _is_int(left) and _is_int(right) and abs(left) > 1 and right > 0:
            _check_bits(left.bit_length() * right, "'**'")
    elif operator == "+":
        if isinstance(left, str) and isinstance(right, str):
            budget.check_text(len(left) + len(right), "'+'")
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            budget.check_items(len(left) + len(right), "'+'")
    elif operator == "%" and isinstance(left, str):
        check_percent(left, right, budget)


def _check_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(
            f"{what} would make a number of about {bits} bits; the limit is {MAX_INT_BITS}",
            details={"limit": MAX_INT_BITS},
        )


# A printf-style conversion: its width and precision (digits or '*').
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def check_percent(fmt: str, args: Any, budget: Budget | None = None) -> None:
    """Refuse ``fmt % args`` if a width or precision could make it too large."""
    budget = budget or current()
    total = len(fmt)
    stars = False
    for width, precision, _ in _PERCENT.findall(fmt):
        for number in (width, precision):
            if number == "*":
                stars = True
            elif number:
                total += int(number)
    values = args if isinstance(args, tuple) else (args,)
    if stars:
        total += sum(abs(v) for v in values if _is_int(v))
    total += sum(len(v) for v in values if isinstance(v, str))
    budget.check_text(total, "'%' formatting")


# A format spec's numbers: width and precision (``{:>999999}``, ``{:.99999f}``).
_SPEC_NUMBERS = re.compile(r"\d+")


def check_format_spec(spec: str) -> None:
    """Refuse a ``str.format`` field whose width or precision is above the limits."""
    budget = current()
    budget.check()
    for number in _SPEC_NUMBERS.findall(spec):
        if len(number) > 12:
            budget.check_text(10**12, "a format width")
        budget.check_text(int(number), "a format width")
