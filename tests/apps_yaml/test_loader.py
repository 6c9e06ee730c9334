"""YAML text to AppDocument: limits, syntax errors, schema errors with paths and lines."""

from __future__ import annotations

import re
from pathlib import Path
from textwrap import dedent

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from apps_yaml.errors import AppDocumentError, AppTooLargeError
from apps_yaml.loader import LineMap, load_dict, load_file, load_text
from apps_yaml.schema import (
    RESERVED_NAMES,
    AppDocument,
    InlinePrompt,
    InputField,
    LlmParams,
    LlmStep,
    PromptRef,
    RetrieveStep,
)

VALID = """\
version: 1
name: Support bot
type: chat
input:
  question: {type: string, required: true}
steps:
  - id: docs
    kind: retrieve
    datasources: [help-center]
    query: "{{ input.question }}"
  - id: answer
    kind: llm
    prompt:
      system: |
        Context:
        {% for d in docs.documents %}{{ d.text }}{% endfor %}
      user: "{{ input.question }}"
    history: 2
output:
  answer: "{{ answer.text }}"
  sources: "{{ docs.sources }}"
"""


def problems(text: str, **kwargs: object) -> list[tuple[str, int | None, str]]:
    with pytest.raises(AppDocumentError) as info:
        load_text(dedent(text), **kwargs)  # type: ignore[arg-type]
    assert info.value.code == "APP_INVALID"
    return [(p.path, p.line, p.message) for p in info.value.problems]


def error_of(text: str, **kwargs: object) -> AppDocumentError:
    with pytest.raises(AppDocumentError) as info:
        load_text(text, **kwargs)  # type: ignore[arg-type]
    return info.value


# --- valid documents ----------------------------------------------------------------


def test_load_text_valid_document_builds_the_models() -> None:
    doc = load_text(VALID)
    assert doc.name == "Support bot"
    assert doc.type == "chat"
    assert doc.input["question"].required is True
    assert isinstance(doc.steps[0], RetrieveStep)
    assert doc.steps[0].datasources == ["help-center"]
    assert isinstance(doc.steps[1], LlmStep)
    assert isinstance(doc.steps[1].prompt, InlinePrompt)
    assert doc.steps[1].history == 2
    assert doc.output == {"answer": "{{ answer.text }}", "sources": "{{ docs.sources }}"}


def test_load_text_merge_keys_and_anchors_are_supported() -> None:
    text = dedent(
        """\
        name: Anchors
        steps:
          - id: one
            kind: llm
            prompt: {user: hi}
            params: &p {temperature: 0, max_tokens: 10}
          - id: two
            kind: llm
            prompt: {user: "{{ one.text }}"}
            params:
              <<: *p
              max_tokens: 20
        output: {text: "{{ two.text }}"}
        """
    )
    doc = load_text(text)
    one, two = doc.steps
    assert isinstance(one, LlmStep) and isinstance(two, LlmStep)
    assert one.params == LlmParams(temperature=0, max_tokens=10)
    assert two.params == LlmParams(temperature=0, max_tokens=20)


