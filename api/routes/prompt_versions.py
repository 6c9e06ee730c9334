"""A prompt's versions, labels and deployments; diff and render (``/api/v1/prompts``).

Versions never change once created; labels point at them. Deploy, deployments,
rollback and diff follow the managed-prompts API; render follows PromptOps. A
label and a deployment environment are the same thing (``prompts.labels``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from api.access import Reader, Writer
from api.audit import record
from api.auth import Principal
from api.deps import DbSession, Who
from api.gating import Candidate, Requirement, run_gate
from api.routes.prompts import audit_move, emit_move, event_data
from api.routes.webhooks import emit
from api.state import ApiState, State, api_state
from appforge.core.budget import Budget, Limits
from prompts import labels, store
from prompts.diff import diff
from prompts.render import render
from prompts.store import VersionSpec
from prompts.tables import PromptDeployment, PromptVersion

router = APIRouter(prefix="/api/v1/prompts", tags=["prompts"])


class VersionPublic(BaseModel):
    id: str
    prompt_id: str
    version_number: int
    type: str
    template_text: str | None
    template_messages: list[dict[str, Any]] | None
    model_defaults: dict[str, Any]
    variables_schema: dict[str, Any] | None
    variants: list[dict[str, Any]]
    variables: list[str]
    labels: list[str]
    created_at: datetime
    created_by: str | None
    commit_message: str | None


class LabelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="production, beta, alpha, or any [a-z0-9_.-]{1,36}")


class PromoteBody(LabelBody):
    require: Requirement | None = Field(
        default=None,
        description="Move the label only if this evaluation passes (409 EVALUATION_FAILED); "
        "default: the prompt's stored policy.",
    )


class DeployBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment: str
    version: int = Field(ge=1)
    notes: str | None = Field(default=None, max_length=2000)
    require: Requirement | None = Field(
        default=None,
        description="Deploy only if this evaluation passes (409 EVALUATION_FAILED); "
        "default: the prompt's stored policy.",
    )


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment: str
    notes: str | None = Field(default=None, max_length=2000)


class DeployPublic(BaseModel):
    promptId: str
    environment: str
    version: int
    previousVersion: int | None
    deployedAt: datetime
    deployedBy: str | None
    notes: str | None
    evaluationId: str | None


class Deployment(BaseModel):
    environment: str
    version: int
    deployedAt: datetime
    deployedBy: str | None


class DeploymentMove(BaseModel):
    environment: str
    action: str
    version: int | None
    previousVersion: int | None
    at: datetime
    by: str | None
    notes: str | None
    evaluationId: str | None


class Deployments(BaseModel):
    deployments: list[Deployment]
    history: list[DeploymentMove]


class RenderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variables: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, description="Default: production, else latest")
    version: int | None = Field(default=None, ge=1)
    model_provider: str | None = None
    model_name: str | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> RenderBody:
        if self.label is not None and self.version is not None:
            raise ValueError("give a label or a version, not both")
        return self


class RenderPublic(BaseModel):
    prompt_id: str
    version_number: int
    label: str | None
    type: str
    text: str | None
    messages: list[dict[str, str]] | None
    model_defaults: dict[str, Any]
    variant: dict[str, str | None] | None


# --- shaping ------------------------------------------------------------------


def version_public(row: PromptVersion, version_labels: list[str]) -> VersionPublic:
    return VersionPublic(
        id=row.id,
        prompt_id=row.prompt_id,
        version_number=row.version_number,
        type=row.type,
        template_text=row.template_text,
        template_messages=row.template_messages,
        model_defaults=row.model_defaults or {},
        variables_schema=row.variables_schema,
        variants=row.variants or [],
        variables=row.variables or [],
        labels=version_labels,
        created_at=row.created_at,
        created_by=row.created_by,
        commit_message=row.commit_message,
    )


def _version_out(db: Session, prompt_id: str, number: int) -> VersionPublic:
    row = store.get_version(db, prompt_id, number)
    return version_public(row, store.labels_by_version(db, prompt_id).get(row.id, []))


def _deploy_public(entry: PromptDeployment) -> DeployPublic:
    assert entry.version_number is not None
    return DeployPublic(
        promptId=entry.prompt_id,
        environment=entry.label,
        version=entry.version_number,
        previousVersion=entry.previous_version,
        deployedAt=entry.created_at,
        deployedBy=entry.actor,
        notes=entry.notes,
        evaluationId=entry.evaluation_id,
    )


def _gate(
    db: Session,
    state: ApiState,
    token: Principal,
    require: Requirement | None,
    prompt_id: str,
    number: int,
) -> str | None:
    """Check the prompt and version exist, then gate the move (see ``api.gating``)."""
    prompt = store.get_prompt(db, prompt_id)
    store.get_version(db, prompt.id, number)
    return run_gate(db, state, token, require, Candidate("prompt", prompt.id, number))


# --- versions -----------------------------------------------------------------


@router.get("/{prompt_id}/versions", response_model=list[VersionPublic])
def list_prompt_versions_route(prompt_id: str, db: DbSession, _: Reader) -> list[VersionPublic]:
    """Every version of the prompt, newest first."""
    store.get_prompt(db, prompt_id)
    by_version = store.labels_by_version(db, prompt_id)
    return [version_public(v, by_version.get(v.id, [])) for v in store.versions_of(db, prompt_id)]


@router.post(
    "/{prompt_id}/versions", response_model=VersionPublic, status_code=status.HTTP_201_CREATED
)
def create_prompt_version_route(
    prompt_id: str, body: VersionSpec, db: DbSession, token: Writer, who: Who
) -> VersionPublic:
    """Create the next version (numbers count up from 1); versions never change after."""
    row = store.create_version(db, prompt_id, body, token.name)
    data = event_data(store.get_prompt(db, prompt_id), version=row.version_number, by=token.name)
    emit(db, "prompt.updated", data)
    details = {"version": row.version_number, "type": row.type, "variables": row.variables}
    record(db, who, "prompt_version.created", prompt_id, details)
    db.commit()
    return version_public(row, [])


@router.get("/{prompt_id}/versions/{number}", response_model=VersionPublic)
def get_prompt_version_route(
    prompt_id: str, number: int, db: DbSession, _: Reader
) -> VersionPublic:
    """One version by number."""
    store.get_prompt(db, prompt_id)
    return _version_out(db, prompt_id, number)


@router.post("/{prompt_id}/versions/{number}/promote", response_model=VersionPublic)
def promote_version_route(
    prompt_id: str,
    number: int,
    body: PromoteBody,
    db: DbSession,
    token: Writer,
    who: Who,
    state: State,
) -> VersionPublic:
    """Put a label on this version, moving it off the version that had it. With
    ``require``, only if an evaluation of the app with this version passes (409
    ``EVALUATION_FAILED`` naming it otherwise); the move's notes name the evaluation."""
    labels.check_label(body.label)
    evaluation_id = _gate(db, state, token, body.require, prompt_id, number)
    notes = None if evaluation_id is None else f"evaluation {evaluation_id} passed"
    entry = labels.move(
        db,
        prompt_id,
        body.label,
        number,
        token.name,
        action="promote",
        notes=notes,
        evaluation_id=evaluation_id,
    )
    emit_move(db, entry)
    audit_move(db, who, entry)
    db.commit()
    return _version_out(db, prompt_id, number)


