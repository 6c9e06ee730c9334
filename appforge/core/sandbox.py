"""The one sandboxed Jinja2 environment, shared by prompts and the app engine.

It lives here, at the bottom of the layers, so that rendering a managed prompt
(``prompts.render``) and rendering an app's templates (``apps_yaml.templates``)
run in the very same sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment


@cache
def environment() -> ImmutableSandboxedEnvironment:
    """The shared sandbox: no attribute access to internals, no mutation of inputs."""
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    return env


@lru_cache(maxsize=4096)
def compiled(template: str) -> Template:
    """The compiled template (compiling costs far more than rendering; runs reuse it)."""
    return environment().from_string(template)


@lru_cache(maxsize=4096)
def compiled_expression(source: str) -> Callable[..., Any]:
    """A compiled expression that returns its value (Undefined stays Undefined)."""
    return environment().compile_expression(source, undefined_to_none=False)


def variables(template: str) -> set[str]:
    """Names ``template`` reads from its context (globals such as ``range`` excluded).

    Raises ``jinja2.TemplateSyntaxError`` (with ``lineno``) on a syntax error.
    """
    env = environment()
    names = meta.find_undeclared_variables(env.parse(template))
    return {n for n in names if n not in env.globals}
