"""Evaluations: run an app over a dataset's cases with scorers, watch, compare, cancel.

``POST /api/evaluations`` checks the request, copies the dataset's cases (at its
current revision) into the evaluation's queue and answers 202 at once; the
evaluation workers (``evals.queue``) run the cases through the run service, a
few at a time (``concurrency``), and a restarted server finishes what a killed
one left, with exactly one result per case.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.access import Reader, Writer
from api.audit import Actor, record
from api.deps import DbSession, Who
from api.errors import ApiError
from api.state import State
from evals import evaluations, summary
from evals.evaluations import NewEvaluation
from evals.scorers import ScorerSpec
from evals.tables import Evaluation, EvaluationCase
from runs.service import Caller

router = APIRouter(prefix="/api/evaluations", tags=["evaluations"])

STATUS = "^(queued|running|done|failed|cancelled)$"


class PromptPinBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(default=None, pattern=r"^[a-z0-9_.-]{1,36}$")
    version: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one(self) -> PromptPinBody:
        if (self.label is None) == (self.version is None):
            raise ValueError("give a label or a version")
        return self


class Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: dict[Annotated[str, Field(min_length=1, max_length=200)], PromptPinBody] = Field(
        default_factory=dict,
        max_length=50,
        description="Managed prompts (by name or id) to run at another label or version.",
    )
    model: str | None = Field(
        default=None, min_length=1, max_length=200, description="The model of every llm step."
    )
    params: dict[str, Any] | None = Field(
        default=None, description="Parameters merged into every llm step's (temperature, ...)."
    )


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=200, description="The dataset's id or name.")
    app: str = Field(min_length=1, max_length=200, description="The app's uuid or name.")
    app_version: int | None = Field(default=None, ge=1, description="Run this app version.")
    overrides: Overrides = Field(default_factory=Overrides)
    scorers: list[ScorerSpec] = Field(min_length=1, max_length=200)
    concurrency: int = Field(default=4, ge=1, description="Cases run at once.")


class EvaluationPublic(BaseModel):
    id: str
    status: str = Field(description="queued, running, done, failed or cancelled")
    dataset_id: str
    dataset_name: str
    dataset_revision: int = Field(description="The revision of the dataset it ran on.")
    app_uuid: str
    app_version: int | None
    overrides: dict[str, Any]
    scorers: list[dict[str, Any]]
    concurrency: int
    cases_total: int
    cases_done: int
    summary: dict[str, Any] = Field(
        description="pass_rate, cases_passed, mean score per scorer, latency_ms p50/p95, tokens"
    )
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class CaseResult(BaseModel):
    case_id: str
    n: int
    status: str = Field(description="pending, running, done or cancelled")
    input: dict[str, Any]
    expected: dict[str, Any]
    metadata: dict[str, Any]
    run_id: str | None
    output: dict[str, Any] | None
    scores: list[dict[str, Any]] = Field(description="Each {scorer, score, passed, reason}.")
    passed: bool | None = Field(description="Whether every scorer passed.")
    latency_ms: float | None
    tokens: int | None
    error: dict[str, Any] | None


class Comparison(BaseModel):
    a: EvaluationPublic
    b: EvaluationPublic
    regressed: list[str] = Field(description="Case ids that passed in a and fail in b.")
    improved: list[str] = Field(description="Case ids that failed in a and pass in b.")
    aggregate: dict[str, Any] = Field(description="a, b and delta (b - a) of each summary figure.")
    cases: list[dict[str, Any]] = Field(
        description="Regressed first, then improved, then the rest."
    )


def _public(
    db: Session, row: Evaluation, rows: list[EvaluationCase] | None = None
) -> EvaluationPublic:
    rows = evaluations.case_rows(db, row.id) if rows is None else rows
    return EvaluationPublic(
        id=row.id,
        status=row.status,
        dataset_id=row.dataset_id,
        dataset_name=row.dataset_name,
        dataset_revision=row.dataset_revision,
        app_uuid=row.app_uuid,
        app_version=row.app_version,
        overrides=row.overrides,
        scorers=row.scorers,
        concurrency=row.concurrency,
        cases_total=len(rows),
        cases_done=sum(1 for r in rows if r.status == "done"),
        summary=summary.summarize(rows),
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _audit(db: Session, who: Actor, action: Any, row: Evaluation) -> None:
    details = {
        "dataset": row.dataset_name,
        "dataset_revision": row.dataset_revision,
        "app_uuid": row.app_uuid,
        "app_version": row.app_version,
    }
    record(db, who, action, row.id, details)


@router.post("", response_model=EvaluationPublic, status_code=status.HTTP_202_ACCEPTED)
def start_evaluation_route(
    body: EvaluationCreate, db: DbSession, token: Writer, who: Who, state: State
) -> EvaluationPublic:
    """Start an evaluation of an app (at ``app_version``, with ``overrides``) over a
    dataset's cases, scored by ``scorers``; answers 202 with status ``queued``."""
    limit = state.settings.evals.max_concurrency
    if body.concurrency > limit:
        raise ApiError(
            f"concurrency is at most {limit} (APPFORGE_EVALS__MAX_CONCURRENCY)",
            code="VALIDATION_ERROR",
            status_code=422,
            details={"limit": limit},
        )
    new = NewEvaluation(
        dataset=body.dataset,
        app=body.app,
        scorers=body.scorers,
        app_version=body.app_version,
        overrides=body.overrides.model_dump(exclude_none=True, exclude_defaults=True),
        concurrency=body.concurrency,
    )
    caller = Caller(token.id, token.name, token.role)
    row = evaluations.start_evaluation(db, new, caller, state.settings.evals)
    _audit(db, who, "evaluation.started", row)
    db.commit()
    state.evaluations.wake()
    return _public(db, row)