@router.post("/{prompt_id}/versions/{number}/demote", response_model=VersionPublic)
def demote_version_route(
    prompt_id: str, number: int, body: LabelBody, db: DbSession, token: Writer, who: Who
) -> VersionPublic:
    """Take a label off this version (404 ``LABEL_NOT_FOUND`` if it does not have it)."""
    entry = labels.remove(db, prompt_id, body.label, number, token.name)
    emit_move(db, entry)
    audit_move(db, who, entry)
    db.commit()
    return _version_out(db, prompt_id, number)


# --- deployments (labels seen as environments) --------------------------------


@router.post("/{prompt_id}/deploy", response_model=DeployPublic)
def deploy_prompt_route(
    prompt_id: str, body: DeployBody, db: DbSession, token: Writer, who: Who, state: State
) -> DeployPublic:
    """Deploy a version to an environment (the label of that name), with notes. With
    ``require`` (or the prompt's stored policy), only if an evaluation of the app with
    this version passes (409 ``EVALUATION_FAILED`` naming it otherwise)."""
    labels.check_label(body.environment)
    evaluation_id = _gate(db, state, token, body.require, prompt_id, body.version)
    entry = labels.move(
        db,
        prompt_id,
        body.environment,
        body.version,
        token.name,
        action="deploy",
        notes=body.notes,
        evaluation_id=evaluation_id,
    )
    emit_move(db, entry)
    audit_move(db, who, entry)
    db.commit()
    return _deploy_public(entry)


