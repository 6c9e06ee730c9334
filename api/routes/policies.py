"""Evaluation policies: the ``require`` a gated promote or deploy of a prompt, or restore
of an app, uses when it gives none (``/api/v1/prompts/{id}/policy``,
``/api/apps/{uuid}/policy``). See :mod:`api.gating`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.access import AppReader, AppWriter, Reader, Writer
from api.audit import Action, Actor, record
from api.deps import DbSession, Who
from api.errors import NotFoundError
from api.gating import Requirement, Subject, check_requirement
from api.routes.apps import get_app_row
from api.state import ApiState, State
from appforge.core.db import utcnow
from evals.datasets import find_dataset
from evals.scorers import check_scorers
from evals.tables import EvaluationPolicy
from prompts import store

router = APIRouter(tags=["evaluations"])


class PolicyPublic(BaseModel):
    subject: str
    subject_id: str
    require: dict[str, Any]
    updated_at: datetime
    updated_by: str | None


def _public(row: EvaluationPolicy) -> PolicyPublic:
    return PolicyPublic(
        subject=row.subject,
        subject_id=row.subject_id,
        require=row.require,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _row(db: Session, subject: Subject, subject_id: str) -> EvaluationPolicy:
    row = db.get(EvaluationPolicy, (subject, subject_id))
    if row is None:
        raise NotFoundError(
            f"the {subject} '{subject_id}' has no evaluation policy",
            code="POLICY_NOT_FOUND",
            details={"subject": subject, "subject_id": subject_id},
        )
    return row


def _put(
    db: Session, state: ApiState, who: Actor, subject: Subject, subject_id: str, need: Requirement
) -> PolicyPublic:
    """Check the requirement can run (app, dataset, scorers), then store it."""
    check_requirement(need, subject)
    find_dataset(db, need.dataset)
    check_scorers(need.scorers, state.settings.evals)
    row = db.get(EvaluationPolicy, (subject, subject_id))
    if row is None:
        row = EvaluationPolicy(subject=subject, subject_id=subject_id)
        # The foreign key that deletes the policy with its prompt or app.
        if subject == "prompt":
            row.prompt_id = subject_id
        else:
            row.app_uuid = subject_id
        db.add(row)
    row.require = need.model_dump(mode="json", exclude_none=True)
    row.updated_by = who.name
    row.updated_at = utcnow()
    action: Action = "prompt.policy_set" if subject == "prompt" else "app.policy_set"
    record(db, who, action, subject_id, {"dataset": need.dataset})
    db.commit()
    return _public(row)


def _delete(db: Session, who: Actor, subject: Subject, subject_id: str) -> Response:
    db.delete(_row(db, subject, subject_id))
    action: Action = "prompt.policy_deleted" if subject == "prompt" else "app.policy_deleted"
    record(db, who, action, subject_id)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- a prompt's policy --------------------------------------------------------------------


@router.put("/api/v1/prompts/{prompt_id}/policy", response_model=PolicyPublic)
def set_prompt_policy_route(
    prompt_id: str, body: Requirement, db: DbSession, _: Writer, who: Who, state: State
) -> PolicyPublic:
    """Store the requirement a promote or deploy of this prompt gives none uses."""
    return _put(db, state, who, "prompt", store.get_prompt(db, prompt_id).id, body)


@router.get("/api/v1/prompts/{prompt_id}/policy", response_model=PolicyPublic)
def get_prompt_policy_route(prompt_id: str, db: DbSession, _: Reader) -> PolicyPublic:
    """The prompt's stored evaluation policy (404 ``POLICY_NOT_FOUND``)."""
    return _public(_row(db, "prompt", store.get_prompt(db, prompt_id).id))


@router.delete("/api/v1/prompts/{prompt_id}/policy", status_code=status.HTTP_204_NO_CONTENT)
def delete_prompt_policy_route(prompt_id: str, db: DbSession, _: Writer, who: Who) -> Response:
    """Drop the prompt's evaluation policy: its moves are no longer gated by default."""
    return _delete(db, who, "prompt", store.get_prompt(db, prompt_id).id)


# --- an app's policy ----------------------------------------------------------------------


@router.put("/api/apps/{app_uuid}/policy", response_model=PolicyPublic)
def set_app_policy_route(
    app_uuid: str, body: Requirement, db: DbSession, _: AppWriter, who: Who, state: State
) -> PolicyPublic:
    """Store the requirement a restore of this app gives none uses (``app`` defaults to
    this app)."""
    return _put(db, state, who, "app", get_app_row(db, app_uuid).uuid, body)


@router.get("/api/apps/{app_uuid}/policy", response_model=PolicyPublic)
def get_app_policy_route(app_uuid: str, db: DbSession, _: AppReader) -> PolicyPublic:
    """The app's stored evaluation policy (404 ``POLICY_NOT_FOUND``)."""
    return _public(_row(db, "app", get_app_row(db, app_uuid).uuid))


@router.delete("/api/apps/{app_uuid}/policy", status_code=status.HTTP_204_NO_CONTENT)
def delete_app_policy_route(app_uuid: str, db: DbSession, _: AppWriter, who: Who) -> Response:
    """Drop the app's evaluation policy: its restores are no longer gated by default."""
    return _delete(db, who, "app", get_app_row(db, app_uuid).uuid)
