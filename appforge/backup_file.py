"""A backup file read as it is parsed (ijson), never whole: its top-level values, then
each row of each table and each stored file, one at a time. Restoring a backup held
the whole document in memory (about three times the file's size); now a restore
holds one row, or one file, at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import ijson

# Bytes read at a time. A stored file is one long string: a token that spans reads is
# gathered again at each read, so small reads made restoring 300 MB of files take
# minutes (64 KiB: 52 s to parse a 400 MB backup; 16 MiB: 0.6 s).
_BUFFER = 16 * 1024 * 1024
_SCALARS = frozenset({"string", "number", "boolean", "null"})


class BackupNotJSON(Exception):
    """The file is not JSON (or ends before its document does)."""


class Part(NamedTuple):
    """One piece of the document: ``head`` (a top-level key and its scalar value),
    ``table`` (a table's name; its rows follow), ``row`` (a table's name and a row),
    ``file`` (a stored file's path and its base64 text), or ``bad`` (what is
    misshapen: a message)."""

    kind: Literal["head", "table", "row", "file", "bad"]
    name: str
    value: Any = None


def parts(path: Path) -> Iterator[Part]:
    """The pieces of the backup at ``path``, in the file's order; BackupNotJSON if it
    is not JSON. A document that is not an object yields one ``bad`` part."""
    with path.open("rb") as handle:
        events = ijson.parse(handle, buf_size=_BUFFER, use_float=True)
        try:
            yield from _document(events)
        except ijson.JSONError as exc:
            raise BackupNotJSON(str(exc)) from exc


Events = Iterator[tuple[str, str, Any]]


def _document(events: Events) -> Iterator[Part]:
    first = next(events, None)
    if first is None:
        yield Part("bad", "the document is empty")
        return
    for member in _members(events, first[1], "the document"):
        if isinstance(member, Part):
            yield member
            continue
        key, event, value = member
        if key == "tables":
            yield from _tables(events, event)
        elif key == "files":
            yield from _files(events, event)
        elif event in _SCALARS:
            yield Part("head", key, value)
        else:
            _skip(events, event)


def _members(events: Events, event: str, what: str) -> Iterator[tuple[str, str, Any] | Part]:
    """For each member of the object that begins with ``event``: its key and its
    value's first event and value (the caller reads the rest of the value). Not an
    object: one ``bad`` part saying ``what`` must be one."""
    if event != "start_map":
        _skip(events, event)
        yield Part("bad", f"{what} must be an object")
        return
    for _, event, key in events:
        if event == "end_map":
            return
        _, first, value = next(events)
        yield key, first, value


def _tables(events: Events, event: str) -> Iterator[Part]:
    for member in _members(events, event, '"tables"'):
        if isinstance(member, Part):
            yield member
            continue
        name, event, _ = member
        yield Part("table", name)
        if event != "start_array":
            _skip(events, event)
            yield Part("bad", f"table {name!r} must be a list of objects")
            continue
        for _, event, value in events:
            if event == "end_array":
                break
            if event != "start_map":
                _skip(events, event)
                yield Part("bad", f"table {name!r} must be a list of objects")
                continue
            yield Part("row", name, _build(events, event, value))


def _files(events: Events, event: str) -> Iterator[Part]:
    for member in _members(events, event, '"files"'):
        if isinstance(member, Part):
            yield member
            continue
        rel, event, value = member
        if event != "string":
            _skip(events, event)
            yield Part("bad", f"file {rel!r} must be base64 text")
            continue
        yield Part("file", rel, value)


def _build(events: Events, event: str, value: Any) -> Any:
    """The value that begins with ``event`` (a map, a list or a scalar), built whole."""
    builder = ijson.ObjectBuilder()
    builder.event(event, value)
    depth = 1 if event in ("start_map", "start_array") else 0
    while depth:
        _, event, value = next(events)
        builder.event(event, value)
        depth += event in ("start_map", "start_array")
        depth -= event in ("end_map", "end_array")
    return builder.value


def _skip(events: Events, event: str) -> None:
    """Pass over the value that begins with ``event``."""
    depth = 1 if event in ("start_map", "start_array") else 0
    while depth:
        _, event, _ = next(events)
        depth += event in ("start_map", "start_array")
        depth -= event in ("end_map", "end_array")
