"""Loading app documents: YAML text to an ``AppDocument``, every problem with its line.

    load_file(path) -> load_text(text) -> load_dict(data, lines=...) -> validate.check

``load_text`` composes the YAML into a node tree before building any Python
object, so that

- an alias bomb ("billion laughs") or a too deeply nested document is refused
  in time proportional to its *distinct* nodes, never expanded;
- duplicate keys are reported (PyYAML silently keeps the last one);
- every path inside the document maps back to its YAML line (``LineMap``).

``load_dict`` runs the pydantic schema, turning each pydantic error into a
``Problem`` with a readable path (``steps[2].prompt.user``) and message, and
then the semantic checks of ``apps_yaml.validate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError
from yaml.error import Mark, MarkedYAMLError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from appforge.core.values import find_unstorable, text_problem
from apps_yaml import validate
from apps_yaml.errors import AppDocumentError, AppTooLargeError, Problem
from apps_yaml.schema import AppDocument
from apps_yaml.schema_errors import kind_of, schema_problems
from apps_yaml.validate import DocPath, format_path

__all__ = ["LineMap", "References", "load_dict", "load_file", "load_text"]

MAX_BYTES = 256 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 50
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"


class References(Protocol):
    """What an app may refer to outside itself; the API answers from its stores."""

    def datasource_exists(self, name_or_uuid: str) -> bool: ...

    def prompt_exists(self, ref: str, label: str, version: int | None = None) -> bool: ...

    def model_problem(self, model: str) -> str | None:
        """Why ``model`` cannot be used (unknown alias or provider), or None if it can."""
        ...

    def flow_served(self, name: str) -> bool:
        """Whether this process serves the Python flow ``name`` (``flow:`` apps)."""
        ...


# --- line map -------------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    line: int  # 1-based line where the value node starts
    end_line: int  # 1-based line where it ends
    style: str | None  # scalar style: None (plain), "'", '"', "|" or ">"


class LineMap:
    """Document paths (tuples of keys and list indexes) to 1-based YAML lines.

    Built from the composed node tree. Lookups fall back to the nearest
    ancestor that exists, so a missing key points at the mapping that lacks it.
    """

    def __init__(self) -> None:
        self._values: dict[DocPath, _Span] = {}
        self._keys: dict[DocPath, int] = {}

    @classmethod
    def from_node(cls, root: Node, key_values: dict[int, Any] | None = None) -> LineMap:
        """Map every path under ``root``; ``key_values`` gives constructed keys by node id."""
        lines = cls()
        known = key_values or {}
        stack: list[tuple[DocPath, Node]] = [((), root)]
        while stack:
            path, node = stack.pop()
            style = node.style if isinstance(node, ScalarNode) else None
            lines._values[path] = _Span(node.start_mark.line + 1, node.end_mark.line + 1, style)
            if isinstance(node, SequenceNode):
                for i, child in enumerate(node.value):
                    stack.append(((*path, i), child))
            elif isinstance(node, MappingNode):
                # Merged (<<) keys come before explicit ones once flattened; walking
                # from the end registers the explicit key first, and it wins.
                for key_node, child in reversed(node.value):
                    if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                        continue
                    key = known.get(id(key_node), key_node.value)
                    sub = (*path, key)
                    if sub not in lines._keys:
                        lines._keys[sub] = key_node.start_mark.line + 1
                        stack.append((sub, child))
        return lines

    def _nearest(self, path: DocPath) -> _Span | None:
        for end in range(len(path), -1, -1):
            span = self._values.get(tuple(path[:end]))
            if span is not None:
                return span
        return None

    def line(self, path: DocPath) -> int | None:
        """Line of the value at ``path``, or of its nearest existing ancestor."""
        span = self._nearest(tuple(path))
        return span.line if span else None

    def key_line(self, path: DocPath) -> int | None:
        """Line of the key that ends ``path`` (for unknown keys), else ``line(path)``."""
        return self._keys.get(tuple(path)) or self.line(path)

    def style(self, path: DocPath) -> str | None:
        span = self._values.get(tuple(path))
        return span.style if span else None

    def template_line(self, path: DocPath, lineno: int) -> int | None:
        """YAML line of line ``lineno`` (1-based, as Jinja counts) of the string at ``path``."""
        span = self._values.get(tuple(path))
        if span is None:
            return self.line(path)
        if span.style in ("|", ">"):
            # A block scalar's content starts on the line after the indicator.
            return span.line + lineno
        # Plain and quoted scalars fold their lines; stay within the scalar.
        return min(span.line + lineno - 1, span.end_line)


# --- composing with limits ---------------------------------------------------------


class _TooComplex(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _line(mark: Mark | None) -> int | None:
    return mark.line + 1 if mark is not None else None


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds nesting while composing and remembers where aliases are."""

    def __init__(self, stream: str, max_depth: int) -> None:
        super().__init__(stream)
        self.max_depth = max_depth
        self._depth = 0
        # (id(parent node), position) -> mark of an alias written at that position
        self.alias_marks: dict[tuple[int, Any], Mark] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            if parent is not None and index is not None:
                self.alias_marks[_position(parent, index)] = mark
            return node
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise _TooComplex(
                    f"the document is nested deeper than {self.max_depth} levels",
                    _line(self.peek_event().start_mark),
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _position(parent: Node, index: Any) -> tuple[int, Any]:
    # Sequence items are at an int index, mapping values under their key node.
    return (id(parent), index if isinstance(index, int) else id(index))


def _children(node: Node) -> Iterator[tuple[Node, tuple[int, Any] | None]]:
    if isinstance(node, SequenceNode):
        for i, child in enumerate(node.value):
            yield child, (id(node), i)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key, None
            yield value, (id(node), id(key))


def _measure(root: Node, loader: _Loader, max_nodes: int, max_depth: int) -> None:
    """Refuse a document whose aliases expand it past ``max_nodes`` nodes or ``max_depth``.

    Aliases are the same node object, so sizes are memoized per node: the work
    is proportional to the distinct nodes, however large the expansion.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, height)
    open_nodes: set[int] = set()

    def where(child: Node, position: tuple[int, Any] | None) -> int | None:
        mark = loader.alias_marks.get(position) if position else None
        return _line(mark or child.start_mark)

    def visit(node: Node) -> tuple[int, int]:
        known = sizes.get(id(node))
        if known is not None:
            return known
        open_nodes.add(id(node))
        total, height = 1, 1
        for child, position in _children(node):
            if id(child) in open_nodes:
                raise _TooComplex(
                    "an alias refers to a node that contains it", where(child, position)
                )
            size, child_height = visit(child)
            total += size
            height = max(height, child_height + 1)
            if total > max_nodes:
                raise _TooComplex(
                    f"the document expands to more than {max_nodes} nodes"
                    " (aliases repeat what they refer to)",
                    where(child, position),
                )
            if height > max_depth:
                raise _TooComplex(
                    f"the document is nested deeper than {max_depth} levels"
                    " once aliases are expanded",
                    where(child, position),
                )
        open_nodes.discard(id(node))
        sizes[id(node)] = (total, height)
        return total, height

    visit(root)


# --- checks on the node tree ---------------------------------------------------------


def _node_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a single value"


def _scan(root: Node, loader: _Loader, text: str) -> tuple[list[Problem], bool, dict[int, Any]]:
    """Duplicate keys and unquoted templates; returns (problems, fatal, key values by id)."""
    problems: list[Problem] = []
    fatal = False
    key_values: dict[int, Any] = {}
    seen: set[int] = set()
    stack: list[tuple[DocPath, Node]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            for i, child in reversed(list(enumerate(node.value))):
                stack.append(((*path, i), child))
            continue
        if not isinstance(node, MappingNode):
            continue
        unquoted = _unquoted_template(node, path, text)
        if unquoted is not None:
            problems.append(unquoted)
            fatal = True
            continue
        children = _scan_keys(node, path, loader, key_values, problems)
        stack.extend(reversed(children))
    return problems, fatal, key_values


def _unquoted_template(node: MappingNode, path: DocPath, text: str) -> Problem | None:
    """`user: {{ input.q }}` unquoted: YAML reads a mapping inside a mapping,
    which would fail to construct with a puzzling "unhashable key"."""
    if not (
        node.flow_style
        and len(node.value) == 1
        and isinstance(node.value[0][0], MappingNode)
        and node.value[0][0].flow_style
        and text.startswith("{{", node.start_mark.index)
    ):
        return None
    source = text[node.start_mark.index : node.end_mark.index]
    return Problem(
        format_path(path),
        f"{source} is read by YAML as a mapping, not a template: "
        "quote a value that starts with '{{'",
        _line(node.start_mark),
    )


def _scan_keys(
    node: MappingNode,
    path: DocPath,
    loader: _Loader,
    key_values: dict[int, Any],
    problems: list[Problem],
) -> list[tuple[DocPath, Node]]:
    """Record the mapping's constructed keys and report duplicates; returns its children."""
    first: dict[Any, int | None] = {}
    children: list[tuple[DocPath, Node]] = []
    for key_node, value in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
            children.append((path, value))
            continue
        try:
            key = loader.construct_object(key_node)
            hash(key)
        except (yaml.YAMLError, TypeError):
            key = key_node.value
        key_values[id(key_node)] = key
        if key in first:
            problems.append(
                Problem(
                    format_path((*path, key)),
                    f"duplicate key '{key}' (first at line {first[key]}); "
                    "YAML would keep only the last one",
                    _line(key_node.start_mark),
                )
            )
        else:
            first[key] = _line(key_node.start_mark)
        children.append(((*path, key), value))
    return children


# --- loading ----------------------------------------------------------------------------


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if not isinstance(exc, MarkedYAMLError):
        return Problem("", f"invalid YAML: {exc}")
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        context_line = _line(exc.context_mark)
        at = f" at line {context_line}" if context_line and context_line != _line(mark) else ""
        message = f"{exc.problem} ({exc.context}{at})"
    if mark is not None:
        lines = text.splitlines()
        if mark.line < len(lines) and "{{" in lines[mark.line]:
            message += "; a value that starts with '{{' must be quoted"
    return Problem("", message, _line(mark))


def load_text(
    text: str,
    *,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
    references: References | None = None,
) -> AppDocument:
    """Parse and validate an app written in YAML.

    Raises ``AppTooLargeError`` (YAML_TOO_LARGE) over ``max_bytes``, and
    ``AppDocumentError`` with every problem found: YAML_INVALID (syntax),
    YAML_TOO_COMPLEX (alias expansion over ``max_nodes`` nodes, nesting over
    ``max_depth``) or APP_INVALID (schema, duplicate keys, templates, references).
    """
    _check_size(text, max_bytes)
    _check_characters(text)
    loader = _open_loader(text, max_depth)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise AppDocumentError([_yaml_problem(exc, text)], code="YAML_INVALID") from None
        except _TooComplex as exc:
            raise AppDocumentError(
                [Problem("", exc.message, exc.line)], code="YAML_TOO_COMPLEX"
            ) from None
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG):
            raise AppDocumentError([Problem("", _EMPTY)])
        if not isinstance(node, MappingNode):
            raise AppDocumentError(
                [Problem("", f"{_TOP_LEVEL}, got {_node_kind(node)}", _line(node.start_mark))]
            )
        try:
            _measure(node, loader, max_nodes, max_depth)
        except _TooComplex as exc:
            raise AppDocumentError(
                [Problem("", exc.message, exc.line)], code="YAML_TOO_COMPLEX"
            ) from None
        early, fatal, key_values = _scan(node, loader, text)
        if fatal:
            raise AppDocumentError(_sorted(early))
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise AppDocumentError([_yaml_problem(exc, text)], code="YAML_INVALID") from None
        lines = LineMap.from_node(node, key_values)
    finally:
        loader.dispose()
    _check_storable(data, lines)
    try:
        doc = load_dict(data, lines=lines, references=references)
    except AppDocumentError as exc:
        raise AppDocumentError(_sorted(early + exc.problems), code=exc.code) from None
    if early:
        raise AppDocumentError(_sorted(early))
    return doc


