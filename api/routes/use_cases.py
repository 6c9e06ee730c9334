"""Use cases and the prompts in them (``/api/v1/use-cases``), per the Prompts API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.access import Reader, Writer
from api.audit import record
from api.deps import DbSession, Who
from api.routes.prompts import PromptCreate, PromptPublic, prompt_public
from api.routes.webhooks import emit
from prompts import store
from prompts.tables import Prompt, UseCase

router = APIRouter(prefix="/api/v1/use-cases", tags=["prompts"])


class UseCaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    description: str = Field(default="", max_length=10_000)


class UseCaseUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)


class UseCasePublic(BaseModel):
    id: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    prompt_count: int


def _public(db: Session, row: UseCase) -> UseCasePublic:
    count = db.scalar(select(func.count()).where(Prompt.use_case_id == row.id)) or 0
    return UseCasePublic(
        id=row.id,
        name=row.name,
        description=row.description,
        created_at=row.created_at,
        updated_at=row.updated_at,
        prompt_count=count,
    )


@router.get("", response_model=list[UseCasePublic])
def list_use_cases_route(
    db: DbSession,
    _: Reader,
    skip: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[UseCasePublic]:
    """List use cases, oldest first."""
    return [_public(db, r) for r in store.list_use_cases(db, skip, limit)]


@router.post("", response_model=UseCasePublic, status_code=status.HTTP_201_CREATED)
def create_use_case_route(body: UseCaseCreate, db: DbSession, _: Writer, who: Who) -> UseCasePublic:
    """Create a use case; names are unique (409 ``CONFLICT``)."""
    row = store.create_use_case(db, body.name, body.description)
    record(db, who, "use_case.created", row.id, {"name": row.name})
    db.commit()
    return _public(db, row)


@router.get("/{use_case_id}", response_model=UseCasePublic)
def get_use_case_route(use_case_id: str, db: DbSession, _: Reader) -> UseCasePublic:
    """One use case."""
    return _public(db, store.get_use_case(db, use_case_id))


@router.patch("/{use_case_id}", response_model=UseCasePublic)
def update_use_case_route(
    use_case_id: str, body: UseCaseUpdate, db: DbSession, _: Writer, who: Who
) -> UseCasePublic:
    """Rename or describe a use case."""
    row = store.update_use_case(
        db, store.get_use_case(db, use_case_id), body.name, body.description
    )
    changed = sorted(body.model_dump(exclude_unset=True))
    record(db, who, "use_case.updated", row.id, {"name": row.name, "changed": changed})
    db.commit()
    return _public(db, row)


@router.delete("/{use_case_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_use_case_route(use_case_id: str, db: DbSession, token: Writer, who: Who) -> Response:
    """Delete a use case with all its prompts and their versions.

    Emits ``prompt.deleted`` for each of its prompts, then ``use_case.deleted``; the
    audit log has one ``use_case.deleted`` naming the prompts.
    """
    row = store.get_use_case(db, use_case_id)
    prompts = db.scalars(
        select(Prompt).where(Prompt.use_case_id == row.id).order_by(Prompt.created_at, Prompt.id)
    ).all()
    for p in prompts:
        data = {"promptId": p.id, "promptName": p.name, "useCaseId": row.id, "by": token.name}
        emit(db, "prompt.deleted", data)
    emit(
        db,
        "use_case.deleted",
        {
            "useCaseId": row.id,
            "useCaseName": row.name,
            "promptIds": [p.id for p in prompts],
            "by": token.name,
        },
    )
    ids = [p.id for p in prompts]
    details = {"name": row.name, "prompt_count": len(ids), "prompt_ids": ids}
    record(db, who, "use_case.deleted", row.id, details)
    db.delete(row)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{use_case_id}/prompts", response_model=list[PromptPublic])
def list_prompts_route(
    use_case_id: str,
    db: DbSession,
    _: Reader,
    tags: Annotated[
        str | None, Query(description="Comma-separated; prompts having every tag")
    ] = None,
    skip: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[PromptPublic]:
    """List the prompts of a use case, optionally filtered by tags."""
    store.get_use_case(db, use_case_id)
    wanted = [t.strip() for t in (tags or "").split(",") if t.strip()]
    rows = store.list_prompts(db, use_case_id, wanted, skip, limit)
    return [prompt_public(db, r) for r in rows]


@router.post(
    "/{use_case_id}/prompts", response_model=PromptPublic, status_code=status.HTTP_201_CREATED
)
def create_prompt_route(
    use_case_id: str, body: PromptCreate, db: DbSession, token: Writer, who: Who
) -> PromptPublic:
    """Create a prompt; names are unique within a use case (409 ``CONFLICT``)."""
    use_case = store.get_use_case(db, use_case_id)
    row = store.create_prompt(db, use_case, body.name, body.description, body.tags, token.name)
    data = {"promptId": row.id, "promptName": row.name, "useCaseId": use_case.id, "by": token.name}
    emit(db, "prompt.created", data)
    record(db, who, "prompt.created", row.id, {"name": row.name, "use_case_id": use_case.id})
    db.commit()
    return prompt_public(db, row)
