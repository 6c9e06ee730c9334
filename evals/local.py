"""An evaluation of an app file over a case file, here, storing nothing (``appforge eval``).

Each case runs through this process's run service (``RunService.run_document``,
as ``appforge run`` does), one after the other, and is scored by the same
scorers as a stored evaluation; the result has the shape of the API's
(``summary``, and per case ``case_id``, ``output``, ``scores``, ``passed``).
A case's id is its place in the file (``case-1``, ...), so two runs of one file
compare case by case.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from apps_yaml.errors import InputInvalidError
from apps_yaml.events import Outcome
from apps_yaml.schema import AppDocument
from evals.casefiles import CaseData
from evals.judge import Judge
from evals.scorers import CaseRun, ScorerSpec, score_case
from evals.summary import summarize
from providers.base import Cancel
from runs.service import RunService


@dataclass
class LocalCase:
    """One case's result (the fields of ``evals.summary.CaseOutcome``)."""

    case_id: str
    status: str
    input: dict[str, Any]
    expected: dict[str, Any]
    output: dict[str, Any] | None = None
    scores: list[dict[str, Any]] | None = None
    passed: bool | None = None
    latency_ms: float | None = None
    tokens: int | None = None
    error: dict[str, Any] | None = None
    run_id: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> LocalCase:
        """A case read back from an earlier result (``--compare``)."""
        values: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
        return cls(**values)


@dataclass
class LocalEvaluation:
    """The cases' results, as ``appforge eval`` prints and writes them; ``evaluation``
    names the stored evaluation they come from (``--server``), None for a local one."""

    cases: list[LocalCase] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None

    @property
    def summary(self) -> dict[str, Any]:
        return summarize(self.cases)

    def as_json(self) -> dict[str, Any]:
        done: dict[str, Any] = {"summary": self.summary, "results": [asdict(c) for c in self.cases]}
        if self.evaluation is not None:
            done["evaluation"] = self.evaluation
        return done


def _outcome(runs: RunService, doc: AppDocument, given: dict[str, Any]) -> tuple[Outcome, float]:
    started = time.perf_counter()
    outcome = Outcome()
    for event in runs.run_document(doc, given, Cancel()):
        outcome.add(event)
    return outcome, (time.perf_counter() - started) * 1000


def evaluate(
    runs: RunService, doc: AppDocument, cases: Sequence[CaseData], scorers: Sequence[ScorerSpec]
) -> LocalEvaluation:
    """Run and score every case of ``cases`` with the app ``doc``."""
    services = runs.services
    judge = Judge(services.db, services.models)

    def embed(texts: list[str]) -> Any:
        return services.datasources.embedder.encode(texts)

    done = LocalEvaluation()
    for n, case in enumerate(cases, start=1):
        try:
            outcome, latency = _outcome(runs, doc, case.input)
            failure = outcome.failure
            error = None if failure is None else {"code": failure.code, "message": failure.message}
            tokens = int(outcome.usage.get("total_tokens", 0))
            status, output = outcome.status, outcome.output
        except InputInvalidError as exc:
            error, latency, tokens = {"code": exc.code, "message": exc.message}, 0.0, 0
            status, output = "failed", {}
        seen = CaseRun(
            case.input, case.expected, output, list(doc.output), status, error, latency, tokens
        )
        scores = [score_case(s, seen, embed, judge) for s in scorers]
        done.cases.append(
            LocalCase(
                case_id=f"case-{n}",
                status="done",
                input=case.input,
                expected=case.expected,
                output=output,
                scores=[s.as_json() for s in scores],
                passed=all(s.passed for s in scores),
                latency_ms=round(latency, 3),
                tokens=tokens,
                error=error,
            )
        )
    return done
