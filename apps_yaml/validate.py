"""Semantic checks of an app document, run when it is saved (after the schema passed).

``check`` reports every problem at once, each with its path and YAML line:

- step ids: duplicated, reserved (``input``, ``session``, ...), or hiding a
  template function (``range``, ``dict``, ...);
- inputs: a default or enum value of the wrong type, a default outside the
  enum or longer than ``max_length``, ``max_length`` on a non-string input;
- templates (prompts, prompt variables, queries, ``where`` values, outputs):
  syntax errors; names that are unknown or belong to a step that runs later;
  undeclared inputs (``input.x``); unknown result fields of a step
  (``docs.txt``); unknown filters and tests; private attributes; include,
  import and extends (there is nothing to load them from);
- ``history`` on an app that is not ``type: chat``;
- a datasource listed twice in one step;
- with ``references``: unknown datasources, prompts (at their label) and models,
  and a ``flow:`` that this server does not serve.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateSyntaxError, meta, nodes

from apps_yaml import templates
from apps_yaml.errors import AppDocumentError, Problem
from apps_yaml.schema import (
    RESERVED_NAMES,
    AppDocument,
    InlinePrompt,
    InputField,
    LlmStep,
    PromptRef,
    RetrieveStep,
)

if TYPE_CHECKING:
    from apps_yaml.loader import LineMap, References

DocPath = tuple[Any, ...]
"""A path inside the document: mapping keys and list indexes, e.g. ``("steps", 2, "query")``."""

# What each step kind exposes to later templates (see apps_yaml.engine).
STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "llm": ("text", "usage", "model", "citations"),
    "retrieve": ("documents", "sources"),
}
SESSION_FIELDS = ("id", "history")
# Called as methods on a dict (``input.get('x', '')``), these are not field reads.
_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def format_path(path: DocPath) -> str:
    """``("steps", 2, "prompt", "user")`` -> ``steps[2].prompt.user``."""
    out = ""
    for comp in path:
        if isinstance(comp, int) and not isinstance(comp, bool):
            out += f"[{comp}]"
        elif isinstance(comp, str) and _PLAIN_KEY.match(comp):
            out += f".{comp}" if out else comp
        else:
            out += f"[{json.dumps(str(comp), ensure_ascii=False)}]"
    return out


def template_names(template: str) -> set[str]:
    """Names a template reads from its context; raises ``TemplateSyntaxError``."""
    return set(meta.find_undeclared_variables(templates.parse(template)))


def check(
    doc: AppDocument, lines: LineMap | None = None, references: References | None = None
) -> None:
    """Raise ``AppDocumentError`` (APP_INVALID) listing every problem of ``doc``."""
    report = _Report(lines)
    _check_step_ids(doc, report)
    _check_inputs(doc, report)
    _check_openai(doc, report)
    for path, template, position in _templates(doc):
        _check_template(doc, template, path, position, report)
    for i, step in enumerate(doc.steps):
        if isinstance(step, LlmStep) and step.history > 0 and doc.type != "chat":
            report.add(
                ("steps", i, "history"),
                f"history needs type: chat (this app is type: {doc.type})",
            )
        if isinstance(step, RetrieveStep):
            listed: set[str] = set()
            for j, name in enumerate(step.datasources):
                if name in listed:
                    report.add(
                        ("steps", i, "datasources", j), f"datasource '{name}' is listed twice"
                    )
                listed.add(name)
    if references is not None:
        _check_references(doc, references, report)
    if report.problems:
        raise AppDocumentError(report.sorted())


class _Report:
    def __init__(self, lines: LineMap | None) -> None:
        self.lines = lines
        self.problems: list[Problem] = []

    def add(self, path: DocPath, message: str, *, lineno: int | None = None) -> None:
        line = None
        if self.lines is not None:
            if lineno is not None:
                line = self.lines.template_line(path, lineno)
            else:
                line = self.lines.line(path)
        problem = Problem(format_path(path), message, line)
        if problem not in self.problems:
            self.problems.append(problem)

    def sorted(self) -> list[Problem]:
        return sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))


# --- steps and inputs ------------------------------------------------------------


def _check_step_ids(doc: AppDocument, report: _Report) -> None:
    first: dict[str, int] = {}
    functions = templates.environment().globals
    for i, step in enumerate(doc.steps):
        path = ("steps", i, "id")
        if step.id in first:
            report.add(path, f"duplicate step id '{step.id}' (also steps[{first[step.id]}])")
        else:
            first[step.id] = i
        if step.id in RESERVED_NAMES:
            report.add(
                path,
                f"'{step.id}' is reserved; a step id cannot be one of: "
                + ", ".join(sorted(RESERVED_NAMES)),
            )
        elif step.id in functions:
            report.add(path, f"step id '{step.id}' would hide the template function '{step.id}'")


def _type_ok(field: InputField, value: Any) -> bool:
    # bool is an int in Python; YAML true is not a number.
    if isinstance(value, bool) and field.type != "boolean":
        return False
    return isinstance(value, _PY_TYPES[field.type])


def _check_inputs(doc: AppDocument, report: _Report) -> None:
    for name, field in doc.input.items():
        at = ("input", name)
        if field.enum is not None:
            for j, member in enumerate(field.enum):
                if not _type_ok(field, member):
                    report.add(
                        (*at, "enum", j), f"enum value {member!r} is not of type {field.type}"
                    )
        if field.max_length is not None and field.type != "string":
            report.add((*at, "max_length"), "max_length applies to string inputs only")
        if field.default is None:
            continue
        if not _type_ok(field, field.default):
            report.add((*at, "default"), f"the default is not of type {field.type}")
        elif field.enum is not None and field.default not in field.enum:
            report.add((*at, "default"), f"the default {field.default!r} is not one of the enum")
        elif (
            field.max_length is not None
            and isinstance(field.default, str)
            and len(field.default) > field.max_length
        ):
            report.add(
                (*at, "default"), f"the default is longer than {field.max_length} characters"
            )


def _check_openai(doc: AppDocument, report: _Report) -> None:
    """``openai: {input, output}`` must name a string input and an output key."""
    wanted = doc.openai.input
    if wanted is not None:
        field = doc.input.get(wanted)
        if field is None:
            report.add(("openai", "input"), f"no input '{wanted}' in input:")
        elif field.type != "string":
            report.add(("openai", "input"), f"input '{wanted}' is not a string input")
    answer = doc.openai.output
    if answer is not None and doc.flow is None and answer not in doc.output:
        report.add(("openai", "output"), f"no output key '{answer}' in output:")


def _check_references(doc: AppDocument, references: References, report: _Report) -> None:
    if doc.flow is not None and not references.flow_served(doc.flow):
        report.add(
            ("flow",),
            f"flow '{doc.flow}' is not served by this server: a flow is served by the"
            " process that loaded its file, `appforge run flow.py --serve`",
        )
    for i, step in enumerate(doc.steps):
        if isinstance(step, RetrieveStep):
            for j, name in enumerate(step.datasources):
                if not references.datasource_exists(name):
                    report.add(("steps", i, "datasources", j), f"unknown datasource '{name}'")
        else:
            problem = references.model_problem(step.model)
            if problem is not None:
                report.add(("steps", i, "model"), problem)
        if isinstance(step, LlmStep) and isinstance(step.prompt, PromptRef):
            ref = step.prompt
            if ref.version is None:
                if not references.prompt_exists(ref.ref, ref.label):
                    report.add(
                        ("steps", i, "prompt", "ref"),
                        f"unknown prompt '{ref.ref}' with label '{ref.label}'",
                    )
            elif not references.prompt_exists(ref.ref, ref.label, ref.version):
                report.add(
                    ("steps", i, "prompt", "ref"),
                    f"unknown prompt '{ref.ref}' with version {ref.version}",
                )


# --- templates --------------------------------------------------------------------


def _where_strings(value: Any, path: DocPath) -> Iterator[tuple[DocPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _where_strings(item, (*path, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _where_strings(item, (*path, key))


def _templates(doc: AppDocument) -> Iterator[tuple[DocPath, str, int]]:
    """Every template: (path, text, index of the step it runs in; outputs run last)."""
    for i, step in enumerate(doc.steps):
        at: DocPath = ("steps", i)
        if isinstance(step, LlmStep):
            prompt = step.prompt
            if isinstance(prompt, InlinePrompt):
                if prompt.system is not None:
                    yield (*at, "prompt", "system"), prompt.system, i
                if prompt.user is not None:
                    yield (*at, "prompt", "user"), prompt.user, i
                for j, message in enumerate(prompt.messages or []):
                    yield (*at, "prompt", "messages", j, "content"), message.content, i
            else:
                for name, value in prompt.variables.items():
                    yield (*at, "prompt", "variables", name), value, i
        else:
            yield (*at, "query"), step.query, i
            if step.where:
                for path, value in _where_strings(step.where, (*at, "where")):
                    yield path, value, i
    for key, value in doc.output.items():
        yield ("output", key), value, len(doc.steps)


def _available(doc: AppDocument, position: int) -> list[str]:
    return ["input", "session", *[s.id for s in doc.steps[:position]]]


def _check_template(
    doc: AppDocument, template: str, path: DocPath, position: int, report: _Report
) -> None:
    try:
        tree = templates.parse(template)
    except TemplateSyntaxError as exc:
        report.add(path, f"template syntax error: {exc.message}", lineno=exc.lineno)
        return
    env = templates.environment()
    unknown_filters = {f.name for f in tree.find_all(nodes.Filter)} - set(env.filters)
    unknown_tests = {t.name for t in tree.find_all(nodes.Test)} - set(env.tests)
    if unknown_filters or unknown_tests:
        # Jinja's name analysis compiles the template and would stop at the first
        # unknown filter; let it through so every problem gets reported.
        lenient = env.overlay()
        lenient.filters = {**env.filters, **dict.fromkeys(unknown_filters, _unknown)}
        lenient.tests = {**env.tests, **dict.fromkeys(unknown_tests, _unknown)}
        tree.set_environment(lenient)
    try:
        undeclared = meta.find_undeclared_variables(tree)
    except TemplateSyntaxError as exc:
        report.add(path, f"template error: {exc.message}", lineno=exc.lineno)
        return
    missing = _check_names(doc, tree, undeclared, path, position, report)
    # Names the template assigns itself ({% set %}, loop targets, macro args).
    local = {n.name for n in tree.find_all(nodes.Name) if n.ctx != "load"}
    _check_fields(doc, tree, local | missing, path, report)
    _check_input_gets(doc, tree, local, path, report)
    for f in tree.find_all(nodes.Filter):
        if f.name in unknown_filters:
            report.add(path, f"unknown filter '{f.name}'", lineno=f.lineno)
    for t in tree.find_all(nodes.Test):
        if t.name in unknown_tests:
            report.add(path, f"unknown test '{t.name}'", lineno=t.lineno)
    for loading in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        report.add(
            path,
            "templates cannot include, import or extend other templates",
            lineno=loading.lineno,
        )


def _check_names(
    doc: AppDocument,
    tree: nodes.Template,
    undeclared: set[str],
    path: DocPath,
    position: int,
    report: _Report,
) -> set[str]:
    """Report names that are unknown or whose step has not run yet; returns those names."""
    env_globals = templates.environment().globals
    positions: dict[str, int] = {}
    for i, step in enumerate(doc.steps):
        positions.setdefault(step.id, i)
    first_use: dict[str, int] = {}
    for n in tree.find_all(nodes.Name):
        if n.ctx == "load":
            first_use.setdefault(n.name, n.lineno)
    missing: set[str] = set()
    for name in sorted(undeclared, key=lambda n: (first_use.get(n, 1), n)):
        lineno = first_use.get(name, 1)
        if name in ("input", "session") or name in env_globals:
            continue
        if name in positions:
            where = positions[name]
            if where < position:
                continue
            missing.add(name)
            if where == position:
                report.add(
                    path, f"step '{name}' is this step; its result is not there yet", lineno=lineno
                )
            else:
                report.add(path, f"step '{name}' runs after this one", lineno=lineno)
            continue
        missing.add(name)
        report.add(path, _unknown_name(doc, name, position), lineno=lineno)
    return missing


def _check_fields(
    doc: AppDocument, tree: nodes.Template, skip: set[str], path: DocPath, report: _Report
) -> None:
    """Field reads (``docs.text``, ``input['q']``) of inputs, the session and steps.

    Names in ``skip`` (assigned by the template, or already reported) are not checked.
    """
    callees = {id(c.node) for c in tree.find_all(nodes.Call)}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        attr: Any
        if isinstance(node, nodes.Getattr):
            attr = node.attr
            if attr.startswith("_"):
                report.add(
                    path, f"'{attr}' is private: templates cannot read it", lineno=node.lineno
                )
                continue
            if id(node) in callees and attr in _DICT_METHODS:
                continue
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            attr = node.arg.value
        else:
            continue
        base = node.node
        if not isinstance(base, nodes.Name) or base.name in skip:
            continue
        message = _field_problem(doc, base.name, attr)
        if message:
            report.add(path, message, lineno=node.lineno)


def _check_input_gets(
    doc: AppDocument, tree: nodes.Template, local: set[str], path: DocPath, report: _Report
) -> None:
    """``input.get('name', default)`` reads an input too."""
    for call in tree.find_all(nodes.Call):
        callee = call.node
        if (
            isinstance(callee, nodes.Getattr)
            and callee.attr == "get"
            and isinstance(callee.node, nodes.Name)
            and callee.node.name == "input"
            and "input" not in local
            and call.args
            and isinstance(call.args[0], nodes.Const)
            and isinstance(call.args[0].value, str)
        ):
            message = _field_problem(doc, "input", call.args[0].value)
            if message:
                report.add(path, message, lineno=call.lineno)


def _unknown(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("only used to analyse templates, never called")


def _unknown_name(doc: AppDocument, name: str, position: int) -> str:
    available = _available(doc, position)
    if name in doc.input:
        return f"unknown name '{name}'; inputs are read as input.{name}"
    close = difflib.get_close_matches(name, available, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown name '{name}'{hint} (available: {', '.join(available)})"


def _field_problem(doc: AppDocument, base: str, attr: str) -> str | None:
    if base == "input":
        if attr in doc.input:
            return None
        declared = ", ".join(doc.input) if doc.input else "none"
        return f"unknown input '{attr}'; declared inputs: {declared}"
    if base == "session":
        if attr in SESSION_FIELDS:
            return None
        return f"session has no field '{attr}'; fields: {', '.join(SESSION_FIELDS)}"
    for step in doc.steps:
        if step.id == base:
            fields = STEP_FIELDS[step.kind]
            if attr in fields:
                return None
            return f"step '{base}' ({step.kind}) has no field '{attr}'; fields: {', '.join(fields)}"
    return None
