"""References follow a rename made in the form.

Renaming an input, a step or an output key in the form leaves the rest of the app
naming the old one: a prompt's ``{{ input.question }}``, a later step's
``{{ docs.documents }}``, the ``openai:`` section. :func:`follow` finds the rename
(one row of the form whose name changed in place) and rewrites those references.
Templates are rewritten by their Jinja tokens, so only template code changes: prose
that happens to read ``input.question`` stays, and a template that does not parse is
left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from jinja2 import Environment, TemplateSyntaxError

_ENV = Environment(keep_trailing_newline=True)
_SKIPPED = frozenset({"whitespace", "comment", "comment_begin", "comment_end", "linecomment"})

Token = tuple[str, str]  # (type, value)


@dataclass(frozen=True)
class Renamed:
    """One rename the form made: ``what`` is ``input``, ``step`` or ``output``."""

    what: str
    old: str
    new: str


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _step_ids(doc: dict[str, Any]) -> list[str]:
    steps = doc.get("steps")
    if not isinstance(steps, list):
        return []
    return [str(s.get("id") or "") if isinstance(s, dict) else "" for s in steps]


def _renamed_in_place(before: list[str], after: list[str]) -> tuple[str, str] | None:
    """The one name that changed at its own place, when nothing else did and the new
    name was not taken already; else None."""
    if len(before) != len(after):
        return None
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    if len(changed) != 1:
        return None
    old, new = changed[0]
    if not old or not new or new in before:
        return None
    return old, new


def find(old_doc: dict[str, Any], new_doc: dict[str, Any]) -> list[Renamed]:
    """The renames between two versions of an app document."""
    found = []
    pairs: list[tuple[str, list[str], list[str]]] = [
        ("input", list(_mapping(old_doc.get("input"))), list(_mapping(new_doc.get("input")))),
        ("step", _step_ids(old_doc), _step_ids(new_doc)),
        ("output", list(_mapping(old_doc.get("output"))), list(_mapping(new_doc.get("output")))),
    ]
    for what, before, after in pairs:
        pair = _renamed_in_place([str(x) for x in before], [str(x) for x in after])
        if pair is not None:
            found.append(Renamed(what, *pair))
    return found


# --- templates ------------------------------------------------------------------------


def _tokens(source: str) -> list[Token] | None:
    """The template's tokens, or None when it does not parse."""
    try:
        _ENV.parse(source)
        return [(kind, value) for _, kind, value in _ENV.lexer.tokeniter(source, None)]
    except TemplateSyntaxError:
        return None


def _rebuilt(source: str, before: list[Token], after: list[Token]) -> str | None:
    """``source`` with each token of ``before`` replaced by the one of ``after`` at its
    place. The lexer drops the whitespace a ``-`` strips, so each token is found in the
    source from where the last one ended, and what lies between (whitespace only) is
    kept; None if the tokens do not account for the source."""
    out, cursor = [], 0
    for (_, old), (_, new) in zip(before, after, strict=True):
        start = source.find(old, cursor)
        if start < 0 or source[cursor:start].strip():
            return None
        out += [source[cursor:start], new]
        cursor = start + len(old)
    if source[cursor:].strip():
        return None
    return "".join(out) + source[cursor:]


def _code(tokens: list[Token]) -> list[int]:
    """The positions of the tokens that are code (not whitespace, comments or text)."""
    return [i for i, (kind, _) in enumerate(tokens) if kind not in _SKIPPED and kind != "data"]


def _input_refs(tokens: list[Token], old: str, new: str) -> int:
    """``input.old`` and ``input['old']`` become ``input.new`` / ``input['new']``."""
    code, count = _code(tokens), 0
    for n, i in enumerate(code[:-2]):
        if tokens[i] != ("name", "input") or (n and tokens[code[n - 1]] == ("operator", ".")):
            continue
        op, target = tokens[code[n + 1]], code[n + 2]
        kind, value = tokens[target]
        if op == ("operator", ".") and (kind, value) == ("name", old):
            tokens[target] = ("name", new)
            count += 1
        elif op == ("operator", "[") and kind == "string" and value[1:-1] == old:
            tokens[target] = ("string", value[0] + new + value[-1])
            count += 1
    return count


def _step_refs(tokens: list[Token], old: str, new: str) -> int:
    """A step's result read by its id (``old.text``, ``old['text']``, ``old`` alone):
    a name token that is not an attribute, a filter or a test."""
    code, count = _code(tokens), 0
    for n, i in enumerate(code):
        if tokens[i] != ("name", old):
            continue
        before = tokens[code[n - 1]] if n else ("", "")
        if before in (("operator", "."), ("operator", "|"), ("name", "is")):
            continue
        tokens[i] = ("name", new)
        count += 1
    return count


def _rewrite(source: str, edit: Callable[[list[Token]], int]) -> tuple[str, int]:
    tokens = _tokens(source)
    if tokens is None:
        return source, 0
    edited = list(tokens)
    count = edit(edited)
    rebuilt = _rebuilt(source, tokens, edited) if count else None
    return (rebuilt, count) if rebuilt is not None else (source, 0)


def _strings(value: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every string inside ``value``, however deep."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in list(items):
        if isinstance(item, str):
            yield value, key
        elif isinstance(item, dict | list):
            yield from _strings(item)


def _rewrite_templates(doc: dict[str, Any], edit: Callable[[list[Token]], int]) -> int:
    """Rewrite every template of the steps and the output; how many references changed."""
    total = 0
    for part in ("steps", "output"):
        if not isinstance(doc.get(part), dict | list):
            continue
        for container, key in _strings(doc[part]):
            container[key], count = _rewrite(container[key], edit)
            total += count
    return total


def follow(old_doc: dict[str, Any], new_doc: dict[str, Any]) -> list[str]:
    """Make ``new_doc``'s references follow the renames it made to ``old_doc`` (in
    place); a line for each rename that changed something, to tell the person."""
    said = []
    for rename in find(old_doc, new_doc):
        old, new = rename.old, rename.new
        edit = {"input": _input_refs, "step": _step_refs}.get(rename.what)
        count = _rewrite_templates(new_doc, partial(edit, old=old, new=new)) if edit else 0
        section = new_doc.get("openai")
        key = "output" if rename.what == "output" else "input"
        moved = rename.what != "step" and isinstance(section, dict) and section.get(key) == old
        if moved:
            assert isinstance(section, dict)
            section[key] = new
        if count or moved:
            where = [f"{count} template reference{'s' if count != 1 else ''}"] if count else []
            where += [f"openai.{key}"] if moved else []
            said.append(f"Renamed {rename.what} '{old}' to '{new}' in {' and '.join(where)}.")
    return said
