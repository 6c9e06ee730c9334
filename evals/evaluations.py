"""Starting, cancelling and reading evaluations, on one database session.

Starting one checks everything a case would otherwise fail on alike (the
dataset has cases, the app and its version exist, pinned prompts resolve, the
scorers can work), then copies the dataset's cases, at its current revision,
into the evaluation's queue (``evaluation_cases``) in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from appforge.core.db import utcnow
from appforge.core.settings import EvalSettings
from apps_yaml.schema import LlmParams
from evals.claims import OPEN
from evals.datasets import find_dataset, list_cases
from evals.errors import EvaluationConflictError, EvaluationNotFoundError, ScorerInvalidError
from evals.queue import cancel_cases
from evals.scorers import ScorerSpec, check_scorers
from evals.tables import Evaluation, EvaluationCase
from runs import records
from runs.overrides import version_document
from runs.prompt_refs import prompt_exists
from runs.service import Caller

STATUSES = ("queued", "running", "done", "failed", "cancelled")


@dataclass(frozen=True)
class NewEvaluation:
    """What ``POST /api/evaluations`` asks for."""

    dataset: str
    app: str
    scorers: list[ScorerSpec]
    app_version: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int = 4


def _invalid_override(message: str, **details: Any) -> ScorerInvalidError:
    return ScorerInvalidError(message, code="OVERRIDE_INVALID", details=details)


def _check_overrides(db: Session, overrides: Mapping[str, Any]) -> None:
    for ref, pin in (overrides.get("prompts") or {}).items():
        label, version = pin.get("label"), pin.get("version")
        if not prompt_exists(db, ref, label or "production", version):
            at = f"version {version}" if version else f"label '{label}'"
            raise _invalid_override(
                f"overrides.prompts: no prompt '{ref}' at {at}", prompt=ref, pin=dict(pin)
            )
    params = overrides.get("params")
    if params:
        try:
            LlmParams.model_validate(params)
        except ValueError as exc:
            raise _invalid_override(f"overrides.params: {exc}") from None


def _output_keys(db: Session, app_uuid: str, version: int | None) -> list[str]:
    conn = db.connection()
    app = records.load_app(conn, app_uuid, records.DocumentCache(1))
    doc = app.document
    if version is not None and version != app.version:
        doc = version_document(conn, app, version, records.DocumentCache(1))
    return list(doc.output)


def start_evaluation(
    db: Session, new: NewEvaluation, caller: Caller, limits: EvalSettings
) -> Evaluation:
    """Check the request and queue its cases (the caller commits)."""
    dataset = find_dataset(db, new.dataset)
    cases = list_cases(db, dataset)
    if not cases:
        raise EvaluationConflictError(
            f"dataset '{dataset.name}' has no cases", code="DATASET_EMPTY"
        )
    app_uuid = records.find_app_uuid(db.connection(), new.app)
    output_keys = _output_keys(db, app_uuid, new.app_version)
    _check_overrides(db, new.overrides)
    check_scorers(new.scorers, limits)
    for spec in new.scorers:
        if spec.type == "judge" and not prompt_exists(
            db, spec.prompt or "", spec.label or "production"
        ):
            raise ScorerInvalidError(
                f"scorer '{spec.key}': no prompt '{spec.prompt}' at label "
                f"'{spec.label or 'production'}'",
                details={"scorer": spec.key},
            )
    now = utcnow()
    row = Evaluation(
        id=str(uuid.uuid4()),
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        dataset_revision=dataset.revision,
        app_uuid=app_uuid,
        app_version=new.app_version,
        overrides=dict(new.overrides),
        scorers=[s.model_dump(exclude_none=True) for s in new.scorers],
        output_keys=output_keys,
        concurrency=new.concurrency,
        status="queued",
        token_id=caller.token_id,
        token_name=caller.name,
        token_role=caller.role,
        created_at=now,
    )
    db.add(row)
    db.flush()
    db.add_all(
        EvaluationCase(
            evaluation_id=row.id,
            case_id=case.id,
            n=case.n,
            input=case.input,
            expected=case.expected,
            meta=case.meta,
            status="pending",
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        for case in cases
    )
    db.flush()
    return row


def get_evaluation(db: Session, evaluation_id: str) -> Evaluation:
    row = db.get(Evaluation, evaluation_id) if len(evaluation_id) <= 36 else None
    if row is None:
        raise EvaluationNotFoundError(
            f"no evaluation '{evaluation_id[:100]}'", details={"evaluation": evaluation_id[:100]}
        )
    return row


def cancel_evaluation(db: Session, row: Evaluation) -> Evaluation:
    """Stop an evaluation: its open cases are cancelled, what is done stays
    (``EVALUATION_FINISHED`` if it had ended)."""
    ended = db.execute(
        update(Evaluation)
        .where(Evaluation.id == row.id, Evaluation.status.in_(("queued", "running")))
        .values(status="cancelled", finished_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    if not ended:
        db.refresh(row)
        raise EvaluationConflictError(
            f"evaluation '{row.id}' has ended ({row.status})", details={"status": row.status}
        )
    cancel_cases(db, row.id, None)
    db.flush()
    db.refresh(row)
    return row


def case_rows(db: Session, evaluation_id: str) -> list[EvaluationCase]:
    """An evaluation's cases in the dataset's order."""
    return list(
        db.scalars(
            select(EvaluationCase)
            .where(EvaluationCase.evaluation_id == evaluation_id)
            .order_by(EvaluationCase.n, EvaluationCase.id)
        )
    )


def counts(db: Session, evaluation_id: str) -> dict[str, int]:
    """Cases per status."""
    rows = db.execute(
        select(EvaluationCase.status, func.count())
        .where(EvaluationCase.evaluation_id == evaluation_id)
        .group_by(EvaluationCase.status)
    ).all()
    found = {status: int(n) for status, n in rows}
    return {s: found.get(s, 0) for s in (*OPEN, "done", "cancelled")}
