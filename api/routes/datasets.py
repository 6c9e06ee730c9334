"""Datasets of evaluation cases: create, read, change, import and export cases, and
add a stored run as a case.

Every change to a dataset's cases raises its ``revision`` in the same
transaction (``evals.datasets``); an evaluation names the revision it ran on.
Routes are plain ``def`` (FastAPI's thread pool) but the import, which reads the
raw body first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.access import Reader, Writer
from api.audit import Actor, record
from api.deps import DbSession, Who
from api.errors import NotFoundError
from api.state import State, api_state
from evals import casefiles, datasets
from evals.casefiles import CaseData
from evals.errors import CaseInvalidError
from evals.tables import Dataset, DatasetCase
from runs.tables import Run

router = APIRouter(tags=["datasets"])

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^/]+$")]
Description = Annotated[str, Field(max_length=2000)]
Format = Literal["jsonl", "csv"]


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""


class DatasetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None


class DatasetPublic(BaseModel):
    id: str
    name: str
    description: str
    revision: int = Field(description="Raised by every change to the dataset's cases.")
    case_count: int
    created_at: datetime
    updated_at: datetime


class CasesCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cases: list[CaseData] = Field(description="Cases to append, in order.")


class CaseUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] | None = None
    expected: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class CasePublic(BaseModel):
    id: str
    dataset_id: str
    input: dict[str, Any]
    expected: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class CasesAdded(BaseModel):
    dataset_id: str
    revision: int = Field(description="The dataset's revision after the change.")
    ids: list[str] = Field(
        description="The new cases' ids, in order (a replace: every case's, in order)."
    )


class RunToDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=200, description="The dataset's id or name.")
    expected_from_output: bool = Field(
        default=False, description="Take the run's output as the case's expected answer."
    )


def _public(db: Session, row: Dataset, count: int | None = None) -> DatasetPublic:
    if count is None:
        count = datasets.case_counts(db, [row.id])[row.id]
    return DatasetPublic(
        id=row.id,
        name=row.name,
        description=row.description,
        revision=row.revision,
        case_count=count,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _case_public(case: DatasetCase) -> CasePublic:
    return CasePublic(
        id=case.id,
        dataset_id=case.dataset_id,
        input=case.input,
        expected=case.expected,
        metadata=case.meta,
        created_at=case.created_at,
        updated_at=case.updated_at,
    )


def _cases_changed(db: Session, who: Actor, row: Dataset, **counts: int) -> None:
    record(db, who, "dataset.cases_changed", row.id, {**counts, "revision": row.revision})


@router.post("/api/datasets", response_model=DatasetPublic, status_code=status.HTTP_201_CREATED)
def create_dataset_route(body: DatasetCreate, db: DbSession, _: Writer, who: Who) -> DatasetPublic:
    """Create an empty dataset at revision 1; 409 ``DATASET_EXISTS`` if the name is taken."""
    row = datasets.create_dataset(db, body.name, body.description)
    record(db, who, "dataset.created", row.id, {"name": row.name})
    db.commit()
    return _public(db, row, 0)


@router.get("/api/datasets", response_model=list[DatasetPublic])
def list_datasets_route(
    db: DbSession,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[DatasetPublic]:
    """The datasets, oldest first, each with its revision and number of cases
    (``limit`` at most 1000, ``offset``)."""
    query = select(Dataset).order_by(Dataset.created_at, Dataset.id)
    found = list(db.scalars(query.limit(limit).offset(offset)))
    counts = datasets.case_counts(db, [r.id for r in found])
    return [_public(db, r, counts[r.id]) for r in found]


@router.get("/api/datasets/{dataset}", response_model=DatasetPublic)
def get_dataset_route(dataset: str, db: DbSession, _: Reader) -> DatasetPublic:
    """One dataset, by id or name."""
    return _public(db, datasets.find_dataset(db, dataset))


@router.patch("/api/datasets/{dataset}", response_model=DatasetPublic)
def update_dataset_route(
    dataset: str, body: DatasetUpdate, db: DbSession, _: Writer, who: Who
) -> DatasetPublic:
    """Rename or describe a dataset (its cases and revision stay)."""
    row = datasets.find_dataset(db, dataset)
    changed = datasets.update_dataset(db, row, body.name, body.description)
    if changed:
        record(db, who, "dataset.updated", row.id, {"name": row.name, "changed": changed})
        db.commit()
    return _public(db, row)


@router.delete("/api/datasets/{dataset}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset_route(dataset: str, db: DbSession, _: Writer, who: Who) -> None:
    """Delete a dataset and its cases (evaluations keep the cases they copied)."""
    row = datasets.find_dataset(db, dataset)
    record(db, who, "dataset.deleted", row.id, {"name": row.name})
    db.delete(row)
    db.commit()


@router.post(
    "/api/datasets/{dataset}/cases",
    response_model=CasesAdded,
    status_code=status.HTTP_201_CREATED,
)
def add_cases_route(
    request: Request, dataset: str, body: CasesCreate, db: DbSession, _: Writer, who: Who
) -> CasesAdded:
    """Append cases ``{"input", "expected"?, "metadata"?}``; the revision rises by one."""
    row = datasets.find_dataset(db, dataset)
    ids = datasets.add_cases(db, row, body.cases, api_state(request).settings.evals)
    _cases_changed(db, who, row, added=len(ids))
    db.commit()
    return CasesAdded(dataset_id=row.id, revision=row.revision, ids=ids)


@router.get("/api/datasets/{dataset}/cases", response_model=list[CasePublic])
def list_cases_route(
    dataset: str,
    db: DbSession,
    _: Reader,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[CasePublic]:
    """The dataset's cases in order; ``X-Total-Count`` gives their number."""
    row = datasets.find_dataset(db, dataset)
    response.headers["X-Total-Count"] = str(datasets.case_counts(db, [row.id])[row.id])
    return [_case_public(c) for c in datasets.list_cases(db, row, limit, offset)]


