"""The one sandboxed Jinja2 environment, shared by prompts and the app engine.

It lives here, at the bottom of the layers, so that rendering a managed prompt
(``prompts.render``) and rendering an app's templates (``apps_yaml.templates``)
run in the very same sandbox.
"""

from __future__ import annotations

from functools import cache

from jinja2 import StrictUndefined, meta
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


def variables(template: str) -> set[str]:
    """Names ``template`` reads from its context (globals such as ``range`` excluded).

    Raises ``jinja2.TemplateSyntaxError`` (with ``lineno``) on a syntax error.
    """
    env = environment()
    names = meta.find_undeclared_variables(env.parse(template))
    return {n for n in names if n not in env.globals}
