"""What an entry is before it is stored: its kind, its metadata, and the keys
its chunks carry. The store (:mod:`datasources.store`) checks and keeps entries;
the ingestion queue gives their chunks these keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO, Literal

from datasources.errors import EntryInvalidError
from datasources.tables import Entry

# What an entry of each datasource type may carry.
ACCEPTS = {"text": {"text"}, "url": {"url"}, "file": {"file"}, "mixed": {"text", "url", "file"}}
METADATA_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

# How often a URL entry is fetched again (none: never).
Refresh = Literal["none", "daily", "weekly"]
REFRESH_PERIODS = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}


def next_refresh(refresh: str, after: datetime) -> datetime | None:
    """When an entry on this schedule is next due, counting from ``after``."""
    period = REFRESH_PERIODS.get(refresh)
    return after + period if period is not None else None


def check_refresh(kind: str, refresh: str) -> None:
    """Only URL entries can be refreshed (a text or file entry has nothing to fetch)."""
    if refresh != "none" and kind != "url":
        raise EntryInvalidError(
            f"only URL entries can be refreshed, not {kind} entries",
            details={"entry_type": kind, "refresh": refresh},
        )


@dataclass(frozen=True)
class NewEntry:
    """What a client sends for one entry: exactly one of content, url, file.

    ``file`` is the bytes, or a binary file object read in pieces (an upload
    spooled to disk): it is copied to the home without ever being whole in memory.
    """

    name: str
    content: str | None = None
    url: str | None = None
    file: bytes | BinaryIO | None = None
    media_type: str | None = None
    metadata: dict[str, Any] | None = None
    refresh: Refresh = "none"

    @property
    def kind(self) -> str:
        given = [
            k
            for k, v in (("text", self.content), ("url", self.url), ("file", self.file))
            if v is not None
        ]
        if len(given) != 1:
            raise EntryInvalidError(
                "entry_data needs exactly one of content, url or file",
                details={"given": given},
            )
        return given[0]


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Entry metadata as stored: string keys, scalar values (lists/dicts are refused)."""
    out: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if not METADATA_KEY.match(key):
            raise EntryInvalidError(
                f"metadata key {key!r} must be 1-64 letters, digits, '_', '.' or '-'",
                code="METADATA_INVALID",
                details={"key": key},
            )
        if isinstance(value, bool | int | float | str) and value == value:
            out[key] = value
        else:
            raise EntryInvalidError(
                f"metadata value of {key!r} must be a string, number or boolean, "
                f"not {type(value).__name__}",
                code="METADATA_INVALID",
                details={"key": key},
            )
    return out


def chunk_metadata(entry: Entry, source: str) -> dict[str, Any]:
    """Metadata every chunk of ``entry`` carries: ``md_<key>`` plus the default keys."""
    meta: dict[str, Any] = {f"md_{k}": v for k, v in (entry.entry_metadata or {}).items()}
    meta.update(
        source=source,
        entry_uuid=entry.uuid,
        datasource_uuid=entry.datasource_uuid,
        name=entry.name,
    )
    return meta
