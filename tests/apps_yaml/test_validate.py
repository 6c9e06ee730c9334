"""Semantic checks after the schema: step ids, templates, inputs, history, references."""

from __future__ import annotations

from textwrap import dedent

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import TemplateSyntaxError

from apps_yaml.errors import AppDocumentError
from apps_yaml.loader import load_dict, load_text
from apps_yaml.validate import check, format_path, template_names


def problems(text: str, **kwargs: object) -> list[tuple[str, int | None, str]]:
    with pytest.raises(AppDocumentError) as info:
        load_text(dedent(text), **kwargs)  # type: ignore[arg-type]
    assert info.value.code == "APP_INVALID"
    return [(p.path, p.line, p.message) for p in info.value.problems]


class Store:
    """References as a store would answer them."""

    def __init__(self, datasources: set[str], prompts: set[tuple[str, str]]) -> None:
        self.datasources = datasources
        self.prompts = prompts

    def datasource_exists(self, name_or_uuid: str) -> bool:
        return name_or_uuid in self.datasources

    def prompt_exists(self, ref: str, label: str) -> bool:
        return (ref, label) in self.prompts

    def model_problem(self, model: str) -> str | None:
        return None if model in ("default", "local:smollm2") else f"no model {model!r}"


RESERVED = "false, input, loop, none, self, session, true"