def _check_size(text: str, max_bytes: int) -> None:
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise AppTooLargeError(
            f"the app document is {size} bytes; the limit is {max_bytes}",
            details={"size": size, "max_bytes": max_bytes},
        )


def _check_storable(data: Any, lines: LineMap) -> None:
    """A value written with a YAML escape (``"\\0"``, ``"\\ud800"``) that no database
    can keep: YAML_INVALID at its line."""
    unstorable = find_unstorable(data)
    if unstorable is not None:
        path = unstorable.path
        problem = Problem(format_path(path), f"the value {unstorable.reason}", lines.line(path))
        raise AppDocumentError([problem], code="YAML_INVALID")


def _check_characters(text: str) -> None:
    """A NUL or a lone surrogate in the text itself: YAML_INVALID at its line."""
    reason = text_problem(text)
    if reason is None:
        return
    at = next(i for i, c in enumerate(text) if text_problem(c) is not None)
    line = text.count("\n", 0, at) + 1
    raise AppDocumentError([Problem("", f"the document {reason}", line)], code="YAML_INVALID")


def _open_loader(text: str, max_depth: int) -> _Loader:
    """The loader; a character YAML forbids (a control character) is YAML_INVALID at its line."""
    try:
        return _Loader(text, max_depth)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        message = f"the document contains U+{exc.character:04X}, a character YAML does not allow"
        raise AppDocumentError([Problem("", message, line)], code="YAML_INVALID") from None


def load_file(path: str | Path, **kwargs: Any) -> AppDocument:
    """Read a UTF-8 YAML file and ``load_text`` it (same keyword arguments)."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise AppDocumentError(
            [Problem("", "the file is not valid UTF-8", line)], code="YAML_INVALID"
        ) from None
    return load_text(text, **kwargs)


_EMPTY = "the document is empty: an app needs at least name, steps and output"
_TOP_LEVEL = "the top level must be a mapping (name: ..., steps: ..., output: ...)"


def load_dict(
    data: Any, *, lines: LineMap | None = None, references: References | None = None
) -> AppDocument:
    """Validate already-parsed data (the pydantic schema, then ``validate.check``)."""
    if data is None:
        raise AppDocumentError([Problem("", _EMPTY)])
    if not isinstance(data, dict):
        raise AppDocumentError(
            [Problem("", f"{_TOP_LEVEL}, got {kind_of(data)}", lines.line(()) if lines else None)]
        )
    try:
        doc = AppDocument.model_validate(data)
    except ValidationError as exc:
        raise AppDocumentError(_sorted(schema_problems(exc, data, lines))) from None
    validate.check(doc, lines, references)
    return doc


def _sorted(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.line is None, p.line or 0))
