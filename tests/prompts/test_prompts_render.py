"""Rendering versions with variables: schema checks, missing/unexpected, variants."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appforge.core import sandbox as templating
from prompts.errors import PromptsInvalidError
from prompts.render import render
from prompts.store import VersionSpec, check_version
from prompts.tables import PromptVersion


def make(**fields: Any) -> PromptVersion:
    spec = VersionSpec.model_validate(fields)
    dumped = spec.model_dump(mode="json", exclude_none=True)
    return PromptVersion(
        version_number=1,
        type=spec.type,
        template_text=spec.template_text,
        template_messages=dumped.get("template_messages"),
        model_defaults=dumped.get("model_defaults", {}),
        variables_schema=spec.variables_schema,
        variants=dumped.get("variants", []),
        variables=check_version(spec),
    )


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 5}, "n": {"type": "integer"}},
    "required": ["name"],
}


def test_render_text_and_chat():
    text = make(type="text", template_text="Hello {{name}}, welcome to {{company}}!")
    out = render(text, {"name": "Ada", "company": "ACME"})
    assert out.text == "Hello Ada, welcome to ACME!" and out.messages is None
    chat = make(
        type="chat",
        template_messages=[
            {"role": "system", "content": "You help {{company}}."},
            {"role": "user", "content": "{% for q in qs %}{{ q }};{% endfor %}"},
        ],
        model_defaults={"temperature": 0.2},
    )
    out = render(chat, {"company": "ACME", "qs": ["a", "b"]})
    assert out.messages == [
        {"role": "system", "content": "You help ACME."},
        {"role": "user", "content": "a;b;"},
    ]
    assert out.model_defaults == {"temperature": 0.2}


def test_render_reports_every_variable_problem():
    version = make(type="text", template_text="{{ name }} {{ topic }}", variables_schema=SCHEMA)
    with pytest.raises(PromptsInvalidError) as info:
        render(version, {"name": "toolong", "n": "x", "extra": 1})
    err = info.value
    assert err.code == "VARIABLES_INVALID" and err.status_code == 422
    problems = {(p["variable"], p["problem"]) for p in err.details["errors"]}
    assert problems == {
        ("topic", "missing"),
        ("extra", "unexpected"),
        ("name", "schema"),
        ("n", "schema"),
    }


def test_render_is_sandboxed():
    version = make(type="text", template_text="{{ x.__class__.__mro__ }}")
    with pytest.raises(PromptsInvalidError) as info:
        render(version, {"x": "s"})
    assert info.value.code == "RENDER_FAILED"


def test_render_picks_model_specific_variant():
    version = make(
        type="text",
        template_text="generic {{ q }}",
        variants=[
            {"model_provider": "openai", "template_text": "openai {{ q }}"},
            {
                "model_provider": "openai",
                "model_name": "gpt-4",
                "template_text": "gpt-4 {{ q }}",
                "model_defaults": {"temperature": 0},
            },
        ],
        model_defaults={"temperature": 1, "max_tokens": 9},
    )
    assert render(version, {"q": "?"}).text == "generic ?"
    assert render(version, {"q": "?"}, "openai", "gpt-4o").text == "openai ?"
    exact = render(version, {"q": "?"}, "openai", "gpt-4")
    assert exact.text == "gpt-4 ?"
    assert exact.model_defaults == {"temperature": 0, "max_tokens": 9}
    assert exact.variant == {"model_provider": "openai", "model_name": "gpt-4"}
    assert render(version, {"q": "?"}, "anthropic").text == "generic ?"


_idents = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: (
        s not in {"if", "in", "is", "or", "and", "not", "for", "true", "false", "none"}
        and s not in templating.environment().globals
    )
)


@given(st.lists(_idents, max_size=6), st.text(alphabet="abc ,.", max_size=10))
def test_templating_variables_are_the_names_used(names: list[str], filler: str):
    template = filler.join("{{ " + n + " }}" for n in names)
    assert templating.variables(template) == set(names)