@router.get("", response_model=list[EvaluationPublic])
def list_evaluations_route(
    db: DbSession,
    _: Reader,
    response: Response,
    dataset: Annotated[str | None, Query(max_length=200)] = None,
    app: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(pattern=STATUS)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[EvaluationPublic]:
    """Evaluations, newest first; filters: ``dataset`` (id or name), ``app`` (uuid),
    ``status``."""
    query = select(Evaluation)
    if dataset:
        query = query.where(
            (Evaluation.dataset_id == dataset) | (Evaluation.dataset_name == dataset)
        )
    if app:
        query = query.where(Evaluation.app_uuid == app)
    if status:
        query = query.where(Evaluation.status == status)
    rows = list(
        db.scalars(query.order_by(Evaluation.created_at.desc()).limit(limit).offset(offset))
    )
    return [_public(db, r) for r in rows]


@router.get("/compare", response_model=Comparison)
def compare_evaluations_route(
    db: DbSession,
    _: Reader,
    a: Annotated[str, Query(min_length=1, max_length=36)],
    b: Annotated[str, Query(min_length=1, max_length=36)],
) -> Comparison:
    """Two evaluations side by side, case by case (matched by case id): both outputs and
    scores, what regressed (passed in ``a``, fails in ``b``), what improved, and the
    aggregate deltas (``b - a``)."""
    first, second = evaluations.get_evaluation(db, a), evaluations.get_evaluation(db, b)
    a_rows, b_rows = evaluations.case_rows(db, first.id), evaluations.case_rows(db, second.id)
    compared = summary.compare(a_rows, b_rows)
    return Comparison(a=_public(db, first, a_rows), b=_public(db, second, b_rows), **compared)


@router.get("/{evaluation_id}", response_model=EvaluationPublic)
def get_evaluation_route(evaluation_id: str, db: DbSession, _: Reader) -> EvaluationPublic:
    """An evaluation's status, ``cases_done``/``cases_total``, the dataset revision it runs
    on, and its ``summary`` so far."""
    return _public(db, evaluations.get_evaluation(db, evaluation_id))


@router.get("/{evaluation_id}/results", response_model=list[CaseResult])
def evaluation_results_route(
    evaluation_id: str,
    db: DbSession,
    _: Reader,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Per case, in the dataset's order: its run id, output, each scorer's
    ``{scorer, score, passed, reason}`` and ``passed`` (every scorer passed)."""
    row = evaluations.get_evaluation(db, evaluation_id)
    rows = evaluations.case_rows(db, row.id)
    response.headers["X-Total-Count"] = str(len(rows))
    return [summary.result(r) for r in rows[offset : offset + limit]]


@router.post("/{evaluation_id}/cancel", response_model=EvaluationPublic)
def cancel_evaluation_route(
    evaluation_id: str, db: DbSession, _: Writer, who: Who, state: State
) -> EvaluationPublic:
    """Stop an evaluation: cases not done are cancelled, results so far stay;
    409 ``EVALUATION_FINISHED`` if it had ended."""
    row = evaluations.cancel_evaluation(db, evaluations.get_evaluation(db, evaluation_id))
    _audit(db, who, "evaluation.cancelled", row)
    db.commit()
    state.evaluations.stop_cases(row.id)
    return _public(db, row)
