"""The one sandboxed Jinja2 environment, shared by prompts and the app engine.

It lives here, at the bottom of the layers, so that rendering a managed prompt
(``prompts.render``) and rendering an app's templates (``apps_yaml.templates``)
run in the very same sandbox.

Besides Jinja's own sandbox (no internals, no mutation of inputs), every
render is bounded by a :class:`~appforge.core.budget.Budget`: ``*``, ``**``,
``+``, ``%``, ``~``, ``str.format``, string methods, filters, ``range`` and
loops are checked against its size limits and its deadline while the template
runs (see ``appforge.core.budget``), and :func:`render` streams the template,
checking the deadline and the rendered size between pieces. ``lipsum`` is gone.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Generator, Iterator, Mapping
from functools import cache, lru_cache
from string import Formatter
from typing import Any, cast

from jinja2 import StrictUndefined, Template, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from markupsafe import Markup

from appforge.core import budget as budgets
from appforge.core.budget import Budget, TemplateLimitError, check_binop, check_format_spec
from appforge.core.sandbox_filters import guard_filters, guard_method
from appforge.core.values import storable_text, storable_value

__all__ = [
    "Budget",
    "TemplateLimitError",
    "compiled",
    "compiled_expression",
    "environment",
    "evaluate_expression",
    "render",
    "variables",
]


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with every loop and every ``~`` going through the budget."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        guard = nodes.EnvironmentAttribute("bounded_iter", lineno=node.lineno)
        node.iter = nodes.Call(guard, [node.iter], [], None, None, lineno=node.lineno)
        super().visit_For(node, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            super().visit_Concat(node, frame)
            return
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedFormatting:
    """``str.format`` fields whose width or precision is above the limits are refused."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        return Formatter.format_field(self, value, format_spec)  # type: ignore[arg-type]


class _Formatter(_BoundedFormatting, SandboxedFormatter):
    pass


class _EscapeFormatter(_BoundedFormatting, SandboxedEscapeFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        return SandboxedEscapeFormatter.format_field(self, value, format_spec)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with size limits and a deadline (the current budget)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)
        self.globals["range"] = bounded_range
        self.filters = guard_filters(self.filters)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = budgets.current()
        budget.check()
        args = guard_method(__obj, args, kwargs, budget)
        result = super().call(__context, __obj, *args, **kwargs)
        return budget.check_value(result, "a call")

    def getattr(self, obj: Any, attribute: str) -> Any:
        budgets.current().check()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budgets.current().check()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, _METHOD_TYPES) or value.__name__ not in ("format", "format_map"):
            return None
        f_self = value.__self__
        if not isinstance(f_self, str):
            return None
        formatter: SandboxedFormatter
        if isinstance(f_self, Markup):
            formatter = _EscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = _Formatter(self)
        is_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if not is_map:
                return type(f_self)(formatter.vformat(f_self, args, kwargs))
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one positional argument")
            return type(f_self)(formatter.vformat(f_self, (), args[0]))

        return functools.update_wrapper(wrapper, value)

    @staticmethod
    def bounded_iter(iterable: Any) -> Iterator[Any]:
        """What a ``{% for %}`` loop iterates: the deadline is checked at every item."""
        return budgets.current().iterate(iterable)

    @staticmethod
    def bounded_concat(parts: tuple[Any, ...]) -> str:
        """``a ~ b``: refused when the result would be above the limits."""
        texts = [str(p) for p in parts]
        budgets.current().check_text(sum(len(t) for t in texts), "'~'")
        return "".join(texts)


_METHOD_TYPES = (types.MethodType, types.BuiltinMethodType)


def bounded_range(*args: int) -> range:
    """``range()`` of at most ``max_items`` numbers (``APPFORGE_LIMITS__MAX_TEMPLATE_ITEMS``)."""
    numbers = range(*args)
    budgets.current().check_items(len(numbers), "range()")
    return numbers


@cache
def environment() -> BoundedSandbox:
    """The shared sandbox: no internals, no mutation of inputs, bounded size and time."""
    return BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=4096)
def compiled(template: str) -> Template:
    """The compiled template (compiling costs far more than rendering; runs reuse it)."""
    return environment().from_string(template)


@lru_cache(maxsize=4096)
def compiled_expression(source: str) -> Callable[..., Any]:
    """A compiled expression that returns its value (Undefined stays Undefined)."""
    return environment().compile_expression(source, undefined_to_none=False)


def render(template: str, context: Mapping[str, Any], budget: Budget | None = None) -> str:
    """Render ``template`` within ``budget`` (default limits, no deadline, if None).

    The template is streamed: between pieces the deadline is checked and the
    rendered size (UTF-8 bytes) is added up, so a render above ``max_bytes`` is
    refused (``TEMPLATE_TOO_LARGE``) without being built whole.
    """
    budget = budget or Budget()
    token = budgets.activate(budget)
    pieces = cast(Generator[str, None, None], compiled(template).generate(**context))
    try:
        out: list[str] = []
        size = 0
        for piece in pieces:
            budget.check()
            size += len(piece) if piece.isascii() else len(piece.encode("utf-8", "replace"))
            if size > budget.limits.max_bytes:
                raise TemplateLimitError(
                    f"the rendered template is larger than {budget.limits.max_bytes} bytes "
                    "(APPFORGE_LIMITS__MAX_TEMPLATE_BYTES)",
                    details={"limit": budget.limits.max_bytes},
                )
            out.append(piece)
        # '%c'|format(0) and string escapes make characters no store keeps or JSON sends.
        return storable_text("".join(out))
    finally:
        pieces.close()
        budgets.deactivate(token)


def evaluate_expression(source: str, context: Mapping[str, Any], budget: Budget | None) -> Any:
    """The value of the expression ``source`` (Undefined stays Undefined), within ``budget``."""
    budget = budget or Budget()
    token = budgets.activate(budget)
    try:
        value = budget.check_value(compiled_expression(source)(**context), "the expression")
        return storable_value(value)
    finally:
        budgets.deactivate(token)


def variables(template: str) -> set[str]:
    """Names ``template`` reads from its context (globals such as ``range`` excluded).

    Raises ``jinja2.TemplateSyntaxError`` (with ``lineno``) on a syntax error.
    """
    env = environment()
    names = meta.find_undeclared_variables(env.parse(template))
    return {n for n in names if n not in env.globals}
