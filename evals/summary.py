"""What an evaluation's case results add up to, and how two evaluations differ.

The summary of an evaluation (so far, while it runs) is computed from its
finished cases: ``pass_rate`` (cases whose every scorer passed, over finished
cases), the mean score of each scorer, the runs' latency (p50 and p95,
nearest rank) and tokens (total and mean per case).

A comparison matches the cases of two evaluations by case id: a case that
passed in ``a`` and fails in ``b`` regressed, the reverse improved; the
cases come regressed first, then improved, then the rest in the dataset's order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from evals.tables import EvaluationCase


class CaseOutcome(Protocol):
    """A case's result as summaries and comparisons read it: a stored
    ``evals.tables.EvaluationCase``, or one of a local evaluation (``evals.local``)."""

    case_id: str
    status: str
    input: dict[str, Any]
    expected: dict[str, Any]
    run_id: str | None
    output: dict[str, Any] | None
    scores: list[dict[str, Any]] | None
    passed: bool | None
    latency_ms: float | None
    tokens: int | None


def _rank(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(share * len(ordered)) - 1)], 3)


def summarize(rows: Sequence[CaseOutcome]) -> dict[str, Any]:
    """The summary of these case results (only ``done`` ones count)."""
    done = [r for r in rows if r.status == "done"]
    passed = sum(1 for r in done if r.passed)
    by_scorer: dict[str, list[float]] = {}
    for row in done:
        for score in row.scores or []:
            by_scorer.setdefault(score["scorer"], []).append(float(score["score"]))
    latencies = [r.latency_ms for r in done if r.latency_ms is not None]
    tokens = [r.tokens or 0 for r in done]
    return {
        "cases_passed": passed,
        "pass_rate": round(passed / len(done), 6) if done else None,
        "scores": {k: round(sum(v) / len(v), 6) for k, v in by_scorer.items()},
        "latency_ms": {"p50": _rank(latencies, 0.5), "p95": _rank(latencies, 0.95)},
        "tokens": {
            "total": sum(tokens),
            "mean": round(sum(tokens) / len(tokens), 3) if tokens else None,
        },
    }


def result(row: EvaluationCase) -> dict[str, Any]:
    """One case's result as the API shows it."""
    return {
        "case_id": row.case_id,
        "n": row.n,
        "status": row.status,
        "input": row.input,
        "expected": row.expected,
        "metadata": row.meta,
        "run_id": row.run_id,
        "output": row.output,
        "scores": row.scores or [],
        "passed": row.passed,
        "latency_ms": row.latency_ms,
        "tokens": row.tokens,
        "error": row.error,
    }


def _delta(a: float | None, b: float | None) -> dict[str, float | None]:
    diff = None if a is None or b is None else round(b - a, 6)
    return {"a": a, "b": b, "delta": diff}


def _side(row: CaseOutcome | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "status": row.status,
        "run_id": row.run_id,
        "output": row.output,
        "scores": row.scores or [],
        "passed": row.passed,
        "latency_ms": row.latency_ms,
        "tokens": row.tokens,
    }


def _change(a: CaseOutcome | None, b: CaseOutcome | None) -> str:
    if a is None or b is None or a.status != "done" or b.status != "done":
        return "missing"
    if a.passed and not b.passed:
        return "regressed"
    if b.passed and not a.passed:
        return "improved"
    return "same"


def aggregate(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The differences of two summaries (``b - a``)."""
    names = list(dict.fromkeys([*a["scores"], *b["scores"]]))
    return {
        "pass_rate": _delta(a["pass_rate"], b["pass_rate"]),
        "scores": {n: _delta(a["scores"].get(n), b["scores"].get(n)) for n in names},
        "latency_ms": {p: _delta(a["latency_ms"][p], b["latency_ms"][p]) for p in ("p50", "p95")},
        "tokens": _delta(a["tokens"]["total"], b["tokens"]["total"]),
    }


def compare(a_rows: Sequence[CaseOutcome], b_rows: Sequence[CaseOutcome]) -> dict[str, Any]:
    """Case by case (matched by case id) and in aggregate: what changed from ``a`` to ``b``."""
    a_by = {r.case_id: r for r in a_rows}
    b_by = {r.case_id: r for r in b_rows}
    order = list(dict.fromkeys([*(r.case_id for r in a_rows), *(r.case_id for r in b_rows)]))
    cases = []
    for case_id in order:
        a, b = a_by.get(case_id), b_by.get(case_id)
        either = a or b
        assert either is not None
        cases.append(
            {
                "case_id": case_id,
                "input": either.input,
                "expected": either.expected,
                "change": _change(a, b),
                "a": _side(a),
                "b": _side(b),
            }
        )
    rank = {"regressed": 0, "improved": 1}
    cases.sort(key=lambda c: rank.get(str(c["change"]), 2))
    return {
        "regressed": [c["case_id"] for c in cases if c["change"] == "regressed"],
        "improved": [c["case_id"] for c in cases if c["change"] == "improved"],
        "aggregate": aggregate(summarize(a_rows), summarize(b_rows)),
        "cases": cases,
    }
