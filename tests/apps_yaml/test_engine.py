"""The engine on the real local model: event order, step results, history, failures."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from appforge.core.settings import Settings
from apps_yaml.engine import AppRunner
from apps_yaml.events import RECORDED_TEXT_CHARS, Chunk, Failed, Outcome, RetrieveResult
from apps_yaml.runner import Dependencies, HistoryTurn
from apps_yaml.schema import AppDocument
from providers.registry import ProviderRegistry


@pytest.fixture
def deps(local_provider: Any, tmp_path: Path) -> Dependencies:
    registry = ProviderRegistry(Settings(home=tmp_path), providers={"local": local_provider})
    return Dependencies(models=registry)


def _app(**overrides: Any) -> AppDocument:
    doc: dict[str, Any] = {
        "name": "t",
        "input": {"topic": {"type": "string", "required": True}},
        "steps": [
            {
                "id": "first",
                "kind": "llm",
                "prompt": {"user": "One word about {{ input.topic }}."},
                "params": {"temperature": 0, "seed": 2, "max_tokens": 8},
            },
            {
                "id": "second",
                "kind": "llm",
                "prompt": {"system": "Be brief.", "user": "Repeat: {{ first.text }}"},
                "params": {"temperature": 0, "seed": 2, "max_tokens": 8},
            },
        ],
        "output": {
            "second": "{{ second.text }}",
            "both": "{{ first.text | length > 0 }}",
            "tokens": "{{ first.usage.completion_tokens + second.usage.completion_tokens }}",
        },
    }
    doc.update(overrides)
    return AppDocument.model_validate(doc)


def _run(app: AppDocument, deps: Dependencies, **kw: Any) -> tuple[list[Any], Outcome]:
    events = list(AppRunner(app).run(kw.pop("inputs", {"topic": "rain"}), deps, **kw))
    outcome = Outcome()
    for e in events:
        outcome.add(e)
    return events, outcome


def test_engine_events_in_order_and_results_flow(deps: Dependencies):
    events, outcome = _run(_app(), deps)
    order = [
        (type(e).__name__, getattr(e, "step", getattr(e, "key", None)))
        for e in events
        if not isinstance(e, Chunk)
    ]
    assert order == [
        ("StepStarted", "first"),
        ("StepFinished", "first"),
        ("StepStarted", "second"),
        ("StepFinished", "second"),
        ("Output", "both"),
        ("Output", "tokens"),
    ]
    chunks = [e for e in events if isinstance(e, Chunk)]
    assert chunks and {c.key for c in chunks} == {"second"}
    assert outcome.status == "succeeded"
    first, second = outcome.steps
    assert second["messages"][-1]["content"] == f"Repeat: {first['text']}"
    assert outcome.output["second"] == second["text"]
    assert outcome.output["both"] is True  # single expressions keep their type
    assert outcome.output["tokens"] == outcome.usage["completion_tokens"]
    assert outcome.usage["total_tokens"] == sum(s["usage"]["total_tokens"] for s in outcome.steps)
    assert outcome.transcript["first"]["user"] == "One word about rain."


def test_engine_history_is_limited_to_n_turns(deps: Dependencies):
    app = _app(
        type="chat",
        steps=[
            {
                "id": "first",
                "kind": "llm",
                "prompt": {"system": "S", "user": "{{ input.topic }}"},
                "history": 2,
                "params": {"max_tokens": 4, "temperature": 0},
            }
        ],
        output={"a": "{{ first.text }}"},
    )
    history = [HistoryTurn({"first": {"user": f"u{i}", "assistant": f"a{i}"}}) for i in range(5)]
    _, outcome = _run(app, deps, history=history, inputs={"topic": "now"})
    assert [m["content"] for m in outcome.steps[0]["messages"]] == [
        "S",
        "u3",
        "a3",
        "u4",
        "a4",
        "now",
    ]


def test_engine_template_failure_names_step(deps: Dependencies):
    app = _app(output={"x": "{{ second.text ~ (1 / 0) }}"})
    events, outcome = _run(app, deps)
    assert isinstance(events[-1], Failed)
    assert outcome.status == "failed"
    assert outcome.failure is not None and outcome.failure.code == "TEMPLATE_ERROR"
    bad_step = _app(
        steps=[{"id": "s", "kind": "llm", "prompt": {"user": "{{ input.nope.x }}"}}],
        output={"s": "{{ s.text }}"},
    )
    _, outcome = _run(bad_step, deps)
    assert outcome.failure is not None
    assert (outcome.failure.code, outcome.failure.step) == ("TEMPLATE_ERROR", "s")


def test_engine_cancel_stops_generation(deps: Dependencies):
    app = _app(
        steps=[
            {
                "id": "s",
                "kind": "llm",
                "prompt": {"user": "Tell a long story."},
                "params": {"max_tokens": 300, "temperature": 0},
            }
        ],
        output={"s": "{{ s.text }}"},
    )
    cancel = threading.Event()
    seen: list[Any] = []
    for event in AppRunner(app).run({"topic": "x"}, deps, cancel=cancel):
        seen.append(event)
        if isinstance(event, Chunk) and len(seen) > 4:
            cancel.set()
    outcome = Outcome()
    for e in seen:
        outcome.add(e)
    assert outcome.status == "cancelled"
    assert outcome.steps[0]["finish_reason"] == "cancelled"
    assert 0 < outcome.usage["completion_tokens"] < 300
    assert outcome.output["s"] == outcome.steps[0]["text"]


def test_engine_retrieve_without_store_fails_clearly(deps: Dependencies):
    app = _app(
        steps=[{"id": "docs", "kind": "retrieve", "datasources": ["kb"], "query": "x"}],
        output={"s": "{{ docs.sources }}"},
    )
    _, outcome = _run(app, deps)
    assert outcome.failure is not None
    assert outcome.failure.code == "DATASOURCE_NOT_FOUND"


def test_engine_unknown_model_fails_with_provider_code(deps: Dependencies):
    app = _app(
        steps=[{"id": "s", "kind": "llm", "model": "nowhere:x", "prompt": {"user": "hi"}}],
        output={"s": "{{ s.text }}"},
    )
    _, outcome = _run(app, deps)
    assert outcome.failure is not None
    assert outcome.failure.code == "MODEL_NOT_FOUND"
    assert outcome.failure.status_code == 422


def test_engine_retrieve_record_keeps_each_document_with_bounded_text():
    long_text = "word " * 1000
    doc = {"id": "e:3", "text": long_text, "score": 0.5, "metadata": {"name": "faq.md"}}
    record = RetrieveResult(documents=[doc], sources=["faq.md"], query="q").record()
    [kept] = record["documents"]
    assert (
        kept
        == {
            "id": "e:3",
            "source": "faq.md",  # no "source" key in this metadata: the entry's name
            "score": 0.5,
            "metadata": {"name": "faq.md"},
            "text": long_text[:RECORDED_TEXT_CHARS],
        }
    )
    assert (record["query"], record["count"]) == ("q", 1)