@router.post("/{prompt_id}/rollback", response_model=DeployPublic)
def rollback_prompt_route(
    prompt_id: str, body: RollbackBody, db: DbSession, token: Writer, who: Who
) -> DeployPublic:
    """Move an environment back to the version it had before its last move."""
    entry = labels.rollback(db, prompt_id, body.environment, token.name, body.notes)
    emit_move(db, entry)
    audit_move(db, who, entry)
    db.commit()
    return _deploy_public(entry)


@router.get("/{prompt_id}/deployments", response_model=Deployments)
def list_deployments_route(prompt_id: str, db: DbSession, _: Reader) -> Deployments:
    """Where each environment points now, and every move of every environment."""
    store.get_prompt(db, prompt_id)
    now = [
        Deployment(
            environment=row.label,
            version=number,
            deployedAt=row.updated_at,
            deployedBy=row.updated_by,
        )
        for row, number in labels.current(db, prompt_id)
    ]
    moves = [
        DeploymentMove(
            environment=e.label,
            action=e.action,
            version=e.version_number,
            previousVersion=e.previous_version,
            at=e.created_at,
            by=e.actor,
            notes=e.notes,
            evaluationId=e.evaluation_id,
        )
        for e in labels.history(db, prompt_id)
    ]
    return Deployments(deployments=now, history=moves)


# --- diff and render ----------------------------------------------------------


@router.get("/{prompt_id}/diff")
def diff_versions_route(
    prompt_id: str,
    db: DbSession,
    _: Reader,
    from_: Annotated[int, Query(alias="from", ge=1)],
    to: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    """Line changes between two versions (templates and model defaults) with a summary."""
    store.get_prompt(db, prompt_id)
    old = store.get_version(db, prompt_id, from_)
    new = store.get_version(db, prompt_id, to)
    return {"diff": diff(old, new)}


@router.post("/{prompt_id}/render", response_model=RenderPublic)
def render_prompt_route(
    prompt_id: str, body: RenderBody, request: Request, db: DbSession, _: Reader
) -> RenderPublic:
    """Render a version with variables: by ``version``, or ``label`` (default production,
    else latest); ``model_provider``/``model_name`` pick a model-specific variant.
    The render is bounded in size and time (422 ``TEMPLATE_TOO_LARGE``, ``RENDER_TIMEOUT``)."""
    store.get_prompt(db, prompt_id)
    version, label = labels.resolve(db, prompt_id, body.label, body.version)
    limits = api_state(request).settings.limits
    budget = Budget.timed(
        Limits(limits.max_template_bytes, limits.max_template_items),
        limits.render_timeout_seconds,
    )
    out = render(version, body.variables, body.model_provider, body.model_name, budget)
    return RenderPublic(
        prompt_id=prompt_id,
        version_number=version.version_number,
        label=label,
        type=version.type,
        text=out.text,
        messages=out.messages,
        model_defaults=out.model_defaults,
        variant=out.variant,
    )
