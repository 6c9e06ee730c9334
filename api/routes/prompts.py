"""Prompts (``/api/v1/prompts``): read, update, delete, dependents, search and bulk.

The model and paths follow the Prompts API. A prompt's versions, labels and
deployments, diff and render are in :mod:`api.routes.prompt_versions`; prompts
are created under their use case (:mod:`api.routes.use_cases`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.access import Reader, Writer
from api.audit import Action, Actor, record
from api.auth import Principal
from api.deps import DbSession, Who
from api.gating import Candidate, Requirement, run_gate
from api.routes.webhooks import EventName, emit
from api.state import ApiState, State
from prompts import labels, store
from prompts.errors import PromptsError, PromptsInvalidError
from prompts.search import search
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


class Dependent(BaseModel):
    app_uuid: str
    name: str
    step: str
    label: str | None
    version: int | None


# --- shaping and events -------------------------------------------------------


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


def event_data(row: Prompt, **extra: Any) -> dict[str, Any]:
    """A webhook payload's ``data`` about a prompt."""
    return {"promptId": row.id, "promptName": row.name, "useCaseId": row.use_case_id, **extra}


def emit_move(db: Session, entry: PromptDeployment) -> None:
    """The event of a label move: ``prompt.deployed`` (promote, deploy),
    ``prompt.rolled_back``, or ``prompt.undeployed`` (demote: ``version`` is null)."""
    event: EventName = "prompt.deployed"
    if entry.action == "rollback":
        event = "prompt.rolled_back"
    elif entry.action == "demote":
        event = "prompt.undeployed"
    data = event_data(
        store.get_prompt(db, entry.prompt_id),
        version=entry.version_number,
        previousVersion=entry.previous_version,
        environment=entry.label,
        notes=entry.notes,
        **{"deployedBy" if event == "prompt.deployed" else "by": entry.actor},
    )
    emit(db, event, data)


_MOVES: dict[str, Action] = {
    "promote": "label.promoted",
    "deploy": "label.deployed",
    "demote": "label.demoted",
    "rollback": "label.rolled_back",
}


def audit_move(db: Session, who: Actor, entry: PromptDeployment, **extra: Any) -> None:
    """The audit event of a label move; its target is the prompt."""
    details = {
        "label": entry.label,
        "version": entry.version_number,
        "previous_version": entry.previous_version,
        "notes": entry.notes,
        **extra,
    }
    if entry.evaluation_id is not None:
        details["evaluation_id"] = entry.evaluation_id
    record(db, who, _MOVES[entry.action], entry.prompt_id, details)


# --- prompts ------------------------------------------------------------------


@router.get("/{prompt_id}", response_model=PromptDetail)
def get_prompt_route(prompt_id: str, db: DbSession, _: Reader) -> PromptDetail:
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
    prompt_id: str, body: PromptUpdate, db: DbSession, token: Writer, who: Who
) -> PromptPublic:
    """Update a prompt's name, description or tags (not its versions)."""
    row = store.update_prompt(
        db, store.get_prompt(db, prompt_id), body.name, body.description, body.tags
    )
    changed = sorted(body.model_dump(exclude_unset=True))
    emit(db, "prompt.updated", event_data(row, by=token.name, changed=changed))
    record(db, who, "prompt.updated", row.id, {"name": row.name, "changed": changed})
    db.commit()
    return prompt_public(db, row)


@router.delete("/{prompt_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_prompt_route(prompt_id: str, db: DbSession, token: Writer, who: Who) -> Response:
    """Delete a prompt with all its versions, labels and deployment history."""
    row = store.get_prompt(db, prompt_id)
    emit(db, "prompt.deleted", event_data(row, by=token.name))
    record(db, who, "prompt.deleted", row.id, _deleted_details(row))
    db.delete(row)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{prompt_id}/dependents", response_model=list[Dependent])
def prompt_dependents_route(prompt_id: str, db: DbSession, _: Reader) -> list[Dependent]:
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
    require: Requirement | None = Field(
        default=None,
        description="deploy/label: each prompt's version must pass this evaluation (else "
        "each prompt's stored policy); one failing gate is a 409 EVALUATION_FAILED and "
        "nothing moves.",
    )


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
def search_prompts_route(body: SearchBody, db: DbSession, _: Reader) -> SearchResult:
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


def _deleted_details(row: Prompt, **extra: Any) -> dict[str, Any]:
    return {"name": row.name, "use_case_id": row.use_case_id, **extra}


def _bulk_gates(
    db: Session, body: BulkBody, state: ApiState, token: Principal
) -> dict[int, str | None]:
    """Gate every item of a deploy before any moves (by the item's place): one failing
    gate raises. Items naming no prompt or version are left to the move to report."""
    gates: dict[int, str | None] = {}
    if body.operation == "delete" or body.environment is None:
        return gates  # nothing to gate (the items report a missing environment)
    try:
        labels.check_label(body.environment)
    except PromptsError:
        return gates  # no item can move: each reports the label
    for n, item in enumerate(body.prompts):
        if item.version is None:
            continue
        try:
            prompt_id = store.get_prompt(db, item.id).id
            store.get_version(db, prompt_id, item.version)
        except PromptsError:
            continue
        candidate = Candidate("prompt", prompt_id, item.version)
        gates[n] = run_gate(db, state, token, body.require, candidate)
    return gates


def _bulk_one(
    db: Session,
    body: BulkBody,
    item: BulkItem,
    who: Actor,
    actor: str,
    evaluation_id: str | None = None,
) -> None:
    if body.operation == "delete":
        row = store.get_prompt(db, item.id)
        emit(db, "prompt.deleted", event_data(row, by=actor))
        record(db, who, "prompt.deleted", row.id, _deleted_details(row, bulk=True))
        db.delete(row)
        db.flush()
        return
    if body.environment is None or item.version is None:
        raise PromptsInvalidError(
            "deploy and label need an environment and each item's version",
            code="BULK_INVALID",
        )
    entry = labels.move(
        db,
        item.id,
        body.environment,
        item.version,
        actor,
        action="deploy",
        notes=body.notes,
        evaluation_id=evaluation_id,
    )
    emit_move(db, entry)
    audit_move(db, who, entry, bulk=True)


@router.post("/bulk", response_model=BulkResult)
def bulk_prompts_route(
    body: BulkBody, db: DbSession, token: Writer, who: Who, state: State
) -> BulkResult:
    """Deploy (or label) or delete many prompts; per-item results.

    With ``"atomic": true`` either every item is applied or none is. A deploy gated
    by ``require`` (or stored policies) moves nothing unless every gate passes.
    """
    gates = _bulk_gates(db, body, state, token)
    # Atomic: one transaction for all items, rolled back if any failed.
    # Otherwise one transaction per item (not savepoints: pysqlite's implicit
    # transactions make a released SAVEPOINT commit on SQLite).
    results: list[BulkItemResult] = []
    for n, item in enumerate(body.prompts):
        try:
            _bulk_one(db, body, item, who, token.name, gates.get(n))
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
