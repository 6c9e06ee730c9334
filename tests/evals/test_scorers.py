"""Each scorer on a case built to pass and one built to fail; refused scorers."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from appforge.client import SCORER_TYPES, ScorerType
from appforge.core.settings import EvalSettings
from datasources.embedding import Embedder
from evals.errors import ScorerInvalidError
from evals.judge import read_score
from evals.scorers import SCORED, CaseRun, ScorerSpec, check_scorers, score_case


def _run(output: dict[str, Any], expected: dict[str, Any] | None = None, **kw: Any) -> CaseRun:
    values: dict[str, Any] = {"status": "succeeded", "latency_ms": 120.0, "tokens": 40, **kw}
    return CaseRun({"q": "x"}, expected or {}, output, list(output), **values)


def _no_embedding(texts: list[str]) -> Any:
    raise AssertionError("only similarity embeds")


# (scorer, run that passes, run that fails)
CASES: list[tuple[dict[str, Any], CaseRun, CaseRun]] = [
    (
        {"type": "equals"},
        _run({"answer": " Paris\n"}, {"answer": "Paris"}),
        _run({"answer": "Rome"}, {"answer": "Paris"}),
    ),
    (
        {"type": "equals", "output": "n", "value": 4},
        _run({"answer": "a", "n": 4}),
        _run({"answer": "a", "n": 5}),
    ),
    (
        {"type": "contains", "value": ["Paris", "France"]},
        _run({"answer": "Paris is in France."}),
        _run({"answer": "Paris is nice."}),
    ),
    (
        {"type": "regex", "value": r"^\d{4}-\d{2}-\d{2}$"},
        _run({"answer": "2026-11-30"}),
        _run({"answer": "30/11/2026"}),
    ),
    (
        {"type": "json_schema", "value": {"type": "object", "required": ["city"]}},
        _run({"answer": '{"city": "Paris"}'}),
        _run({"answer": '{"town": "Paris"}'}),
    ),
    (
        {"type": "number_close", "threshold": 0.01},
        _run({"answer": "It is about 3.141."}, {"answer": 3.14159}),
        _run({"answer": "3.2"}, {"answer": 3.14159}),
    ),
    (
        {"type": "cites", "value": "manual.pdf"},
        _run({"answer": "a", "sources": ["faq", "manual.pdf"]}),
        _run({"answer": "a", "sources": ["faq"]}),
    ),
    (
        {"type": "latency_ms", "threshold": 500},
        _run({"answer": "a"}, latency_ms=499.0),
        _run({"answer": "a"}, latency_ms=501.0),
    ),
    (
        {"type": "tokens", "threshold": 40},
        _run({"answer": "a"}, tokens=40),
        _run({"answer": "a"}, tokens=41),
    ),
]


@pytest.mark.parametrize(("spec", "good", "bad"), CASES, ids=[c[0]["type"] for c in CASES])
def test_scorer_passes_and_fails(spec: dict[str, Any], good: CaseRun, bad: CaseRun):
    scorer = ScorerSpec.model_validate(spec)
    check_scorers([scorer], EvalSettings())
    passed = score_case(scorer, good, _no_embedding)
    failed = score_case(scorer, bad, _no_embedding)
    assert (passed.passed, passed.score, passed.scorer) == (True, 1.0, spec["type"]), passed
    assert failed.passed is False and 0 <= failed.score < 1 and failed.reason, failed


def test_scorer_similarity_uses_minilm(embedder: Embedder):
    scorer = ScorerSpec(type="similarity", threshold=0.6)
    expected = {"answer": "The capital of France is Paris."}
    close = score_case(
        scorer, _run({"answer": "Paris is France's capital."}, expected), embedder.encode
    )
    far = score_case(
        scorer, _run({"answer": "Bananas are yellow fruit."}, expected), embedder.encode
    )
    assert close.passed and close.score > 0.6 > far.score and not far.passed
    assert "cosine similarity" in close.reason


def test_scorer_fails_every_check_of_a_failed_run():
    run = _run({}, {"answer": "Paris"}, status="failed", error={"code": "MODEL_ERROR"})
    for spec in ({"type": "equals"}, {"type": "tokens", "threshold": 100}):
        score = score_case(ScorerSpec.model_validate(spec), run, _no_embedding)
        assert not score.passed and "MODEL_ERROR" in score.reason


def test_scorer_without_reference_or_output_fails_with_a_reason():
    missing_ref = score_case(ScorerSpec(type="equals"), _run({"answer": "a"}), _no_embedding)
    assert not missing_ref.passed and "no reference" in missing_ref.reason
    missing_key = score_case(
        ScorerSpec(type="contains", output="nope", value="a"), _run({"answer": "a"}), _no_embedding
    )
    assert not missing_key.passed and "no output 'nope'" in missing_key.reason


@pytest.mark.parametrize(
    "specs",
    [
        [],
        [{"type": "regex"}],
        [{"type": "regex", "value": "(unclosed"}],
        [{"type": "regex", "value": "a" * 3000}],
        [{"type": "json_schema", "value": {"type": "no-such-type"}}],
        [{"type": "latency_ms"}],
        [{"type": "similarity", "threshold": 1.5}],
        [{"type": "equals"}, {"type": "equals"}],
    ],
)
def test_check_scorers_refuses_what_cannot_work(specs: list[dict[str, Any]]):
    with pytest.raises(ScorerInvalidError) as info:
        check_scorers([ScorerSpec.model_validate(s) for s in specs], EvalSettings())
    assert info.value.code == "SCORER_INVALID" and info.value.status_code == 422


@pytest.mark.parametrize(
    ("answer", "score"),
    [("0.8", 0.8), ("Score: 8/10", 0.8), ("80", 0.8), ("1", 1.0), ("none", None), ("250", None)],
)
def test_judge_reads_the_score_of_an_answer(answer: str, score: float | None):
    assert read_score(answer) == score


def test_scorer_types_are_the_ones_the_client_names():
    """One list: the server's scorer spec takes exactly the client's types (the
    builder offers those), so a new scorer cannot be missing from the client."""
    assert ScorerSpec.model_fields["type"].annotation is ScorerType
    assert SCORER_TYPES == get_args(ScorerType) and len(set(SCORER_TYPES)) == len(SCORER_TYPES)
    for kind in SCORER_TYPES:
        assert ScorerSpec.model_validate({"type": kind}).type == kind
    with pytest.raises(ValidationError):
        ScorerSpec.model_validate({"type": "bleu"})
    # ... and scores every one of them by its own rule, no other.
    assert SCORED == set(SCORER_TYPES)
