"""Prompts, their versions and labels (``/api/v1/prompts``).

The model and paths follow the Prompts API; deploy, deployments, rollback and
diff follow the managed-prompts API; render follows PromptOps. A label and a
deployment environment are the same thing (``prompts.labels``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.deps import CurrentToken, DbSession
from api.routes.webhooks import EventName, emit
from prompts import labels, store
from prompts.diff import diff
from prompts.errors import PromptsError, PromptsInvalidError
from prompts.render import render
from prompts.search import search
from prompts.store import VersionSpec
from prompts.tables import Prompt, PromptDeployment, PromptVersion
from runs.prompt_refs import dependents

router = APIRouter(prefix="/api/v1/prompts", tags=["prompts"])

Tag = Annotated[str, Field(min_length=1, max_length=100)]


class PromptCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    description: str = Field(default="", max_length=10_000)
    tags: list[Tag] = Field(default_factory=list, max_length=50)


class PromptUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    tags: list[Tag] | None = Field(default=None, max_length=50)


class PromptPublic(BaseModel):
    id: str
    use_case_id: str
    name: str
    description: str
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    version_count: int
    latest_version: int | None


class VersionSummary(BaseModel):
    version_number: int
    labels: list[str]
    created_at: datetime


class PromptDetail(PromptPublic):
    versions: list[VersionSummary]


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


class DeployBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment: str
    version: int = Field(ge=1)
    notes: str | None = Field(default=None, max_length=2000)


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


class Dependent(BaseModel):
    app_uuid: str
    name: str
    step: str
    label: str | None
    version: int | None


# --- shaping ------------------------------------------------------------------


def prompt_public(db: Session, row: Prompt) -> PromptPublic:
    count, latest = db.execute(
        select(func.count(), func.max(PromptVersion.version_number)).where(
            PromptVersion.prompt_id == row.id
        )
    ).one()
    return PromptPublic(
        id=row.id,
        use_case_id=row.use_case_id,
        name=row.name,
        description=row.description,
        tags=list(row.tags or []),
        created_at=row.created_at,
        updated_at=row.updated_at,
        version_count=count or 0,
        latest_version=latest,
    )


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
    )


def _event_data(row: Prompt, **extra: Any) -> dict[str, Any]:
    """A webhook payload's ``data`` about a prompt."""
    return {"promptId": row.id, "promptName": row.name, "useCaseId": row.use_case_id, **extra}


def _emit_move(db: Session, entry: PromptDeployment) -> None:
    """The event of a label move: ``prompt.deployed`` (promote, deploy),
    ``prompt.rolled_back``, or ``prompt.undeployed`` (demote: ``version`` is null)."""
    event: EventName = "prompt.deployed"
    if entry.action == "rollback":
        event = "prompt.rolled_back"
    elif entry.action == "demote":
        event = "prompt.undeployed"
    data = _event_data(
        store.get_prompt(db, entry.prompt_id),
        version=entry.version_number,
        previousVersion=entry.previous_version,
        environment=entry.label,
        notes=entry.notes,
        **{"deployedBy" if event == "prompt.deployed" else "by": entry.actor},
    )
    emit(db, event, data)


# --- prompts ------------------------------------------------------------------


@router.get("/{prompt_id}", response_model=PromptDetail)
def get_prompt_route(prompt_id: str, db: DbSession, _: CurrentToken) -> PromptDetail:
    """A prompt with its version history (newest first) and each version's labels."""
    row = store.get_prompt(db, prompt_id)
    by_version = store.labels_by_version(db, prompt_id)
    versions = [
        VersionSummary(
            version_number=v.version_number,
            labels=by_version.get(v.id, []),
            created_at=v.created_at,
        )
        for v in store.versions_of(db, prompt_id)
    ]
    return PromptDetail(**prompt_public(db, row).model_dump(), versions=versions)


@router.patch("/{prompt_id}", response_model=PromptPublic)
def update_prompt_route(
    prompt_id: str, body: PromptUpdate, db: DbSession, token: CurrentToken
) -> PromptPublic:
    """Update a prompt's name, description or tags (not its versions)."""
    row = store.update_prompt(
        db, store.get_prompt(db, prompt_id), body.name, body.description, body.tags
    )
    changed = sorted(body.model_dump(exclude_unset=True))
    emit(db, "prompt.updated", _event_data(row, by=token.name, changed=changed))
    db.commit()
    return prompt_public(db, row)


