"""Writing a form edit back into the YAML text it came from, comments kept.

The text is loaded with ruamel.yaml's round-trip loader, the edited document is
merged into that tree (only what changed is replaced; keys removed, added at
their place), and the tree is written back: comments, key order, quoting,
flow and block styles of everything the edit did not touch stay as they were.
The result must read back as exactly the edited document; otherwise (or when
the text does not load) the caller writes the document anew.
"""

from __future__ import annotations

import io
import re
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

# A key, then (after blank or comment lines) the first item of its block list.
_FIRST_ITEM = re.compile(
    r"^( *)[^\s#-][^\n]*:[ \t]*(?:#[^\n]*)?\n(?:[ \t]*(?:#[^\n]*)?\n)*( *)- ", re.M
)


def _writer(text: str) -> YAML:
    """A round-trip YAML that indents block lists the way ``text`` does."""
    found = _FIRST_ITEM.search(text)
    offset = len(found.group(2)) - len(found.group(1)) if found else 2
    offset = offset if offset in (0, 2, 4) else 2
    writer = YAML(typ="rt")
    writer.preserve_quotes = True
    writer.width = 4096  # never fold a long line the person wrote on one line
    writer.indent(mapping=2, sequence=offset + 2, offset=offset)
    return writer


def edited(text: str, doc: dict[str, Any]) -> str | None:
    """``text`` changed to say ``doc``, everything else kept; None if that cannot be
    done faithfully (the text does not load, or the result would not read as ``doc``)."""
    writer = _writer(text)
    try:
        tree = writer.load(text)
    except YAMLError:
        return None
    if not isinstance(tree, CommentedMap):
        return None
    merged = _merge(tree, doc)
    out = io.StringIO()
    try:
        writer.dump(merged, out)
    except YAMLError:
        return None
    result = out.getvalue()
    try:
        same = yaml.safe_load(result) == doc
    except yaml.YAMLError:
        return None
    return result if same else None


def _same_scalar(old: Any, new: Any) -> bool:
    # True == 1 in Python, but not in YAML.
    return isinstance(old, bool) == isinstance(new, bool) and old == new


def _merge(old: Any, new: Any) -> Any:
    """``new``, reusing the nodes (and so the comments and styles) of ``old``."""
    if isinstance(old, CommentedMap) and isinstance(new, dict):
        for key in [k for k in old if k not in new]:
            del old[key]
        for position, (key, value) in enumerate(new.items()):
            if key in old:
                old[key] = _merge(old[key], value)
            else:
                old.insert(position, key, _fresh(value))
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list):
        return _merge_list(old, new)
    if not isinstance(old, dict | list) and _same_scalar(old, new):
        return old
    return _fresh(new)


def _merge_list(old: CommentedSeq, new: list[Any]) -> CommentedSeq:
    """Each new item reuses the old item with the same ``id`` (steps) or value, else
    the old item at its place (an item edited where it is); the rest are new."""
    ids = {item.get("id") for item in new if isinstance(item, dict)}
    unused = set(range(len(old)))
    picks: list[int | None] = []
    for i, value in enumerate(new):
        j = next((j for j in sorted(unused) if _same_item(old[j], value)), None)
        if j is None and i in unused and _in_place(old[i], value, ids):
            j = i
        if j is not None:
            unused.discard(j)
        picks.append(j)
    items = [_fresh(v) if j is None else _merge(old[j], v) for j, v in zip(picks, new, strict=True)]
    if picks == list(range(len(old))):  # edited in place: every comment stays at its item
        for i, item in enumerate(items):
            old[i] = item
        return old
    for i in range(len(old) - 1, -1, -1):
        del old[i]
    old.extend(items)
    return old


def _in_place(old: Any, new: Any, ids: set[Any]) -> bool:
    """Whether ``new`` is ``old`` edited: the same kind of value, and not an item
    (by its id) that the new list has elsewhere."""
    if isinstance(old, dict) and isinstance(new, dict):
        return old.get("id") not in ids or old.get("id") == new.get("id")
    return isinstance(old, list) == isinstance(new, list)


def _same_item(old: Any, new: Any) -> bool:
    if isinstance(old, dict) and isinstance(new, dict) and "id" in new:
        return bool(old.get("id") == new["id"])
    return not isinstance(old, dict | list) and _same_scalar(old, new)


def _fresh(value: Any) -> Any:
    """A new value as people write it: multi-line text as a ``|`` block."""
    if isinstance(value, str) and "\n" in value and value == value.rstrip(" "):
        if all(line == line.rstrip() for line in value.split("\n")):
            return LiteralScalarString(value)
        return value
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value