# A document and every problem ``check`` reports in it: (path, YAML line, message).
PROBLEMS = [
    # --- step ids -------------------------------------------------------------
    pytest.param(
        """\
        name: x
        steps:
          - {id: a, kind: llm, prompt: {user: hi}}
          - {id: a, kind: llm, prompt: {user: hi}}
        output: {a: "{{ a.text }}"}
        """,
        [("steps[1].id", 4, "duplicate step id 'a' (also steps[0])")],
        id="duplicate-step-ids",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: input
            kind: llm
            prompt: {user: hi}
          - id: session
            kind: llm
            prompt: {user: hi}
        output: {a: "x"}
        """,
        [
            ("steps[0].id", 3, f"'input' is reserved; a step id cannot be one of: {RESERVED}"),
            ("steps[1].id", 6, f"'session' is reserved; a step id cannot be one of: {RESERVED}"),
        ],
        id="reserved-step-ids",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - {id: range, kind: llm, prompt: {user: hi}}
        output: {a: "{{ range.text }}"}
        """,
        [
            ("steps[0].id", 3, "step id 'range' would hide the template function 'range'"),
        ],
        id="step-id-hides-a-function",
    ),
    # --- names ----------------------------------------------------------------
    pytest.param(
        """\
        name: x
        steps:
          - {id: docs, kind: retrieve, datasources: [kb], query: hi}
          - id: answer
            kind: llm
            prompt: {user: "{{ doc.documents }}"}
        output: {a: "{{ answer.text }}"}
        """,
        [
            (
                "steps[1].prompt.user",
                6,
                "unknown name 'doc'; did you mean 'docs'? (available: input, session, docs)",
            ),
        ],
        id="unknown-name-lists-what-is-available",
    ),
    pytest.param(
        """\
        name: x
        input: {question: {}}
        steps:
          - {id: a, kind: llm, prompt: {user: "{{ question }}"}}
        output: {a: "{{ a.text }}"}
        """,
        [
            (
                "steps[0].prompt.user",
                4,
                "unknown name 'question'; inputs are read as input.question",
            ),
        ],
        id="input-name-without-prefix-gets-a-hint",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: first
            kind: llm
            prompt:
              user: |
                {{ first.text }}
                {{ second.text }}
          - {id: second, kind: llm, prompt: {user: "{{ first.text }}"}}
        output: {a: "{{ second.text }}", b: "{{ first.text }}"}
        """,
        [
            ("steps[0].prompt.user", 7, "step 'first' is this step; its result is not there yet"),
            ("steps[0].prompt.user", 8, "step 'second' runs after this one"),
        ],
        id="later-and-same-step-not-available",
    ),
    # --- fields ---------------------------------------------------------------
    pytest.param(
        """\
        name: x
        input: {question: {}, product: {}}
        steps:
          - id: a
            kind: llm
            prompt:
              system: "{{ input['prodcut'] }}"
              user: "{{ input.questoin }} {{ input.get('lang', 'en') }}"
        output: {a: "{{ a.text }}"}
        """,
        [
            (
                "steps[0].prompt.system",
                7,
                "unknown input 'prodcut'; declared inputs: question, product",
            ),
            (
                "steps[0].prompt.user",
                8,
                "unknown input 'questoin'; declared inputs: question, product",
            ),
            ("steps[0].prompt.user", 8, "unknown input 'lang'; declared inputs: question, product"),
        ],
        id="unknown-input-by-attribute-item-and-get",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - {id: docs, kind: retrieve, datasources: [kb], query: hi}
          - id: answer
            kind: llm
            prompt: {user: "{{ docs.txt }}"}
        output:
          a: "{{ answer['content'] }}"
        """,
        [
            (
                "steps[1].prompt.user",
                6,
                "step 'docs' (retrieve) has no field 'txt'; fields: documents, sources",
            ),
            (
                "output.a",
                8,
                "step 'answer' (llm) has no field 'content'; fields: text, usage, model, citations",
            ),
        ],
        id="unknown-step-field",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - {id: a, kind: llm, prompt: {user: "{{ session.user }}"}}
        output: {a: "{{ a.text }}"}
        """,
        [
            ("steps[0].prompt.user", 3, "session has no field 'user'; fields: id, history"),
        ],
        id="unknown-session-field",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - {id: a, kind: llm, prompt: {user: hi}}
          - {id: b, kind: llm, prompt: {user: "{{ a.text }}"}}
        output: {first: "{{ a.text }}", second: "{{ b.model }}", c: "{{ c.text }}"}
        """,
        [
            ("output.c", 5, "unknown name 'c' (available: input, session, a, b)"),
        ],
        id="outputs-see-every-step",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              ref: support-answer
              variables: {question: "{{ input.q }}"}
        output: {a: "{{ a.text }}"}
        """,
        [
            ("steps[0].prompt.variables.question", 7, "unknown input 'q'; declared inputs: none"),
        ],
        id="prompt-ref-variables-are-templates",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              messages:
                - {role: system, content: be brief}
                - {role: user, content: "{{ nothing }}"}
        output: {a: "{{ a.text }}"}
        """,
        [
            (
                "steps[0].prompt.messages[1].content",
                8,
                "unknown name 'nothing' (available: input, session)",
            ),
        ],
        id="messages-content-is-a-template",
    ),
    pytest.param(
        """\
        name: x
        input: {q: {}}
        steps:
          - id: a
            kind: llm
            prompt:
              user: |
                {{ input.q | shout }}
                {{ input.q.__class__ }}
                {% include 'other.txt' %}
                {% if input.q is shiny %}x{% endif %}
        output: {a: "{{ a.text }}"}
        """,
        [
            ("steps[0].prompt.user", 8, "unknown filter 'shout'"),
            ("steps[0].prompt.user", 9, "'__class__' is private: templates cannot read it"),
            (
                "steps[0].prompt.user",
                10,
                "templates cannot include, import or extend other templates",
            ),
            ("steps[0].prompt.user", 11, "unknown test 'shiny'"),
        ],
        id="unknown-filter-private-attribute-include",
    ),
    # --- inputs, history, datasources -----------------------------------------
    pytest.param(
        """\
        name: x
        input:
          n: {type: integer, default: "3"}
          tone: {enum: [calm, 2], default: loud}
          flag: {type: boolean, max_length: 3}
          short: {max_length: 2, default: long}
        steps:
          - {id: a, kind: llm, prompt: {user: hi}}
        output: {a: "{{ a.text }}"}
        """,
        [
            ("input.n.default", 3, "the default is not of type integer"),
            ("input.tone.enum[1]", 4, "enum value 2 is not of type string"),
            ("input.tone.default", 4, "the default 'loud' is not one of the enum"),
            ("input.flag.max_length", 5, "max_length applies to string inputs only"),
            ("input.short.default", 6, "the default is longer than 2 characters"),
        ],
        id="input-defaults-and-enums",
    ),
    pytest.param(
        """\
        name: x
        type: text
        steps:
          - id: a
            kind: llm
            prompt: {user: hi}
            history: 4
        output: {a: "{{ a.text }}"}
        """,
        [
            ("steps[0].history", 7, "history needs type: chat (this app is type: text)"),
        ],
        id="history-needs-chat",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: docs
            kind: retrieve
            datasources:
              - kb
              - kb
            query: hi
        output: {a: "{{ docs.sources }}"}
        """,
        [("steps[0].datasources[1]", 7, "datasource 'kb' is listed twice")],
        id="datasource-listed-twice",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PROBLEMS)
def test_check_reports_each_problem_with_path_and_line(
    text: str, expected: list[tuple[str, int, str]]
) -> None:
    assert problems(text) == expected


# --- template syntax ----------------------------------------------------------------

# A document with one template syntax error: its path, YAML line and message start.
SYNTAX_ERRORS = [
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              user: "{{ input.q "
        output: {a: "{{ a.text }}"}
        """,
        "steps[0].prompt.user",
        6,
        "template syntax error: ",
        id="flow-scalar",
    ),
    pytest.param(
        # The block's content starts on YAML line 7 (the line after '|'): Jinja's
        # line 3, the unclosed for-loop, is YAML line 9.
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              system: |
                You are helpful.
                Context:
                {% for d in docs %}{{ d }}
              user: hi
        output: {a: "{{ a.text }}"}
        """,
        "steps[0].prompt.system",
        9,
        "template syntax error: Unexpected end of template",
        id="line-in-literal-block",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              user: |
                line one
                line two {{ 1 + }}
                line three
        output: {a: "{{ a.text }}"}
        """,
        "steps[0].prompt.user",
        8,
        "template syntax error: ",
        id="line-in-middle-of-block",
    ),
    pytest.param(
        # Folded content also starts on the line after '>': Jinja's line 1 is YAML line 7.
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              user: >
                {% if x %}
        output: {a: "{{ a.text }}"}
        """,
        "steps[0].prompt.user",
        7,
        "template syntax error: ",
        id="line-in-folded-block",
    ),
]


@pytest.mark.parametrize(("text", "path", "line", "message_start"), SYNTAX_ERRORS)
def test_check_template_syntax_error_has_path_and_yaml_line(
    text: str, path: str, line: int, message_start: str
) -> None:
    ((got_path, got_line, message),) = problems(text)
    assert (got_path, got_line) == (path, line)
    assert message.startswith(message_start)


def test_check_template_error_in_where_value_has_nested_path() -> None:
    text = """\
        name: x
        steps:
          - id: docs
            kind: retrieve
            datasources: [kb]
            query: q
            where:
              $and:
                - {md_a: "{{ input.a }}"}
                - {md_b: "{{ oops }"}
        output: {a: "{{ docs.sources }}"}
        """
    ((path1, line1, message1), (path2, line2, message2)) = problems(text)
    assert (path1, line1, message1) == (
        'steps[0].where["$and"][0].md_a',
        9,
        "unknown input 'a'; declared inputs: none",
    )
    assert (path2, line2) == ('steps[0].where["$and"][1].md_b', 10)
    assert message2.startswith("template syntax error: ")


# --- names a template sets itself ------------------------------------------------


def test_check_template_locals_and_functions_are_not_unknown() -> None:
    text = """\
        name: x
        input: {items: {type: array}}
        steps:
          - id: a
            kind: llm
            prompt:
              user: >-
                {% set n = input['items'] | length %}
                {% for i in range(n) %}{{ loop.index }}{{ i }}{% endfor %}
                {{ session.id }} {{ input.get('items', []) | join(', ') }}
        output: {a: "{{ a.text }}", u: "{{ a.usage.total_tokens }}"}
        """
    assert load_text(dedent(text)).steps[0].id == "a"


# --- references ----------------------------------------------------------------------

REFS_DOC = """\
    name: x
    steps:
      - id: docs
        kind: retrieve
        datasources: [help-center, 0b8e4f6c-9f7e-4c55-a2a4-d2cbd2b6ac51]
        query: hi
      - id: answer
        kind: llm
        prompt: {ref: support-answer, label: staging}
    output: {a: "{{ answer.text }}"}
    """


def test_check_references_unknown_datasource_and_prompt() -> None:
    store = Store({"help-center"}, {("support-answer", "production")})
    assert problems(REFS_DOC, references=store) == [
        (
            "steps[0].datasources[1]",
            5,
            "unknown datasource '0b8e4f6c-9f7e-4c55-a2a4-d2cbd2b6ac51'",
        ),
        ("steps[1].prompt.ref", 9, "unknown prompt 'support-answer' with label 'staging'"),
    ]


def test_check_references_unknown_model_has_line() -> None:
    text = REFS_DOC.replace(
        "      - id: answer\n        kind: llm\n",
        "      - id: answer\n        kind: llm\n        model: nope:x\n",
    )
    store = Store(
        {"help-center", "0b8e4f6c-9f7e-4c55-a2a4-d2cbd2b6ac51"}, {("support-answer", "staging")}
    )
    assert problems(text, references=store) == [("steps[1].model", 9, "no model 'nope:x'")]


def test_check_references_known_pass_and_none_skips() -> None:
    store = Store(
        {"help-center", "0b8e4f6c-9f7e-4c55-a2a4-d2cbd2b6ac51"}, {("support-answer", "staging")}
    )
    assert load_text(dedent(REFS_DOC), references=store).name == "x"
    assert load_text(dedent(REFS_DOC)).name == "x"


# --- direct use ---------------------------------------------------------------------


def test_check_without_lines_reports_paths_only() -> None:
    data = {
        "name": "x",
        "steps": [
            {"id": "a", "kind": "llm", "prompt": {"user": "{{ b.text }}"}},
            {"id": "a", "kind": "llm", "prompt": {"user": "hi"}},
        ],
        "output": {"a": "{{ a.text }}"},
    }
    with pytest.raises(AppDocumentError) as info:
        load_dict(data)
    assert [(p.path, p.line) for p in info.value.problems] == [
        ("steps[1].id", None),
        ("steps[0].prompt.user", None),
    ]


def test_check_collects_all_problems_of_a_document() -> None:
    doc = load_text("name: x\nsteps: [{id: a, kind: llm, prompt: {user: hi}}]\noutput: {a: b}\n")
    check(doc, None, None)  # valid: no exception
    bad = doc.model_copy(update={"type": "text"})
    bad.steps[0] = bad.steps[0].model_copy(update={"history": 2, "id": "input"})
    with pytest.raises(AppDocumentError) as info:
        check(bad, None, None)
    assert [p.path for p in info.value.problems] == ["steps[0].id", "steps[0].history"]


def test_format_path_renders_keys_and_indexes() -> None:
    assert format_path(()) == ""
    assert format_path(("steps", 2, "prompt", "user")) == "steps[2].prompt.user"
    assert format_path(("input", "bad key", "type")) == 'input["bad key"].type'
    assert format_path(("steps", 0, "where", "$or", 1)) == 'steps[0].where["$or"][1]'


# --- property: names a template reads ---------------------------------------------------

_NOT_NAMES = {
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "elif",
    "for",
    "true",
    "false",
    "none",
    "loop",
    "self",
    "super",
    "caller",
    "varargs",
    "kwargs",
    "recursive",
    "with",
    "without",
}
declared_names = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True).filter(
    lambda n: n not in _NOT_NAMES
)
text_between = st.text(st.sampled_from("abc XYZ .,!\n"), max_size=8)
USES = [
    "{{ %s }}",
    "{{ %s.field }}",
    "{{ %s['key'] }}",
    "{{ %s | upper }}",
    "{% if %s %}yes{% else %}no{% endif %}",
    "{% for it_ in %s %}{{ it_ }}{{ loop.index }}{% endfor %}",
    "{% set tmp_ = %s %}{{ tmp_ }}",
    "{{ 'a' ~ %s ~ 'b' }}",
    "{{ (%s) if %s is defined else 0 }}",
]


@settings(derandomize=True, database=None)
@given(
    st.lists(declared_names, min_size=0, max_size=6, unique=True),
    st.data(),
)
def test_template_names_are_exactly_the_names_used(names: list[str], data: st.DataObject) -> None:
    parts = []
    for name in names:
        parts.append(data.draw(text_between))
        use = data.draw(st.sampled_from(USES))
        parts.append(use.replace("%s", name))
    parts.append(data.draw(text_between))
    template = "".join(parts)
    assert template_names(template) == set(names)


def test_template_names_raises_on_syntax_error() -> None:
    with pytest.raises(TemplateSyntaxError):
        template_names("{{ a ")
