"""What the server answers about datasets and evaluations, as typed results.

Each model mirrors a ``*Public`` answer of ``api/routes/datasets.py`` and
``api/routes/evaluations.py``; cases' input, expected and metadata, outputs and
scores stay JSON mappings. ``ScorerType`` and ``SCORER_TYPES`` name the scorers an
evaluation takes; ``Scorer`` is one scorer of a request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Required, TypedDict

from appforge.client.models import Result

# The scorer types an evaluation takes (the server's own list), for forms and callers.
from appforge.core.scorer_types import SCORER_TYPES as SCORER_TYPES
from appforge.core.scorer_types import ScorerType as ScorerType


class Scorer(TypedDict, total=False):
    """One scorer of an evaluation as ``start_evaluation`` sends it (the server's
    ``evals.scorers.ScorerSpec``; *Evaluations* in the README says what each field
    means to each type). A type checker refuses a ``type`` that is not a ScorerType."""

    type: Required[ScorerType]
    name: str
    output: str
    value: Any
    threshold: float
    prompt: str  # judge
    label: str  # judge
    model: str  # judge


class DatasetInfo(Result):
    id: str
    name: str
    description: str = ""
    revision: int
    case_count: int
    created_at: datetime
    updated_at: datetime


class CaseInfo(Result):
    id: str
    dataset_id: str
    input: dict[str, Any]
    expected: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class CasesAdded(Result):
    """Cases added to a dataset: their ids and the dataset's new revision."""

    dataset_id: str
    revision: int
    ids: list[str]


class EvaluationInfo(Result):
    """An evaluation: its status, progress and summary so far."""

    id: str
    status: str
    dataset_id: str
    dataset_name: str
    dataset_revision: int
    app_uuid: str
    app_version: int | None = None
    overrides: dict[str, Any]
    scorers: list[dict[str, Any]]
    concurrency: int
    cases_total: int
    cases_done: int
    summary: dict[str, Any]
    error: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def ended(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


class CaseResult(Result):
    """One case of an evaluation: its run, output and scores."""

    case_id: str
    n: int
    status: str
    input: dict[str, Any]
    expected: dict[str, Any]
    metadata: dict[str, Any]
    run_id: str | None = None
    output: dict[str, Any] | None = None
    scores: list[dict[str, Any]]
    passed: bool | None = None
    latency_ms: float | None = None
    tokens: int | None = None
    error: dict[str, Any] | None = None


class EvaluationComparison(Result):
    """Two evaluations side by side: regressed and improved case ids, aggregate deltas,
    and each case (regressed first)."""

    a: EvaluationInfo
    b: EvaluationInfo
    regressed: list[str]
    improved: list[str]
    aggregate: dict[str, Any]
    cases: list[dict[str, Any]]


class EvaluationPolicy(Result):
    """The requirement stored on a prompt or app (``subject``): what a gated promote,
    deploy or restore that gives none must pass."""

    subject: str
    subject_id: str
    require: dict[str, Any]
    updated_at: datetime
    updated_by: str | None = None