@router.get(
    "/api/datasets/{dataset}/cases/export",
    responses={
        200: {
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            }
        }
    },
)
def export_cases_route(
    dataset: str, db: DbSession, _: Reader, format: Format = "jsonl"
) -> PlainTextResponse:
    """Every case as JSONL (one ``{"id", "input", "expected", "metadata"}`` a line) or CSV
    (columns ``id``, ``input``, ``expected``, ``metadata`` as JSON)."""
    row = datasets.find_dataset(db, dataset)
    cases = [(c.id, datasets.case_data(c)) for c in datasets.list_cases(db, row)]
    if format == "csv":
        return PlainTextResponse(casefiles.write_csv(cases), media_type="text/csv")
    return PlainTextResponse(casefiles.write_jsonl(cases), media_type="application/x-ndjson")


def _import(
    state: Any, dataset: str, text: str, format: str, who: Actor, replace: bool
) -> CasesAdded:
    limits = state.settings.evals
    read = casefiles.read_csv if format == "csv" else casefiles.read_jsonl
    cases = read(text, limits.max_cases_per_request)
    with state.db() as db:
        row = datasets.find_dataset(db, dataset)
        if replace:
            ids, changed = datasets.replace_cases(db, row, cases, limits)
            if changed:
                _cases_changed(db, who, row, replaced=len(ids))
        else:
            ids = datasets.add_cases(db, row, cases, limits)
            _cases_changed(db, who, row, added=len(ids))
        db.commit()
        return CasesAdded(dataset_id=row.id, revision=row.revision, ids=ids)


@router.post(
    "/api/datasets/{dataset}/cases/import",
    response_model=CasesAdded,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_cases_route(
    request: Request,
    dataset: str,
    _: Writer,
    who: Who,
    state: State,
    format: Format | None = None,
    replace: Annotated[
        bool, Query(description="Make the file's cases the dataset's only ones.")
    ] = False,
) -> CasesAdded:
    """Append the cases of a JSONL or CSV body (``format``, else from ``Content-Type``:
    ``text/csv`` is CSV, anything else JSONL); all or nothing, each problem
    ``CASE_FILE_INVALID`` naming its line. With ``replace=true`` the file's cases become
    the dataset's only ones, as one change (one revision, none if nothing changed); a
    case keeps its id when a case with the same ``input`` was there, and ``ids`` are then
    every case's."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CaseInvalidError("the file is not UTF-8 text", code="CASE_FILE_INVALID") from None
    if format is None:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        format = "csv" if kind == "text/csv" else "jsonl"
    return await run_in_threadpool(_import, state, dataset, text, format, who, replace)


@router.patch("/api/datasets/{dataset}/cases/{case_id}", response_model=CasePublic)
def update_case_route(
    request: Request,
    dataset: str,
    case_id: str,
    body: CaseUpdate,
    db: DbSession,
    _: Writer,
    who: Who,
) -> CasePublic:
    """Replace a case's ``input``, ``expected`` or ``metadata``; the revision rises if it
    changed."""
    row = datasets.find_dataset(db, dataset)
    before = row.revision
    change = datasets.CaseChange(body.input, body.expected, body.metadata)
    case = datasets.update_case(db, row, case_id, change, api_state(request).settings.evals)
    if row.revision != before:
        _cases_changed(db, who, row, updated=1)
        db.commit()
    return _case_public(case)


@router.delete("/api/datasets/{dataset}/cases/{case_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_case_route(dataset: str, case_id: str, db: DbSession, _: Writer, who: Who) -> None:
    """Delete a case; the revision rises by one."""
    row = datasets.find_dataset(db, dataset)
    datasets.delete_case(db, row, case_id)
    _cases_changed(db, who, row, deleted=1)
    db.commit()


@router.post(
    "/api/runs/{run_id}/to-dataset", response_model=CasesAdded, status_code=status.HTTP_201_CREATED
)
def run_to_dataset_route(
    request: Request, run_id: str, body: RunToDataset, db: DbSession, _: Writer, who: Who
) -> CasesAdded:
    """Add a stored run to a dataset as a case: its input, and with
    ``expected_from_output`` its output as the expected answer."""
    run = db.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run '{run_id}'", code="RUN_NOT_FOUND")
    row = datasets.find_dataset(db, body.dataset)
    case = CaseData(
        input=run.input,
        expected=dict(run.output) if body.expected_from_output else {},
        metadata={"run_id": run.id, "app_uuid": run.app_uuid, "app_version": run.app_version},
    )
    ids = datasets.add_cases(db, row, [case], api_state(request).settings.evals)
    _cases_changed(db, who, row, added=1)
    db.commit()
    return CasesAdded(dataset_id=row.id, revision=row.revision, ids=ids)
