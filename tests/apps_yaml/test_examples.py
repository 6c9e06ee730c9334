"""The example apps users copy: they load, and they validate against app.schema.json."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from apps_yaml.loader import load_file
from apps_yaml.schema import InlinePrompt, LlmStep, RetrieveStep
from apps_yaml.schema_export import app_json_schema
from apps_yaml.templates import streamed_step

EXAMPLES = Path(__file__).parents[2] / "apps_yaml" / "examples"
NAMES = ["support-bot", "summarize", "draft-and-polish"]


def test_examples_folder_holds_exactly_the_documented_examples() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_example_loads_without_references(name: str) -> None:
    doc = load_file(EXAMPLES / f"{name}.yaml", references=None)
    for step in doc.steps:
        if isinstance(step, LlmStep):
            assert step.model == "default"
            assert step.params.temperature == 0
            assert step.params.seed == 42
            assert step.params.max_tokens is not None and step.params.max_tokens <= 200


@pytest.mark.parametrize("name", NAMES)
def test_example_validates_against_the_json_schema(name: str) -> None:
    data = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(app_json_schema()).validate(data)


def test_example_support_bot_retrieves_then_answers_with_history() -> None:
    doc = load_file(EXAMPLES / "support-bot.yaml")
    assert doc.type == "chat"
    docs, answer = doc.steps
    assert isinstance(docs, RetrieveStep) and isinstance(answer, LlmStep)
    assert docs.datasources == ["help-center"]
    assert docs.where == {"md_product": "{{ input.product }}"}
    assert answer.history == 6
    assert docs.history == 1 and "session.history" in docs.query  # follow-ups
    assert set(doc.output) == {"answer", "sources", "citations"}
    assert streamed_step(doc.output["answer"]) == "answer"


def test_example_summarize_is_one_text_step() -> None:
    doc = load_file(EXAMPLES / "summarize.yaml")
    assert doc.type == "text"
    assert [s.kind for s in doc.steps] == ["llm"]


def test_example_draft_and_polish_chains_two_steps() -> None:
    doc = load_file(EXAMPLES / "draft-and-polish.yaml")
    draft, polish = doc.steps
    assert isinstance(draft, LlmStep) and isinstance(polish, LlmStep)
    assert isinstance(polish.prompt, InlinePrompt) and polish.prompt.messages
    assert "{{ draft.text }}" in polish.prompt.messages[-1].content
