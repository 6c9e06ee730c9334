"""Gated changes over the API: the one gate that promote, deploy, bulk deploy and app
restore share, and the evaluation policy stored on a prompt or app.

A change is gated by its body's ``require`` or, when it gives none, by the policy
stored on its subject (``PUT .../policy``); with neither it is not gated. The
gate runs the evaluation with the candidate (a prompt version pinned, or an app
version) before anything moves, and answers the evaluation's id for the
history, or raises ``EVALUATION_FAILED`` (409).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import Principal
from api.state import ApiState
from evals.errors import ScorerInvalidError
from evals.evaluations import NewEvaluation
from evals.gates import gate
from evals.scorers import ScorerSpec
from evals.tables import EvaluationPolicy
from runs.service import Caller

Subject = Literal["prompt", "app"]


class Requirement(BaseModel):
    """What a gated change must pass: an evaluation of ``app`` over ``dataset`` with the
    candidate (a prompt's names its ``app``; an app's names none: it is the app)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=200, description="The dataset's id or name.")
    app: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The app's uuid or name: for a prompt only (an app evaluates itself).",
    )
    scorers: list[ScorerSpec] = Field(min_length=1, max_length=200)
    min_pass_rate: float = Field(default=1.0, ge=0, le=1)


@dataclass(frozen=True)
class Candidate:
    """What is about to move: a prompt's version, or an app's version."""

    subject: Subject
    subject_id: str  # the prompt's id or the app's uuid
    version: int


def stored_policy(db: Session, subject: Subject, subject_id: str) -> Requirement | None:
    """The policy stored on a prompt or app, if any."""
    row = db.get(EvaluationPolicy, (subject, subject_id))
    return None if row is None else Requirement.model_validate(row.require)


def check_requirement(need: Requirement, subject: Subject) -> None:
    """A prompt's requirement names the app to evaluate it with; an app's names none
    (the app itself is evaluated): ``REQUIREMENT_INVALID`` otherwise."""
    if (subject == "prompt") == (need.app is None):
        message = (
            "require.app: a prompt's gate needs the app to evaluate it with"
            if subject == "prompt"
            else "require.app: an app's gate evaluates the app itself: leave app out"
        )
        raise ScorerInvalidError(message, code="REQUIREMENT_INVALID")


def _evaluation(need: Requirement, candidate: Candidate) -> NewEvaluation:
    check_requirement(need, candidate.subject)
    if candidate.subject == "app":
        return NewEvaluation(
            dataset=need.dataset,
            app=candidate.subject_id,
            scorers=need.scorers,
            app_version=candidate.version,
            concurrency=1,
        )
    assert need.app is not None
    pins: dict[str, Any] = {"prompts": {candidate.subject_id: {"version": candidate.version}}}
    return NewEvaluation(
        dataset=need.dataset, app=need.app, scorers=need.scorers, overrides=pins, concurrency=1
    )


def requirement_for(
    db: Session, require: Requirement | None, candidate: Candidate
) -> Requirement | None:
    """The body's requirement, else the subject's stored policy, else None."""
    return require if require is not None else stored_policy(db, *_key(candidate))


def _key(candidate: Candidate) -> tuple[Subject, str]:
    return candidate.subject, candidate.subject_id


def run_gate(
    db: Session,
    state: ApiState,
    token: Principal,
    require: Requirement | None,
    candidate: Candidate,
) -> str | None:
    """Gate ``candidate``: None when nothing gates it, the passed evaluation's id, or
    ``EVALUATION_FAILED``. Ends the session's transaction (the evaluation runs on
    sessions of its own): the caller checks and locks what it moves afterwards."""
    need = requirement_for(db, require, candidate)
    if need is None:
        return None
    new = _evaluation(need, candidate)
    db.rollback()
    caller = Caller(token.id, token.name, token.role)
    return gate(
        state.evaluations, new, caller, state.settings.evals, need.min_pass_rate
    ).evaluation_id
