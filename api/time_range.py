"""The time range of the run listings and of analytics: ``since``..``until``.

Both are ISO 8601 timestamps, UTC unless they carry an offset; ``since`` is
included and ``until`` excluded. ``from`` and ``to`` are the older names the
analytics routes had, still accepted (one name of each pair per request).
A range that does not run forwards, or that leaves the years a datetime can
hold, is 422 ``VALIDATION_ERROR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query

from api.errors import ApiError


def invalid_range(message: str, **details: str) -> ApiError:
    """The 422 of a time range (or of its size) the API cannot answer."""
    return ApiError(message, code="VALIDATION_ERROR", status_code=422, details=details)


@dataclass(frozen=True)
class TimeRange:
    """A caller's time range, in UTC; None: open on that side."""

    since: datetime | None
    until: datetime | None


def utc(value: datetime, name: str) -> datetime:
    """``value`` in UTC (naive values are UTC); 422 if it cannot be expressed there."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise invalid_range(
            f"'{name}' is outside the years 1-9999 in UTC", **{name: value.isoformat()}
        ) from None


def _one(new: datetime | None, old: datetime | None, names: tuple[str, str]) -> datetime | None:
    if new is not None and old is not None:
        raise invalid_range(f"give '{names[0]}' or '{names[1]}', not both")
    value = new if new is not None else old
    return None if value is None else utc(value, names[0] if new is not None else names[1])


def time_range(
    since: Annotated[
        datetime | None,
        Query(description="ISO 8601: runs from this time on (UTC unless an offset is given)"),
    ] = None,
    until: Annotated[
        datetime | None, Query(description="ISO 8601: runs before this time (excluded)")
    ] = None,
    from_: Annotated[
        datetime | None, Query(alias="from", deprecated=True, description="Older name of since")
    ] = None,
    to: Annotated[
        datetime | None, Query(deprecated=True, description="Older name of until")
    ] = None,
) -> TimeRange:
    """The request's time range (see the module docstring)."""
    start = _one(since, from_, ("since", "from"))
    end = _one(until, to, ("until", "to"))
    if start is not None and end is not None and start >= end:
        raise invalid_range(
            "'since' must be before 'until'", since=start.isoformat(), until=end.isoformat()
        )
    return TimeRange(start, end)


Window = Annotated[TimeRange, Depends(time_range)]