@router.delete("/{prompt_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_prompt_route(prompt_id: str, db: DbSession, token: CurrentToken) -> Response:
    """Delete a prompt with all its versions, labels and deployment history."""
    row = store.get_prompt(db, prompt_id)
    emit(db, "prompt.deleted", _event_data(row, by=token.name))
    db.delete(row)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- versions -----------------------------------------------------------------


@router.get("/{prompt_id}/versions", response_model=list[VersionPublic])
def list_versions_route(prompt_id: str, db: DbSession, _: CurrentToken) -> list[VersionPublic]:
    """Every version of the prompt, newest first."""
    store.get_prompt(db, prompt_id)
    by_version = store.labels_by_version(db, prompt_id)
    return [version_public(v, by_version.get(v.id, [])) for v in store.versions_of(db, prompt_id)]


@router.post(
    "/{prompt_id}/versions", response_model=VersionPublic, status_code=status.HTTP_201_CREATED
)
def create_version_route(
    prompt_id: str, body: VersionSpec, db: DbSession, token: CurrentToken
) -> VersionPublic:
    """Create the next version (numbers count up from 1); versions never change after."""
    row = store.create_version(db, prompt_id, body, token.name)
    data = _event_data(store.get_prompt(db, prompt_id), version=row.version_number, by=token.name)
    emit(db, "prompt.updated", data)
    db.commit()
    return version_public(row, [])


@router.get("/{prompt_id}/versions/{number}", response_model=VersionPublic)
def get_version_route(prompt_id: str, number: int, db: DbSession, _: CurrentToken) -> VersionPublic:
    """One version by number."""
    store.get_prompt(db, prompt_id)
    return _version_out(db, prompt_id, number)


@router.post("/{prompt_id}/versions/{number}/promote", response_model=VersionPublic)
def promote_route(
    prompt_id: str, number: int, body: LabelBody, db: DbSession, token: CurrentToken
) -> VersionPublic:
    """Put a label on this version, moving it off the version that had it."""
    entry = labels.move(db, prompt_id, body.label, number, token.name, action="promote")
    _emit_move(db, entry)
    db.commit()
    return _version_out(db, prompt_id, number)


@router.post("/{prompt_id}/versions/{number}/demote", response_model=VersionPublic)
def demote_route(
    prompt_id: str, number: int, body: LabelBody, db: DbSession, token: CurrentToken
) -> VersionPublic:
    """Take a label off this version (404 ``LABEL_NOT_FOUND`` if it does not have it)."""
    entry = labels.remove(db, prompt_id, body.label, number, token.name)
    _emit_move(db, entry)
    db.commit()
    return _version_out(db, prompt_id, number)


# --- deployments (labels seen as environments) --------------------------------


@router.post("/{prompt_id}/deploy", response_model=DeployPublic)
def deploy_route(
    prompt_id: str, body: DeployBody, db: DbSession, token: CurrentToken
) -> DeployPublic:
    """Deploy a version to an environment (the label of that name), with notes."""
    entry = labels.move(
        db, prompt_id, body.environment, body.version, token.name, action="deploy", notes=body.notes
    )
    _emit_move(db, entry)
    db.commit()
    return _deploy_public(entry)


@router.post("/{prompt_id}/rollback", response_model=DeployPublic)
def rollback_route(
    prompt_id: str, body: RollbackBody, db: DbSession, token: CurrentToken
) -> DeployPublic:
    """Move an environment back to the version it had before its last move."""
    entry = labels.rollback(db, prompt_id, body.environment, token.name, body.notes)
    _emit_move(db, entry)
    db.commit()
    return _deploy_public(entry)


@router.get("/{prompt_id}/deployments", response_model=Deployments)
def deployments_route(prompt_id: str, db: DbSession, _: CurrentToken) -> Deployments:
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
        )
        for e in labels.history(db, prompt_id)
    ]
    return Deployments(deployments=now, history=moves)


# --- diff, render, dependents -------------------------------------------------


