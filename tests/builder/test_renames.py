"""References follow a rename made in the form (``builder.renames``)."""

from __future__ import annotations

import copy
from typing import Any

from builder import renames

DOC: dict[str, Any] = {
    "name": "Support",
    "input": {"question": {"type": "string"}, "tone": {"type": "string"}},
    "steps": [
        {
            "id": "docs",
            "kind": "retrieve",
            "datasources": ["faq"],
            "query": "{{ input.question }} {{ session.history|length }}",
            "where": {"md_lang": "{{ input['tone'] }}"},
        },
        {
            "id": "answer",
            "kind": "llm",
            "prompt": {
                "system": "Answer the input.question below. {# input.question #}",
                "user": (
                    "{% for d in docs.documents %}{{ d.text }}\n{% endfor %}"
                    'Q: {{ input.question|trim }} ({{ input["question"] }})\n'
                    "{{- input.questions }} {{ other.input.question }}\n"
                ),
            },
        },
    ],
    "output": {"answer": "{{ answer.text }}", "sources": "{{ docs.sources|tojson }}"},
    "openai": {"input": "question", "output": "answer"},
}


def test_a_renamed_input_moves_its_template_references_and_openai_input():
    new = copy.deepcopy(DOC)
    new["input"] = {"query": DOC["input"]["question"], "tone": DOC["input"]["tone"]}
    said = renames.follow(DOC, new)
    assert said == [
        "Renamed input 'question' to 'query' in 3 template references and openai.input."
    ]
    assert new["steps"][0]["query"] == "{{ input.query }} {{ session.history|length }}"
    user = new["steps"][1]["prompt"]["user"]
    assert 'Q: {{ input.query|trim }} ({{ input["query"] }})\n' in user
    # Another name, an attribute of something else, prose and comments stay as written.
    assert "{{- input.questions }} {{ other.input.question }}\n" in user
    assert new["steps"][1]["prompt"]["system"] == DOC["steps"][1]["prompt"]["system"]
    assert new["openai"] == {"input": "query", "output": "answer"}
    assert new["steps"][0]["where"] == DOC["steps"][0]["where"]  # tone: not renamed


def test_a_renamed_step_moves_the_later_reads_of_its_result():
    new = copy.deepcopy(DOC)
    new["steps"][0]["id"] = "found"
    said = renames.follow(DOC, new)
    assert said == ["Renamed step 'docs' to 'found' in 2 template references."]
    assert new["steps"][1]["prompt"]["user"].startswith("{% for d in found.documents %}")
    assert new["output"]["sources"] == "{{ found.sources|tojson }}"
    assert new["openai"] == DOC["openai"]


def test_a_step_rename_leaves_attributes_filters_and_tests_of_that_name():
    doc = {
        "steps": [
            {"id": "upper", "kind": "llm", "prompt": {"user": "x"}},
            {"id": "b", "kind": "llm", "prompt": {"user": "{{ upper.text|upper }} {{ a.upper }}"}},
        ],
        "output": {"o": "{{ upper is defined }} {{ x is upper }}"},
    }
    new = copy.deepcopy(doc)
    new["steps"][0]["id"] = "first"
    renames.follow(doc, new)
    assert new["steps"][1]["prompt"]["user"] == "{{ first.text|upper }} {{ a.upper }}"
    assert new["output"]["o"] == "{{ first is defined }} {{ x is upper }}"


def test_a_renamed_output_key_moves_openai_output():
    new = copy.deepcopy(DOC)
    new["output"] = {"reply": DOC["output"]["answer"], "sources": DOC["output"]["sources"]}
    assert renames.follow(DOC, new) == ["Renamed output 'answer' to 'reply' in openai.output."]
    assert new["openai"] == {"input": "question", "output": "reply"}


def test_nothing_follows_what_is_not_one_rename_in_place():
    # A new name that was taken (two rows now share it), a removed row, an added row,
    # two names changed at once, a template that does not parse: nothing is rewritten.
    cases = []
    taken = copy.deepcopy(DOC)
    taken["input"] = {"tone": {"type": "string"}}
    cases.append(taken)
    added = copy.deepcopy(DOC)
    added["input"]["extra"] = {"type": "string"}
    cases.append(added)
    both = copy.deepcopy(DOC)
    both["input"] = {"q": {}, "t": {}}
    cases.append(both)
    for new in cases:
        before = copy.deepcopy(new)
        assert renames.follow(DOC, new) == []
        assert new == before
    broken = copy.deepcopy(DOC)
    broken["steps"][0]["query"] = "{{ input.question "
    new = copy.deepcopy(broken)
    new["input"] = {"query": {}, "tone": {}}
    renames.follow(broken, new)
    assert new["steps"][0]["query"] == "{{ input.question "
    assert new["steps"][1]["prompt"]["user"].count("input.query") == 1


def test_odd_documents_do_not_break_it():
    for doc in ({}, {"steps": "x", "input": [], "output": None}, {"steps": [1, None]}):
        new = copy.deepcopy(doc)
        assert renames.follow(doc, new) == []