def test_load_file_reads_utf8(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(VALID.replace("Support bot", "Support bot ✓"), encoding="utf-8")
    assert load_file(path).name == "Support bot ✓"
    assert load_file(str(path)).name == "Support bot ✓"


def test_load_file_not_utf8_is_yaml_invalid(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_bytes(b"name: ok\ndescription: caf\xe9\n")
    with pytest.raises(AppDocumentError) as info:
        load_file(path)
    assert info.value.code == "YAML_INVALID"
    assert info.value.problems[0].line == 2


def test_load_file_passes_limits_through(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(VALID, encoding="utf-8")
    with pytest.raises(AppTooLargeError):
        load_file(path, max_bytes=10)


# --- limits -----------------------------------------------------------------------


def test_load_text_too_large_is_413() -> None:
    with pytest.raises(AppTooLargeError) as info:
        load_text(VALID, max_bytes=100)
    assert info.value.code == "YAML_TOO_LARGE"
    assert info.value.status_code == 413
    assert info.value.details == {"size": len(VALID.encode()), "max_bytes": 100}


def test_load_text_size_counts_utf8_bytes() -> None:
    text = "name: " + "é" * 60 + "\n"  # 126 bytes, 66 characters
    with pytest.raises(AppTooLargeError):
        load_text(text, max_bytes=100)


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
# Seventeen more levels: 9**26 nodes once expanded, more than any machine could build
# or walk. The loader measures each distinct node once, so it refuses this one too.
ALIAS_BOMB = BILLION_LAUGHS + "".join(
    f"{name}: &{name} [{','.join(['*' + below] * 9)}]\n"
    for below, name in zip("ijklmnopqrstuvwxy", "jklmnopqrstuvwxyz", strict=True)
)


@pytest.mark.parametrize("text", [BILLION_LAUGHS, ALIAS_BOMB], ids=["9-levels", "26-levels"])
def test_load_text_alias_bomb_is_rejected_without_expanding(text: str) -> None:
    error = error_of(text)
    assert error.code == "YAML_TOO_COMPLEX"
    assert error.status_code == 422
    # d expands to 7381 nodes, e (line 5) to 66430: the alias there crosses 20000.
    assert error.problems[0].line == 5
    assert "20000 nodes" in error.problems[0].message


def test_load_text_max_nodes_is_configurable() -> None:
    assert error_of(VALID, max_nodes=10).code == "YAML_TOO_COMPLEX"


# --- refused documents --------------------------------------------------------

# A document refused as a whole: its code, the line of the first problem, and a
# pattern its message matches ("" when only the line is checked).
REFUSED = [
    # --- too complex ----------------------------------------------------------
    pytest.param(
        "name: x\ndeep: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "YAML_TOO_COMPLEX",
        2,
        "deeper than 50",
        id="deep-nesting",
    ),
    pytest.param(
        # The root mapping is level 1; the 49th 'k' (line 50) opens level 50, its value
        # is too deep.
        "name: x\n" + "".join("  " * i + "k:\n" for i in range(60)),
        "YAML_TOO_COMPLEX",
        51,
        "",
        id="deep-block-nesting-reports-the-line",
    ),
    pytest.param(
        "a: &a " + "[" * 30 + "1" + "]" * 30 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n",
        "YAML_TOO_COMPLEX",
        2,
        "once aliases are expanded",
        id="deep-nesting-through-aliases",
    ),
    pytest.param("name: x\nloop: &a [1, *a]\n", "YAML_TOO_COMPLEX", 2, "", id="recursive-alias"),
    # --- not YAML -------------------------------------------------------------
    pytest.param("name: x\nsteps:\n\t- id: a\n", "YAML_INVALID", 3, "", id="tab-indentation"),
    pytest.param("name: a\n---\nname: b\n", "YAML_INVALID", 2, "", id="two-documents"),
    pytest.param(
        "version: 1\nname: a\x15b\n",
        "YAML_INVALID",
        2,
        r"^the document contains U\+0015, a character YAML does not allow$",
        id="control-character",
    ),
    pytest.param(
        "name: !!python/object/apply:os.system [echo hi]\n",
        "YAML_INVALID",
        1,
        "",
        id="unsafe-tag",
    ),
    pytest.param(
        "name: x\nsteps:\n- id: a\n  query: {{ input.q }} please\n",
        "YAML_INVALID",
        4,
        r"a value that starts with '\{\{' must be quoted$",
        id="unquoted-template-followed-by-text-gets-a-hint",
    ),
    # --- not an app -----------------------------------------------------------
    pytest.param(
        "\n- name: x\n",
        "APP_INVALID",
        2,
        r"^the top level must be a mapping.*got a list$",
        id="top-level-list",
    ),
]


@pytest.mark.parametrize(("text", "code", "line", "message_pattern"), REFUSED)
def test_load_text_refuses_the_document(
    text: str, code: str, line: int, message_pattern: str
) -> None:
    error = error_of(text)
    assert error.code == code
    assert error.problems[0].line == line
    assert re.search(message_pattern, error.problems[0].message), error.problems[0].message


# --- YAML errors -------------------------------------------------------------------


def test_load_text_yaml_syntax_error_has_line_and_parser_message() -> None:
    text = dedent(
        """\
        name: x
        steps:
          - id: a
            kind: [llm
        output: {}
        """
    )
    error = error_of(text)
    assert error.code == "YAML_INVALID"
    (problem,) = error.problems
    assert problem.line == 5
    assert problem.message.startswith("expected ',' or ']'")
    assert "while parsing a flow sequence at line 4" in problem.message
    assert "Traceback" not in problem.message and "<unicode string>" not in problem.message


def test_load_text_duplicate_key_is_reported_with_schema_errors() -> None:
    text = dedent(
        """\
        name: x
        name: y
        steps: []
        output: {a: b}
        """
    )
    assert [(path, line) for path, line, _ in problems(text)] == [("name", 2), ("steps", 3)]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_load_text_empty_document_is_app_invalid(text: str) -> None:
    error = error_of(text)
    assert error.code == "APP_INVALID"
    assert "empty" in error.problems[0].message


# --- problems with their paths and lines ------------------------------------------

# A document and every problem loading it reports: (path, YAML line, message).
PROBLEMS = [
    # --- YAML read as something else ------------------------------------------
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              user: {{ input.question }}
        output: {a: "{{ a.text }}"}
        """,
        [
            (
                "steps[0].prompt.user",
                6,
                "{{ input.question }} is read by YAML as a mapping, not a template: "
                "quote a value that starts with '{{'",
            )
        ],
        id="unquoted-template-is-explained",
    ),
    pytest.param(
        """\
        name: first
        steps:
          - id: a
            kind: llm
            prompt: {user: hi}
            model: default
            model: local:smollm2
        name: second
        output: {a: "{{ a.text }}"}
        """,
        [
            (
                "steps[0].model",
                7,
                "duplicate key 'model' (first at line 6); YAML would keep only the last one",
            ),
            (
                "name",
                8,
                "duplicate key 'name' (first at line 1); YAML would keep only the last one",
            ),
        ],
        id="duplicate-key-names-key-and-line",
    ),
    # --- schema ---------------------------------------------------------------
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              user: hi
              sytem: be brief
            temprature: 0
        output: {a: "{{ a.text }}"}
        colour: blue
        """,
        [
            ("steps[0].prompt.sytem", 7, "unknown key 'sytem'; did you mean 'system'?"),
            (
                "steps[0].temprature",
                8,
                "unknown key 'temprature'; allowed keys: id, kind, model, prompt, history, params",
            ),
            (
                "colour",
                10,
                "unknown key 'colour'; allowed keys: "
                "version, name, description, type, public, flow, input, steps, output, origins, "
                "limits, ui, openai",
            ),
        ],
        id="unknown-key-points-at-the-key-line",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: chain
            prompt: {user: hi}
        output: {a: "{{ a.text }}"}
        """,
        [
            ("steps[0].kind", 4, "unknown kind 'chain'; allowed kinds: llm, retrieve"),
        ],
        id="bad-kind-lists-allowed-kinds",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            prompt: {user: hi}
        output: {a: "{{ a.text }}"}
        """,
        [
            ("steps[0].kind", 3, "missing 'kind'; allowed kinds: llm, retrieve"),
        ],
        id="missing-kind-points-at-the-step",
    ),
    pytest.param(
        """\
        description: no name
        steps:
          - kind: retrieve
            datasources: [kb]
        output:
          a: "{{ input }}"
        """,
        [
            ("name", 1, "missing required key 'name'"),
            ("steps[0].id", 3, "missing required key 'id'"),
            ("steps[0].query", 3, "missing required key 'query'"),
        ],
        id="missing-required-key-points-at-parent",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt: {ref: support-answer, user: "{{ input.q }}"}
        output: {a: "{{ a.text }}"}
        """,
        [
            (
                "steps[0].prompt.user",
                5,
                "unknown key 'user'; allowed keys: ref, label, version, variables",
            ),
        ],
        id="prompt-with-ref-is-a-prompt-ref",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - {id: a, kind: llm, prompt: {user: hi}}
        output:
          1: "{{ a.text }}"
        """,
        [("output[1]", 5, "a key should be a string; quote it")],
        id="non-string-key",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              system: be brief
        output: {a: "{{ a.text }}"}
        """,
        [
            ("steps[0].prompt", 6, "a prompt needs a user template (or a messages list)"),
        ],
        id="inline-prompt-without-user",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt: Summarize this
        output: {a: "{{ a.text }}"}
        """,
        [
            (
                "steps[0].prompt",
                5,
                "should be a mapping with the keys {system, user, messages} or "
                "{ref, label, version, variables}, got a string ('Summarize this')",
            ),
        ],
        id="prompt-as-string",
    ),
    pytest.param(
        """\
        name: ""
        type: chatty
        input:
          question: {type: str}
          bad-name: {}
        steps:
          - id: 1st
            kind: retrieve
            datasources: []
            query: 42
            top_k: 0
        output:
          answer: ["{{ x }}"]
        """,
        [
            ("name", 1, "String should have at least 1 character"),
            ("type", 2, "should be 'chat' or 'text', got a string ('chatty')"),
            (
                "input.question.type",
                4,
                "should be 'string', 'integer', 'number', 'boolean', 'array' or 'object', "
                "got a string ('str')",
            ),
            (
                'input["bad-name"]',
                5,
                "'bad-name' is not a valid name: use letters, digits and _, "
                "starting with a letter or _ (at most 64 characters)",
            ),
            (
                "steps[0].id",
                7,
                "'1st' is not a valid id: use letters, digits and _, "
                "starting with a letter or _ (at most 64 characters)",
            ),
            ("steps[0].datasources", 9, "needs at least 1 item"),
            ("steps[0].query", 10, "should be a valid string, got a number (42)"),
            ("steps[0].top_k", 11, "should be greater than or equal to 1, got a number (0)"),
            ("output.answer", 13, "should be a valid string"),
        ],
        id="every-schema-error-in-line-order",
    ),
    pytest.param(
        """\
        name: x
        steps:
          - llm
        output: {a: b}
        """,
        [("steps[0]", 3, "should be a mapping, got a string ('llm')")],
        id="step-not-a-mapping",
    ),
    pytest.param(
        """\
        name: x
        input:
          q: {required: true, default: hi}
        steps:
          - {id: a, kind: llm, prompt: {user: "{{ input.q }}"}}
        output: {a: "{{ a.text }}"}
        """,
        [("input.q", 3, "a required input cannot have a default")],
        id="required-input-with-default",
    ),
    # --- semantics (apps_yaml.validate) ---------------------------------------
    pytest.param(
        """\
        name: x
        steps:
          - {id: a, kind: llm, prompt: {user: "{{ input.q }}"}}
        output: {a: "{{ a.text }}"}
        """,
        [
            ("steps[0].prompt.user", 3, "unknown input 'q'; declared inputs: none"),
        ],
        id="semantic-errors-from-validate",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PROBLEMS)
def test_load_text_reports_each_problem_with_path_and_line(
    text: str, expected: list[tuple[str, int, str]]
) -> None:
    assert problems(text) == expected


def test_load_text_prompt_ref_errors_are_not_mixed_with_inline_ones() -> None:
    text = dedent(
        """\
        name: x
        steps:
          - id: a
            kind: llm
            prompt:
              ref: support-answer
              label: Production
        output: {a: "{{ a.text }}"}
        """
    )
    ((path, line, message),) = problems(text)
    assert (path, line) == ("steps[0].prompt.label", 7)
    assert message.startswith("'Production' should match the pattern")


def test_load_dict_without_lines_reports_no_lines() -> None:
    with pytest.raises(AppDocumentError) as info:
        load_dict({"name": "x", "steps": [{"id": "a", "kind": "nope"}], "output": {"a": "b"}})
    assert [(p.path, p.line) for p in info.value.problems] == [("steps[0].kind", None)]


@pytest.mark.parametrize("data", [None, [], "name: x"], ids=["none", "list", "string"])
def test_load_dict_rejects_non_mapping(data: object) -> None:
    with pytest.raises(AppDocumentError) as info:
        load_dict(data)
    assert info.value.code == "APP_INVALID"


def test_app_document_error_message_names_first_line_and_count() -> None:
    text = dedent(
        """\
        name: x
        steps:
          - {id: a, kind: llm, prompt: {user: hi}, foo: 1, bar: 2}
        output: {a: "{{ a.text }}"}
        """
    )
    error = error_of(text)
    assert error.message.startswith("line 3, steps[0].foo: unknown key 'foo'")
    assert error.message.endswith("(and 1 more)")
    assert error.details["errors"][1] == {
        "path": "steps[0].bar",
        "message": "unknown key 'bar'; allowed keys: id, kind, model, prompt, history, params",
        "line": 3,
    }


# --- line map ---------------------------------------------------------------------------


def _line_map(text: str) -> LineMap:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    assert node is not None
    return LineMap.from_node(node)


def test_line_map_values_keys_and_ancestors() -> None:
    lines = _line_map(
        dedent(
            """\
            name: x
            steps:
              - id: a
                prompt:
                  user: |
                    hello
                    {{ x }}
            """
        )
    )
    assert lines.line(()) == 1
    assert lines.line(("steps",)) == 3
    assert lines.line(("steps", 0, "id")) == 3
    assert lines.line(("steps", 0, "prompt", "system")) == 5  # missing: nearest ancestor
    assert lines.key_line(("steps", 0, "prompt")) == 4
    assert lines.style(("steps", 0, "prompt", "user")) == "|"
    assert lines.template_line(("steps", 0, "prompt", "user"), 2) == 7
    assert lines.line(("nothing", "here")) == 1


def test_line_map_flow_scalar_stays_within_its_lines() -> None:
    lines = _line_map('a: "one\\ntwo\\nthree"\nb: 1\n')
    assert lines.template_line(("a",), 3) == 1


# --- property: YAML round trip ---------------------------------------------------------

_KEYWORDS = {"and", "or", "not", "in", "is", "if", "else", "for", "true", "false", "none"}
_GLOBALS = {"range", "dict", "lipsum", "cycler", "joiner", "namespace"}
names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(
    lambda n: n not in RESERVED_NAMES and n not in _KEYWORDS and n not in _GLOBALS
)
plain_text = st.text(
    st.characters(
        categories=("L", "N", "Zs", "Pd", "Po"),
        exclude_characters="{}%#\u2028\u2029\x85",
    ),
    max_size=40,
)


@st.composite
def app_documents(draw: st.DrawFn) -> AppDocument:
    input_names = draw(st.lists(names, max_size=3, unique=True))
    inputs = {}
    for name in input_names:
        required = draw(st.booleans())
        inputs[name] = InputField(
            type="string",
            required=required,
            default=None if required else draw(st.none() | plain_text),
            description=draw(plain_text),
            max_length=draw(st.none() | st.integers(40, 10_000)),
        )
    step_ids = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    steps: list[LlmStep | RetrieveStep] = []
    for i, step_id in enumerate(step_ids):
        if i == 0:
            user = " ".join("{{ input." + n + " }}" for n in input_names)
            user = user or draw(plain_text) or "hi"
        else:
            user = draw(plain_text) + " {{ " + step_ids[i - 1] + ".text }}"
        prompt: InlinePrompt | PromptRef
        if draw(st.booleans()):
            prompt = InlinePrompt(system=draw(st.none() | plain_text), user=user)
        else:
            prompt = PromptRef(ref=draw(names), variables={"text": user})
        steps.append(
            LlmStep(
                id=step_id,
                kind="llm",
                prompt=prompt,
                history=draw(st.integers(0, 10)),
                params=LlmParams(
                    temperature=draw(
                        st.none() | st.floats(0, 2, allow_nan=False, allow_infinity=False)
                    ),
                    max_tokens=draw(st.none() | st.integers(1, 32768)),
                    seed=draw(st.none() | st.integers(-(2**31), 2**31)),
                ),
            )
        )
    return AppDocument(
        name=draw(plain_text.filter(lambda s: s.strip() != "")),
        description=draw(plain_text),
        type="chat",
        public=draw(st.booleans()),
        input=inputs,
        steps=steps,
        output={draw(names): "{{ " + step_ids[-1] + ".text }}"},
    )


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(app_documents())
def test_load_text_yaml_round_trip(doc: AppDocument) -> None:
    text = yaml.safe_dump(doc.model_dump(mode="json"), allow_unicode=True, sort_keys=False)
    assert load_text(text) == doc