@router.get("/{prompt_id}/diff")
def diff_route(
    prompt_id: str,
    db: DbSession,
    _: CurrentToken,
    from_: Annotated[int, Query(alias="from", ge=1)],
    to: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    """Line changes between two versions (templates and model defaults) with a summary."""
    store.get_prompt(db, prompt_id)
    old = store.get_version(db, prompt_id, from_)
    new = store.get_version(db, prompt_id, to)
    return {"diff": diff(old, new)}


@router.post("/{prompt_id}/render", response_model=RenderPublic)
def render_route(prompt_id: str, body: RenderBody, db: DbSession, _: CurrentToken) -> RenderPublic:
    """Render a version with variables: by ``version``, or ``label`` (default production,
    else latest); ``model_provider``/``model_name`` pick a model-specific variant."""
    store.get_prompt(db, prompt_id)
    version, label = labels.resolve(db, prompt_id, body.label, body.version)
    out = render(version, body.variables, body.model_provider, body.model_name)
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


@router.get("/{prompt_id}/dependents", response_model=list[Dependent])
def dependents_route(prompt_id: str, db: DbSession, _: CurrentToken) -> list[Dependent]:
    """The apps whose llm steps pin this prompt (by id or name), with label or version."""
    row = store.get_prompt(db, prompt_id)
    return [Dependent(**d) for d in dependents(db, row)]


# --- search and bulk ----------------------------------------------------------


class SearchFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[str] = Field(default_factory=list)
    author: str | None = None
    type: Literal["text", "chat"] | None = None
    hasConfig: bool | None = None


class Pagination(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: int = Field(default=1, ge=1)
    limit: int = Field(default=20, ge=1, le=500)


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(default="", max_length=500)
    filters: SearchFilters = Field(default_factory=SearchFilters)
    pagination: Pagination = Field(default_factory=Pagination)


class PageInfo(BaseModel):
    page: int
    limit: int
    total: int
    pages: int


class SearchResult(BaseModel):
    prompts: list[PromptPublic]
    pagination: PageInfo


class BulkItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    version: int | None = Field(default=None, ge=1)


class BulkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operation: Literal["deploy", "label", "delete"]
    prompts: list[BulkItem] = Field(min_length=1, max_length=500)
    environment: str | None = Field(default=None, description="The label (deploy, label)")
    notes: str | None = Field(default=None, max_length=2000)
    atomic: bool = Field(default=False, description="All or nothing")


class BulkItemResult(BaseModel):
    id: str
    ok: bool
    error: dict[str, Any] | None = None


class BulkResult(BaseModel):
    operation: str
    atomic: bool
    applied: bool
    succeeded: int
    failed: int
    results: list[BulkItemResult]


@router.post("/search", response_model=SearchResult)
def search_route(body: SearchBody, db: DbSession, _: CurrentToken) -> SearchResult:
    """Search by text in names, descriptions and templates; filter by tags, author, type."""
    f = body.filters
    found = search(db, body.query, f.tags, f.author, f.type, f.hasConfig)
    page, limit = body.pagination.page, body.pagination.limit
    chosen = found[(page - 1) * limit : page * limit]
    return SearchResult(
        prompts=[prompt_public(db, p) for p in chosen],
        pagination=PageInfo(
            page=page, limit=limit, total=len(found), pages=-(-len(found) // limit)
        ),
    )


def _bulk_one(db: Session, body: BulkBody, item: BulkItem, actor: str) -> None:
    if body.operation == "delete":
        row = store.get_prompt(db, item.id)
        emit(db, "prompt.deleted", _event_data(row, by=actor))
        db.delete(row)
        db.flush()
        return
    if body.environment is None or item.version is None:
        raise PromptsInvalidError(
            "deploy and label need an environment and each item's version",
            code="BULK_INVALID",
        )
    entry = labels.move(
        db, item.id, body.environment, item.version, actor, action="deploy", notes=body.notes
    )
    _emit_move(db, entry)


@router.post("/bulk", response_model=BulkResult)
def bulk_route(body: BulkBody, db: DbSession, token: CurrentToken) -> BulkResult:
    """Deploy (or label) or delete many prompts; per-item results.

    With ``"atomic": true`` either every item is applied or none is.
    """
    # Atomic: one transaction for all items, rolled back if any failed.
    # Otherwise one transaction per item (not savepoints: pysqlite's implicit
    # transactions make a released SAVEPOINT commit on SQLite).
    results: list[BulkItemResult] = []
    for item in body.prompts:
        try:
            _bulk_one(db, body, item, token.name)
        except PromptsError as exc:
            if not body.atomic:
                db.rollback()
            error = {"code": exc.code, "message": exc.message}
            results.append(BulkItemResult(id=item.id, ok=False, error=error))
        else:
            if not body.atomic:
                db.commit()
            results.append(BulkItemResult(id=item.id, ok=True))
    failed = sum(not r.ok for r in results)
    applied = not (body.atomic and failed)
    if applied:
        db.commit()
    else:
        db.rollback()
    return BulkResult(
        operation=body.operation,
        atomic=body.atomic,
        applied=applied,
        succeeded=len(results) - failed if applied else 0,
        failed=failed,
        results=results,
    )
