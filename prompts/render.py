"""Render a version with variables, in the same sandbox as the app engine.

Before rendering, the variables are checked: against ``variables_schema``
(JSON Schema) when the version has one, and against the names its templates
read (missing ones, and unexpected ones that neither the templates nor the
schema know). Every problem is reported at once (422 VARIABLES_INVALID).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from appforge.core import sandbox as templating
from appforge.core.budget import Budget
from prompts import schemas
from prompts.errors import PromptsInvalidError
from prompts.tables import PromptVersion

# How a template fails on the given values (the budget's errors carry their own codes).
_FAILURES = (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, RecursionError)


@dataclass(frozen=True)
class Rendered:
    text: str | None
    messages: list[dict[str, str]] | None
    model_defaults: dict[str, Any]
    variant: dict[str, str | None] | None


def choose_variant(
    version: PromptVersion, model_provider: str | None, model_name: str | None
) -> dict[str, Any] | None:
    """The variant for this provider and model: exact name first, then provider-wide."""
    if model_provider is None:
        return None
    exact = wide = None
    for variant in version.variants or []:
        if variant["model_provider"] != model_provider:
            continue
        name = variant.get("model_name")
        if name is None:
            wide = variant
        elif name == model_name:
            exact = variant
    return exact or wide


def check_variables(
    version: PromptVersion, variables: Mapping[str, Any], variant: dict[str, Any] | None = None
) -> None:
    """Raise VARIABLES_INVALID listing every problem with ``variables``."""
    problems: list[dict[str, Any]] = []
    needed = _names(variant) if variant else set(version.variables)
    schema = version.variables_schema
    known = set(needed)
    if schema:
        known |= set((schema.get("properties") or {}).keys())
    for name in sorted(needed - set(variables)):
        problems.append({"variable": name, "problem": "missing", "message": f"'{name}' is missing"})
    if not (schema and schema.get("additionalProperties", False) is not False):
        for name in sorted(set(variables) - known):
            problems.append(
                {
                    "variable": name,
                    "problem": "unexpected",
                    "message": f"'{name}' is not used by this version",
                }
            )
    if schema:
        try:
            errors = schemas.validation_errors(schema, dict(variables))
        except schemas.SchemaUnusable as exc:
            raise PromptsInvalidError(
                f"the version's variables_schema cannot be used: {exc}", code="SCHEMA_INVALID"
            ) from None
        for error in sorted(errors, key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in error.absolute_path)
            if error.validator == "required":
                continue  # reported above as missing, once
            problems.append(
                {"variable": where or None, "problem": "schema", "message": error.message}
            )
    if problems:
        raise PromptsInvalidError(
            f"{len(problems)} problem(s) with the variables: {problems[0]['message']}",
            code="VARIABLES_INVALID",
            details={"errors": problems},
        )


def _names(variant: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    if variant.get("template_text") is not None:
        names |= templating.variables(variant["template_text"])
    for message in variant.get("template_messages") or []:
        names |= templating.variables(message["content"])
    return names


def _render(template: str, variables: Mapping[str, Any], budget: Budget | None) -> str:
    try:
        return templating.render(template, variables, budget)
    except _FAILURES as exc:
        raise PromptsInvalidError(
            f"the template failed: {exc}", code="RENDER_FAILED", details={"reason": str(exc)}
        ) from exc


def render(
    version: PromptVersion,
    variables: Mapping[str, Any],
    model_provider: str | None = None,
    model_name: str | None = None,
    budget: Budget | None = None,
) -> Rendered:
    """Check ``variables``, then render the version (or its variant for the model).

    ``budget`` bounds the sizes and the time of the render (see
    ``appforge.core.budget``): ``TEMPLATE_TOO_LARGE`` or ``RENDER_TIMEOUT`` above.
    """
    variant = choose_variant(version, model_provider, model_name)
    check_variables(version, variables, variant)
    source: dict[str, Any] = variant or {
        "template_text": version.template_text,
        "template_messages": version.template_messages,
    }
    defaults = dict(version.model_defaults or {})
    if variant and variant.get("model_defaults"):
        defaults.update(variant["model_defaults"])
    if source.get("template_text") is not None:
        return Rendered(
            text=_render(source["template_text"], variables, budget),
            messages=None,
            model_defaults=defaults,
            variant=_variant_key(variant),
        )
    messages = [
        {"role": m["role"], "content": _render(m["content"], variables, budget)}
        for m in source.get("template_messages") or []
    ]
    return Rendered(
        text=None, messages=messages, model_defaults=defaults, variant=_variant_key(variant)
    )


def _variant_key(variant: dict[str, Any] | None) -> dict[str, str | None] | None:
    if variant is None:
        return None
    return {"model_provider": variant["model_provider"], "model_name": variant.get("model_name")}
