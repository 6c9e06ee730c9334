"""Sandboxed Jinja2 templates: the one renderer of apps and managed prompts.

The environment itself is ``appforge.core.sandbox.environment`` (the lower layer).

``{{ var }}`` as in the seeds works as is. A template that is exactly one
expression (``"{{ docs.sources }}"``) evaluates to the expression's value, so a
list stays a list in the run output; any other template renders to a string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, Undefined, nodes

from appforge.core import sandbox
from appforge.core.budget import Budget
from appforge.core.sandbox import environment
from apps_yaml.errors import RunFailedError

__all__ = ["environment", "evaluate", "parse", "render", "single_expression", "streamed_step"]

# How a template fails on its own (a deep macro recursion included); the
# budget's errors carry their own codes and pass through.
_FAILURES = (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, RecursionError)
_SINGLE = re.compile(r"^\{\{-?\s*(?P<expr>.+?)\s*-?\}\}$", re.DOTALL)


def parse(template: str) -> nodes.Template:
    """Parse a template; raises ``jinja2.TemplateSyntaxError`` with ``lineno``."""
    return environment().parse(template)


@lru_cache(maxsize=4096)
def single_expression(template: str) -> nodes.Expr | None:
    """The expression node if ``template`` is exactly ``{{ expr }}``, else None."""
    match = _SINGLE.match(template)
    if not match or "{{" in match["expr"] or "}}" in match["expr"]:
        return None
    tree = parse(template)
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = tree.body[0].nodes
    if len(parts) != 1 or isinstance(parts[0], nodes.TemplateData):
        return None
    return parts[0]


def streamed_step(template: str) -> str | None:
    """The step id if the template is exactly ``{{ <step>.text }}`` (streamable), else None."""
    expr = single_expression(template)
    if (
        isinstance(expr, nodes.Getattr)
        and expr.attr == "text"
        and isinstance(expr.node, nodes.Name)
    ):
        return expr.node.name
    return None


def evaluate(template: str, context: Mapping[str, Any], budget: Budget | None = None) -> Any:
    """Render ``template``; a single-expression template keeps its value's type.

    ``budget`` bounds the render's sizes and time (see ``appforge.core.budget``);
    a render stopped by its run's cancel event raises ``RenderInterrupted``.
    """
    try:
        match = _SINGLE.match(template)
        if match and single_expression(template) is not None:
            value = sandbox.evaluate_expression(match["expr"], context, budget)
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
            return value
        return sandbox.render(template, context, budget)
    except _FAILURES as exc:
        raise RunFailedError(f"template failed: {exc}", code="TEMPLATE_ERROR") from exc


def render(template: str, context: Mapping[str, Any], budget: Budget | None = None) -> str:
    """Render ``template`` to a string (within ``budget``)."""
    try:
        return sandbox.render(template, context, budget)
    except _FAILURES as exc:
        raise RunFailedError(f"template failed: {exc}", code="TEMPLATE_ERROR") from exc
