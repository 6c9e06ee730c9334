"""The form editor's pure functions: YAML text <-> document, fields, rows, pickers."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from appforge.client import ModelsInfo
from builder import app_form as af

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT | (TEXT.map(lambda t: f"{t}\n{t}")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(TEXT, VALUES, min_size=1, max_size=5))
def test_app_form_dump_then_parse_gives_the_document_back(doc: dict[str, Any]):
    parsed, problems = af.parse(af.dump(doc))
    assert problems == [] and parsed == doc


def test_app_form_dump_writes_multiline_templates_as_blocks():
    text = af.dump({"prompt": {"system": "Line one.\nLine two.\n"}})
    assert text == "prompt:\n  system: |\n    Line one.\n    Line two.\n"


@pytest.mark.parametrize(
    ("text", "line", "start"),
    [
        ("name: a\nsteps: [x\n", 3, "YAML syntax:"),
        ("name: a\n  bad: indent\n", 2, "YAML syntax:"),
        ("- just\n- a list\n", 1, "the app must be a mapping"),
        ("", 1, "the app must be a mapping"),
    ],
)
def test_app_form_parse_reports_problem_with_its_line(text: str, line: int, start: str):
    doc, [problem] = af.parse(text)
    assert doc is None and problem.line == line and problem.message.startswith(start)
    assert str(problem).startswith(f"line {line}: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: a\npublic: false  # shared?\nsteps: []\n",
            "name: a\npublic: true  # shared?\nsteps: []\n",
        ),
        ("name: a\ntype: chat\nsteps: []\n", "name: a\ntype: chat\npublic: true\nsteps: []\n"),
        ("name: a # n\nsteps: []\n", "name: a # n\npublic: true\nsteps: []\n"),
        (
            "name: a\ndescription: |\n  two\n  lines\n",
            "name: a\npublic: true\ndescription: |\n  two\n  lines\n",
        ),
        # A block scalar with nothing after it: the document is written again.
        ("steps: []\nname: >\n  folded\n", "steps: []\nname: |\n  folded\npublic: true\n"),
    ],
)
def test_app_form_set_public_keeps_the_rest_of_the_text(text: str, expected: str):
    assert af.set_public(text, True) == expected
    assert yaml.safe_load(af.set_public(text, True))["public"] is True
    assert yaml.safe_load(af.set_public(expected, False))["public"] is False


def test_app_form_put_writes_only_what_changed():
    doc: dict[str, Any] = {"history": 2, "temperature": 0}
    af.put(doc, "temperature", 0.0, 0.0)  # shown as a float, not changed: the int stays
    af.put(doc, "history", 2, 2)
    af.put(doc, "top_k", 4, 4)  # a default shown but absent: stays absent
    assert doc == {"history": 2, "temperature": 0}
    af.put(doc, "history", 2, 0)
    af.put(doc, "temperature", 0.0, None, drop_empty=True)
    assert doc == {"history": 0}


def test_app_form_rows_steps_and_pickers():
    assert af.moved([1, 2, 3], 2, -1) == [1, 3, 2]
    assert af.moved([1, 2, 3], 0, -1) == [1, 2, 3]
    assert af.unique_name("docs", {"docs", "docs_2"}) == "docs_3"
    step = af.new_step("retrieve", [{"id": "docs", "kind": "retrieve"}])
    assert step["id"] == "docs_2" and step["datasources"] == []
    assert af.prompt_for("Messages", {"system": "S", "user": "U"}) == {
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    }
    assert af.prompt_for(
        "System and user",
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]},
    ) == {"system": "S", "user": "U"}
    assert af.prompt_source({"ref": "x"}) == "Managed prompt"
    models = ModelsInfo.model_validate(
        {
            "aliases": [
                {"name": name, "target": "local:smollm2", "reachable": True}
                for name in ("default", "fast")
            ],
            "providers": [
                {"name": "local", "kind": "local", "configured": True, "models": ["smollm2"]},
                {"name": "openai", "kind": "openai-compatible", "configured": False},
            ],
        }
    )
    assert af.model_options(None, "x") == ["default", "x"]
    assert af.model_options(models, "openai:gpt-4o") == [
        "default",
        "fast",
        "local:smollm2",
        "openai:gpt-4o",
    ]
    prompts = [
        af.ManagedPrompt("1", "greet", "a"),
        af.ManagedPrompt("2", "greet", "b"),
        af.ManagedPrompt("3", "answer", "a"),
    ]
    assert af.prompt_refs(prompts) == {"1": "greet (a)", "2": "greet (b)", "answer": "answer (a)"}
    assert af.parse_json_object('{"md_a": 1}') == ({"md_a": 1}, None)
    assert af.parse_json_object(" ") == (None, None)
    assert af.parse_json_object("[1]") == (None, "it must be a JSON object ({...})")
    assert (
        af.parse_json_object("{")[1]
        == "line 1, column 2: Expecting property name enclosed in double quotes"
    )


def test_app_form_excerpt_marks_problem_lines():
    text = "\n".join(f"l{n}" for n in range(1, 13))
    assert af.excerpt(text, [2, 11]) == "\n".join(
        ["   1 | l1", ">  2 | l2", "   3 | l3", "...", "  10 | l10", "> 11 | l11", "  12 | l12"]
    )


def test_app_form_templates_are_blank_then_the_examples():
    found = af.templates()
    assert list(found)[0] == "Blank" and {"summarize", "support-bot"} <= set(found)
    for text in found.values():
        doc, problems = af.parse(text)
        assert problems == [] and doc is not None and doc["version"] == 1


ORIGINS_DOC = "version: 1\nname: Shop bot  # the shop's\ntype: chat\noutput: {a: b}\n"


def test_app_form_set_origins_adds_replaces_and_drops_the_line():
    added = af.set_origins(ORIGINS_DOC, ["https://shop.example"])
    assert added == ORIGINS_DOC + 'origins: ["https://shop.example"]\n'
    two = af.set_origins(added, ["https://a.example", "http://127.0.0.1:9000"])
    assert "# the shop's" in two
    assert yaml.safe_load(two)["origins"] == ["https://a.example", "http://127.0.0.1:9000"]
    assert af.set_origins(two, []) == ORIGINS_DOC
    block = ORIGINS_DOC + "origins:\n  - https://x.example\n"
    # A block list spans lines: the document is written anew, with the new list.
    assert yaml.safe_load(af.set_origins(block, ["https://y.example"]))["origins"] == [
        "https://y.example"
    ]
    with pytest.raises(ValueError):
        af.set_origins("name: [unclosed", ["https://x.example"])


def test_app_form_dump_over_the_text_keeps_its_comments():
    text = af.templates()["support-bot"]
    doc, _ = af.parse(text)
    assert doc is not None
    doc = af.with_datasource(doc, "help-center", "manuals")
    del doc["description"]
    doc["steps"] = [doc["steps"][1], doc["steps"][0]]  # moved: each keeps its comments
    doc["steps"][0]["params"]["max_tokens"] = 50
    doc["ui"] = {"title": "Help", "welcome": "Hello.\nAsk away."}
    out = af.dump(doc, over=text)
    assert af.parse(out)[0] == doc
    for comment in (
        "# yaml-language-server: $schema=../app.schema.json",
        "version: 1                     # the app format version",
        "    model: default                          # a model alias from the settings",
        "    datasources: [manuals]                  # names or uuids of datasources",
        "    params: {temperature: 0, seed: 42, max_tokens: 50}",
        '  answer: "{{ answer.text }}"               # exactly {{ <llm step>.text }}',
    ):
        assert comment in out, comment
    assert "  welcome: |-\n    Hello.\n    Ask away.\n" in out  # no final newline: |-
    assert out.index("- id: answer") < out.index("- id: docs")
    # A text that does not parse is written anew from the document.
    assert af.dump({"name": "x"}, over="name: [unclosed") == "name: x\n"


def test_app_form_missing_datasources_and_replacing_one():
    doc = {
        "steps": [
            {"id": "a", "kind": "retrieve", "datasources": ["faq", "known", "faq"]},
            {"id": "b", "kind": "llm", "datasources": ["ignored"]},
            {"id": "c", "kind": "retrieve", "datasources": ["manuals", "known"]},
        ]
    }
    assert af.missing_datasources(doc, {"known"}) == ["faq", "manuals"]
    swapped = af.with_datasource(doc, "faq", "known")
    assert swapped["steps"][0]["datasources"] == ["known"]
    assert doc["steps"][0]["datasources"] == ["faq", "known", "faq"]  # a copy
    assert af.missing_datasources(swapped, {"known"}) == ["manuals"]
